"""The storage host: PUT to a presigned url under /_storage/s/{file id} (a single upload) or
/_storage/p/{upload id}/{part number} (a multipart part). Signed, expiring, no Authorization
header allowed, an exact Content-Length; the body is streamed to disk and hashed on the way."""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _faults
from ._wire import CHUNK, Done

if TYPE_CHECKING:
    from ._request import Request


def storage_put(h: Request, path: str, query: dict[str, str]) -> None:
    if "Authorization" in h.headers:
        h.store.counts.storage_auth_header()
        h.error(400, "InvalidArgument: only one auth mechanism allowed (the url is already signed)")
    why = h.store.verify(path, query)
    if why:
        h.drain()
        h.send(403, f"<Error><Code>AccessDenied</Code><Message>{why}</Message></Error>",
               {"Content-Type": "application/xml"})
        raise Done
    length = h.content_length()
    if length is None or h.chunked():
        h.send(411, "<Error><Code>MissingContentLength</Code></Error>", close=True)
        raise Done
    pieces = path.split("/")  # ['', '_storage', 's'|'p', id, (n)]
    part_number = int(pieces[4]) if pieces[2] == "p" and len(pieces) > 4 and pieces[4].isdigit() else None
    no_etag = _faults.storage_faults(h, part_number)
    drop_at = _faults.drop_point(h, length)
    if pieces[2] == "s":
        _put_single(h, pieces[3], length, drop_at, no_etag)
    else:
        _put_part(h, pieces[3], part_number, length, drop_at, no_etag)


def _md5_and_write(md5: Any, out: Any, chunk: bytes) -> None:
    md5.update(chunk)
    out.write(chunk)


def _receive(h: Request, dest: Path, length: int, drop_at: int | None) -> tuple[str, str] | None:
    """Stream the body into `dest`; (md5, sha256), or None if the body did not all arrive."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    h.mark_body_read()
    tmp = dest.with_name(dest.name + f".{threading.get_ident()}.tmp")
    got = 0
    # the next chunk is read from the socket while the last one is hashed (md5 and sha256 on
    # two threads; hashlib lets go of the GIL) and written: the emulator keeps up with curl
    hashers = h.emu.hashers
    pending: list[Future[Any]] = []
    with open(tmp, "wb") as out:
        while got < length:
            if drop_at is not None and got >= drop_at:
                _faults.injected(h, "drop")
                for fut in pending:
                    fut.result()
                out.close()
                tmp.unlink(missing_ok=True)
                h.abort_connection()
                return None
            want = min(CHUNK, length - got) if drop_at is None else min(CHUNK, length - got, max(1, drop_at - got))
            chunk = h.read_chunk(want)
            if not chunk:
                break
            for fut in pending:
                fut.result()
            pending = [hashers.submit(sha.update, chunk), hashers.submit(_md5_and_write, md5, out, chunk)]
            got += len(chunk)
        for fut in pending:
            fut.result()
    if got != length:
        tmp.unlink(missing_ok=True)
        h.close_connection = True
        return None
    os.replace(tmp, dest)
    return md5.hexdigest(), sha.hexdigest()


def _put_single(h: Request, file_id: str, length: int, drop_at: int | None, no_etag: bool) -> None:
    rec = h.store.record(file_id)
    if rec is None or rec.method != "single" or rec.state == "deleted":
        h.error(404, "NoSuchKey")
    result = _receive(h, h.store.content_path(file_id), length, drop_at)
    if result is None:
        raise Done
    md5, digest = result
    if rec.checksum and rec.checksum != digest:
        h.store.content_path(file_id).unlink(missing_ok=True)
        h.send(400, "<Error><Code>BadDigest</Code><Message>content does not match the checksum given at "
                    "create</Message></Error>", {"Content-Type": "application/xml"})
        raise Done
    if not h.store.content_arrived(rec, length, digest):
        h.error(404, "NoSuchKey")
    h.send(200, b"", {} if no_etag else {"ETag": f'"{md5}"'})


def _put_part(h: Request, upload_id: str, number: int | None, length: int, drop_at: int | None,
              no_etag: bool) -> None:
    mp = h.store.upload(upload_id)
    if mp is None or mp.state != "open":
        h.error(404, "NoSuchUpload")
    if number is None or not 1 <= number <= mp.num_parts:
        h.error(400, "InvalidArgument: part number out of range")
    result = _receive(h, h.store.part_path(upload_id, number), length, drop_at)
    if result is None:
        raise Done
    md5, _ = result
    h.store.part_received(mp, number, md5, length)
    h.send(200, b"", {} if no_etag else {"ETag": f'"{md5}"'})
