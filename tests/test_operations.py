"""Operations (issue 6): sd_notify over a real datagram socket, the watchdog, /metrics and
/healthz of the daemon as a real process, log redaction, and the systemd unit."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
import structlog
from prometheus_client.parser import text_string_to_metric_families

from inboxd import log as inboxd_log
from inboxd.log import configure, get_logger, register_secret
from inboxd.service import Metrics, Notifier, health_verdict
from tests.helpers.daemon import REPO, start_daemon, wait_until, write_config
from tests.helpers.files import batch_line, drop

KEY = "ops-key-5a6b7c8d9e0f1"


class NotifySocket:
    """The systemd side of sd_notify: a datagram socket owned by the test."""

    def __init__(self, path: Path | None = None, abstract: str | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            self.sock.bind("\0" + abstract)
            self.env = "@" + abstract
        else:
            self.sock.bind(str(path))
            self.env = str(path)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self.sock.settimeout(0.2)
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def lines(self, prefix: str) -> list[tuple[float, str]]:
        return [(t, m) for t, m in self.messages if m.startswith(prefix)]

    def close(self) -> None:
        self._stop = True
        self._t.join(1)
        self.sock.close()


# --- units --------------------------------------------------------------------------------------


@pytest.mark.parametrize("abstract", [False, True])
def test_notifier_speaks_sd_notify(tmp_path, abstract):
    ns = NotifySocket(abstract=f"inboxd-test-{os.getpid()}") if abstract else NotifySocket(tmp_path / "notify")
    try:
        n = Notifier(ns.env, watchdog_usec=4_000_000)
        assert n.watchdog_interval == 2.0
        assert n.ready() and n.status("3 waiting\nsecond line") and n.watchdog_ping() and n.reloading() and n.stopping()
        wait_until(lambda: len(ns.messages) >= 6, 5)
        got = [m for _, m in ns.messages]
        assert got[:3] == ["READY=1", "STATUS=3 waiting second line", "WATCHDOG=1"]
        assert got[3] == "RELOADING=1" and got[4].startswith("MONOTONIC_USEC=") and got[5] == "STOPPING=1"
    finally:
        ns.close()
    assert not Notifier(None).ready()  # no NOTIFY_SOCKET: a quiet no-op


def test_notifier_from_env_respects_watchdog_pid(monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "@x")
    monkeypatch.setenv("WATCHDOG_USEC", "1000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")  # another process's watchdog
    assert Notifier.from_env().watchdog_interval is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier.from_env().watchdog_interval == 0.5


def test_health_verdict():
    base = dict(paused=False, watches_alive=True, inboxes_missing=[], waiting=0, last_success=None, started=0.0,
                now=10_000.0, stale_seconds=900)
    assert health_verdict(**base)[0]
    assert not health_verdict(**{**base, "paused": True})[0]
    assert not health_verdict(**{**base, "watches_alive": False})[0]
    assert not health_verdict(**{**base, "inboxes_missing": ["/srv/x"]})[0]
    assert not health_verdict(**{**base, "waiting": 3})[0]  # nothing succeeded in 10,000 s with work waiting
    assert health_verdict(**{**base, "waiting": 3, "last_success": 9_500.0})[0]


def test_metrics_text_parses():
    m = Metrics()
    m.file_finished("/srv/a", "done", bytes=100, seconds=0.5)
    m.file_finished("/srv/a", "failed")
    m.api_error("create", 500)
    m.retry("create")
    m.set_paused(True)
    fams = {f.name: f for f in text_string_to_metric_families(m.text().decode())}
    files = {(s.labels["inbox"], s.labels["outcome"]): s.value for s in fams["inboxd_files"].samples}
    assert files == {("/srv/a", "done"): 1.0, ("/srv/a", "failed"): 1.0}
    assert fams["inboxd_paused"].samples[0].value == 1.0


@pytest.fixture
def restore_logging(monkeypatch):
    """`configure()` and `register_secret()` change the whole process (structlog's config, the
    root logger's handlers, the set of secrets): put all three back after the test."""
    was_configured, config = structlog.is_configured(), structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    monkeypatch.setattr(inboxd_log, "_secrets", inboxd_log._secrets)  # undone at teardown
    yield
    structlog.reset_defaults()
    if was_configured:
        structlog.configure(**config)
    root.handlers[:] = handlers
    root.setLevel(level)


def test_redaction_of_canaries_everywhere(restore_logging):
    secret = "sk-canary-log-0a1b2c3d4e5f"
    register_secret(secret)
    out = io.StringIO()
    configure("debug", "json", stream=out)
    log = get_logger("t")
    log.info("plain", note=f"the key is {secret}")
    log.info("nested", data={"headers": {"Authorization": "Bearer abc.def-ghi"}, "list": [secret]})
    log.info("url", url="http://127.0.0.1:1/_storage/s/x?expires=1&signature=deadbeefcafe")
    try:
        raise RuntimeError(f"failed with {secret}")
    except RuntimeError:
        log.exception("boom")
    leaky = type("X", (), {"__repr__": lambda self: f"X({secret})", "__str__": lambda self: f"X({secret})"})
    log.info("repr", obj=leaky())
    text = out.getvalue()
    assert secret not in text and "abc.def-ghi" not in text and "deadbeefcafe" not in text
    assert text.count("<redacted>") >= 6
    for line in text.splitlines():
        json.loads(line)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_unit_verifies_and_rates_2_or_better(tmp_path):
    unit = (REPO / "systemd" / "inboxd.service").read_text()
    # verify wants ExecStart's binary to exist: point it at this checkout's
    (tmp_path / "inboxd.service").write_text(
        unit.replace("/opt/inboxd/venv/bin/inboxd", str(REPO / ".venv/bin/inboxd")))
    verify = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "inboxd.service")], capture_output=True,
                            text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(tmp_path / "inboxd.service")],
                              capture_output=True, text=True, timeout=60)
    line = [ln for ln in security.stdout.splitlines() if "Overall exposure level" in ln][0]
    exposure = float(line.split(":")[1].split()[0])
    assert exposure <= 2.0, line
    for key in ("Type=notify", "NotifyAccess=main", "WatchdogSec=", "LoadCredential=together-api-key:",
                "StateDirectory=inboxd", "User=inboxd", "ExecReload="):
        assert key in unit


