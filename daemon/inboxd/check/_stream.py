"""One streaming pass over a file: every byte hashed once, lines split at the byte level.

`lines(f, state, max_line_bytes)` yields `(number, line)` for every physical line, the
newline stripped, in bounded memory: a line longer than `max_line_bytes` is never held
whole; it is reported through `state.too_long` and skipped (still hashed). Lines end at
"\\n", "\\r\\n" or a lone "\\r", as Python's universal newlines (and so both official
checkers) split them.
"""

from __future__ import annotations

import ctypes
import hashlib
import queue
import threading
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import BinaryIO

CHUNK = 2**20
Line = bytes | bytearray  # a line longer than a chunk is the bytearray it was grown in


BACKGROUND_HASH = 16 * 2**20  # files at least this large are hashed on a second thread
LONG_LINE = 2**20  # a line longer than this is a long line: one at a time in the process (_LongLines)
MMAP_THRESHOLD = 4 * CHUNK  # allocations this large come from mmap, and go back to the system when freed
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (glibc's malloc.h)


def return_large_buffers() -> None:
    """Have glibc serve every allocation of MMAP_THRESHOLD bytes or more with mmap, so that a
    long line's buffers go back to the system once freed. By default glibc raises that
    threshold after the first large free (up to 32 MiB), and the next long lines then come
    from the heap of the allocating thread's arena, where a freed one stays: with one arena
    per worker thread, each worker kept a long line's worth, and one line at a time was no
    longer one line's memory. Once, at the daemon's start; nothing where malloc is not glibc's."""
    try:
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    except (OSError, AttributeError):
        pass


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


def _split_cr(line: Line) -> Sequence[Line]:
    """A line that holds a lone carriage return is more than one line to universal newlines."""
    return line.split(b"\r")


def _each(subs: Sequence[Line], number: int, state: StreamState,
          max_line_bytes: int) -> Iterator[tuple[int, list[Line]]]:
    """The careful path's lines, numbered from `number` + 1, one to a list; one too long is
    recorded in `state.too_long` instead."""
    for sub in subs:
        number += 1
        if len(sub) > max_line_bytes:
            state.too_long.append(number)
        else:
            yield number, [sub]


def lines(f: BinaryIO, state: StreamState, max_line_bytes: int) -> Iterator[tuple[int, Line]]:
    """(number, line) for every physical line (see the module docstring)."""
    for first, batch in line_batches(f, state, max_line_bytes):
        yield from enumerate(batch, first)


class _LongLines:
    """The process-wide permit for long lines: a line longer than LONG_LINE is built (and then
    decoded by the caller) by one check at a time, whatever the number of workers, so the
    memory of long lines is that of one line, not one per worker. A check holds the permit
    from the moment its line grows past LONG_LINE until it asks for the lines after it (its
    caller is done with it by then). The checks hold the GIL while they decode, so they never
    ran in parallel anyway: waiting for the permit costs no throughput."""

    lock = threading.Lock()

    def __init__(self) -> None:
        self.held = False

    def hold(self) -> None:
        if not self.held:
            self.lock.acquire()
            self.held = True

    def drop(self) -> None:
        if self.held:
            self.held = False
            self.lock.release()


def line_batches(f: BinaryIO, state: StreamState,
                 max_line_bytes: int) -> Generator[tuple[int, list[Line]], None, None]:
    """The lines of `lines`, a list at a time: (number of the first, consecutive lines). A chunk
    without a CR (nearly every chunk) is one list, split by one `bytes.split`: no generator step
    per line; other lines come one to a list (`_Careful`). A list is emptied once the caller asks
    for the next; a line past LONG_LINE is built under the process-wide permit (`_LongLines`)."""
    number = 0
    rest: Line = b""
    skipping = False  # inside a line that is too long: drop bytes until the next newline
    grown = False  # rest is a bytearray the fast path grew (so it holds no CR)
    permit = _LongLines()
    try:
        for chunk in _chunks(f, state):
            if permit.held and len(rest) <= LONG_LINE:
                permit.drop()  # the long line is gone: our caller was done with it
            if skipping:
                nl = chunk.find(b"\n")
                if nl < 0:
                    continue
                chunk = chunk[nl + 1:]
                skipping = False
            head = chunk.find(b"\n")
            if head < 0 and len(rest) + len(chunk) > max_line_bytes and b"\r" not in chunk \
                    and (grown or b"\r" not in rest):  # too long, and no end in sight: skip it now
                number += 1
                state.too_long.append(number)
                rest, grown, skipping = b"", False, True
                continue
            if len(rest) + (head if head >= 0 else len(chunk)) > LONG_LINE:
                permit.hold()  # the line being built is long: one such line in the process
            if len(rest) + len(chunk) <= max_line_bytes and b"\r" not in chunk \
                    and (grown or b"\r" not in rest):
                if head < 0:  # the line goes on past this chunk: grown in place, never copied whole
                    rest = rest if rest.__class__ is bytearray else bytearray(rest)
                    rest += chunk
                    grown = True  # of chunks without a CR: no need to look for one again
                    continue
                # no line here can be too long, none holds a CR: split the chunk (no copy of it
                # joined to the rest of the last line) and put that rest in front of its first line
                parts: list[Line] = [*chunk.split(b"\n")]
                if rest.__class__ is bytearray:
                    rest += parts[0]  # a long line ends here: it is the bytearray itself
                    parts[0] = rest
                elif rest:
                    parts[0] = rest + parts[0]
                rest, grown = parts.pop(), False
                if parts:
                    yield number + 1, parts
                    number += len(parts)
                    parts.clear()
                continue
            careful = _Careful(number, rest + chunk if rest else chunk, state, max_line_bytes)
            yield from careful.lines()
            number, rest, skipping, grown = careful.number, careful.rest, careful.skipping, False
        yield from _last(number, rest, skipping, state, max_line_bytes)
    finally:
        permit.drop()


def _chunks(f: BinaryIO, state: StreamState) -> Iterator[bytes]:
    """The file a chunk at a time, each hashed and counted as it is read."""
    read, update = f.read, state.update
    while chunk := read(CHUNK):
        update(chunk)
        state.bytes += len(chunk)
        yield chunk


class _Careful:
    """The careful path over one buffer (the rest of the last line and a chunk): lines ended by
    CR, CRLF or LF, each checked against the limit; what is left is the start of the next line."""

    def __init__(self, number: int, buf: Line, state: StreamState, max_line_bytes: int) -> None:
        self.number, self.buf, self.state, self.max = number, buf, state, max_line_bytes
        self.rest: Line = b""
        self.skipping = False

    def lines(self) -> Iterator[tuple[int, list[Line]]]:
        parts = self.buf.split(b"\n")
        self.buf = b""
        rest = parts.pop()
        state, max_line_bytes = self.state, self.max
        for line in parts:  # (this generator ends, and lets go of them, before the next chunk)
            if b"\r" in line:  # rare: CRLF endings, or a lone CR that ends a line too
                if line.endswith(b"\r"):
                    line = line[:-1]
                if b"\r" in line:  # each line a lone CR ends has the same limit
                    subs = _split_cr(line)
                    yield from _each(subs, self.number, state, max_line_bytes)
                    self.number += len(subs)
                    continue
            self.number += 1
            if len(line) > max_line_bytes:
                state.too_long.append(self.number)
                continue
            yield self.number, [line]
        cut = rest.rfind(b"\r", 0, len(rest) - 1)
        if cut >= 0:  # lines ended by a lone CR before the last byte are whole: out with them now
            subs = _split_cr(rest[:cut])
            yield from _each(subs, self.number, state, max_line_bytes)
            self.number += len(subs)
            rest = rest[cut + 1:]
        # a CR at the end of the rest may be the first half of a CRLF: not part of the line
        if len(rest) - rest.endswith(b"\r") > max_line_bytes:
            self.number += 1
            state.too_long.append(self.number)
            rest = b""
            self.skipping = True
        self.rest = rest


def _last(number: int, rest: Line, skipping: bool, state: StreamState,
          max_line_bytes: int) -> Iterator[tuple[int, list[Line]]]:
    """The last line (no newline after it), and the count of lines."""
    if rest and not skipping:
        if rest.endswith(b"\r"):
            rest = rest[:-1]
        subs = _split_cr(rest)
        yield from _each(subs, number, state, max_line_bytes)
        number += len(subs)
    state.lines = number
