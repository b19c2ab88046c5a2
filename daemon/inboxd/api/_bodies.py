"""Request bodies streamed from disk, never held whole in memory.

`RangeBody` is one byte range of a file, read with `os.pread` in 1 MiB chunks as the socket
takes them; it has a length (so requests sends an exact Content-Length) and no `read`
(so urllib3 iterates our chunks instead of reading 16 KiB at a time). It computes the MD5 of
what it sent (for the part's ETag), reports progress and stops when cancelled.

Bandwidth caps are applied here, where the bytes are read for the socket: each slice is
charged to the body's buckets (`_bandwidth.Bandwidth`) before it is handed over, so every
sender (single PUT, each part, each worker) pays as it goes, retries included. A capped body
hands the socket slices of 1/20 s of the slowest rate rather than whole 1 MiB chunks, so the
stream is smooth rather than a burst per second. The buckets come as `limiters=`, or ride in a
`Metered` progress callback (how `FilesClient.upload` gets them to every part).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Sequence

from ._bandwidth import Bandwidth, Metered, slice_size
from ._errors import Cancelled, SourceChangedError

CHUNK = 2**20


class RangeBody:
    def __init__(self, fd: int, offset: int, length: int, *, progress: Callable[[int], None] | None = None,
                 cancel: threading.Event | None = None, md5: bool = False,
                 limiters: Sequence[Bandwidth] = ()) -> None:
        self.fd, self.offset, self.length = fd, offset, length
        if isinstance(progress, Metered):
            limiters = (*limiters, *progress.limiters)
            progress = progress.progress
        self.progress, self.cancel = progress, cancel
        self.limiters = tuple(limiters)
        self.md5 = hashlib.md5() if md5 else None
        self.sent = 0

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[memoryview]:
        """One buffer, refilled: the socket has sent a chunk before the next is asked for, so
        memory is one chunk per body in flight, whatever the part size (no allocator churn)."""
        pos, end = self.offset, self.offset + self.length
        buf = bytearray(min(CHUNK, max(1, self.length)))
        view = memoryview(buf)
        while pos < end:
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled("cancelled while sending")
            want = min(len(buf), end - pos)
            n = os.preadv(self.fd, [view[:want]], pos)
            if n <= 0:
                raise SourceChangedError(f"the file ended at byte {pos}, before the {end} bytes it had")
            chunk = view[:n]
            if self.md5 is not None:
                self.md5.update(chunk)
            pos += n
            if not self.limiters:
                self.sent += n
                if self.progress is not None:
                    self.progress(n)
                yield chunk
                continue
            step = slice_size(self.limiters, CHUNK)
            for start in range(0, n, step):
                piece = chunk[start:start + step]
                for bucket in self.limiters:
                    bucket.take(len(piece), self.cancel)
                self.sent += len(piece)
                if self.progress is not None:
                    self.progress(len(piece))
                yield piece


def sha256_of(fd: int, size: int, cancel: threading.Event | None = None) -> str:
    h = hashlib.sha256()
    pos = 0
    while pos < size:
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled while hashing")
        chunk = os.pread(fd, min(4 * CHUNK, size - pos), pos)
        if not chunk:
            raise SourceChangedError(f"the file ended at byte {pos}, before the {size} bytes it had")
        h.update(chunk)
        pos += len(chunk)
    return h.hexdigest()
