"""Source lines as Python's tokenizer counts them.

`str.splitlines()` also breaks at form feed, \\x1c-\\x1e, U+0085, U+2028 and U+2029, which Python
reads as ordinary characters (inside a string, for instance): line numbers from `ast` then point
at the wrong text, and a statement cut by them no longer parses.
"""

from __future__ import annotations

import re

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def source_lines(text: str) -> list[str]:
    """`text` split at \\n, \\r\\n and \\r only; like splitlines(), no empty last item."""
    lines = _LINE_BREAK.split(text)
    if lines and lines[-1] == "":
        lines.pop()
    return lines
