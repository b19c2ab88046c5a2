"""Stream a file's content (``GET /files/{id}/content``) into a temporary name, resumably.

Bounded memory (1 MiB chunks), sha256 and line count computed while the bytes arrive. A
connection cut mid-body is resumed with ``Range: bytes=N-`` up to `MAX_RESUMES` times (the
newer official client's rule). The temporary file survives a restart: its bytes are hashed
again and the download goes on from its end. A server that ignores the Range (200 with the
whole file) makes it start over. The file is fsynced before this returns; renaming it into
place is the caller's (`deliver.py`).
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3

from ..api import Cancelled, ProtocolError, TransientError
from ..retry import DOWNLOAD_CUT

CHUNK = 1 << 20
MAX_RESUMES = 5
_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED = re.compile(r"bytes\s+\*/(\d+)")


@dataclass
class Downloaded:
    bytes: int
    sha256: str
    lines: int
    resumes: int  # Range requests after a cut connection (this run)
    resumed_from: int  # bytes already in the temp file when this run started (a restart)
    seconds: float

    def meta(self, path: Path) -> dict[str, Any]:
        return {"path": str(path), "bytes": self.bytes, "sha256": self.sha256, "lines": self.lines}


class _Cut(Exception):
    """The body ended before the length the server announced."""


class _Hasher:
    def __init__(self) -> None:
        self.h = hashlib.sha256()
        self.size = 0
        self.newlines = 0
        self.last = b""

    def update(self, chunk: bytes) -> None:
        if chunk:
            self.h.update(chunk)
            self.size += len(chunk)
            self.newlines += chunk.count(b"\n")
            self.last = chunk[-1:]

    @property
    def lines(self) -> int:
        return self.newlines + (1 if self.size and self.last != b"\n" else 0)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _rehash(fd: int, size: int, cancel: threading.Event | None) -> _Hasher:
    h = _Hasher()
    os.lseek(fd, 0, os.SEEK_SET)
    left = size
    while left > 0:
        if cancel is not None and cancel.is_set():
            raise Cancelled("cancelled")
        chunk = os.read(fd, min(CHUNK, left))
        if not chunk:
            break
        h.update(chunk)
        left -= len(chunk)
    return h


def _body(r: requests.Response) -> Iterator[bytes]:
    """The body as it arrives: `read1` hands over whatever came (up to CHUNK), so a cut
    connection loses nothing already received (a fixed-size read would drop its partial chunk)."""
    read1 = getattr(r.raw, "read1", None)
    if read1 is None:
        yield from r.iter_content(64 * 1024)
        return
    while True:
        try:
            chunk = read1(CHUNK)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise requests.exceptions.ChunkedEncodingError(str(exc)) from None
        if not chunk:
            return
        yield chunk


class _Partial:
    """The temporary file being filled, and the hash of the bytes it holds: `offset` is where the
    next byte goes."""

    def __init__(self, fd: int, cancel: threading.Event | None) -> None:
        self.fd = fd
        self.start_size = os.fstat(fd).st_size
        self.h = _rehash(fd, self.start_size, cancel)
        if self.h.size != self.start_size:  # shorter than stat said: keep what was read
            os.ftruncate(fd, self.h.size)

    @property
    def offset(self) -> int:
        return self.h.size

    def start_over(self) -> None:
        os.ftruncate(self.fd, 0)
        self.h = _Hasher()

    def append(self, chunk: bytes) -> None:
        _write_all(self.fd, chunk)
        self.h.update(chunk)


def _check_cancel(cancel: threading.Event | None) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled("cancelled during the download", route="content")


def _announced_total(r: requests.Response, part: _Partial) -> int | None:
    """The full length of the content, from a 200 (which restarts a partial file: the server
    ignored the Range) or a 206 (whose Content-Range must start at our offset); None if unknown."""
    if r.status_code == 200:
        if part.offset:
            part.start_over()  # the server ignored the Range: the whole file again
        cl = r.headers.get("Content-Length")
        return int(cl) if cl and cl.isdigit() else None
    m = _RANGE.search(r.headers.get("Content-Range", ""))  # 206
    if not m or int(m.group(1)) != part.offset:
        raise ProtocolError(f"content: asked for bytes={part.offset}-, got Content-Range "
                            f"{r.headers.get('Content-Range')!r}", route="content", status=206)
    return int(m.group(3)) if m.group(3) != "*" else None


def _receive(r: requests.Response, part: _Partial, total: int | None, cancel: threading.Event | None) -> None:
    """Append the body at the partial file's end; _Cut if it stops short of `total`."""
    os.lseek(part.fd, part.offset, os.SEEK_SET)
    for chunk in _body(r):
        _check_cancel(cancel)
        part.append(chunk)
    if total is not None and part.offset < total:
        raise _Cut(f"the body ended at {part.offset} of {total} bytes")
    if total is not None and part.offset > total:
        raise ProtocolError(f"content: {part.offset} bytes arrived, {total} announced", route="content")


def _fetch(client: Any, file_id: str, part: _Partial, cancel: threading.Event | None) -> bool:
    """One request from the partial file's end. True when the file is complete; False when it
    must start over (a 416 for a temp file longer than the content: not ours)."""
    r = client.file_content(file_id, offset=part.offset, cancel=cancel)
    try:
        if r.status_code == 416:
            m = _UNSATISFIED.search(r.headers.get("Content-Range", ""))
            if m and int(m.group(1)) == part.offset:
                return True  # the temp file already holds all of it
            part.start_over()
            return False
        _receive(r, part, _announced_total(r, part), cancel)
        return True
    finally:
        r.close()


def _wait_after_cut(cuts: int, cancel: threading.Event | None) -> None:
    delay = DOWNLOAD_CUT.delay(cuts + 1)
    if cancel is not None:
        if cancel.wait(delay):
            raise Cancelled("cancelled during the download", route="content") from None
    else:
        time.sleep(delay)


def download(client: Any, file_id: str, tmp: Path, *, cancel: threading.Event | None = None,
             max_resumes: int = MAX_RESUMES, on_cut: Callable[[int, str], None] | None = None) -> Downloaded:
    """Download `file_id` into `tmp` (created, or continued from its current end); fsynced."""
    t0 = time.monotonic()
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        part = _Partial(fd, cancel)
        cuts = 0
        while True:
            _check_cancel(cancel)
            try:
                if _fetch(client, file_id, part, cancel):
                    break
            except (requests.RequestException, _Cut) as exc:
                cuts += 1
                if on_cut is not None:
                    on_cut(part.offset, type(exc).__name__)
                if cuts > max_resumes:
                    raise TransientError(f"content of {file_id}: cut {cuts} times (last at byte {part.offset}: "
                                         f"{type(exc).__name__})", route="content") from None
                _wait_after_cut(cuts, cancel)
        os.fsync(fd)
    finally:
        os.close(fd)
    h = part.h
    return Downloaded(bytes=h.size, sha256=h.h.hexdigest(), lines=h.lines, resumes=cuts,
                      resumed_from=part.start_size, seconds=time.monotonic() - t0)


def hash_file(path: Path, cancel: threading.Event | None = None) -> dict[str, Any]:
    """bytes, sha256 and lines of a file already in place (a restart after its rename)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        h = _rehash(fd, os.fstat(fd).st_size, cancel)
    finally:
        os.close(fd)
    return {"path": str(path), "bytes": h.size, "sha256": h.h.hexdigest(), "lines": h.lines}
