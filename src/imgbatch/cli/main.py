"""The ``imgbatch`` command: ``run`` the stack, ``demo`` the pipeline, manage API ``keys``, and
talk to a running server: ``submit`` a CSV, ``list`` requests, ``status``, ``watch``,
``download``, ``results``, ``retry``, ``cancel`` and ``delete`` a request; create the
``storage`` bucket."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from imgbatch.cli import remote
from imgbatch.cli.demo import run_demo
from imgbatch.cli.embedded import EmbeddedServerMissing
from imgbatch.cli.flower import run_flower
from imgbatch.cli.keys import create_key, list_keys, revoke_key
from imgbatch.cli.stack import Stack
from imgbatch.cli.supervisor import Supervisor
from imgbatch.core.logs import configure_logging, redact_url
from imgbatch.core.settings import get_settings

# What `imgbatch --help` prints: plain text, since argparse shows it as written (the module's
# docstring is for readers of the code, and its markup would appear literally).
DESCRIPTION = (
    "imgbatch: bulk image processing driven by CSV. Run the stack or a demo of it, manage API "
    "keys, create the storage bucket, and talk to a running server: submit a CSV, then follow "
    "a request's status, watch its progress and download its result. "
    "'imgbatch COMMAND --help' shows a command's options."
)


def _run(_: argparse.Namespace) -> int:
    settings = get_settings()
    stopping = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with Stack(settings) as stack, Supervisor(stack) as supervisor:
        _record, key = asyncio.run(
            create_key(stack.settings_for_children(), "local (imgbatch run)")
        )
        print(
            f"imgbatch is up: API {stack.api_url} (MongoDB {redact_url(stack.mongodb_url or '')}, "
            f"Redis {redact_url(stack.redis_url or '')}, media {_media(stack)}); "
            f"logs in {stack.data_dir / 'logs'}\n"
            f"API key for this run (shown once): {key}\n"
            f"  curl -H 'Authorization: Bearer {key}' -F file=@sample_csvs/products.csv "
            f"{stack.api_url}/api/upload",
            flush=True,
        )
        while not stopping.wait(0.2):
            if supervisor.failure is not None:
                print(supervisor.failure, file=sys.stderr, flush=True)
                return 1
        print("stopping", flush=True)
    return 0


def _media(stack: Stack) -> str:
    settings = stack.settings
    if settings.storage == "local":
        return f"on disk in {settings.media_dir}"
    return f"in bucket {settings.s3_bucket} at {stack.s3_endpoint_url or 'AWS S3'}"


def _storage(_: argparse.Namespace) -> int:
    from imgbatch.storage.buckets import ensure_bucket

    settings = get_settings()
    if settings.storage != "s3":
        print("IMGBATCH_STORAGE is not s3: there is no bucket to create", file=sys.stderr)
        return 1
    created = ensure_bucket(settings)
    print(f"bucket {settings.s3_bucket} {'created' if created else 'already exists'}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    return run_demo(get_settings(), lambda line: print(line, flush=True), args.csv)


def _flower(_: argparse.Namespace) -> int:
    return run_flower(get_settings(), lambda line: print(line, flush=True))


def _keys(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.keys_command == "create":
        record, key = asyncio.run(create_key(settings, args.name))
        print(f"created {record.id} ({record.name}); the key is shown only now:\n{key}")
    elif args.keys_command == "list":
        for record in asyncio.run(list_keys(settings)):
            state = f"revoked {record.revoked_at:%Y-%m-%d}" if record.revoked_at else "active"
            print(f"{record.id}  {record.name:<30} created {record.created_at:%Y-%m-%d}  {state}")
    elif not asyncio.run(revoke_key(settings, args.key_id)):
        print(f"no active key {args.key_id}", file=sys.stderr)
        return 1
    else:
        print(f"revoked {args.key_id}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imgbatch", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "run", help="start MongoDB/Redis (embedded unless configured), API, worker and beat"
    )
    demo = commands.add_parser(
        "demo", help="process the sample sheet (11 images) end to end, offline"
    )
    demo.add_argument("--csv", type=Path, default=None, help="another sheet to run")
    commands.add_parser(
        "flower", help="Celery's dashboard for the running stack, on 127.0.0.1 with basic auth"
    )
    keys = commands.add_parser("keys", help="manage API keys (needs IMGBATCH_MONGODB_URL)")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    key_commands.add_parser("create", help="create a key and print it once").add_argument(
        "--name", required=True
    )
    key_commands.add_parser("list", help="list keys (never the keys themselves)")
    key_commands.add_parser("revoke", help="revoke a key by id").add_argument("key_id")
    storage = commands.add_parser("storage", help="object storage (IMGBATCH_STORAGE=s3)")
    storage_commands = storage.add_subparsers(dest="storage_command", required=True)
    storage_commands.add_parser(
        "create-bucket",
        help="create IMGBATCH_S3_BUCKET if missing (AWS credentials allowed to create it)",
    )
    remote.add_commands(commands)
    args = parser.parse_args(argv)
    configure_logging(get_settings().log_level, get_settings().log_format)
    if args.command in remote.HANDLED:
        return remote.run(args, get_settings())
    handlers = {"run": _run, "demo": _demo, "flower": _flower, "keys": _keys, "storage": _storage}
    try:
        return handlers[args.command](args)
    except EmbeddedServerMissing as missing:  # a server-only install: say what to set instead
        print(missing, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
