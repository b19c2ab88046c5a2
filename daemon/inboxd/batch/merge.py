"""One set of outbox files per input, whatever the number of jobs (SPEC §10): final answers only.

A request's final answer is the one from the latest round that answered it (a request resent
in round 2 never shows its round-1 error). Memory stays bounded whatever the input size: an
on-disk index ``custom_id -> (job, file, offset, length, failed, code)`` in a temporary SQLite
file (as `join.py`; 4 MiB of page cache), built from the jobs' answer files latest round first, then:

- ``output``/``errors``: the chosen lines copied from each job's files, job by job in the
  server's order within a job (read back with ``pread``); `usage` summed from the responses;
- ``results`` (join): one pass over the input, one line per non-blank input line, in input
  order: ``{"custom_id", "line", "status", "response", "error", "batch_id", "round"}``;
- the counts by request (succeeded, failed, missing) and the failures by HTTP status.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ..api import Cancelled
from .answers import ERRORS, OUTPUT, custom_id_of, error_of, parse, read_answer, response_of
from .join import Counts
from .split import lines

_BATCH = 4000
CACHE_KIB = 4 * 1024  # the index's page cache: the bound on its memory (a bigger one was no faster)
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


@dataclass(frozen=True)
class JobFiles:
    """A finished job's answers on local disk."""

    batch_id: str | None
    round: int
    output: Path | None
    errors: Path | None


@dataclass
class Merged:
    counts: Counts
    errors_by_code: dict[str, int] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=lambda: dict.fromkeys(USAGE_KEYS, 0))


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class _Body(msgspec.Struct):
    usage: _Usage | None = None


class _Response(msgspec.Struct):
    body: _Body | None = None


class _OutputLine(msgspec.Struct):
    response: _Response | None = None


_USAGE = msgspec.json.Decoder(_OutputLine)


def _check(cancel: threading.Event | None, i: int) -> None:
    if cancel is not None and i % 4096 == 0 and cancel.is_set():
        raise Cancelled("cancelled while merging the answers")


class _Index:
    """The temporary on-disk index of final answers."""

    def __init__(self, work_dir: Path) -> None:
        fd, self.path = tempfile.mkstemp(prefix=".inboxd-merge-", suffix=".sqlite3", dir=work_dir)
        os.close(fd)
        self.db = sqlite3.connect(self.path, isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{CACHE_KIB}", "temp_store=FILE"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.execute("CREATE TABLE idx (custom_id TEXT PRIMARY KEY, job INTEGER, kind INTEGER, off INTEGER, "
                        "len INTEGER, failed INTEGER, code INTEGER) WITHOUT ROWID")

    def add(self, job: int, kind: int, path: Path, cancel: threading.Event | None) -> None:
        """Every answer of `path` whose custom_id has none yet (a later round was added first)."""
        rows: list[tuple[Any, ...]] = []
        self.db.execute("BEGIN")
        for i, (off, raw) in enumerate(lines(path)):
            _check(cancel, i)
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                continue
            cid, v = read_answer(line, kind)
            if cid is None:
                continue
            rows.append((cid, job, kind, off, len(line), int(v.failed), v.code))
            if len(rows) >= _BATCH:
                self.db.executemany("INSERT OR IGNORE INTO idx VALUES (?,?,?,?,?,?,?)", rows)
                rows.clear()
        self.db.executemany("INSERT OR IGNORE INTO idx VALUES (?,?,?,?,?,?,?)", rows)
        self.db.execute("COMMIT")

    def add_input(self, path: Path, cancel: threading.Event | None) -> None:
        """Every non-blank input line's number and custom_id, for one joined pass in input order."""
        def rows() -> Any:
            for n, (_, raw) in enumerate(lines(path), start=1):
                _check(cancel, n)
                if raw.strip():
                    yield n, custom_id_of(raw)

        self.db.execute("CREATE TABLE inp (line INTEGER PRIMARY KEY, custom_id TEXT)")
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO inp VALUES (?, ?)", rows())
        self.db.execute("COMMIT")

    def joined(self) -> Any:
        """(line, custom_id, job, kind, off, len, failed) of every input line in order; the
        answer's columns are None for a request with no answer."""
        return self.db.execute("SELECT inp.line, inp.custom_id, idx.job, idx.kind, idx.off, idx.len, idx.failed "
                               "FROM inp LEFT JOIN idx ON idx.custom_id = inp.custom_id ORDER BY inp.line")

    def chosen(self, kind: int) -> Any:
        """(job, offset, length) of the final answers in `kind` files, job by job, in file order."""
        return self.db.execute("SELECT job, off, len FROM idx WHERE kind = ? ORDER BY job, off", (kind,))

    def by_code(self) -> dict[str, int]:
        rows = self.db.execute("SELECT code, COUNT(*) FROM idx WHERE failed = 1 GROUP BY code ORDER BY code")
        return {("unknown" if code is None else str(code)): n for code, n in rows}

    def totals(self) -> tuple[int, int]:
        """(succeeded, failed) answers."""
        got = dict(self.db.execute("SELECT failed, COUNT(*) FROM idx GROUP BY failed").fetchall())
        return got.get(0, 0), got.get(1, 0)

    def close(self) -> None:
        self.db.close()
        for suffix in ("", "-journal", "-wal", "-shm"):
            try:
                os.unlink(self.path + suffix)
            except FileNotFoundError:
                pass


class _Files:
    """The jobs' answer files, opened for pread."""

    def __init__(self, jobs: list[JobFiles]) -> None:
        self.fds: dict[tuple[int, int], int] = {}
        for i, job in enumerate(jobs):
            for kind, path in ((OUTPUT, job.output), (ERRORS, job.errors)):
                if path is not None:
                    self.fds[(i, kind)] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    def read(self, job: int, kind: int, off: int, length: int) -> bytes:
        return os.pread(self.fds[(job, kind)], length, off)

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)


