"""The operations layer in process: sd_notify over a real AF_UNIX datagram socket bound in
tmp_path (`service.notify`), the watchdog fed only while the daemon is alive, and the metrics,
/healthz and the status page of a started daemon (`pipeline.hooks.Service`,
`service.metrics.MetricsServer`) over real HTTP on loopback, with a real journal and folders."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from inboxd.api import AuthError
from inboxd.pipeline.daemon import Daemon
from inboxd.pipeline.hooks import NoService, Notify, Service
from inboxd.pipeline.shutdown import shutdown
from inboxd.service import Metrics, MetricsServer, Notifier
from inboxd.service.status_page import page_access
from tests.helpers.notify import NotifySocket
from tests.unit.fakes import FakeClient
from tests.unit.test_daemon_loop import GOOD, config, drop

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy


@pytest.fixture(autouse=True)
def _quiet() -> None:
    structlog.configure(processors=[structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
                        logger_factory=structlog.ReturnLoggerFactory())


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifySocket]:
    lst = NotifySocket(str(tmp_path / "notify"))
    yield lst
    lst.close()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        with OPENER.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


# --- sd_notify ------------------------------------------------------------------------------


def test_the_notifier_sends_each_message_as_one_datagram(tmp_path: Path, listener: NotifySocket) -> None:
    n = Notifier(str(tmp_path / "notify"))
    assert n.enabled and n.watchdog_interval is None
    assert n.ready() and n.status("2 inboxes\nwaiting 1") and n.watchdog_ping() and n.reloading() and n.stopping()
    said = listener.messages()
    assert said[:3] == ["READY=1", "STATUS=2 inboxes waiting 1", "WATCHDOG=1"]  # one line: a newline is a space
    reloading = said[3].split("\n")
    assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
    assert abs(int(reloading[1].split("=")[1]) - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 60e6
    assert said[4] == "STOPPING=1"
    n.close()


def test_an_abstract_socket_name_is_reached(tmp_path: Path) -> None:
    name = f"@inboxd-unit-{os.getpid()}-{tmp_path.name}"
    lst = NotifySocket(name)
    try:
        n = Notifier(name)
        assert n.ready() and lst.messages() == ["READY=1"]
        n.close()
    finally:
        lst.close()


def test_without_a_socket_nothing_is_sent_and_nothing_fails(tmp_path: Path) -> None:
    assert not Notifier(None).enabled and not Notifier(None).ready()
    gone = Notifier(str(tmp_path / "nobody-listens"))
    assert not gone.ready()  # ENOENT: said as False, never raised


def test_the_watchdog_interval_is_half_what_systemd_asks_for_this_process(monkeypatch: pytest.MonkeyPatch,
                                                                          tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier.from_env()
    assert n.address == str(tmp_path / "notify") and n.watchdog_interval == 2.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for another process
    assert Notifier.from_env().watchdog_interval is None
    monkeypatch.delenv("NOTIFY_SOCKET")
    monkeypatch.setenv("WATCHDOG_USEC", "x")
    assert not Notifier.from_env().enabled and Notifier.from_env().watchdog_interval is None


# --- a started daemon -------------------------------------------------------------------------


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Daemon]:
    """A daemon whose start ran (watches, the first scan, the workers) but whose loop does not:
    the two files dropped before it wait, unclaimed."""
    cfg = config(tmp_path, metrics_address="127.0.0.1:0", health_stale_seconds=5)
    drop(tmp_path, "a.jsonl", GOOD % 1)
    drop(tmp_path, "b.jsonl", GOOD % 2)
    d = Daemon(cfg, None, SecretStr("k"), once=True, make_client=lambda c, k: FakeClient())
    d.start()
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            shutdown(d, NoService(), grace=1.0)

    d.stop_for_test = stop  # type: ignore[attr-defined]
    yield d
    stop()


def test_the_watchdog_is_fed_while_the_daemon_is_alive_and_not_after(started: Daemon, tmp_path: Path,
                                                                     listener: NotifySocket) -> None:
    n = Notify(Notifier(str(tmp_path / "notify"), watchdog_usec=2000))  # a ping due every millisecond
    n.ready(started)
    n.tick(started)
    said = listener.messages()
    assert said[0] == "READY=1" and said[1].startswith("STATUS=1 inboxes, waiting 2, in flight 0")
    assert "WATCHDOG=1" in said
    started.stop_for_test()  # type: ignore[attr-defined]
    time.sleep(0.01)
    n.tick(started)  # the workers are gone: the watchdog is not fed, systemd will restart us
    assert "WATCHDOG=1" not in listener.messages()


def test_metrics_and_health_follow_the_daemons_snapshot(started: Daemon) -> None:
    service = Service(Notifier(None), started.config)
    service.ready(started)
    try:
        base = f"http://127.0.0.1:{service.server.port}"
        key = str(started.config.inboxes[0].path)
        status, _, body = get(base + "/healthz")
        assert status == 200 and json.loads(body)["waiting"] == 2  # just started: not stale yet
        status, headers, text = get(base + "/metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain")
        assert f'inboxd_queue_depth{{inbox="{key}"}} 2.0' in text.decode()
        assert f'inboxd_watch_alive{{inbox="{key}"}} 1.0' in text.decode() and "inboxd_paused 0.0" in text.decode()

        service.started -= 100  # nothing succeeded for 100 s while 2 files wait
        status, _, body = get(base + "/healthz")
        verdict = json.loads(body)
        assert status == 503 and not verdict["healthy"]
        assert any(p.startswith("2 files wait and nothing succeeded") for p in verdict["problems"])

        started.gate.rejected(AuthError("401 from the fake", route="upload", status=401))
        service.ready(started)  # as after a reload: the snapshot is taken again
        status, _, body = get(base + "/healthz")
        assert "the API rejects the key; uploads are paused" in json.loads(body)["problems"]
        assert "inboxd_paused 1.0" in get(base + "/metrics")[2].decode()

        service.api_event("api_error", {"route": "upload", "status": 503})
        service.api_event("retry", {"route": "upload"})
        service.batch_event("batch.download", {"outcome": "resumed"})
        service.batch_event("batch.delivered", {"seconds": 42})
        text = get(base + "/metrics")[2].decode()
        assert 'inboxd_api_errors_total{route="upload",status="503"} 1.0' in text
        assert 'inboxd_retries_total{route="upload"} 1.0' in text
        assert 'inboxd_batch_downloads_total{outcome="resumed"} 1.0' in text
        assert 'inboxd_batch_drop_to_results_seconds_bucket{le="60.0"} 1.0' in text
    finally:
        service.close()
    assert service.server is None


def test_the_status_page_on_loopback_serves_the_live_status_and_failed_sidecars_only(started: Daemon) -> None:
    service = Service(Notifier(None), started.config)
    service.ready(started)
    try:
        base = f"http://127.0.0.1:{service.server.port}"
        status, headers, body = get(base + "/")
        assert status == 200 and b"<h1>inboxd status</h1>" in body and headers["Content-Type"].startswith("text/html")
        assert "script-src 'sha256-" in headers["Content-Security-Policy"]
        status, headers, body = get(base + "/status.json")
        data = json.loads(body)
        assert status == 200 and headers["Content-Security-Policy"].startswith("default-src 'none'; sandbox")
        assert data["daemon"]["running"] and data["inboxes"][0]["state"] == "watching"
        assert data["inboxes"][0]["waiting"] == 2
        failed = started.config.inboxes[0].failed
        failed.mkdir(exist_ok=True)
        (failed / "x.jsonl.error.json").write_text('{"stage": "check"}')
        status, _, body = get(base + "/sidecar?path=" + urllib.request.quote(str(failed / "x.jsonl.error.json")))
        assert status == 200 and json.loads(body) == {"stage": "check"}
        assert get(base + "/sidecar?path=/etc/passwd")[0] == 404
        assert get(base + "/nothing-here")[0] == 404
    finally:
        service.close()


class Page:
    def status(self) -> dict[str, Any]:
        return {"ok": True}

    def sidecar(self, path: str) -> bytes | None:
        return None


def test_the_status_page_with_a_token_asks_for_it(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-value\n")
    server = MetricsServer("127.0.0.1", 0, Metrics(), lambda: (True, {}), page=Page(),
                           token_file=token_file).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        status, headers, _ = get(base + "/status.json")
        assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
        assert get(base + "/status.json", {"Authorization": "Bearer wrong"})[0] == 401
        assert get(base + "/status.json", {"Authorization": "Bearer s3cret-token-value"})[2] == b'{"ok": true}'
        assert get(base + "/status.json?token=s3cret-token-value")[0] == 200
        assert get(base + "/healthz")[0] == 200  # health and metrics never ask for it
    finally:
        server.stop()


def test_the_page_is_off_away_from_loopback_without_a_token(tmp_path: Path) -> None:
    on, token, said = page_access("0.0.0.0", None)
    assert not on and token is None and said.startswith("off: 0.0.0.0 is not a loopback address")
    (tmp_path / "empty").write_text("\n")
    assert page_access("127.0.0.1", tmp_path / "empty")[0] is False
    assert "cannot read" in page_access("127.0.0.1", tmp_path / "missing")[2]
    assert page_access("::1", None)[:2] == (True, None)
    server = MetricsServer("127.0.0.1", 0, Metrics(), lambda: (True, {}), page=Page(),
                           token_file=tmp_path / "empty").start()
    try:
        status, _, body = get(f"http://127.0.0.1:{server.port}/status.json")
        assert status == 404 and b"the status page is off" in body
    finally:
        server.stop()


def test_the_event_sinks_series_are_read_at_each_scrape() -> None:
    figures = {"pending": {"hook": (3, 12.5), "idle": (0, None)}, "delivered": {"hook": 7},
               "failed": {("hook", "http_503"): 2}, "dead": {"hook": 1}}
    m = Metrics()
    m.watch_events(lambda: figures)
    text = m.text().decode()
    assert 'inboxd_events_pending{sink="hook"} 3.0' in text
    assert 'inboxd_events_oldest_pending_seconds{sink="hook"} 12.5' in text
    assert 'inboxd_events_oldest_pending_seconds{sink="idle"} 0.0' in text
    assert 'inboxd_events_delivered_total{sink="hook"} 7.0' in text
    assert 'inboxd_events_failed_total{reason="http_503",sink="hook"} 2.0' in text
    assert 'inboxd_events_dead_total{sink="hook"} 1.0' in text
    figures["delivered"]["hook"] = 8
    assert 'inboxd_events_delivered_total{sink="hook"} 8.0' in m.text().decode()
