"""What the client commands put on a terminal from the server or a sheet: plain text, never
rich markup and never raw control characters.

A reason quoting a sheet cell (``got '[/x]'``) or a stored file name is someone else's text: as
markup it could crash rich (``MarkupError``) or become a hyperlink, and an ESC in it would be
obeyed by the terminal (colours, cursor moves, a changed window title).
"""

from __future__ import annotations

import re
from typing import Any

from rich.text import Text

# C0 controls (tab and newline included: every value is shown on one line), DEL and C1.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean(value: Any) -> str:
    """``value`` as a string whose control characters are shown, escaped, as ``\\x1b``."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", str(value))


def plain(value: Any, style: str = "") -> Text:
    """``value`` as rich text that is printed literally: brackets stay brackets."""
    return Text(clean(value), style=style)