def _open_out(dest: Path) -> Any:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "wb", buffering=1 << 20)


def _close_out(out: Any) -> None:
    out.flush()
    os.fsync(out.fileno())
    out.close()


def _add_usage(usage: dict[str, int], line: bytes) -> None:
    try:
        resp = _USAGE.decode(line).response
    except (msgspec.DecodeError, msgspec.ValidationError):
        return
    u = resp.body.usage if resp is not None and resp.body is not None else None
    if u is not None:
        usage["prompt_tokens"] += u.prompt_tokens
        usage["completion_tokens"] += u.completion_tokens
        usage["total_tokens"] += u.total_tokens


def _write_chosen(index: _Index, files: _Files, kind: int, dest: Path, usage: dict[str, int] | None,
                  cancel: threading.Event | None) -> None:
    out = _open_out(dest)
    try:
        for i, (job, off, length) in enumerate(index.chosen(kind)):
            _check(cancel, i)
            line = files.read(job, kind, off, length)
            out.write(line + b"\n")
            if usage is not None:
                _add_usage(usage, line)
    finally:
        _close_out(out)


class _Parts(msgspec.Struct):
    response: msgspec.Raw = msgspec.Raw(b"")
    error: msgspec.Raw = msgspec.Raw(b"")


_PARTS = msgspec.json.Decoder(_Parts)
_EMPTY = (b"", b"null", b"false", b'""', b"{}", b"[]", b"0")
_MISSING = b',"status":"missing","response":null,"error":null,"batch_id":null,"round":null}\n'


def _slow_answer(raw: bytes, kind: int, failed: bool) -> tuple[bytes, bytes]:
    """(response, error) as JSON of an answer line of an unusual shape (no `response` member)."""
    obj = parse(raw)
    response = response_of(obj) if (obj is not None and kind == OUTPUT) else None
    error = error_of(obj, kind) if failed else None
    return msgspec.json.encode(response), msgspec.json.encode(error)


def _answer(raw: bytes, kind: int, failed: bool) -> tuple[bytes, bytes]:
    """(response, error) of an answer line, as JSON taken from the line (not rebuilt)."""
    try:
        parts = _PARTS.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return _slow_answer(raw, kind, failed)
    response, error = bytes(parts.response), bytes(parts.error)
    if kind == OUTPUT and not response:
        return _slow_answer(raw, kind, failed)
    if not failed:
        return response, b"null"
    if error.strip() in _EMPTY:
        return _slow_answer(raw, kind, failed)
    return (response if kind == OUTPUT else b"null"), error


def _write_results(index: _Index, files: _Files, jobs: list[JobFiles], input_path: Path, dest: Path,
                   cancel: threading.Event | None) -> Counts:
    counts: Counter[str] = Counter()
    index.add_input(input_path, cancel)
    ids = [(msgspec.json.encode(j.batch_id), str(j.round).encode()) for j in jobs]
    out = _open_out(dest)
    try:
        for i, (n, cid, job, kind, off, length, failed) in enumerate(index.joined()):
            _check(cancel, i)
            head = b'{"custom_id":' + msgspec.json.encode(cid) + b',"line":' + str(n).encode()
            if job is None:
                counts["missing"] += 1
                out.write(head + _MISSING)
                continue
            status = "failed" if failed else "succeeded"
            counts[status] += 1
            response, error = _answer(files.read(job, kind, off, length), kind, bool(failed))
            batch_id, rnd = ids[job]
            out.write(b"".join((head, b',"status":"', status.encode(), b'","response":', response, b',"error":',
                                error, b',"batch_id":', batch_id, b',"round":', rnd, b"}\n")))
    finally:
        _close_out(out)
    return Counts(succeeded=counts["succeeded"], failed=counts["failed"], missing=counts["missing"])


def merge(jobs: list[JobFiles], input_path: Path, requests: int, dests: dict[str, Path], *, work_dir: Path,
          cancel: threading.Event | None = None) -> Merged:
    """Write `dests["output"]` and `dests["errors"]` (final answers only) and, when given,
    `dests["results"]` (in input order); each written in place and fsynced (the caller gives
    temporary names). `jobs`: every job with answers, any order."""
    index = _Index(work_dir)
    files = _Files(jobs)
    try:
        for i in sorted(range(len(jobs)), key=lambda i: -jobs[i].round):  # the latest round's answer wins
            for kind, path in ((OUTPUT, jobs[i].output), (ERRORS, jobs[i].errors)):
                if path is not None:
                    index.add(i, kind, path, cancel)
        index.db.execute("CREATE INDEX by_file ON idx (kind, job, off)")
        merged = Merged(Counts())
        _write_chosen(index, files, OUTPUT, dests["output"], merged.usage, cancel)
        _write_chosen(index, files, ERRORS, dests["errors"], None, cancel)
        merged.errors_by_code = index.by_code()
        if "results" in dests:
            merged.counts = _write_results(index, files, jobs, input_path, dests["results"], cancel)
        else:
            ok, failed = index.totals()
            merged.counts = Counts(succeeded=ok, failed=failed, missing=max(0, requests - ok - failed))
        return merged
    finally:
        files.close()
        index.close()
