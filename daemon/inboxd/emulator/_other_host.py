"""A second listener, on another loopback address, that plays "some other host" for the
hostile mode other_host_location: it counts requests and the Authorization headers sent to it
(a client must never send its key anywhere but the API)."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from ._wire import CHUNK

if TYPE_CHECKING:
    from ._listener import Listener


class OtherHostHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Listener

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _any(self) -> None:
        self.server.emulator.store.counts.other_host("Authorization" in self.headers)
        n = int(self.headers.get("Content-Length") or 0)
        while n > 0:
            got = self.rfile.read(min(CHUNK, n))
            if not got:
                break
            n -= len(got)
        self.wfile.write(b'HTTP/1.1 200 OK\r\nETag: "0"\r\nContent-Length: 0\r\n\r\n')

    do_GET = do_PUT = do_POST = _any
