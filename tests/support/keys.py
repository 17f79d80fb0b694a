"""API keys made the way an operator makes them (the real ``imgbatch keys`` command), and HTTP
clients that send them."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx

from imgbatch.cli.stack import Stack


def cli(stack: Stack, *args: str, env: dict[str, str] | None = None) -> str:
    """``imgbatch ARGS`` on the stack's services (``env`` on top: another database, say)."""
    result = subprocess.run(
        [sys.executable, "-m", "imgbatch", *args],
        env={**stack.env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout


def new_key(stack: Stack, name: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    """(key id, key) of a new key."""
    out = cli(stack, "keys", "create", "--name", name, env=env)
    key = re.search(r"^(ibk_\S+)$", out, re.MULTILINE)
    key_id = re.search(r"created (key_\w+)", out)
    assert key and key_id, out
    return key_id.group(1), key.group(1)


def client(url: str, key: str | None = None, header: str = "bearer") -> httpx.Client:
    headers = {}
    if key and header == "bearer":
        headers["Authorization"] = f"Bearer {key}"
    elif key:
        headers["X-API-Key"] = key
    return httpx.Client(base_url=url, headers=headers, timeout=30)