# --- the daemon as a process ----------------------------------------------------------------------


def _metrics(port: int) -> dict[tuple[str, tuple], float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _drop(inbox: Path, name: str, i: int) -> None:
    drop(inbox, name, batch_line(f"c{i}"), inbox.parent / "stage")


@pytest.mark.emulator(key=KEY)
def test_daemon_notifies_serves_metrics_and_health(tmp_path, emu):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    key_file = tmp_path / "key"
    key_file.write_text("wrong-key-for-now\n")
    cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{"path": str(inbox), "purpose": "batch-api"}],
                       api={"api_key_file": str(key_file)},
                       daemon={"metrics_address": "127.0.0.1:0", "settle_seconds": 0.1, "rescan_seconds": 1})
    ns = NotifySocket(tmp_path / "notify")
    try:
        with start_daemon(cfg, env={"NOTIFY_SOCKET": ns.env, "WATCHDOG_USEC": "1000000"}) as d:
            (listening,) = d.wait_event("metrics.listening")
            port = int(listening["address"].rsplit(":", 1)[1])
            wait_until(lambda: ns.lines("READY=1"), 10)
            wait_until(lambda: ns.lines("STATUS="), 5)
            # about every 0.5 s (half of WATCHDOG_USEC): four pings in a row, three gaps
            t0 = time.monotonic()
            pings = wait_until(lambda: (lambda ps: ps if len(ps) >= 4 else None)(
                [t for t, _ in ns.lines("WATCHDOG=1") if t >= t0]), 10, what="four watchdog pings")[:4]
            mean_gap = (pings[-1] - pings[0]) / 3
            assert 0.33 <= mean_gap <= 1.0, mean_gap
            # a rejected key: paused, /healthz 503, nothing failed
            _drop(inbox, "a.jsonl", 0)
            d.wait_event("uploads.paused")
            wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 503, 10)
            body = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
            assert body["paused"] and not body["healthy"]
            # the right key and SIGHUP: resumes, healthy again
            key_file.write_text(KEY + "\n")
            d.signal(signal.SIGHUP)
            d.wait_event("uploads.resumed")
            for i in range(1, 3):
                _drop(inbox, f"f{i}.jsonl", i)
            d.wait_event("file.archived", count=3)
            wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200, 10)
            assert ns.lines("RELOADING=1")
            done = ("inboxd_files_total", (("inbox", str(inbox)), ("outcome", "done")))
            wait_until(lambda: _metrics(port).get(done) == 3.0, 5)
            m = _metrics(port)
            assert m[("inboxd_paused", ())] == 0.0
            assert m[("inboxd_uploaded_bytes_total", (("inbox", str(inbox)),))] > 0
            assert m[("inboxd_api_errors_total", (("route", "create"), ("status", "401")))] >= 1
            assert m[("inboxd_upload_seconds_count", (("inbox", str(inbox)),))] == 3.0
            d.signal(signal.SIGTERM)
            assert d.wait_exit(30) == 0
        assert ns.lines("STOPPING=1")
        text = "\n".join(json.dumps(e) for e in d.lines)
        assert KEY not in text and "wrong-key-for-now" not in text
    finally:
        ns.close()


@pytest.mark.emulator(key=KEY)
def test_watchdog_pings_stop_while_a_worker_is_wedged(tmp_path, emu):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{"path": str(inbox), "purpose": "batch-api"}],
                       api={"timeout_seconds": 5, "max_retries": 5},
                       daemon={"workers": 1, "settle_seconds": 0.1, "rescan_seconds": 1})
    ns = NotifySocket(tmp_path / "notify")
    try:
        with start_daemon(cfg, key=KEY, env={"NOTIFY_SOCKET": ns.env, "WATCHDOG_USEC": "1000000"}) as d:
            wait_until(lambda: len(ns.lines("WATCHDOG=1")) >= 2, 10)
            emu.script([{"route": "create", "hostile": "hang", "seconds": 60, "times": 6}])
            _drop(inbox, "stuck.jsonl", 0)
            d.wait_event("file.checked")
            t0 = time.monotonic()

            # the worker makes no progress: wedged after 10 s (2 x timeout), and the pings stop.
            # Wait for the stop itself: no ping for 2 s, four missed intervals (systemd, with
            # WatchdogSec=1, would have restarted the daemon after one)
            def stopped() -> float | None:
                last = max((t for t, _ in ns.lines("WATCHDOG=1") if t > t0), default=None)
                now = time.monotonic()
                return last if last is not None and now - last >= 2.0 and now - t0 >= 8 else None

            last = wait_until(stopped, 25, interval=0.1, what="the watchdog pings to stop")
            assert last - t0 >= 8, f"pings stopped after {last - t0:.1f} s: they should go on while merely slow"
            assert last - t0 <= 11.5, f"pings went on {last - t0:.1f} s while a worker was wedged"
            emu.reset()
    finally:
        ns.close()
