"""One streaming pass over a file: every byte hashed once, lines split at the byte level.

`lines(f, state, max_line_bytes)` yields `(number, line)` for every physical line, the
newline stripped, in bounded memory: a line longer than `max_line_bytes` is never held
whole; it is reported through `state.too_long` and skipped (still hashed). Lines end at
"\\n", "\\r\\n" or a lone "\\r", as Python's universal newlines (and so both official
checkers) split them.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO

CHUNK = 2**20


BACKGROUND_HASH = 16 * 2**20  # files at least this large are hashed on a second thread


class StreamState:
    """What the pass counts, and the sha256 of every byte. With `background`, the chunks are
    hashed on a thread of their own while this one splits and parses (hashlib lets go of the
    GIL for large buffers, so on a machine with two cores the hash costs no wall time); the
    queue holds at most 2 chunks (memory stays bounded: a 2 GB line is one chunk at a time).
    `close()` ends that thread (also after an exception)."""

    def __init__(self, background: bool = False) -> None:
        self.sha = hashlib.sha256()
        self.bytes = 0
        self.lines = 0
        self.too_long: list[int] = []  # numbers of lines that were too long
        self.update: Callable[[bytes], None] = self.sha.update
        self._queue: queue.Queue[bytes | None] | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._queue = queue.Queue(maxsize=2)
            self._thread = threading.Thread(target=self._hash, name="check-sha256", daemon=True)
            self._thread.start()
            self.update = self._queue.put

    def _hash(self) -> None:
        assert self._queue is not None
        update = self.sha.update
        while (chunk := self._queue.get()) is not None:
            update(chunk)

    def close(self) -> None:
        """Wait for the hashing thread, if any, to hash what it was handed, and end it."""
        if self._thread is not None and self._queue is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
            self.update = self.sha.update

    @property
    def sha256(self) -> str:
        self.close()
        return self.sha.hexdigest()


def _split_cr(line: bytes) -> list[bytes]:
    """A line that holds a lone carriage return is more than one line to universal newlines."""
    return line.split(b"\r")


def _each(subs: list[bytes], number: int, state: StreamState, max_line_bytes: int) -> Iterator[tuple[int, list[bytes]]]:
    """The careful path's lines, numbered from `number` + 1, one to a list; one too long is
    recorded in `state.too_long` instead."""
    for sub in subs:
        number += 1
        if len(sub) > max_line_bytes:
            state.too_long.append(number)
        else:
            yield number, [sub]


def lines(f: BinaryIO, state: StreamState, max_line_bytes: int) -> Iterator[tuple[int, bytes]]:
    """(number, line) for every physical line (see the module docstring)."""
    for first, batch in line_batches(f, state, max_line_bytes):
        yield from enumerate(batch, first)


def line_batches(f: BinaryIO, state: StreamState, max_line_bytes: int) -> Iterator[tuple[int, list[bytes]]]:
    """The lines of `lines`, a list at a time: (number of the first, consecutive lines). A
    chunk without a carriage return and shorter than `max_line_bytes` (nearly every chunk) is
    one list, split by one `bytes.split`, so the caller's loop pays no generator step per line;
    other lines come one to a list, through the careful path."""
    number = 0
    rest = b""
    skipping = False  # inside a line that is too long: drop bytes until the next newline
    read = f.read
    update = state.update
    while True:
        chunk = read(CHUNK)
        if not chunk:
            break
        update(chunk)
        state.bytes += len(chunk)
        if skipping:
            nl = chunk.find(b"\n")
            if nl < 0:
                continue
            chunk = chunk[nl + 1:]
            skipping = False
        if len(rest) + len(chunk) <= max_line_bytes and b"\r" not in chunk and b"\r" not in rest:
            # no line here can be too long, none holds a CR: split the chunk (no copy of it
            # joined to the rest of the last line) and put that rest in front of its first line
            parts = chunk.split(b"\n")
            if rest:
                parts[0] = rest + parts[0]
            rest = parts.pop()
            if parts:
                yield number + 1, parts
                number += len(parts)
            continue
        buf = rest + chunk if rest else chunk
        parts = buf.split(b"\n")
        rest = parts.pop()
        for line in parts:
            if b"\r" in line:  # rare: CRLF endings, or a lone CR that ends a line too
                if line.endswith(b"\r"):
                    line = line[:-1]
                if b"\r" in line:  # each line a lone CR ends has the same limit
                    subs = _split_cr(line)
                    yield from _each(subs, number, state, max_line_bytes)
                    number += len(subs)
                    continue
            number += 1
            if len(line) > max_line_bytes:
                state.too_long.append(number)
                continue
            yield number, [line]
        cut = rest.rfind(b"\r", 0, len(rest) - 1)
        if cut >= 0:  # lines ended by a lone CR before the last byte are whole: out with them now
            subs = _split_cr(rest[:cut])
            yield from _each(subs, number, state, max_line_bytes)
            number += len(subs)
            rest = rest[cut + 1:]
        # a CR at the end of the rest may be the first half of a CRLF: not part of the line
        if len(rest) - rest.endswith(b"\r") > max_line_bytes:
            number += 1
            state.too_long.append(number)
            rest = b""
            skipping = True
    if rest and not skipping:
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        subs = _split_cr(rest)
        yield from _each(subs, number, state, max_line_bytes)
        number += len(subs)
    state.lines = number
