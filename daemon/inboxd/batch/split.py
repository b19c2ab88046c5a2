"""Cut a batch input at line boundaries into parts that each fit one job, as byte ranges of
the input (nothing is copied into memory), and copy ranges byte for byte into a job's input.

A part holds at most `max_requests` requests (non-blank lines) and `max_bytes` bytes; a single
line longer than `max_bytes` is a part of its own (the server refuses it, and says why). A
resend is a list of ranges: the lines of the requests sent again, adjacent ones merged.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20

Range = tuple[int, int]  # [start, end) byte offsets of whole lines of the input


@dataclass(frozen=True)
class Span:
    """One part: the bytes [start, end) of the input and the requests in them."""

    start: int
    end: int
    requests: int
    line: int = 1  # the input's line number of its first line

    @property
    def bytes(self) -> int:
        return self.end - self.start


def lines(path: Path, ranges: Iterable[Range] | None = None) -> Iterator[tuple[int, bytes]]:
    """(offset, line with its newline) of every line in `ranges` (default: the whole file)."""
    with open(path, "rb") as f:
        if ranges is None:
            offset = 0
            for raw in f:
                yield offset, raw
                offset += len(raw)
            return
        for start, end in ranges:
            f.seek(start)
            offset = start
            while offset < end:
                raw = f.readline(end - offset)
                if not raw:
                    break
                yield offset, raw
                offset += len(raw)


def plan_parts(path: Path, max_requests: int, max_bytes: int) -> list[Span]:
    """The parts of the input at `path`: consecutive byte ranges covering the whole file."""
    parts: list[Span] = []
    start = offset = requests = 0
    first = number = 1
    for _, raw in lines(path):
        n = len(raw)
        if requests and (offset + n - start > max_bytes or (requests + 1 > max_requests and raw.strip())):
            parts.append(Span(start, offset, requests, first))
            start, requests, first = offset, 0, number
        offset += n
        number += 1
        if raw.strip():
            requests += 1
    if offset > start or not parts:
        parts.append(Span(start, offset, requests, first))
    return parts


class RangeReader:
    """The bytes [start, end) of a file as a readable stream (`read` only: what the check reads)."""

    def __init__(self, path: Path, start: int, end: int) -> None:
        self.name = str(path)
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close() / the context manager
        self._f.seek(start)
        self._left = end - start

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        data = self._f.read(self._left if n < 0 else min(n, self._left))
        self._left -= len(data)
        return data

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def coalesce(ranges: Iterable[Range]) -> list[Range]:
    """Adjacent ranges merged, in order."""
    out: list[Range] = []
    for start, end in ranges:
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def copy_ranges(src: Path, ranges: Iterable[Range], dest: Path) -> int:
    """Write the bytes of `ranges` of `src` into `dest` (created or truncated), fsynced; a
    range whose last line has no newline gets one, so lines never run together. The bytes written."""
    written = 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        with open(src, "rb") as f:
            for start, end in ranges:
                f.seek(start)
                left, last = end - start, b"\n"
                while left > 0:
                    chunk = f.read(min(CHUNK, left))
                    if not chunk:
                        break
                    written += _write_all(fd, chunk)
                    left -= len(chunk)
                    last = chunk[-1:]
                if last != b"\n":
                    written += _write_all(fd, b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return written


def _write_all(fd: int, data: bytes) -> int:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return len(data)
