"""The client commands of ``imgbatch``: ``submit``, ``list``, ``status``, ``watch``,
``download``, ``results``, ``retry``, ``cancel`` and ``delete``.

They talk to a running server through :class:`cli.client.ImgbatchClient` (HTTP only). The
server and key come from ``--server``/``--api-key``, else ``IMGBATCH_SERVER_URL`` and
``IMGBATCH_API_KEY`` (read by ``core.settings``, like every other setting).

Exit codes: 0 when every image is done (or ``--allow-failures``), 1 when images failed, the
request did not complete, or the server refused the call, 2 when the sheet has invalid rows.
With ``--json`` every command prints JSON on standard output instead of text, errors included
(``{"error": {"status_code": ..., "detail": ...}}``). Text from the server or a sheet is
printed as text (:mod:`cli.display`), never as markup.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from imgbatch.cli.client import ApiError, ImgbatchClient, RowErrors
from imgbatch.cli.client import Progress as RequestProgress
from imgbatch.cli.display import clean, plain
from imgbatch.core.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_INVALID_SHEET = 0, 1, 2


class _RateColumn(ProgressColumn):
    """Images per second, from rich's own speed estimate over recent updates."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- images/s" if speed is None else f"{speed:.1f} images/s", style="cyan")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def client_parser(
        name: str, help_text: str, *, request: bool = True
    ) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("--server", help="API base URL (default: IMGBATCH_SERVER_URL)")
        parser.add_argument("--api-key", help="API key (default: IMGBATCH_API_KEY)")
        parser.add_argument(
            "--json", action="store_true", help="print the answer as JSON, for scripts"
        )
        if request:
            parser.add_argument("request_id")
        return parser

    submit = client_parser(
        "submit", "upload a CSV; with --wait, follow it and save the result", request=False
    )
    submit.add_argument("file", type=Path)
    submit.add_argument("--profile", help="output profile (default: the server's default)")
    submit.add_argument("--webhook-url", help="notified when the request finishes")
    submit.add_argument("--wait", action="store_true", help="show progress, then save the CSV")
    submit.add_argument("--out", type=Path, help="where --wait saves the result CSV")
    submit.add_argument(
        "--allow-failures", action="store_true", help="exit 0 even if some images failed"
    )
    listing = client_parser("list", "your requests, newest first", request=False)
    listing.add_argument("--status", help="only requests in this status (e.g. in_progress)")
    listing.add_argument("--limit", type=int, default=20, help="how many (1-100, default 20)")
    listing.add_argument("--offset", type=int, default=0, help="skip this many first")
    client_parser("status", "a request's summary")
    watch = client_parser("watch", "a request's progress bar, until it finishes")
    watch.add_argument(
        "--allow-failures", action="store_true", help="exit 0 even if some images failed"
    )
    download = client_parser("download", "save a completed request's result CSV")
    download.add_argument("--only-failed", action="store_true", help="only rows that failed")
    download.add_argument("--out", type=Path, help="file to write (default: next to you)")
    results = client_parser("results", "every image record as JSON Lines (to stdout or --out)")
    results.add_argument("--out", type=Path, help="file to write (default: standard output)")
    client_parser("retry", "process a completed request's failed images again")
    client_parser("cancel", "cancel a pending or running request")
    client_parser("delete", "delete a request, its results and the outputs only it holds")


HANDLED = ("submit", "list", "status", "watch", "download", "results", "retry", "cancel", "delete")


def run(args: argparse.Namespace, settings: Settings) -> int:
    # The commands print their own lines; httpx's per-request log would scroll the bar away.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    console = Console(highlight=False)
    server = args.server or settings.server_url or f"http://{settings.host}:{settings.port}"
    key = args.api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    handlers = {
        "submit": _submit,
        "list": _list,
        "status": _status,
        "watch": _watch,
        "download": _download,
        "results": _results,
        "retry": _control,
        "cancel": _control,
        "delete": _delete,
    }
    try:
        with ImgbatchClient(server, key) as client:
            return handlers[args.command](client, args, console)
    except RowErrors as errors:
        if args.json:
            _emit({"error": {"status_code": errors.status_code, "detail": errors.detail}})
        else:
            console.print(_row_table(errors))
        return EXIT_INVALID_SHEET
    except ApiError as error:
        if args.json:
            _emit({"error": {"status_code": error.status_code, "detail": error.detail}})
        else:
            console.print(Text.assemble(("error", "red"), " ", plain(error)))
        return EXIT_FAILED
    except httpx.HTTPError as error:
        if args.json:
            _emit({"error": {"status_code": None, "detail": f"cannot reach {server}: {error}"}})
        else:
            console.print(
                Text.assemble(("error", "red"), " ", plain(f"cannot reach {server}: {error}"))
            )
        return EXIT_FAILED


