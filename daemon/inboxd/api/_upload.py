"""The two ways a file reaches the Files API (SPEC §1).

`single`: POST /files (no redirects followed) -> PUT the file to the presigned Location,
streamed, exact Content-Length, no Authorization -> POST /files/{id}/preprocess.

`multipart`: a coordinator and small tasks, in the manner of s3transfer. The coordinator
initiates, hands each part to a pool of `part_concurrency` threads, completes (or aborts).
A part task streams its byte range from disk (`RangeBody`, bounded memory whatever the part
size), checks the returned ETag against the MD5 it computed while sending, and retries on its
own. A presigned url refused by storage (expired) makes the coordinator start over with
fresh urls, a bounded number of times, rather than loop.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any

from ..config import UploadConfig
from ._answers import check_id, check_url, error_text, read_json, safe_url
from ._bodies import RangeBody
from ._errors import ApiError, ProtocolError, RejectedError, TransientError, UrlExpiredError
from ._models import FileObject
from ._transport import Transport

MAX_RESTARTS = 2  # fresh presigned urls after an expiry, at most this often


@dataclass
class Source:
    """The open file being uploaded and what the caller already knows of it."""

    fd: int
    size: int
    name: str
    file_type: str
    sha256: str
    progress: Callable[[int], None] | None
    cancel: threading.Event | None


@dataclass
class Outcome:
    file: FileObject
    method: str
    parts: int
    attempts: int


OnCreated = Callable[[str, "str | None"], None]


def _existing(t: Transport, base: str, response: Any, route: str, attempts: list[int]) -> Outcome:
    data = read_json(response, route)
    file_id = check_id(data.get("file_id") if isinstance(data, dict) else None, route)
    return Outcome(retrieve(t, base, file_id, attempts=attempts), "existing", 0, 1 + attempts[0])


def _rejected(response: Any, route: str) -> RejectedError:
    return RejectedError(f"{route}: the server refused the file (HTTP {response.status_code}): "
                         f"{error_text(response, route)}", route=route, status=response.status_code)


def file_object(data: Any, route: str) -> FileObject:
    if isinstance(data, dict) and isinstance(data.get("file"), dict):
        data = data["file"]
    if not isinstance(data, dict):
        raise ProtocolError(f"{route}: the answer is not a file object", route=route)
    try:
        obj = FileObject.model_validate(data)
    except ValueError:  # pydantic's ValidationError is a ValueError
        raise ProtocolError(f"{route}: the answer is not a file object", route=route) from None
    check_id(obj.id, route)
    return obj


def retrieve(t: Transport, base: str, file_id: str, *, attempts: list[int] | None = None,
             cancel: threading.Event | None = None) -> FileObject:
    route = "retrieve"
    r = t.request(route, "GET", f"{base}/files/{check_id(file_id, route)}", attempts=attempts, cancel=cancel)
    if r.status_code != 200:
        raise ProtocolError(f"{route}: HTTP {r.status_code}: {error_text(r, route)}", route=route, status=r.status_code)
    return file_object(read_json(r, route), route)


# --- single -----------------------------------------------------------------------------------


def single(t: Transport, base: str, src: Source, purpose: str, on_created: OnCreated | None) -> Outcome:
    attempts = [0]
    for _ in range(MAX_RESTARTS + 1):
        route = "create"
        form = {"purpose": purpose, "file_name": src.name, "file_type": src.file_type, "checksum": src.sha256}
        r = t.request(route, "POST", f"{base}/files", fields=form,
                      attempts=attempts, cancel=src.cancel)
        if r.status_code == 409:
            return _existing(t, base, r, route, attempts)
        if r.status_code not in (301, 302, 303, 307, 308):
            if 400 <= r.status_code < 500:
                raise _rejected(r, route)
            raise ProtocolError(f"{route}: expected a redirect to the upload url, got HTTP {r.status_code}",
                                route=route, status=r.status_code)
        location = check_url(r.headers.get("Location"), route)
        file_id = check_id(r.headers.get("X-Together-File-Id"), route)
        r.close()
        if on_created is not None:
            on_created(file_id, None)
        try:
            _put(t, "put", location, src, 0, src.size, attempts)
        except UrlExpiredError:
            continue
        route = "preprocess"
        r = t.request(route, "POST", f"{base}/files/{file_id}/preprocess", attempts=attempts, cancel=src.cancel)
        if r.status_code != 200:
            if 400 <= r.status_code < 500:
                raise _rejected(r, route)
            raise ProtocolError(f"{route}: HTTP {r.status_code}", route=route, status=r.status_code)
        return Outcome(file_object(read_json(r, route), route), "single", 1, 1 + attempts[0])
    raise TransientError("put: the presigned url kept expiring", route="put")


def _put(t: Transport, route: str, url: str, src: Source, offset: int, length: int, attempts: list[int],
         headers: dict[str, str] | None = None, md5: bool = False) -> str | None:
    """PUT one byte range to a presigned url; return the ETag (checked against the MD5 when md5)."""
    for attempt in range(t.max_retries + 1):
        bodies: list[RangeBody] = []

        def body(bodies: list[RangeBody] = bodies) -> RangeBody:
            b = RangeBody(src.fd, offset, length, progress=src.progress, cancel=src.cancel, md5=md5)
            bodies.append(b)
            return b

        r = t.request(route, "PUT", url, storage=True, body=body, attempts=attempts, cancel=src.cancel,
                      headers={**(headers or {}), "Content-Length": str(length)})
        text = ""
        if r.status_code == 403:
            raise UrlExpiredError(f"{route}: storage refused the presigned url (HTTP 403; expired?) "
                                  f"{safe_url(url)}", route=route, status=403)
        if 300 <= r.status_code < 400:
            r.close()
            raise ProtocolError(f"{route}: storage answered a redirect (HTTP {r.status_code}); not followed",
                                route=route, status=r.status_code)
        if r.status_code != 200:
            text = error_text(r, route)
            raise RejectedError(f"{route}: storage refused the upload (HTTP {r.status_code}): {text}", route=route,
                                status=r.status_code)
        r.close()
        etag = r.headers.get("ETag")
        if not md5:
            return etag
        if not etag:
            raise ProtocolError(f"{route}: storage answered without an ETag", route=route, status=200)
        sent = bodies[-1].md5.hexdigest() if bodies and bodies[-1].md5 is not None else None
        if etag.strip('"') == sent:
            return etag.strip('"')
        if attempt >= t.max_retries:
            break
        attempts[0] += 1
        t.emit("retry", route=route, attempt=attempt + 1, delay=0, reason="etag_mismatch", status=200)
    raise TransientError(f"{route}: the ETag never matched the MD5 of the bytes sent", route=route)


# --- multipart ------------------------------------------------------------------------------


def plan_parts(size: int, cfg: UploadConfig) -> tuple[int, int]:
    """(part size, number of parts): the configured size, grown so there are at most max_parts."""
    part = max(cfg.part_size, math.ceil(size / cfg.max_parts))
    return part, max(1, math.ceil(size / part))


def multipart(t: Transport, base: str, src: Source, purpose: str, cfg: UploadConfig,
              on_created: OnCreated | None) -> Outcome:
    attempts = [0]
    part_size, num_parts = plan_parts(src.size, cfg)
    for _ in range(MAX_RESTARTS + 1):
        route = "initiate"
        payload = {"file_name": src.name, "file_size": src.size, "num_parts": num_parts, "purpose": purpose,
                   "file_type": src.file_type, "checksum": src.sha256}
        r = t.request(route, "POST", f"{base}/files/multipart/initiate", json=payload, attempts=attempts,
                      cancel=src.cancel)
        if r.status_code == 409:
            return _existing(t, base, r, route, attempts)
        if r.status_code != 200:
            if 400 <= r.status_code < 500:
                raise _rejected(r, route)
            raise ProtocolError(f"{route}: HTTP {r.status_code}", route=route, status=r.status_code)
        info = read_json(r, route)
        if not isinstance(info, dict):
            raise ProtocolError(f"{route}: the answer is not an object", route=route)
        upload_id = info.get("upload_id")
        if not isinstance(upload_id, str) or not upload_id:
            raise ProtocolError(f"{route}: no upload_id in the answer", route=route)
        file_id = check_id(info.get("file_id"), route)
        if on_created is not None:
            on_created(file_id, upload_id)
        try:
            urls = _part_urls(info.get("parts"), num_parts, route)
            etags = _send_parts(t, src, urls, part_size, cfg.part_concurrency, attempts)
        except UrlExpiredError:
            abort(t, base, upload_id, file_id)
            continue
        except BaseException:
            abort(t, base, upload_id, file_id)
            raise
        route = "complete"
        body = {"upload_id": upload_id, "file_id": file_id,
                "parts": [{"part_number": n, "etag": etags[n]} for n in sorted(etags)]}
        r = t.request(route, "POST", f"{base}/files/multipart/complete", json=body, attempts=attempts,
                      cancel=src.cancel)
        if r.status_code != 200:
            err = _rejected(r, route) if 400 <= r.status_code < 500 else ProtocolError(
                f"{route}: HTTP {r.status_code}", route=route, status=r.status_code)
            abort(t, base, upload_id, file_id)
            raise err
        return Outcome(file_object(read_json(r, route), route), "multipart", num_parts, 1 + attempts[0])
    raise TransientError("part_put: the presigned urls kept expiring", route="part_put")


def _part_urls(parts: Any, num_parts: int, route: str) -> dict[int, tuple[str, dict[str, str]]]:
    if not isinstance(parts, list):
        raise ProtocolError(f"{route}: no parts in the answer", route=route)
    out: dict[int, tuple[str, dict[str, str]]] = {}
    for p in parts:
        if not isinstance(p, dict):
            raise ProtocolError(f"{route}: a part is not an object", route=route)
        n = p.get("PartNumber", p.get("part_number"))
        url = check_url(p.get("URL", p.get("UploadURL")), route)
        headers = p.get("Headers") or {}
        if not isinstance(n, int) or not isinstance(headers, dict):
            raise ProtocolError(f"{route}: a part without a number", route=route)
        if any(k.lower() == "authorization" for k in headers):
            raise ProtocolError(f"{route}: a part asks for an Authorization header; refused", route=route)
        out[n] = (url, {str(k): str(v) for k, v in headers.items()})
    if sorted(out) != list(range(1, num_parts + 1)):
        raise ProtocolError(f"{route}: expected urls for parts 1..{num_parts}, got {len(out)}", route=route)
    return out


class PartsCancel(threading.Event):
    """Set when one part failed for good (the other parts stop sending at once, as
    s3transfer's coordinator cancels every task), or when the caller's own event is set."""

    def __init__(self, parent: threading.Event | None) -> None:
        super().__init__()
        self.parent = parent

    def is_set(self) -> bool:
        return super().is_set() or (self.parent is not None and self.parent.is_set())

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = 0.1 if deadline is None else min(0.1, deadline - time.monotonic())
            if left <= 0:
                return False
            super().wait(left)
        return True


def _send_parts(t: Transport, src: Source, urls: dict[int, tuple[str, dict[str, str]]], part_size: int,
                concurrency: int, attempts: list[int]) -> dict[int, str]:
    lock = threading.Lock()
    stop = PartsCancel(src.cancel)
    part_src = replace(src, cancel=stop)

    def task(n: int) -> tuple[int, str]:
        offset = (n - 1) * part_size
        length = min(part_size, src.size - offset)
        url, headers = urls[n]
        mine = [0]
        try:
            etag = _put(t, "part_put", url, part_src, offset, length, mine, headers=headers, md5=True)
        finally:
            with lock:
                attempts[0] += mine[0]
        if etag is None:
            raise ProtocolError("part_put: storage answered without an ETag", route="part_put", status=200)
        return n, etag

    etags: dict[int, str] = {}
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="part") as pool:
        pending = {pool.submit(task, n) for n in sorted(urls)}
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for fut in done:
                exc = fut.exception()
                if exc is not None:
                    stop.set()  # parts in flight stop sending now, not after their last byte
                    for p in pending:
                        p.cancel()
                    raise exc
                n, etag = fut.result()
                etags[n] = etag
    return etags


def abort(t: Transport, base: str, upload_id: str, file_id: str) -> None:
    try:
        r = t.request("abort", "POST", f"{base}/files/multipart/abort", json={"upload_id": upload_id,
                                                                             "file_id": file_id})
        r.close()
    except ApiError:
        pass


def file_type_of(name: str) -> str:
    ext = os.path.splitext(name)[1].lower().lstrip(".")
    return ext if ext in ("jsonl", "parquet", "csv") else "jsonl"


__all__ = ["Source", "Outcome", "abort", "single", "multipart", "retrieve", "plan_parts", "file_type_of"]
