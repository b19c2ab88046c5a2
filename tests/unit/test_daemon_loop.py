"""The daemon loop in process (`Daemon.run` with `once`): watch, claim, the workers and the
archivers, recovery at start, the status snapshot, shutdown; a real journal and real
folders under tmp_path, an in-memory server behind the client Protocol."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from inboxd.api import AuthError
from inboxd.config import parse_config
from inboxd.pipeline import process
from inboxd.pipeline.daemon import Daemon
from inboxd.pipeline.hooks import Hooks, snapshot, summary
from inboxd.state.journal import Journal
from tests.unit.fakes import FakeClient, transient

GOOD = b'{"custom_id": "%d", "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}\n'

@pytest.fixture(autouse=True)
def _plain_log() -> None:
    """Log lines rendered plainly and dropped: the console renderer's pretty tracebacks cost a
    second a line (put back by the conftest after the test)."""
    structlog.configure(processors=[structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
                        logger_factory=structlog.ReturnLoggerFactory())



def config(tmp: Path, **daemon: Any):
    inbox = tmp / "inbox"
    inbox.mkdir(exist_ok=True)
    return parse_config({
        "api": {"base_url": "http://127.0.0.1:9/v1"},
        "daemon": {"state_dir": str(tmp / "state"), "metrics_address": "", "workers": 2, "settle_seconds": 0.05,
                   **daemon},
        "inboxes": [{"path": str(inbox), "purpose": "batch-api"}],
    })


def drop(tmp: Path, name: str, data: bytes) -> None:
    staged = tmp / f".{name}.part"
    staged.write_bytes(data)
    os.rename(staged, tmp / "inbox" / name)  # arrival by rename: ready at once


def run_once(cfg, client: FakeClient, service: Hooks | None = None) -> tuple[int, Daemon]:
    d = Daemon(cfg, None, SecretStr("k"), once=True, make_client=lambda c, k: client, service=service)
    return d.run(), d


def test_files_dropped_before_the_start_are_archived_or_failed_once(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    for i in range(6):
        drop(tmp_path, f"f{i}.jsonl", GOOD % i)
    drop(tmp_path, "bad.jsonl", b"{nope\n")
    client = FakeClient()
    code, d = run_once(cfg, client)
    done = tmp_path / "inbox" / "done"
    assert sorted(p.name for p in done.glob("*.manifest.json")) == [f"f{i}.jsonl.manifest.json" for i in range(6)]
    assert (tmp_path / "inbox" / "failed" / "bad.jsonl.error.json").exists()
    assert client.count("upload") == 6 and code == 1  # --once: a failed file is exit 1
    assert d.ctx.counters["archived"] == 6 and d.ctx.counters["failed"] == 1
    assert not list((tmp_path / "inbox").glob("*.jsonl"))


def test_transient_errors_are_retried_until_the_file_is_archived(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process, "backoff", lambda attempt: 0.05)
    cfg = config(tmp_path)
    drop(tmp_path, "a.jsonl", GOOD % 1)
    client = FakeClient()
    client.fail["upload"] = [transient()]
    code, d = run_once(cfg, client)
    assert code == 0 and client.count("upload") == 2
    assert (tmp_path / "inbox" / "done" / "a.jsonl.manifest.json").exists()


def test_a_rejected_key_pauses_the_uploads_and_the_run_says_so(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    drop(tmp_path, "a.jsonl", GOOD % 1)
    client = FakeClient()
    client.fail["upload"] = [AuthError("401", route="upload", status=401)]
    client.fail["check_key"] = [AuthError("401", route="check", status=401)] * 100
    code, d = run_once(cfg, client)
    assert code == 1 and d.gate.paused
    assert not (tmp_path / "inbox" / "done").exists() or not list((tmp_path / "inbox" / "done").iterdir())


def test_a_restart_takes_over_a_dead_claimers_folder_and_forgets_what_vanished(tmp_path: Path) -> None:
    """A daemon died holding a claimed file (its folder has no live owner) and left a journal
    row whose file is gone: the next start archives the first and forgets the second."""
    cfg = config(tmp_path)
    dead = tmp_path / "inbox" / ".inboxd" / "deadhost-1-0000"
    dead.mkdir(parents=True)
    (dead / "7.b.jsonl").write_bytes(GOOD % 2)
    j = Journal(cfg.daemon.state_dir)
    j.claimed(str(dead / "7.b.jsonl"), str(tmp_path / "inbox"), "b.jsonl")
    j.claimed(str(dead / "8.gone.jsonl"), str(tmp_path / "inbox"), "gone.jsonl")
    j.close()
    client = FakeClient()
    code, d = run_once(cfg, client)
    assert code == 0 and client.count("upload") == 1
    assert (tmp_path / "inbox" / "done" / "b.jsonl.manifest.json").exists()
    assert not dead.exists() or not any(dead.glob("*.jsonl"))
    j = Journal(cfg.daemon.state_dir)
    assert j.get(str(dead / "8.gone.jsonl")) is None  # nothing to finish: forgotten, not stuck
    assert not j.open_rows()
    j.close()


def test_the_status_snapshot_counts_what_happened(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    drop(tmp_path, "a.jsonl", GOOD % 1)
    drop(tmp_path, "b.jsonl", b"[1]\n")
    code, d = run_once(cfg, FakeClient())
    snap = snapshot(d)
    json.dumps(snap)  # plain data: it is served as JSON
    assert snap["counters"]["archived"] == 1 and snap["counters"]["failed"] == 1
    assert "done 1, failed 1" in summary(snap)