def _emit(data: Any) -> None:
    """One JSON document on its own line of standard output: what ``--json`` promises."""
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _submit(client: ImgbatchClient, args: argparse.Namespace, console: Console) -> int:
    accepted = client.upload(args.file, profile=args.profile, webhook_url=args.webhook_url)
    request_id = accepted["request_id"]
    if not args.wait:
        if args.json:
            _emit(accepted)
        else:
            console.print(_accepted_line(accepted))
            console.print(plain(f"status: {accepted['status_url']}"))
        return EXIT_OK
    if args.json:  # no bar: one JSON document once the request is final
        final = _last(client.watch(request_id))
    else:
        console.print(_accepted_line(accepted))
        final = _follow(client, request_id, console)
    if final.status != "completed":
        if args.json:
            _emit({**accepted, "status": final.status, **_counts(final)})
        else:
            console.print(plain(f"request {final.status}", "red"))
        return EXIT_FAILED
    out = args.out or Path(f"imgbatch-{request_id}.csv")
    client.download(request_id, out)
    if args.json:
        _emit({**accepted, "status": final.status, **_counts(final), "result_csv": str(out)})
    else:
        console.print(f"result CSV: {out}", markup=False)
    return _outcome(final, args.allow_failures)


def _accepted_line(accepted: dict[str, Any]) -> Text:
    return Text.assemble(
        "request ",
        plain(accepted["request_id"], "bold"),
        plain(f": {accepted['products']} products, {accepted['images']} images"),
    )


def _counts(progress: RequestProgress) -> dict[str, int]:
    return {
        "images_done": progress.images_done,
        "images_failed": progress.images_failed,
        "images_total": progress.images_total,
    }


def _last(updates: Iterator[RequestProgress]) -> RequestProgress:
    last: RequestProgress | None = None
    for last in updates:  # noqa: B007 - the loop is the wait; the last update is the answer
        pass
    assert last is not None, "watch yields until a final state"
    return last


def _watch(client: ImgbatchClient, args: argparse.Namespace, console: Console) -> int:
    if args.json:  # one JSON line per update, for a script to follow
        final: RequestProgress | None = None
        for final in client.watch(args.request_id):
            _emit({"request_id": args.request_id, "status": final.status, **_counts(final)})
        assert final is not None, "watch yields until a final state"
    else:
        final = _follow(client, args.request_id, console)
    if final.status != "completed":
        if not args.json:
            console.print(plain(f"request {final.status}", "red"))
        return EXIT_FAILED
    return _outcome(final, args.allow_failures)


