"""A small HTTP/1.1 server with bounds, for /metrics, /healthz and the status page.

The standard library's ThreadingHTTPServer starts a thread per connection and waits on each
read without a deadline: a thousand clients that send half a request hold a thousand
threads. Here the work is split so that nothing a client does costs a thread:

- One thread (`_serve`) accepts and reads, non-blocking, through a selector. A connection
  stays in it until its request head (the request line and headers) is complete. A head
  larger than `max_head_bytes` is answered 431, one that is not complete `read_seconds`
  after the connection opened, or that has sent nothing for `idle_seconds`, is answered 408
  and closed. At most `max_connections` are open: a new one closes the oldest still reading
  (the slowest), so a fresh scrape always gets in.
- A fixed pool of `workers` threads answers complete requests, from a bounded queue (full:
  503). A worker writes with a timeout (`write_seconds`), so a client that does not read
  holds a worker for that long at most.
- Only GET and HEAD, no request body (413), one request per connection (Connection: close).

The thread count is `workers + 1` whatever the clients do.
"""

from __future__ import annotations

import contextlib
import queue
import selectors
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

import structlog

log = structlog.get_logger("inboxd.http")

REASONS = {200: "OK", 304: "Not Modified", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


@dataclass
class Request:
    method: str
    path: str  # decoded, without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self, head_only: bool = False) -> bytes:
        lines = [f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Status')}",
                 f"Content-Type: {self.content_type}", f"Content-Length: {len(self.body)}", "Connection: close",
                 "Cache-Control: no-store", "X-Content-Type-Options: nosniff",
                 *(f"{k}: {v}" for k, v in self.headers.items())]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else self.body)


def plain(status: int, text: str) -> Response:
    return Response(status, text.encode() + b"\n")


class _Reading:
    __slots__ = ("buf", "opened", "last")

    def __init__(self, now: float) -> None:
        self.buf = b""
        self.opened = now
        self.last = now


class BoundedHTTPServer:
    def __init__(self, host: str, port: int, handle: Callable[[Request], Response], *, workers: int = 4,
                 max_connections: int = 256, queue_size: int = 64, read_seconds: float = 10.0,
                 idle_seconds: float = 5.0, write_seconds: float = 10.0, max_head_bytes: int = 16384) -> None:
        self.handle = handle
        self.workers, self.max_connections = workers, max_connections
        self.read_seconds, self.idle_seconds, self.write_seconds = read_seconds, idle_seconds, write_seconds
        self.max_head_bytes = max_head_bytes
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=128)
        self._listener.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, "listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._reading: dict[socket.socket, _Reading] = {}  # insertion order: oldest first
        self._jobs: queue.Queue[tuple[socket.socket, Request] | None] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def start(self) -> BoundedHTTPServer:
        self._threads = [threading.Thread(target=self._serve, name="http", daemon=True)]
        self._threads += [threading.Thread(target=self._work, name=f"http-{i}", daemon=True)
                          for i in range(self.workers)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        for _ in range(self.workers):
            with contextlib.suppress(queue.Full):
                self._jobs.put(None, timeout=1)
        for t in self._threads:
            t.join(timeout=5)
        for sock in list(self._reading):
            self._close(sock)
        self._sel.close()
        for s in (self._listener, self._wake_r, self._wake_w):
            s.close()

    # --- the reading thread -----------------------------------------------------------

    def _serve(self) -> None:
        next_sweep = 0.0
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=0.25):
                if key.data == "listen":
                    self._accept()
                elif key.data == "wake":
                    with contextlib.suppress(OSError):
                        self._wake_r.recv(64)
                else:
                    self._read(key.fileobj)  # type: ignore[arg-type]
            now = time.monotonic()
            if now >= next_sweep:
                next_sweep = now + 0.25
                self._sweep(now)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the backlog keeps them for later
                log.warning("http.accept_failed", error=str(exc))
                return
            if len(self._reading) >= self.max_connections:
                self._close(next(iter(self._reading)))  # the oldest still reading: the slowest
            sock.setblocking(False)
            self._reading[sock] = _Reading(time.monotonic())
            self._sel.register(sock, selectors.EVENT_READ, "conn")

    def _read(self, sock: socket.socket) -> None:
        state = self._reading.get(sock)
        if state is None:
            return
        try:
            data = sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(sock)
            return
        if not data:
            self._close(sock)
            return
        state.buf += data
        state.last = time.monotonic()
        end = state.buf.find(b"\r\n\r\n")
        if end < 0 and len(state.buf) > self.max_head_bytes:
            self._refuse(sock, plain(431, "request head too large"))
            return
        if end < 0:
            return
        self._sel.unregister(sock)
        del self._reading[sock]
        request = _parse(state.buf[:end])
        if isinstance(request, Response):
            self._refuse(sock, request, registered=False)
            return
        try:
            self._jobs.put_nowait((sock, request))
        except queue.Full:
            self._refuse(sock, plain(503, "busy"), registered=False)

    def _sweep(self, now: float) -> None:
        for sock, state in list(self._reading.items()):
            if now - state.opened > self.read_seconds or now - state.last > self.idle_seconds:
                self._refuse(sock, plain(408, "request not complete in time"))

    def _refuse(self, sock: socket.socket, response: Response, registered: bool = True) -> None:
        """Answer without blocking (what fits in the socket's buffer) and close."""
        with contextlib.suppress(OSError):
            sock.setblocking(False)
            sock.send(response.encode())
        if registered:
            self._close(sock)
        else:
            sock.close()

    def _close(self, sock: socket.socket) -> None:
        if self._reading.pop(sock, None) is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._sel.unregister(sock)
        sock.close()

    # --- the workers --------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            sock, request = item
            try:
                try:
                    response = self.handle(request)
                except Exception:  # noqa: BLE001 - one bad request never ends the server
                    log.exception("http.handler_failed", path=request.path)
                    response = plain(500, "internal error")
                sock.settimeout(self.write_seconds)
                sock.sendall(response.encode(head_only=request.method == "HEAD"))
            except OSError:
                pass  # the client went away, or did not read in time
            finally:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def _parse(head: bytes) -> Request | Response:
    try:
        text = head.decode("latin-1")
        line, *header_lines = text.split("\r\n")
        method, target, version = line.split(" ")
    except ValueError:
        return plain(400, "bad request line")
    if not version.startswith("HTTP/1."):
        return plain(400, "HTTP/1.x only")
    headers: dict[str, str] = {}
    for h in header_lines:
        name, sep, value = h.partition(":")
        if not sep:
            return plain(400, "bad header line")
        headers[name.strip().lower()] = value.strip()
    if method not in ("GET", "HEAD"):
        return Response(405, b"GET and HEAD only\n", headers={"Allow": "GET, HEAD"})
    if headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in headers:
        return plain(413, "no request body here")
    parts = urlsplit(target)
    return Request(method, unquote(parts.path), parse_qs(parts.query), headers)
