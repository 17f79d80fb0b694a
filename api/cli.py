"""The ``imgbatch`` command: ``run`` the stack, ``demo`` the pipeline."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from api.demo import run_demo
from api.stack import Stack
from models.logs import configure_logging
from models.settings import get_settings


def _run(_: argparse.Namespace) -> int:
    settings = get_settings()
    stopping = False

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with Stack(settings) as stack:
        print(
            f"imgbatch is up: API {stack.api_url} (MongoDB {stack.mongodb_url}, "
            f"Redis {stack.redis_url}); logs in {stack.data_dir / 'logs'}",
            flush=True,
        )
        while not stopping:
            for name, process in stack.processes.items():
                if process.poll() is not None:
                    print(f"{name} exited with {process.returncode}; stopping", flush=True)
                    return 1
            time.sleep(0.5)
        print("stopping", flush=True)
    return 0


def _demo(args: argparse.Namespace) -> int:
    return run_demo(get_settings(), lambda line: print(line, flush=True), args.csv)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imgbatch", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "run", help="start MongoDB/Redis (embedded unless configured), API, worker and beat"
    )
    demo = commands.add_parser("demo", help="process sample_csvs/products.csv end to end, offline")
    demo.add_argument("--csv", type=Path, default=None, help="another sheet to run")
    args = parser.parse_args(argv)
    configure_logging(get_settings().log_level)
    handlers = {"run": _run, "demo": _demo}
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
