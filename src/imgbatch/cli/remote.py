"""The client commands of ``imgbatch``: ``submit``, ``status``, ``watch`` and ``download``.

They talk to a running server through :class:`cli.client.ImgbatchClient` (HTTP only). The
server and key come from ``--server``/``--api-key``, else ``IMGBATCH_SERVER_URL`` and
``IMGBATCH_API_KEY`` (read by ``core.settings``, like every other setting).

Exit codes: 0 when every image is done (or ``--allow-failures``), 1 when images failed, the
request did not complete, or the server refused the call, 2 when the sheet has invalid rows.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import httpx
from rich.console import Console
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
from imgbatch.core.settings import Settings

EXIT_OK, EXIT_FAILED, EXIT_INVALID_SHEET = 0, 1, 2


class _RateColumn(ProgressColumn):
    """Images per second, from rich's own speed estimate over recent updates."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-- images/s" if speed is None else f"{speed:.1f} images/s", style="cyan")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def client_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument("--server", help="API base URL (default: IMGBATCH_SERVER_URL)")
        parser.add_argument("--api-key", help="API key (default: IMGBATCH_API_KEY)")
        return parser

    submit = client_parser("submit", "upload a CSV; with --wait, follow it and save the result")
    submit.add_argument("file", type=Path)
    submit.add_argument("--profile", help="output profile (default: the server's default)")
    submit.add_argument("--webhook-url", help="notified when the request finishes")
    submit.add_argument("--wait", action="store_true", help="show progress, then save the CSV")
    submit.add_argument("--out", type=Path, help="where --wait saves the result CSV")
    submit.add_argument(
        "--allow-failures", action="store_true", help="exit 0 even if some images failed"
    )
    status = client_parser("status", "a request's summary")
    status.add_argument("request_id")
    watch = client_parser("watch", "a request's progress bar, until it finishes")
    watch.add_argument("request_id")
    watch.add_argument(
        "--allow-failures", action="store_true", help="exit 0 even if some images failed"
    )
    download = client_parser("download", "save a completed request's result CSV")
    download.add_argument("request_id")
    download.add_argument("--only-failed", action="store_true", help="only rows that failed")
    download.add_argument("--out", type=Path, help="file to write (default: next to you)")


HANDLED = ("submit", "status", "watch", "download")


def run(args: argparse.Namespace, settings: Settings) -> int:
    # The commands print their own lines; httpx's per-request log would scroll the bar away.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    console = Console(highlight=False)
    server = args.server or settings.server_url or f"http://{settings.host}:{settings.port}"
    key = args.api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    handlers = {"submit": _submit, "status": _status, "watch": _watch, "download": _download}
    try:
        with ImgbatchClient(server, key) as client:
            return handlers[args.command](client, args, console)
    except RowErrors as errors:
        console.print(_row_table(errors))
        return EXIT_INVALID_SHEET
    except ApiError as error:
        console.print(f"[red]error[/red] {error}")
        return EXIT_FAILED
    except httpx.HTTPError as error:
        console.print(f"[red]error[/red] cannot reach {server}: {error}")
        return EXIT_FAILED


def _submit(client: ImgbatchClient, args: argparse.Namespace, console: Console) -> int:
    accepted = client.upload(args.file, profile=args.profile, webhook_url=args.webhook_url)
    request_id = accepted["request_id"]
    console.print(
        f"request [bold]{request_id}[/bold]: {accepted['products']} products, "
        f"{accepted['images']} images"
    )
    if not args.wait:
        console.print(f"status: {accepted['status_url']}")
        return EXIT_OK
    final = _follow(client, request_id, console)
    if final.status != "completed":
        console.print(f"[red]request {final.status}[/red]")
        return EXIT_FAILED
    out = args.out or Path(f"imgbatch-{request_id}.csv")
    client.download(request_id, out)
    console.print(f"result CSV: {out}")
    return _outcome(final, args.allow_failures)


def _watch(client: ImgbatchClient, args: argparse.Namespace, console: Console) -> int:
    final = _follow(client, args.request_id, console)
    if final.status != "completed":
        console.print(f"[red]request {final.status}[/red]")
        return EXIT_FAILED
    return _outcome(final, args.allow_failures)


def _status(client: ImgbatchClient, args: argparse.Namespace, console: Console) -> int:
    body = client.status(args.request_id, limit=1)
    table = Table(show_header=False, box=None)
    table.add_row("request", body["request_id"])
    if body.get("file_name"):
        table.add_row("file", body["file_name"])
    table.add_row("status", body["status"])
    table.add_row("progress", f"{body['progress']} %")
    table.add_row("products", f"{body['products_done']} of {body['products_total']} finished")
    table.add_row(
        "images",
        f"{body['images_done']} done, {body['images_failed']} failed, "
        f"{body['images_total']} in all",
    )
    table.add_row("created", body["created_at"])
    if body.get("completed_at"):
        table.add_row("finished", body["completed_at"])
    if body.get("failure_reason"):
        table.add_row("reason", body["failure_reason"])
    console.print(table)
    return EXIT_OK


def _download(client: ImgbatchClient, args: argparse.Namespace, console: Console) -> int:
    suffix = "-failed" if args.only_failed else ""
    out = args.out or Path(f"imgbatch-{args.request_id}{suffix}.csv")
    size = client.download(args.request_id, out, only_failed=args.only_failed)
    console.print(f"wrote {out} ({size:,} bytes)")
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
                description=progress.status,
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
    table = Table(title=str(errors.detail.get("message", "the sheet has invalid rows")))
    table.add_column("line", justify="right")
    table.add_column("column")
    table.add_column("reason")
    for row in errors.rows:
        table.add_row(str(row.get("line", "")), str(row.get("column") or ""), str(row["reason"]))
    if errors.omitted:
        table.caption = f"and {errors.omitted} more"
    return table
