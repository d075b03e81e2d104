"""One line of a library's exception, fit to end one of our error messages."""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def reason(error: BaseException) -> str:
    """The line of ``error``'s message that says what was wrong: PyTorch's safe loader's
    ``WeightsUnpickler error`` line where there is one (its first line only offers ways to load
    the file unsafely), else the first line; the exception's type name for an empty message."""
    lines = [line.strip() for line in _ANSI.sub("", str(error)).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("WeightsUnpickler error"):
            return line
    return lines[0] if lines else type(error).__name__
