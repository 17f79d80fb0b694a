"""``imgbatch flower`` (``make flower``): Celery's dashboard beside a running stack, on loopback,
behind basic auth.

It finds the broker the way an operator would expect: ``IMGBATCH_REDIS_URL`` if set, else the
``stack.json`` that a running ``make run`` writes in the data directory. The password is
``IMGBATCH_FLOWER_PASSWORD``, or a new one printed once; it reaches Flower through its
environment (``FLOWER_BASIC_AUTH``), never its command line, where ``ps`` would show it.
"""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from imgbatch.cli.stack import STACK_FILE
from imgbatch.core.logs import redact_url
from imgbatch.core.settings import METRICS_DIR_ENV, Settings, child_environment
from imgbatch.domain.taskqueue import celery_args

FLOWER_HOST = "127.0.0.1"


def running_stack_redis(data_dir: Path) -> str | None:
    """The broker of the stack running on ``data_dir``, if one is."""
    try:
        described = json.loads((data_dir / STACK_FILE).read_text())
    except (OSError, ValueError):
        return None
    url = described.get("redis_url") if isinstance(described, dict) else None
    return url if isinstance(url, str) else None


def run_flower(settings: Settings, say: Callable[[str], None]) -> int:
    redis_url = settings.redis_url or running_stack_redis(settings.data_dir)
    if not redis_url:
        say(
            f"no running stack under {settings.data_dir}: start `make run` first, "
            "or set IMGBATCH_REDIS_URL to the broker"
        )
        return 1
    user = settings.flower_user
    if settings.flower_password is not None:
        password = settings.flower_password.get_secret_value()
    else:
        password = secrets.token_urlsafe(18)
        say(f"Flower login for this run (shown once): {user} / {password}")
    say(f"Flower on http://{FLOWER_HOST}:{settings.flower_port}/ (broker {redact_url(redis_url)})")
    env = child_environment(
        {"IMGBATCH_REDIS_URL": redis_url, "FLOWER_BASIC_AUTH": f"{user}:{password}"},
        # Flower imports prometheus_client too: in the stack's directory, its own gauges would
        # be summed into the API's /metrics.
        without=METRICS_DIR_ENV,
    )
    process = subprocess.Popen(
        [
            sys.executable,
            *celery_args("flower", f"--address={FLOWER_HOST}", f"--port={settings.flower_port}"),
        ],
        env=env,
        stdin=subprocess.DEVNULL,
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        process.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return process.wait()
