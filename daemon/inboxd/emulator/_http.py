"""The emulator's HTTP side: the Files API under /v1, presigned storage under /_storage,
the control endpoints under /v1/_emulator, and a second listener on another loopback
address that plays "some other host" for hostile redirects.

Every response is written with one send (headers and body together) on a socket with
TCP_NODELAY, so no small answer waits on Nagle and delayed ACKs. Bodies are streamed to and
from disk in 1 MiB chunks.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import os
import random
import re
import signal
import socket
import struct
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ._settings import EmulatorSettings, Faults
from ._store import MIN_PART, FileRecord, Store

CHUNK = 2**20
PURPOSES = {"fine-tune", "batch-api", "eval", "calibration", "eval-output"}
FILE_TYPES = {"jsonl", "parquet", "csv"}
_FILE_ROUTE = re.compile(r"^/v1/files/([^/]+)(/preprocess|/content)?$")
HOSTILE = {"no_location", "file_location", "other_host_location", "bad_file_id", "no_etag", "garbage_json",
           "hang", "huge_content_length", "redirect_loop"}


_HASHERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="emulator-hash")


def _md5_and_write(md5: Any, out: Any, chunk: bytes) -> None:
    md5.update(chunk)
    out.write(chunk)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    emulator: Emulator


class _Done(Exception):
    """The answer has been sent (or the connection dropped); stop handling this request."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    route = "unknown"
    _body_read = False

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    @property
    def emu(self) -> Emulator:
        return self.server.emulator

    @property
    def store(self) -> Store:
        return self.server.emulator.store

    # -- plumbing ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _send(self, status: int, body: Any = b"", headers: dict[str, str] | None = None, *,
              close: bool = False, content_length: int | None = None) -> None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        elif isinstance(body, str):
            body = body.encode()
        reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Status"
        lines = [f"HTTP/1.1 {status} {reason}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
        if close:
            lines.append("Connection: close")
            self.close_connection = True
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        with self.store.lock:
            self.store.statuses[f"{self.route} {status}"] += 1

    def _length(self) -> int | None:
        value = self.headers.get("Content-Length")
        if value is None or not value.isdigit():
            return None
        return int(value)

    def _drain(self) -> None:
        if self._body_read:
            return
        self._body_read = True
        n = self._length() or 0
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return
        while n > 0:
            got = self.rfile.read(min(CHUNK, n))
            if not got:
                break
            n -= len(got)

    def _read_small(self, limit: int = 16 * 2**20) -> bytes:
        n = self._length() or 0
        if n > limit:
            self._send(413, {"error": {"message": "request body too large"}}, close=True)
            raise _Done
        self._body_read = True
        return self.rfile.read(n) if n else b""

    def _abort_connection(self) -> None:
        """Cut the connection (RST), the way a broken network does."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _error(self, status: int, message: str, **extra: Any) -> None:
        self._drain()
        self._send(status, {"error": {"message": message, "type": "invalid_request_error", **extra}})
        raise _Done

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        path, query = parts.path, dict(parse_qsl(parts.query))
        self.emu.pending_hostile.value = None
        self._body_read = False
        try:
            if path.startswith("/_storage/"):
                self.route = "part_put" if path.startswith("/_storage/p/") else "put"
                self._count()
                if method != "PUT":
                    self._error(405, "storage urls take PUT")
                self._storage_put(path, query)
            elif path.startswith("/v1/_emulator/"):
                self.route = "control"
                self._auth()
                self._control(method, path[len("/v1/_emulator/"):])
            elif path == "/v1/files" or path.startswith("/v1/files/"):
                self.route, file_id = self._api_route(method, path)
                self._count()
                self._auth()
                self._faults_for_api(query)
                getattr(self, f"_api_{self.route}")(file_id, query)
            else:
                self._error(404, f"no route {method} {path}")
        except _Done:
            pass
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _count(self) -> None:
        with self.store.lock:
            self.store.requests[self.route] += 1

    def _auth(self) -> None:
        if self.headers.get("Authorization", "") != f"Bearer {self.emu.settings.key}":
            self._error(401, "Invalid API key provided", code="invalid_api_key")

    @staticmethod
    def _api_route(method: str, path: str) -> tuple[str, str | None]:
        fixed = {("POST", "/v1/files"): "create", ("GET", "/v1/files"): "list",
                 ("POST", "/v1/files/multipart/initiate"): "initiate",
                 ("POST", "/v1/files/multipart/complete"): "complete",
                 ("POST", "/v1/files/multipart/abort"): "abort"}
        if (method, path) in fixed:
            return fixed[(method, path)], None
        m = _FILE_ROUTE.match(path)
        if m:
            tail = m.group(2)
            route = {("GET", None): "retrieve", ("DELETE", None): "delete", ("POST", "/preprocess"): "preprocess",
                     ("GET", "/content"): "content"}.get((method, tail))
            if route:
                return route, m.group(1)
        return "unknown", None

    def _api_unknown(self, file_id: str | None, query: dict[str, str]) -> None:
        self._error(404, "no such route")

    # -- faults --------------------------------------------------------------------------------

    def _scripted(self, part_number: int | None = None) -> dict[str, Any] | None:
        return self.emu.take_script(self.route, part_number)

    def _injected(self, kind: str) -> None:
        with self.store.lock:
            self.store.faults_injected[kind] += 1

    def _faults_for_api(self, query: dict[str, str]) -> None:
        faults = self.emu.faults
        if faults.slow_seconds:
            time.sleep(faults.slow_seconds)
        script = self._scripted()
        if script:
            self._apply_script(script)
        if random.random() < faults.rate_limit_rate:
            self._injected("rate_limit")
            self._drain()
            ra = faults.retry_after_seconds
            self._send(429, {"error": {"message": "rate limited"}},
                       {"Retry-After": f"{ra:g}", "retry-after-ms": str(int(ra * 1000))})
            raise _Done
        if random.random() < faults.error_rate:
            self._injected("error")
            self._error(500, "injected server error")

    def _apply_script(self, script: dict[str, Any]) -> None:
        """Answer with a scripted status or hostile behaviour (for routes other than the ones
        whose hostile answers need real state: those are handled where the answer is made)."""
        hostile = script.get("hostile")
        if hostile is None:
            status = int(script.get("status", 500))
            self._injected(f"scripted_{status}")
            self._drain()
            headers = {}
            if status == 429:
                ra = float(script.get("retry_after", self.emu.faults.retry_after_seconds))
                headers = {"Retry-After": f"{ra:g}", "retry-after-ms": str(int(ra * 1000))}
            self._send(status, {"error": {"message": f"scripted {status}"}}, headers)
            raise _Done
        self._injected(f"hostile_{hostile}")
        if hostile == "hang":
            self._drain()
            self.emu.stopping.wait(float(script.get("seconds", 300)))
            self._abort_connection()
            raise _Done
        if hostile == "garbage_json":
            self._drain()
            self._send(200, b"<html>this is not json{", {"Content-Type": "application/json"})
            raise _Done
        if hostile == "huge_content_length":
            self._drain()
            self._send(200, b'{"id": "file-', {"Content-Type": "application/json"}, content_length=5 * 10**9,
                       close=True)
            self._abort_connection()
            raise _Done
        if hostile == "redirect_loop":
            self._drain()
            self._send(307, b"", {"Location": self.path})
            raise _Done
        self.emu.pending_hostile.value = hostile  # answered by the route itself

    def _hostile(self) -> str | None:
        value = getattr(self.emu.pending_hostile, "value", None)
        self.emu.pending_hostile.value = None
        return value

    # -- API routes ----------------------------------------------------------------------------

    def _params(self, query: dict[str, str]) -> dict[str, Any]:
        """Fields from the query string, a JSON body, a urlencoded form or a multipart form."""
        body = self._read_small()
        params: dict[str, Any] = dict(query)
        ctype = self.headers.get("Content-Type", "")
        if not body:
            return params
        if ctype.startswith("application/json") or body[:1] in (b"{", b"["):
            try:
                data = json.loads(body)
            except ValueError:
                self._send(400, {"error": {"message": "body is not valid JSON"}})
                raise _Done from None
            if isinstance(data, dict):
                params.update(data)
        elif ctype.startswith("multipart/form-data"):
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {ctype}\r\n\r\n".encode("latin-1") + body)
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                if name:
                    payload = part.get_payload(decode=True) or b""
                    params[str(name)] = payload.decode("utf-8", "replace")
        else:
            params.update(dict(parse_qsl(body.decode("utf-8", "replace"))))
        return params

    def _create_params(self, params: dict[str, Any]) -> tuple[str, str, str, str | None]:
        purpose = str(params.get("purpose", ""))
        if purpose not in PURPOSES:
            self._error(400, f"invalid purpose {purpose!r}")
        name = str(params.get("file_name", "")).strip()
        if not name:
            self._error(400, "file_name is required")
        file_type = str(params.get("file_type", "jsonl"))
        if file_type not in FILE_TYPES:
            self._error(400, f"invalid file_type {file_type!r}")
        checksum = params.get("checksum") or None
        return purpose, name, file_type, (str(checksum) if checksum else None)

    def _conflict(self, checksum: str | None, purpose: str) -> None:
        existing = self.store.existing(checksum, purpose)
        if existing is not None:
            self._send(409, {"file_id": existing.id, "message": "a file with this checksum already exists"})
            raise _Done

    def _storage_url(self, path: str) -> str:
        return self.store.presign(self.emu.origin, path, self.emu.url_ttl)

    def _api_create(self, _id: str | None, query: dict[str, str]) -> None:
        purpose, name, file_type, checksum = self._create_params(self._params(query))
        self._conflict(checksum, purpose)
        rec = self.store.create(purpose, name, file_type, checksum, "single")
        location = self._storage_url(f"/_storage/s/{rec.id}")
        file_id = rec.id
        hostile = self._hostile()
        headers = {"Location": location, "X-Together-File-Id": file_id}
        if hostile == "no_location":
            del headers["Location"]
        elif hostile == "file_location":
            headers["Location"] = "file:///etc/passwd"
        elif hostile == "other_host_location":
            headers["Location"] = f"{self.emu.other_origin}/upload/{rec.id}"
        elif hostile == "bad_file_id":
            headers["X-Together-File-Id"] = "../../etc/passwd"
        self._send(302, b"", headers)

    def _api_initiate(self, _id: str | None, query: dict[str, str]) -> None:
        params = self._params(query)
        purpose, name, file_type, checksum = self._create_params(params)
        try:
            file_size, num_parts = int(params.get("file_size", -1)), int(params.get("num_parts", -1))
        except (TypeError, ValueError):
            self._error(400, "file_size and num_parts must be integers")
        if file_size <= 0 or not 1 <= num_parts <= 10_000:
            self._error(400, "file_size must be > 0 and num_parts 1..10000")
        self._conflict(checksum, purpose)
        rec = self.store.create(purpose, name, file_type, checksum, "multipart")
        mp = self.store.open_multipart(rec, file_size, num_parts)
        hostile = self._hostile()
        parts = []
        for n in range(1, num_parts + 1):
            url = self._storage_url(f"/_storage/p/{mp.upload_id}/{n}")
            if hostile == "file_location":
                url = "file:///etc/passwd"
            elif hostile == "other_host_location":
                url = f"{self.emu.other_origin}/upload/{mp.upload_id}/{n}"
            parts.append({"PartNumber": n, "URL": url, "Headers": {}})
        file_id = "../" + rec.id if hostile == "bad_file_id" else rec.id
        self._send(200, {"upload_id": mp.upload_id, "file_id": file_id, "parts": parts})

    def _api_complete(self, _id: str | None, query: dict[str, str]) -> None:
        params = self._params(query)
        mp = self.store.multipart.get(str(params.get("upload_id", "")))
        if mp is None or mp.file_id != params.get("file_id"):
            self._error(404, "NoSuchUpload: unknown upload_id or file_id")
        if mp.state != "open":
            self._error(400, f"upload is {mp.state}")
        given = params.get("parts")
        if not isinstance(given, list) or not given:
            self._error(400, "parts must be a non-empty list")
        numbers = []
        for p in given:
            if not isinstance(p, dict):
                self._error(400, "InvalidPart: each part is {part_number, etag}")
            number = p.get("part_number", p.get("PartNumber"))
            etag = str(p.get("etag", p.get("ETag", ""))).strip('"')
            stored = mp.parts.get(number) if isinstance(number, int) else None
            if stored is None or stored[0] != etag:
                self._error(400, f"InvalidPart: part {number} was not uploaded with that ETag")
            numbers.append(number)
        if numbers != sorted(numbers) or len(set(numbers)) != len(numbers):
            self._error(400, "InvalidPartOrder: parts must be in ascending order, once each")
        if numbers != list(range(1, mp.num_parts + 1)):
            self._error(400, f"InvalidPart: expected parts 1..{mp.num_parts}")
        for n in numbers[:-1]:
            if mp.parts[n][1] < MIN_PART:
                self._error(400, f"EntityTooSmall: part {n} is smaller than 5 MiB")
        total = sum(mp.parts[n][1] for n in numbers)
        if total != mp.file_size:
            self._error(400, f"the parts add up to {total} bytes, not the declared {mp.file_size}")
        rec = self.store.files[mp.file_id]
        size, digest = self.store.assemble(mp)
        if rec.checksum and rec.checksum != digest:
            self.store.content_path(rec.id).unlink(missing_ok=True)
            mp.state = "aborted"
            self._error(400, "BadDigest: the content does not match the checksum")
        mp.state = "completed"
        self.store.content_arrived(rec, size, digest)
        self.store.start_processing(rec)
        self._send(200, {"file": rec.public()})

    def _api_abort(self, _id: str | None, query: dict[str, str]) -> None:
        params = self._params(query)
        mp = self.store.multipart.get(str(params.get("upload_id", "")))
        if mp is None or mp.file_id != params.get("file_id"):
            self._error(404, "NoSuchUpload")
        if mp.state == "open":
            mp.state = "aborted"
            self.store.discard_parts(mp)
            self.store.delete(mp.file_id)
        self._send(200, {"upload_id": mp.upload_id, "status": mp.state})

    def _file(self, file_id: str | None) -> FileRecord:
        rec = self.store.get(file_id or "")
        if rec is None:
            self._error(404, f"file {file_id} not found")
        return rec

    def _api_preprocess(self, file_id: str | None, query: dict[str, str]) -> None:
        self._drain()
        rec = self._file(file_id)
        if rec.state != "uploaded":
            self._error(400, "the file has no content yet (PUT it to its upload url first)")
        self.store.start_processing(rec)
        self._send(200, self._file(file_id).public())

    def _api_retrieve(self, file_id: str | None, query: dict[str, str]) -> None:
        self._drain()
        self._send(200, self._file(file_id).public())

    def _api_list(self, _id: str | None, query: dict[str, str]) -> None:
        self._drain()
        self._send(200, {"object": "list", "data": [r.public() for r in self.store.listing()]})

    def _api_delete(self, file_id: str | None, query: dict[str, str]) -> None:
        self._drain()
        self._file(file_id)
        self.store.delete(file_id or "")
        self._send(200, {"id": file_id, "object": "file", "deleted": True})

    def _api_content(self, file_id: str | None, query: dict[str, str]) -> None:
        self._drain()
        rec = self._file(file_id)
        if rec.state != "uploaded":
            self._error(404, "no content")
        path = self.store.content_path(rec.id)
        size = path.stat().st_size
        start, end, status = 0, size - 1, 200
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        if m and size:
            start, end, status = int(m.group(1)), min(size - 1, int(m.group(2) or size - 1)), 206
        length = max(0, end - start + 1)
        head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {length}\r\n"
                + (f"Content-Range: bytes {start}-{end}/{size}\r\n" if status == 206 else "")
                + f"Content-Disposition: attachment; filename=\"{rec.filename}\"\r\n\r\n")
        with open(path, "rb") as f:
            f.seek(start)
            left = length
            first = f.read(min(CHUNK, left))
            left -= len(first)
            self.wfile.write(head.encode("latin-1") + first)
            while left > 0 and (chunk := f.read(min(CHUNK, left))):
                self.wfile.write(chunk)
                left -= len(chunk)
        with self.store.lock:
            self.store.statuses[f"{self.route} {status}"] += 1

    # -- storage -------------------------------------------------------------------------------

    def _storage_put(self, path: str, query: dict[str, str]) -> None:
        if "Authorization" in self.headers:
            with self.store.lock:
                self.store.storage_auth_headers += 1
            self._error(400, "InvalidArgument: only one auth mechanism allowed (the url is already signed)")
        why = self.store.verify(path, query)
        if why:
            self._drain()
            self._send(403, f"<Error><Code>AccessDenied</Code><Message>{why}</Message></Error>",
                       {"Content-Type": "application/xml"})
            raise _Done
        length = self._length()
        if length is None or "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._send(411, "<Error><Code>MissingContentLength</Code></Error>", close=True)
            raise _Done
        pieces = path.split("/")  # ['', '_storage', 's'|'p', id, (n)]
        part_number = int(pieces[4]) if pieces[2] == "p" and len(pieces) > 4 and pieces[4].isdigit() else None
        faults = self.emu.faults
        if faults.slow_seconds:
            time.sleep(faults.slow_seconds)
        script = self._scripted(part_number)
        if script and script.get("hostile") == "no_etag":
            self._injected("hostile_no_etag")
            no_etag = True
        else:
            no_etag = False
            if script:
                self._apply_script(script)
        if random.random() < faults.part_error_rate:
            self._injected("storage_503")
            self._drain()
            self._send(503, "<Error><Code>SlowDown</Code></Error>", {"Content-Type": "application/xml"})
            raise _Done
        drop_at = length // 2 if length and random.random() < faults.drop_rate else None
        if pieces[2] == "s":
            self._put_single(pieces[3], length, drop_at, no_etag)
        else:
            self._put_part(pieces[3], part_number, length, drop_at, no_etag)

    def _receive(self, dest: Path, length: int, drop_at: int | None) -> tuple[str, str] | None:
        """Stream the body into `dest`; (md5, sha256), or None if the body did not all arrive."""
        md5, sha = hashlib.md5(), hashlib.sha256()
        self._body_read = True
        tmp = dest.with_name(dest.name + f".{threading.get_ident()}.tmp")
        got = 0
        # the next chunk is read from the socket while the last one is hashed (md5 and sha256 on
        # two threads; hashlib lets go of the GIL) and written: the emulator keeps up with curl
        pending: list[Future[Any]] = []
        with open(tmp, "wb") as out:
            while got < length:
                if drop_at is not None and got >= drop_at:
                    self._injected("drop")
                    for fut in pending:
                        fut.result()
                    out.close()
                    tmp.unlink(missing_ok=True)
                    self._abort_connection()
                    return None
                want = min(CHUNK, length - got) if drop_at is None else min(CHUNK, length - got, max(1, drop_at - got))
                chunk = self.rfile.read(want)
                if not chunk:
                    break
                for fut in pending:
                    fut.result()
                pending = [_HASHERS.submit(sha.update, chunk), _HASHERS.submit(_md5_and_write, md5, out, chunk)]
                got += len(chunk)
            for fut in pending:
                fut.result()
        if got != length:
            tmp.unlink(missing_ok=True)
            self.close_connection = True
            return None
        os.replace(tmp, dest)
        return md5.hexdigest(), sha.hexdigest()

    def _put_single(self, file_id: str, length: int, drop_at: int | None, no_etag: bool) -> None:
        rec = self.store.files.get(file_id)
        if rec is None or rec.method != "single" or rec.state == "deleted":
            self._error(404, "NoSuchKey")
        result = self._receive(self.store.content_path(file_id), length, drop_at)
        if result is None:
            raise _Done
        md5, digest = result
        if rec.checksum and rec.checksum != digest:
            self.store.content_path(file_id).unlink(missing_ok=True)
            self._send(400, "<Error><Code>BadDigest</Code><Message>content does not match the checksum given at "
                            "create</Message></Error>", {"Content-Type": "application/xml"})
            raise _Done
        self.store.content_arrived(rec, length, digest)
        self._send(200, b"", {} if no_etag else {"ETag": f'"{md5}"'})

    def _put_part(self, upload_id: str, number: int | None, length: int, drop_at: int | None, no_etag: bool) -> None:
        mp = self.store.multipart.get(upload_id)
        if mp is None or mp.state != "open":
            self._error(404, "NoSuchUpload")
        if number is None or not 1 <= number <= mp.num_parts:
            self._error(400, "InvalidArgument: part number out of range")
        result = self._receive(self.store.part_path(upload_id, number), length, drop_at)
        if result is None:
            raise _Done
        md5, _ = result
        with self.store.lock:
            mp.parts[number] = (md5, length)
        self._send(200, b"", {} if no_etag else {"ETag": f'"{md5}"'})

    # -- control -------------------------------------------------------------------------------

    def _control(self, method: str, what: str) -> None:
        if method == "GET" and what == "stats":
            self._drain()
            self._send(200, self.emu.stats())
        elif method == "POST" and what == "faults":
            body = self._read_small()
            values = json.loads(body or b"{}")
            self.emu.set_faults(values)
            self._send(200, self.emu.settings_dict())
        elif method == "POST" and what == "script":
            body = self._read_small()
            entries = json.loads(body or b"[]")
            bad = [e for e in entries if not isinstance(e, dict) or (e.get("hostile") and e["hostile"] not in HOSTILE)]
            if bad:
                self._send(400, {"error": {"message": f"bad script entries: {bad}", "hostile_modes": sorted(HOSTILE)}})
                return
            self.emu.add_script(entries)
            self._send(200, {"script": self.emu.script_snapshot()})
        elif method == "POST" and what == "reset":
            self._drain()
            self.emu.reset()
            self._send(200, {"reset": True})
        else:
            self._error(404, f"no control route {method} {what}")


class _OtherHostHandler(BaseHTTPRequestHandler):
    """Plays a host that is not the API: records whether the key was sent to it."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _any(self) -> None:
        emu = self.server.emulator
        with emu.store.lock:
            emu.other_host["requests"] += 1
            if "Authorization" in self.headers:
                emu.other_host["auth_headers"] += 1
        n = int(self.headers.get("Content-Length") or 0)
        while n > 0:
            got = self.rfile.read(min(CHUNK, n))
            if not got:
                break
            n -= len(got)
        self.wfile.write(b'HTTP/1.1 200 OK\r\nETag: "0"\r\nContent-Length: 0\r\n\r\n')

    do_GET = do_PUT = do_POST = _any


class Emulator:
    """The Files API on loopback. `start()` serves in background threads; `stop()` ends it."""

    def __init__(self, settings: EmulatorSettings | None = None) -> None:
        self.settings = settings or EmulatorSettings()
        self.faults = Faults(**vars(self.settings.faults))
        self.url_ttl = self.settings.url_ttl_seconds
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        data_dir = self.settings.data_dir
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="inboxd-emulator-")
            data_dir = Path(self._tmp.name)
        self.store = Store(Path(data_dir), self.settings.processing_delay_seconds)
        self.stopping = threading.Event()
        self.pending_hostile = threading.local()
        self.other_host = {"requests": 0, "auth_headers": 0}
        self._script: list[dict[str, Any]] = []
        self._servers: list[_Server] = []

    @property
    def key(self) -> str:
        return self.settings.key

    def start(self) -> Emulator:
        main = _Server((self.settings.host, self.settings.port), Handler)
        main.emulator = self
        try:
            other = _Server(("127.0.0.2", 0), _OtherHostHandler)
        except OSError:
            other = _Server(("127.0.0.1", 0), _OtherHostHandler)
        other.emulator = self
        self._servers = [main, other]
        for srv in self._servers:
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True,
                             name=f"emulator-{srv.server_address[1]}").start()
        return self

    @property
    def origin(self) -> str:
        host, port = self._servers[0].server_address[:2]
        return f"http://{host}:{port}"

    @property
    def other_origin(self) -> str:
        host, port = self._servers[1].server_address[:2]
        return f"http://{host}:{port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"

    def stop(self) -> None:
        self.stopping.set()
        for srv in self._servers:
            srv.shutdown()
            srv.server_close()
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- control -------------------------------------------------------------------------------

    def set_faults(self, values: dict[str, Any]) -> None:
        with self.store.lock:
            self.faults.update(values)
            if "url_ttl_seconds" in values:
                self.url_ttl = float(values["url_ttl_seconds"])
            if "processing_delay_seconds" in values:
                self.store.processing_delay = float(values["processing_delay_seconds"])

    def settings_dict(self) -> dict[str, Any]:
        return {**vars(self.faults), "url_ttl_seconds": self.url_ttl,
                "processing_delay_seconds": self.store.processing_delay}

    def add_script(self, entries: list[dict[str, Any]]) -> None:
        with self.store.lock:
            for e in entries:
                self._script.append({**e, "times": int(e.get("times", 1))})

    def script_snapshot(self) -> list[dict[str, Any]]:
        with self.store.lock:
            return [dict(e) for e in self._script]

    def take_script(self, route: str, part_number: int | None) -> dict[str, Any] | None:
        with self.store.lock:
            for e in self._script:
                if e.get("route") == route and e.get("part_number") in (None, part_number):
                    e["times"] -= 1
                    if e["times"] <= 0:
                        self._script.remove(e)
                    return dict(e)
        return None

    def reset(self) -> None:
        with self.store.lock:
            self.faults.__init__()  # type: ignore[misc]
            self.url_ttl = self.settings.url_ttl_seconds
            self.store.processing_delay = self.settings.processing_delay_seconds
            self._script.clear()
            self.store.requests.clear()
            self.store.statuses.clear()
            self.store.faults_injected.clear()
            self.store.storage_auth_headers = 0
            self.other_host.update(requests=0, auth_headers=0)

    def stats(self) -> dict[str, Any]:
        out = self.store.stats()
        with self.store.lock:
            out["other_host"] = dict(self.other_host)
            out["script_left"] = [dict(e) for e in self._script]
        return out


def serve_forever(settings: EmulatorSettings) -> int:
    """`inboxd emulator`: print the base url as the first line, serve until SIGTERM/SIGINT."""
    emu = Emulator(settings).start()
    print(emu.base_url, flush=True)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    emu.stop()
    return 0
