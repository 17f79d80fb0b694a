"""Text that came from a client and is shown to people later."""

from __future__ import annotations

import re

# C0 (NUL to US), DEL and C1 (0x80 to 0x9F): escape sequences, carriage returns and the like
# rewrite a terminal or a log line when printed; none belongs in a file name.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def strip_control_characters(text: str) -> str:
    return _CONTROL.sub("", text)
