"""The metrics, health and status server under slow clients: a running daemon, a thousand
connections that each send half a request head and then nothing. The daemon's thread count
stays where it was (a fixed pool, no thread per connection) and /healthz and /metrics answer
within a second while the thousand are connected."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import requests

from tests.helpers.daemon import start_daemon, write_config

SLOW_CLIENTS = 1000


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_a_thousand_slow_clients_take_no_threads_and_healthz_answers(tmp_path, emu):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{"path": inbox, "purpose": "batch-api"}],
                       daemon={"metrics_address": "127.0.0.1:0", "settle_seconds": 0.1})
    with start_daemon(cfg, key=emu.key) as d:
        (listening,) = d.wait_event("metrics.listening")
        base = f"http://{listening['address']}"
        host, port = listening["address"].rsplit(":", 1)
        assert requests.get(f"{base}/healthz", timeout=5).status_code in (200, 503)
        before = threads_of(d.pid)
        slow: list[socket.socket] = []
        try:
            for _ in range(SLOW_CLIENTS):
                s = socket.create_connection((host, int(port)), timeout=5)
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never the rest
                slow.append(s)
            time.sleep(0.5)  # let the daemon take them all in (accept, read the half heads)
            during = threads_of(d.pid)
            for path in ("/healthz", "/metrics", "/healthz"):
                t0 = time.monotonic()
                r = requests.get(f"{base}{path}", timeout=1.0)
                took = time.monotonic() - t0
                assert r.status_code in (200, 503) and took < 1.0, (path, r.status_code, took)
            assert threads_of(d.pid) <= before + 1, (before, during, threads_of(d.pid))
            assert during <= before + 1, (before, during)
        finally:
            for s in slow:
                s.close()
        assert requests.get(f"{base}/healthz", timeout=5).status_code in (200, 503)
