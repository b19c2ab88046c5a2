"""Output shared by the commands: JSON on stdout, lines on stdout (`out`) and stderr (`err`), a
check's issues, the live status line and the progress bar (both on stderr, terminals only).

Every human-readable line goes through `inboxd.log.escape` as a whole, the escaping the
console log renderer uses: names and messages come from producers and servers, so one line
stays one line (a newline in a name is shown as ``\\n``) and no escape sequence reaches the
terminal. JSON output is escaped by JSON itself."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..log import escape

if TYPE_CHECKING:
    from ..check import CheckIssue


def print_json(data: Any, *, indent: int | None = 2) -> None:
    print(json.dumps(data, indent=indent))


def error_json(kind: str, message: str, *, indent: int | None = 2, **fields: Any) -> None:
    """``{"error": {"kind", "message", ...}}``: what --json prints when the work failed."""
    print_json({"error": {"kind": kind, "message": message, **fields}}, indent=indent)


def out(line: str = "") -> None:
    """One line on stdout, escaped (a name cannot start a line of its own)."""
    print(escape(line))


def err(line: str) -> None:
    """One line on stderr, escaped."""
    print(escape(line), file=sys.stderr)


def issue_lines(path: Path | str, issues: Iterable[CheckIssue]) -> list[str]:
    """``FILE:LINE: rule: message`` per issue (``FILE: rule: message`` for the whole file)."""
    return [f"{path}:{i.line}: {i.rule}: {i.message}" if i.line is not None else f"{path}: {i.rule}: {i.message}"
            for i in issues]


def elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class StatusLine:
    """`batch-… IN_PROGRESS  42.0%  1m05s` on stderr, rewritten in place (terminals only)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.width = 0

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        text = escape(text)
        pad = max(0, self.width - len(text))
        sys.stderr.write("\r" + text + " " * pad)
        sys.stderr.flush()
        self.width = len(text)

    def done(self) -> None:
        if self.enabled and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()


class ProgressBar:
    """tqdm over the bytes sent; retried bytes never push it past the total."""

    def __init__(self, name: str, total: int) -> None:
        from tqdm import tqdm

        self.total = total
        self.sent = 0
        self.tqdm = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=escape(name), file=sys.stderr,
                         dynamic_ncols=True)

    def advance(self, n: int) -> None:
        n = min(n, self.total - self.sent)
        if n > 0:
            self.sent += n
            self.tqdm.update(n)

    def close(self) -> None:
        self.tqdm.close()
