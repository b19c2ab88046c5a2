"""The Files API under /v1/files (SPEC §1): create (single upload), multipart initiate /
complete / abort, preprocess, retrieve, list, delete, content download."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from . import _faults
from ._forms import params
from ._routing import Api, RouteFn
from ._store import MIN_PART, FileRecord, Multipart
from ._wire import Done

if TYPE_CHECKING:
    from ._request import Request

PURPOSES = {"fine-tune", "batch-api", "eval", "calibration", "eval-output"}
FILE_TYPES = {"jsonl", "parquet", "csv"}

_FIXED = {("POST", "/v1/files"): "create", ("GET", "/v1/files"): "list",
          ("POST", "/v1/files/multipart/initiate"): "initiate",
          ("POST", "/v1/files/multipart/complete"): "complete",
          ("POST", "/v1/files/multipart/abort"): "abort"}
_FILE_ROUTE = re.compile(r"^/v1/files/([^/]+)(/preprocess|/content)?$")
_ON_A_FILE = {("GET", None): "retrieve", ("DELETE", None): "delete", ("POST", "/preprocess"): "preprocess",
              ("GET", "/content"): "content"}


def match(method: str, path: str) -> tuple[str, str | None]:
    if (method, path) in _FIXED:
        return _FIXED[(method, path)], None
    m = _FILE_ROUTE.match(path)
    if m:
        route = _ON_A_FILE.get((method, m.group(2)))
        if route:
            return route, m.group(1)
    return "unknown", None


# -- creating -------------------------------------------------------------------------------------


def _create_params(h: Request, fields: dict[str, Any]) -> tuple[str, str, str, str | None]:
    purpose = str(fields.get("purpose", ""))
    if purpose not in PURPOSES:
        h.error(400, f"invalid purpose {purpose!r}")
    name = str(fields.get("file_name", "")).strip()
    if not name:
        h.error(400, "file_name is required")
    file_type = str(fields.get("file_type", "jsonl"))
    if file_type not in FILE_TYPES:
        h.error(400, f"invalid file_type {file_type!r}")
    checksum = fields.get("checksum") or None
    return purpose, name, file_type, (str(checksum) if checksum else None)


def _conflict(h: Request, checksum: str | None, purpose: str) -> None:
    """The checksum 409: a file with these bytes exists already (never with --no-dedupe)."""
    if not h.emu.settings.dedupe:
        return
    existing = h.store.existing(checksum, purpose)
    if existing is not None:
        h.store.counts.event("conflicts")
        h.send(409, {"file_id": existing.id, "message": "a file with this checksum already exists"})
        raise Done


def _storage_url(h: Request, path: str) -> str:
    return h.store.presign(h.emu.origin, path, h.emu.url_ttl)


def create(h: Request, _id: str | None, query: dict[str, str]) -> None:
    purpose, name, file_type, checksum = _create_params(h, params(h, query))
    _conflict(h, checksum, purpose)
    rec = h.store.create(purpose, name, file_type, checksum, "single")
    headers = {"Location": _storage_url(h, f"/_storage/s/{rec.id}"), "X-Together-File-Id": rec.id}
    hostile = _faults.take_hostile(h)
    if hostile == "no_location":
        del headers["Location"]
    elif hostile == "file_location":
        headers["Location"] = "file:///etc/passwd"
    elif hostile == "other_host_location":
        headers["Location"] = f"{h.emu.other_origin}/upload/{rec.id}"
    elif hostile == "bad_file_id":
        headers["X-Together-File-Id"] = "../../etc/passwd"
    h.store.counts.created(rec.checksum)
    h.send(302, b"", headers)


def initiate(h: Request, _id: str | None, query: dict[str, str]) -> None:
    fields = params(h, query)
    purpose, name, file_type, checksum = _create_params(h, fields)
    try:
        file_size, num_parts = int(fields.get("file_size", -1)), int(fields.get("num_parts", -1))
    except (TypeError, ValueError):
        h.error(400, "file_size and num_parts must be integers")
    if file_size <= 0 or not 1 <= num_parts <= 10_000:
        h.error(400, "file_size must be > 0 and num_parts 1..10000")
    _conflict(h, checksum, purpose)
    rec = h.store.create(purpose, name, file_type, checksum, "multipart")
    mp = h.store.open_multipart(rec, file_size, num_parts)
    hostile = _faults.take_hostile(h)
    parts = []
    for n in range(1, num_parts + 1):
        url = _storage_url(h, f"/_storage/p/{mp.upload_id}/{n}")
        if hostile == "file_location":
            url = "file:///etc/passwd"
        elif hostile == "other_host_location":
            url = f"{h.emu.other_origin}/upload/{mp.upload_id}/{n}"
        parts.append({"PartNumber": n, "URL": url, "Headers": {}})
    file_id = "../" + rec.id if hostile == "bad_file_id" else rec.id
    h.store.counts.created(rec.checksum)
    h.send(200, {"upload_id": mp.upload_id, "file_id": file_id, "parts": parts})


# -- multipart complete and abort -----------------------------------------------------------------


def _upload(h: Request, fields: dict[str, Any], missing: str) -> Multipart:
    mp = h.store.upload(str(fields.get("upload_id", "")))
    if mp is None or mp.file_id != fields.get("file_id"):
        h.error(404, missing)
    return mp


def _check_parts(h: Request, mp: Multipart, given: Any) -> None:
    """S3's rules for CompleteMultipartUpload: every part, in order, with its ETag, 5 MiB but the last."""
    if not isinstance(given, list) or not given:
        h.error(400, "parts must be a non-empty list")
    numbers: list[int] = []
    for p in given:
        if not isinstance(p, dict):
            h.error(400, "InvalidPart: each part is {part_number, etag}")
        number = p.get("part_number", p.get("PartNumber"))
        etag = str(p.get("etag", p.get("ETag", ""))).strip('"')
        stored = mp.parts.get(number) if isinstance(number, int) else None
        if stored is None or stored[0] != etag or not isinstance(number, int):
            h.error(400, f"InvalidPart: part {number} was not uploaded with that ETag")
        numbers.append(number)
    if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
        h.error(400, "InvalidPartOrder: parts must be in ascending order, once each")
    if numbers != list(range(1, mp.num_parts + 1)):
        h.error(400, f"InvalidPart: expected parts 1..{mp.num_parts}")
    for n in numbers[:-1]:
        if mp.parts[n][1] < MIN_PART:
            h.error(400, f"EntityTooSmall: part {n} is smaller than 5 MiB")
    total = sum(mp.parts[n][1] for n in numbers)
    if total != mp.file_size:
        h.error(400, f"the parts add up to {total} bytes, not the declared {mp.file_size}")


