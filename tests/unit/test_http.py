"""BoundedHTTPServer in process: a head too large, a head that never ends, a method that is
not GET, more slow connections than the cap, and a fixed number of threads throughout."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from inboxd.service._http import BoundedHTTPServer, Request, Response


def hello(request: Request) -> Response:
    return Response(200, f"hello {request.path} {request.query.get('x', [''])[0]}".encode())


@pytest.fixture
def server() -> Iterator[BoundedHTTPServer]:
    srv = BoundedHTTPServer("127.0.0.1", 0, hello, workers=2, max_connections=8, read_seconds=1.0,
                            idle_seconds=0.5, max_head_bytes=1024).start()
    yield srv
    srv.stop()


def ask(srv: BoundedHTTPServer, raw: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=timeout) as s:
        s.sendall(raw)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_answers_a_get(server):
    reply = ask(server, b"GET /a%20b?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"hello /a b 1")
    assert b"Connection: close" in reply
    head = ask(server, b"HEAD /a HTTP/1.1\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and head.endswith(b"\r\n\r\n")


def test_refuses_what_is_not_a_small_get(server):
    assert ask(server, b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    assert ask(server, b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").startswith(b"HTTP/1.1 413 ")
    assert ask(server, b"GET / HTTP/1.1\r\nX: " + b"a" * 2000).startswith(b"HTTP/1.1 431 ")
    assert ask(server, b"nonsense\r\n\r\n").startswith(b"HTTP/1.1 400 ")


def test_a_head_that_never_ends_is_closed(server):
    t0 = time.monotonic()
    assert ask(server, b"GET / HTTP/1.1\r\nHost").startswith(b"HTTP/1.1 408 ")  # idle 0.5 s
    assert time.monotonic() - t0 < 2.0
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:  # trickles: read_seconds 1 s
        t0 = time.monotonic()
        reply = b""
        for _ in range(20):
            try:
                s.sendall(b"X")
            except OSError:
                break
            time.sleep(0.2)
            s.settimeout(0.01)
            try:
                reply += s.recv(100)
            except (TimeoutError, BlockingIOError):
                continue
            if reply:
                break
        assert reply.startswith(b"HTTP/1.1 408 ") and time.monotonic() - t0 < 2.5


def test_more_slow_clients_than_the_cap_and_a_get_still_answers(server):
    threads = threading.active_count()
    slow = [socket.create_connection(("127.0.0.1", server.port), timeout=5) for _ in range(50)]
    try:
        for s in slow:
            s.sendall(b"GET / HTTP/1.1\r\nHost")
        t0 = time.monotonic()
        assert ask(server, b"GET /ok HTTP/1.1\r\n\r\n", timeout=1.0).endswith(b"hello /ok ")
        assert time.monotonic() - t0 < 1.0
        assert threading.active_count() == threads
        closed = 0
        for s in slow:  # the cap (8): the oldest were closed as new ones came
            s.settimeout(0.5)
            try:
                closed += s.recv(1) == b""
            except ConnectionResetError:  # closed with its half head unread: a reset
                closed += 1
            except TimeoutError:
                pass
        assert closed >= 50 - 8, closed
    finally:
        for s in slow:
            s.close()
