"""`imgbatch --help` and every sub-command's help read as plain text in a terminal: argparse
prints descriptions as written, so markup (``rst``, `markdown`, :roles:) would show literally."""

from __future__ import annotations

import re

import pytest

from imgbatch.cli.main import main

_MARKUP = re.compile(r"`|\*\*|:(class|func|mod|meth):")


def _help(capsys: pytest.CaptureFixture[str], *words: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*words, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def _subcommands(text: str) -> list[str]:
    """The {a,b,c} choices argparse lists under "positional arguments"."""
    found = re.search(r"^positional arguments:\n\s+\{([\w,-]+)\}", text, re.M)
    return found.group(1).split(",") if found else []


def test_every_command_and_sub_command_has_plain_text_help(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pending: list[tuple[str, ...]] = [()]
    seen: dict[tuple[str, ...], str] = {}
    while pending:
        words = pending.pop()
        text = _help(capsys, *words)
        seen[words] = text
        assert text.startswith("usage: imgbatch"), words
        assert not _MARKUP.search(text), f"imgbatch {' '.join(words)} --help shows markup:\n{text}"
        pending += [(*words, name) for name in _subcommands(text)]
    # The walk reached the commands people read about, and the nested ones.
    assert {
        ("demo",),
        ("run",),
        ("submit",),
        ("keys", "create"),
        ("storage", "create-bucket"),
    } <= set(seen)
    top = seen[()]
    assert "bulk image processing driven by CSV" in top
    for name in _subcommands(top):
        # Each command has a one-line summary in the top-level list.
        assert re.search(rf"^    {re.escape(name)}\s+\S", top, re.M), name