def complete(h: Request, _id: str | None, query: dict[str, str]) -> None:
    fields = params(h, query)
    mp = _upload(h, fields, "NoSuchUpload: unknown upload_id or file_id")
    if mp.state != "open":
        h.error(400, f"upload is {mp.state}")
    _check_parts(h, mp, fields.get("parts"))
    rec = h.store.record(mp.file_id)
    assert rec is not None  # a record is never removed, only marked deleted
    size, digest = h.store.assemble(mp)
    if rec.checksum and rec.checksum != digest:
        h.store.content_path(rec.id).unlink(missing_ok=True)
        h.store.end_upload(mp, "aborted")
        h.error(400, "BadDigest: the content does not match the checksum")
    h.store.end_upload(mp, "completed")
    if not h.store.content_arrived(rec, size, digest):
        h.error(404, f"file {rec.id} was deleted")
    h.store.start_processing(rec)
    h.send(200, {"file": rec.public()})


def abort(h: Request, _id: str | None, query: dict[str, str]) -> None:
    mp = _upload(h, params(h, query), "NoSuchUpload")
    if h.store.abort_upload(mp):
        h.store.delete(mp.file_id)
        h.store.counts.event("aborts")
    h.send(200, {"upload_id": mp.upload_id, "status": mp.state})


# -- one file -------------------------------------------------------------------------------------


def _file(h: Request, file_id: str | None) -> FileRecord:
    rec = h.store.get(file_id or "")
    if rec is None:
        h.error(404, f"file {file_id} not found")
    return rec


def preprocess(h: Request, file_id: str | None, query: dict[str, str]) -> None:
    h.drain()
    rec = _file(h, file_id)
    if rec.state != "uploaded":
        h.error(400, "the file has no content yet (PUT it to its upload url first)")
    h.store.start_processing(rec)
    h.send(200, _file(h, file_id).public())


def retrieve(h: Request, file_id: str | None, query: dict[str, str]) -> None:
    h.drain()
    h.send(200, _file(h, file_id).public())


def listing(h: Request, _id: str | None, query: dict[str, str]) -> None:
    h.drain()
    h.send(200, {"object": "list", "data": [r.public() for r in h.store.listing()]})


def delete(h: Request, file_id: str | None, query: dict[str, str]) -> None:
    h.drain()
    _file(h, file_id)
    if h.store.delete(file_id or ""):
        h.store.counts.event("deletes")
    h.send(200, {"id": file_id, "object": "file", "deleted": True})


def content(h: Request, file_id: str | None, query: dict[str, str]) -> None:
    h.drain()
    rec = _file(h, file_id)
    if rec.state != "uploaded":
        h.error(404, "no content")
    path = h.store.content_path(rec.id)
    size = path.stat().st_size
    start, end, status = 0, size - 1, 200
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", h.headers.get("Range", ""))
    if m and size:
        start, end, status = int(m.group(1)), min(size - 1, int(m.group(2) or size - 1)), 206
        if start >= size or start > end:
            h.send(416, {"error": {"message": f"range not satisfiable: {m.group(0)} of {size} bytes"}},
                   {"Content-Range": f"bytes */{size}"})
            return
    length = max(0, end - start + 1)
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length),
               "Accept-Ranges": "bytes"}
    if status == 206:
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Disposition"] = f'attachment; filename="{rec.filename}"'
    cut = h.emu.batches.take_cut(rec.id)  # scripted: send part of the body, then close (see _batches)
    if cut is not None:
        _faults.injected(h, "cut_download")
        h.close_connection = True
        h.send_file(status, headers, path, start, int(length * cut))
        return
    h.send_file(status, headers, path, start, length)


ROUTES: dict[str, RouteFn] = {
    "create": create,
    "initiate": initiate,
    "complete": complete,
    "abort": abort,
    "preprocess": preprocess,
    "retrieve": retrieve,
    "list": listing,
    "delete": delete,
    "content": content,
}

FILES = Api(root="/v1/files", match=match, routes=ROUTES)
