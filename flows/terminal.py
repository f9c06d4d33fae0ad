"""What the `cas` command prints: every line goes through `printable`, tables through `table`.

Class names, model names, run ids and error messages come from users' files and stores; a control
character in one (a class folder named with a terminal escape sequence) would otherwise act on the
terminal: retitle it, move the cursor, hide text. `printable` writes each one as a visible escape.
"""

from __future__ import annotations

import re
import sys
from typing import IO

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1 (U+009B is CSI on some terminals)
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def printable(text: str, newlines: bool = True) -> str:
    """`text` with each control character as its Python escape (ESC as \\x1b, a tab as \\t); line breaks kept
    when `newlines`. Escaped text is printable, so escaping twice changes nothing."""
    pattern = _CONTROL_BUT_NEWLINE if newlines else _CONTROL
    return pattern.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


def say(text: str = "", file: IO[str] | None = None) -> None:
    """Print one message (lines of it) to stdout, or `file`, escaped."""
    print(printable(text), file=file or sys.stdout)


def problem(text: str) -> None:
    """One line on stderr: `cas: <text>`."""
    print(printable(f"cas: {text}"), file=sys.stderr, flush=True)


def table(rows: list[dict[str, str]]) -> str:
    """Rows of cells (column -> text) as aligned plain text; percentages aligned right. Cells are escaped
    (line breaks too) before their widths are measured."""
    if not rows:
        return ""
    keys = list(rows[0])
    headers = [printable(k, newlines=False) for k in keys]
    cells = [[printable(r[k], newlines=False) for k in keys] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    align = lambda c, w: c.rjust(w) if c.endswith("%") else c.ljust(w)  # noqa: E731
    line = lambda cs: "  ".join(align(c, w) for c, w in zip(cs, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])
