"""The bytes on the wire: answers written with one send, request bodies drained or read.

Every response is written with one send (headers and body together) on a socket with
TCP_NODELAY, so no small answer waits on Nagle and delayed ACKs. Bodies are streamed in
1 MiB chunks.
"""

from __future__ import annotations

import json
import socket
import struct
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, NoReturn

CHUNK = 2**20


class Done(Exception):
    """The answer has been sent (or the connection dropped); stop handling this request."""


def reason(status: int) -> str:
    return HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Status"


def error_body(message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", **extra}}


class WireHandler(BaseHTTPRequestHandler):
    """The request plumbing every route uses; subclasses count what was sent (`record_status`)."""

    protocol_version = "HTTP/1.1"
    _body_read = False

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def before_answer(self) -> None:
        """Called just before an answer is written."""

    def record_status(self, status: int) -> None:
        """Called once an answer with this status has been written."""

    def send(self, status: int, body: Any = b"", headers: dict[str, str] | None = None, *,
             close: bool = False, content_length: int | None = None) -> None:
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        elif isinstance(body, str):
            body = body.encode()
        lines = [f"HTTP/1.1 {status} {reason(status)}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        lines.append(f"Content-Length: {len(body) if content_length is None else content_length}")
        if close:
            lines.append("Connection: close")
            self.close_connection = True
        self.before_answer()
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        self.record_status(status)

    def send_file(self, status: int, headers: dict[str, str], path: Path, start: int, length: int) -> None:
        """Stream `length` bytes of `path` from `start`; the headers go out with the first chunk."""
        lines = [f"HTTP/1.1 {status} {reason(status)}", *(f"{k}: {v}" for k, v in headers.items())]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        with open(path, "rb") as f:
            f.seek(start)
            left = length
            first = f.read(min(CHUNK, left))
            left -= len(first)
            self.before_answer()
            self.wfile.write(head + first)
            while left > 0 and (chunk := f.read(min(CHUNK, left))):
                self.wfile.write(chunk)
                left -= len(chunk)
        self.record_status(status)

    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        if value is None or not value.isdigit():
            return None
        return int(value)

    def chunked(self) -> bool:
        return "chunked" in self.headers.get("Transfer-Encoding", "").lower()

    def read_chunk(self, n: int) -> bytes:
        """Up to `n` bytes of the body, for a route that reads it itself (`mark_body_read`)."""
        return self.rfile.read(n)

    def mark_body_read(self) -> None:
        """The route reads the body itself; `drain` must not."""
        self._body_read = True

    def drain(self) -> None:
        """Read and forget the request body, so the connection can carry the next request."""
        if self._body_read:
            return
        self.mark_body_read()
        n = self.content_length() or 0
        if self.chunked():
            self.close_connection = True
            return
        while n > 0:
            got = self.rfile.read(min(CHUNK, n))
            if not got:
                break
            n -= len(got)

    def read_small(self, limit: int = 16 * 2**20) -> bytes:
        n = self.content_length() or 0
        if n > limit:
            self.send(413, {"error": {"message": "request body too large"}}, close=True)
            raise Done
        self.mark_body_read()
        return self.rfile.read(n) if n else b""

    def abort_connection(self) -> None:
        """Cut the connection (RST), the way a broken network does."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def error(self, status: int, message: str, **extra: Any) -> NoReturn:
        """Answer with the API's JSON error and stop handling the request."""
        self.drain()
        self.send(status, error_body(message, **extra))
        raise Done
