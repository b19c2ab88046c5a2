"""Results in input order (``join = true``): ``<stem>.results.jsonl``, one line per input line.

Output and error files come back in the server's order. The join keeps memory bounded
whatever the size: an index ``custom_id -> (file, offset, length)`` in a temporary SQLite file
(never a dict of the whole output), then one pass over the input reading each answer with
``pread``. A 100 MB input with 50,000 lines stays well under 100 MB RSS (bench/roundtrip.py).

Each results line::

    {"custom_id": "...", "line": 7, "status": "succeeded" | "failed" | "missing",
     "response": <the output line's response, or null>, "error": <the error, or null>}

`line` counts input lines from 1 (blank lines count, and are skipped). An input line with
no `custom_id` (or not JSON) gets ``"custom_id": null`` and status missing. When a custom_id
appears more than once in an answer file, the first answer wins.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..api import Cancelled
from .answers import ERRORS, OUTPUT, error_of, response_of

_BATCH = 2000


@dataclass
class Counts:
    succeeded: int = 0
    failed: int = 0
    missing: int | None = 0

    def to_json(self) -> dict[str, int | None]:
        return {"succeeded": self.succeeded, "failed": self.failed, "missing": self.missing}


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(raw)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def answer_failed(obj: dict[str, Any] | None, kind: int) -> bool:
    """An error-file line is a failure; an output line is one when it carries an error or an
    HTTP status of 400 or more (`response.status_code`)."""
    if kind == ERRORS or obj is None:
        return True
    if obj.get("error"):
        return True
    resp = obj.get("response")
    code = resp.get("status_code") if isinstance(resp, dict) else None
    return isinstance(code, int) and code >= 400


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(offset, line without its newline) of every non-blank line."""
    with open(path, "rb") as f:
        offset = 0
        for raw in f:
            n = len(raw)
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield offset, line
            offset += n


def count_answers(path: Path | None, kind: int, cancel: threading.Event | None = None) -> Counts:
    """Succeeded and failed lines of one answer file (no join)."""
    c = Counts()
    if path is None:
        return c
    for i, (_, line) in enumerate(_lines(path)):
        if cancel is not None and i % 4096 == 0 and cancel.is_set():
            raise Cancelled("cancelled")
        if answer_failed(_parse(line), kind):
            c.failed += 1
        else:
            c.succeeded += 1
    return c


def _open_index(work_dir: Path) -> tuple[sqlite3.Connection, str]:
    """An empty ``custom_id -> (kind, off, len)`` index in a temporary SQLite file in `work_dir`,
    tuned for one writer and bounded memory."""
    fd_index, index_path = tempfile.mkstemp(prefix=".inboxd-join-", suffix=".sqlite3", dir=work_dir)
    os.close(fd_index)
    db = sqlite3.connect(index_path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=OFF")
        db.execute("PRAGMA synchronous=OFF")
        db.execute("PRAGMA cache_size=-4096")  # 4 MiB of page cache, whatever the file size
        db.execute("PRAGMA temp_store=FILE")
        db.execute("CREATE TABLE idx (custom_id TEXT PRIMARY KEY, kind INTEGER, off INTEGER, len INTEGER) "
                   "WITHOUT ROWID")
    except BaseException:
        _drop_index(db, index_path)
        raise
    return db, index_path


def _drop_index(db: sqlite3.Connection, index_path: str) -> None:
    db.close()
    for suffix in ("", "-journal", "-wal", "-shm"):
        try:
            os.unlink(index_path + suffix)
        except FileNotFoundError:
            pass


def _index_answers(db: sqlite3.Connection, path: Path, kind: int, cancel: threading.Event | None) -> None:
    """Add the offset and length of every answer line of `path` (one with a custom_id) to the
    index; an id already there keeps its first answer."""
    rows: list[tuple[str, int, int, int]] = []
    db.execute("BEGIN")
    for i, (off, line) in enumerate(_lines(path)):
        if cancel is not None and i % 4096 == 0 and cancel.is_set():
            raise Cancelled("cancelled")
        obj = _parse(line)
        cid = obj.get("custom_id") if obj is not None else None
        if cid is None:
            continue
        rows.append((str(cid), kind, off, len(line)))
        if len(rows) >= _BATCH:
            db.executemany("INSERT OR IGNORE INTO idx VALUES (?,?,?,?)", rows)
            rows.clear()
    db.executemany("INSERT OR IGNORE INTO idx VALUES (?,?,?,?)", rows)
    db.execute("COMMIT")


def _result_entry(db: sqlite3.Connection, fds: dict[int, int], raw: bytes, n: int, counts: Counts) -> dict[str, Any]:
    """The results line of input line `n` (`raw`), its answer read back with ``pread``; `counts`
    gains its status."""
    req = _parse(raw)
    cid = req.get("custom_id") if req is not None else None
    hit = db.execute("SELECT kind, off, len FROM idx WHERE custom_id = ?", (str(cid),)).fetchone() \
        if cid is not None else None
    entry: dict[str, Any] = {"custom_id": cid, "line": n}
    if hit is None:
        counts.missing = (counts.missing or 0) + 1
        entry.update(status="missing", response=None, error=None)
        return entry
    kind, off, length = hit
    obj = _parse(os.pread(fds[kind], length, off))
    failed = answer_failed(obj, kind)
    if failed:
        counts.failed += 1
    else:
        counts.succeeded += 1
    entry.update(status="failed" if failed else "succeeded",
                 response=response_of(obj) if (obj is not None and kind == OUTPUT) else None,
                 error=error_of(obj, kind) if failed else None)
    return entry


def _write_results(db: sqlite3.Connection, fds: dict[int, int], input_path: Path, dest: Path,
                   cancel: threading.Event | None) -> Counts:
    """One pass over the input: `dest` gets one results line per non-blank input line, fsynced."""
    counts = Counts()
    out_fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(out_fd, "wb", buffering=1 << 20) as out, open(input_path, "rb") as src:
        for n, raw in enumerate(src, start=1):
            if cancel is not None and n % 4096 == 0 and cancel.is_set():
                raise Cancelled("cancelled")
            if not raw.strip():
                continue
            entry = _result_entry(db, fds, raw, n, counts)
            out.write(json.dumps(entry, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n")
        out.flush()
        os.fsync(out.fileno())
    return counts


def join_results(input_path: Path, answers: dict[int, Path | None], dest: Path, *, work_dir: Path,
                 cancel: threading.Event | None = None) -> Counts:
    """Write `dest` (one line per non-blank input line, in input order) and return the counts
    by input request. `answers`: {OUTPUT: path or None, ERRORS: path or None}. `dest` is
    written in place (the caller gives a temporary name) and fsynced."""
    db, index_path = _open_index(work_dir)
    fds: dict[int, int] = {}
    try:
        for kind in (OUTPUT, ERRORS):  # output first: its answer wins over an error line
            path = answers.get(kind)
            if path is None:
                continue
            fds[kind] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            _index_answers(db, path, kind, cancel)
        return _write_results(db, fds, input_path, dest, cancel)
    finally:
        for fd in fds.values():
            os.close(fd)
        _drop_index(db, index_path)
