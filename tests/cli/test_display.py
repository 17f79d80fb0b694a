"""What the client commands print for text they did not write: whatever a server sends (an
older one, or a hostile one) is shown literally, never obeyed by rich or by the terminal."""

from __future__ import annotations

import io

from rich.console import Console

from imgbatch.cli.display import clean, plain


def _rendered(*parts: str) -> str:
    """The bytes rich writes to a colour terminal for these parts."""
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="truecolor", width=200)
    for part in parts:
        console.print(plain(part))
    return out.getvalue()


def test_control_characters_are_shown_escaped() -> None:
    assert clean("a\x1b[31mb\x07c\x9b2J\td\ne\x7f") == "a\\x1b[31mb\\x07c\\x9b2J\\x09d\\x0ae\\x7f"
    assert clean("café · 日本 [x]") == "café · 日本 [x]"  # printable text is left alone


def test_markup_and_escape_sequences_reach_the_terminal_as_text() -> None:
    written = _rendered(
        "got '[/x]'", "[link=https://evil.example/]y[/link]", "name\x1b]0;pwned\x07\x1b[2J"
    )
    assert "got '[/x]'" in written
    assert "[link=https://evil.example/]y[/link]" in written
    assert "\x1b]8;" not in written  # no hyperlink
    assert "\x1b]0;" not in written and "\x1b[2J" not in written  # no title, no clearing
    assert "name\\x1b]0;pwned\\x07\\x1b[2J" in written