def _list(client: ImgbatchClient, args: argparse.Namespace, console: Console) -> int:
    body = client.requests(limit=args.limit, offset=args.offset, status=args.status)
    if args.json:
        _emit(body)
        return EXIT_OK
    if not body["requests"]:
        console.print("no requests", markup=False)
        return EXIT_OK
    table = Table(box=None)
    # The id is what a person copies into the next command: never cut short.
    table.add_column("request", no_wrap=True, min_width=32)
    table.add_column("status", no_wrap=True)
    table.add_column("progress", justify="right", no_wrap=True)
    table.add_column("images", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("file", overflow="fold")
    for item in body["requests"]:
        table.add_row(
            plain(item["request_id"]),
            plain(item["status"]),
            plain(f"{item['progress']} %"),
            plain(
                f"{item['images_done']} done, {item['images_failed']} failed, "
                f"{item['images_total']} in all"
            ),
            plain(_minute(item["created_at"])),
            plain(item.get("file_name") or ""),
        )
    console.print(table)
    if body.get("has_more"):
        console.print(f"more: --offset {args.offset + args.limit}", markup=False)
    return EXIT_OK


def _minute(timestamp: str) -> str:
    """An ISO timestamp to the minute, in UTC: enough to tell requests apart."""
    return datetime.fromisoformat(timestamp).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _status(client: ImgbatchClient, args: argparse.Namespace, console: Console) -> int:
    body = client.status(args.request_id, limit=1)
    if args.json:
        body.pop("products", None)  # one product of a page says nothing about the request
        _emit(body)
        return EXIT_OK
    rows = [
        ("request", body["request_id"]),
        ("file", body.get("file_name")),
        ("status", body["status"]),
        ("progress", f"{body['progress']} %"),
        ("products", f"{body['products_done']} of {body['products_total']} finished"),
        (
            "images",
            f"{body['images_done']} done, {body['images_failed']} failed, "
            f"{body['images_total']} in all",
        ),
        ("created", body["created_at"]),
        ("finished", body.get("completed_at")),
        ("reason", body.get("failure_reason")),
    ]
    table = Table(show_header=False, box=None)
    for name, value in rows:
        if value:
            table.add_row(name, plain(value))
    console.print(table)
    return EXIT_OK


def _download(client: ImgbatchClient, args: argparse.Namespace, console: Console) -> int:
    suffix = "-failed" if args.only_failed else ""
    out = args.out or Path(f"imgbatch-{args.request_id}{suffix}.csv")
    size = client.download(args.request_id, out, only_failed=args.only_failed)
    if args.json:
        _emit({"request_id": args.request_id, "path": str(out), "bytes": size})
    else:
        console.print(plain(f"wrote {out} ({size:,} bytes)"))
    return EXIT_OK


def _results(client: ImgbatchClient, args: argparse.Namespace, console: Console) -> int:
    if args.out is None:  # the records themselves are the output, JSON Lines either way
        client.results(args.request_id)
        return EXIT_OK
    size = client.results(args.request_id, args.out)
    with args.out.open("rb") as written:
        records = sum(1 for _ in written)
    if args.json:
        _emit(
            {
                "request_id": args.request_id,
                "path": str(args.out),
                "records": records,
                "bytes": size,
            }
        )
    else:
        console.print(plain(f"wrote {args.out} ({records:,} image records, {size:,} bytes)"))
    return EXIT_OK


def _control(client: ImgbatchClient, args: argparse.Namespace, console: Console) -> int:
    """``retry`` or ``cancel``: both answer with the request's new status."""
    retry = args.command == "retry"
    body = (client.retry if retry else client.cancel)(args.request_id)
    if args.json:
        _emit(body)
    elif retry:
        console.print(
            plain(
                f"request {body['request_id']}: {body['products_requeued']} products queued "
                f"again ({body['status']})"
            )
        )
    else:
        console.print(plain(f"request {body['request_id']}: {body['status']}"))
    return EXIT_OK


def _delete(client: ImgbatchClient, args: argparse.Namespace, console: Console) -> int:
    client.delete(args.request_id)
    if args.json:
        _emit({"request_id": args.request_id, "deleted": True})
    else:
        console.print(plain(f"deleted request {args.request_id}"))
    return EXIT_OK


def _follow(client: ImgbatchClient, request_id: str, console: Console) -> RequestProgress:
    """The progress bar, fed by the event stream (or polling), until a final state."""
    columns = (
        TextColumn("{task.description:<11}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn(
            "{task.fields[done]} done · [red]{task.fields[failed]} failed[/red] · "
            "{task.fields[images]} images"
        ),
        _RateColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    last: RequestProgress | None = None
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("pending", total=None, done=0, failed=0, images=0)
        for progress in client.watch(request_id):
            last = progress
            bar.update(
                task,
                description=escape(clean(progress.status)),
                total=progress.images_total,
                completed=progress.finished,
                done=progress.images_done,
                failed=progress.images_failed,
                images=progress.images_total,
            )
    assert last is not None, "watch yields until a final state"
    return last


def _outcome(final: RequestProgress, allow_failures: bool) -> int:
    if final.images_failed and not allow_failures:
        return EXIT_FAILED
    return EXIT_OK


def _row_table(errors: RowErrors) -> Table:
    table = Table(title=plain(errors.detail.get("message", "the sheet has invalid rows")))
    table.add_column("line", justify="right")
    table.add_column("column")
    table.add_column("reason")
    for row in errors.rows:
        table.add_row(
            plain(row.get("line", "")), plain(row.get("column") or ""), plain(row["reason"])
        )
    if errors.omitted:
        table.caption = f"and {errors.omitted} more"
    return table
