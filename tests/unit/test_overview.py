"""What an operator sees (`pipeline.status`, `pipeline.overview`): the status data read from a
real journal and real folders after a daemon run in process, each inbox's state from a live
snapshot, the batch rows' counts, and the error sidecars the page may serve (only inside a
configured failed/ folder, never through a symlink, never more than 1 MiB)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import structlog

from inboxd.pipeline.overview import LiveStatus, _batch_counts, overview, read_sidecar, sidecar_path
from inboxd.pipeline.status import StatusUnavailable, read_status, status_data
from tests.unit.fakes import FakeClient
from tests.unit.test_daemon_loop import GOOD, config, drop, run_once


@pytest.fixture(autouse=True)
def _plain_log() -> None:
    structlog.configure(processors=[structlog.processors.JSONRenderer()],
                        logger_factory=structlog.ReturnLoggerFactory())


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One daemon run (--once) over a good file, a file that fails validation on line 1 and a
    name no pattern matches: a journal with one archived and one failed row."""
    tmp = tmp_path_factory.mktemp("ran")
    cfg = config(tmp)
    drop(tmp, "a.jsonl", GOOD % 1)
    drop(tmp, "bad.jsonl", b'{"custom_id": "x"}\n')
    (tmp / "inbox" / "notes.txt").write_text("not a pattern's\n")
    code, _ = run_once(cfg, FakeClient())
    assert code == 1  # --once with a failed file
    return tmp, cfg


def test_status_counts_the_journal_and_looks_at_the_folder(ran: tuple[Path, Any]) -> None:
    tmp, cfg = ran
    drop(tmp, "late.jsonl", GOOD % 2)  # arrived after the run: waiting, not claimed
    try:
        data = read_status(cfg)
    finally:
        (tmp / "inbox" / "late.jsonl").unlink()
    [inbox] = data["inboxes"]
    assert inbox["inbox"] == str(tmp / "inbox") and inbox["exists"] and inbox["purpose"] == "batch-api"
    assert (inbox["done"], inbox["failed"], inbox["in_flight"]) == (1, 1, 0)
    assert inbox["waiting"] == 1 and inbox["stuck"] == [] and inbox["held_open"] == []
    assert inbox["ignored"] == ["notes.txt"]  # named, never touched
    assert inbox["last_success"] is not None and inbox["settings"]["agreed"]
    [failure] = inbox["recent_failures"]
    assert failure["name"] == "bad.jsonl" and failure["error"]["kind"] == "batch.body.missing"
    assert data["events"] == {}
    json.dumps(data)


def test_status_without_a_journal_is_refused_but_the_data_still_answers(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with pytest.raises(StatusUnavailable) as e:
        read_status(cfg)
    assert e.value.kind == "no_journal" and str(cfg.daemon.state_dir) in e.value.message
    [inbox] = status_data(cfg)["inboxes"]
    assert inbox["done"] == 0 and inbox["last_success"] is None and inbox["recent_failures"] == []


def test_status_of_a_missing_inbox_folder_says_it_does_not_exist(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    (tmp_path / "inbox").rmdir()
    [inbox] = status_data(cfg)["inboxes"]
    assert not inbox["exists"] and inbox["waiting"] is None


def test_the_overview_from_the_command_line_has_recent_files_and_failure_details(ran: tuple[Path, Any]) -> None:
    tmp, cfg = ran
    data = overview(cfg)
    [inbox] = data["inboxes"]
    outcomes = {r["name"]: (r["outcome"], r["file_id"]) for r in inbox["recent"]}
    assert outcomes == {"a.jsonl": ("done", "file-1"), "bad.jsonl": ("failed", None)}
    [failure] = inbox["recent_failures"]
    sidecar = tmp / "inbox" / "failed" / "bad.jsonl.error.json"
    assert (failure["stage"], failure["rule"], failure["line"]) == ("validate", "batch.body.missing", 1)
    assert failure["sidecar"] == str(sidecar)
    # from the command line: no daemon was asked, so no state, no health
    assert inbox["state"] is None and data["daemon"] is None and data["health"] is None
    assert data["batches"] == [] and data["batches_error"] is None and data["ledger"] == []
    json.dumps(data)


def test_failure_details_fall_back_to_the_journal_when_the_sidecar_is_unreadable(ran: tuple[Path, Any]) -> None:
    tmp, cfg = ran
    sidecar = tmp / "inbox" / "failed" / "bad.jsonl.error.json"
    saved = sidecar.read_bytes()
    try:
        sidecar.write_text("{not json")
        [failure] = overview(cfg)["inboxes"][0]["recent_failures"]
    finally:
        sidecar.write_bytes(saved)
    assert failure["sidecar"] is None
    assert (failure["rule"], failure["line"]) == ("batch.body.missing", 1)  # the journal's error


def snap(key: str, paused: bool = False, **inbox: Any) -> dict[str, Any]:
    return {"paused": paused, "inboxes": {key: {"queued": 2, "in_flight": 1, "watch_alive": True, **inbox}}}


@pytest.mark.parametrize(("snapshot", "state"), [
    ({}, "watching"),
    ({"paused": True}, "paused"),
    ({"missing": True}, "missing"),
    ({"held": "settings differ: validate"}, "not claiming"),
    ({"watch_alive": False}, "watch lost"),
])
def test_a_live_snapshot_gives_each_inbox_its_state(ran: tuple[Path, Any], snapshot: dict[str, Any],
                                                    state: str) -> None:
    tmp, cfg = ran
    key = str(tmp / "inbox")
    paused = snapshot.pop("paused", False)
    live = {"snapshot": snap(key, paused, **snapshot), "health": (False, {"problems": ["p1"]}), "started": 1.0}
    data = overview(cfg, live, extra={"ledger": {"rounds": 3}})
    [inbox] = data["inboxes"]
    assert inbox["state"] == state and (inbox["state_why"] is None) == (state == "watching")
    if state == "not claiming":
        assert inbox["state_why"] == "settings differ: validate"
    assert inbox["queued"] == 2 and inbox["in_flight"] == 1
    assert data["daemon"]["running"] and data["daemon"]["pid"] == os.getpid()
    assert data["daemon"]["paused"] is paused and data["daemon"]["started_at"] == "1970-01-01T00:00:01Z"
    assert data["health"] == {"healthy": False, "problems": ["p1"]}
    assert data["ledger"] == {"rounds": 3}  # passed through as its owner gave it


def test_an_inbox_the_daemon_does_not_watch_says_so(ran: tuple[Path, Any]) -> None:
    _, cfg = ran
    live = {"snapshot": {"paused": False, "inboxes": {}}, "health": (True, {}), "started": None}
    [inbox] = overview(cfg, live)["inboxes"]
    assert inbox["state"] == "not watched"


def test_batch_counts_before_and_after_delivery() -> None:
    following = {"stage": "following", "requests": 5, "outputs": {}}
    assert _batch_counts(following) == {"requests": 5, "succeeded": None, "failed": None, "missing": None}
    delivered = {"stage": "delivered", "requests": 5, "outputs": {"output": {"lines": 3}, "errors": {"lines": 1}}}
    assert _batch_counts(delivered) == {"requests": 5, "succeeded": 3, "failed": 1, "missing": 1}
    nothing_back = {"stage": "delivered", "requests": 2, "outputs": {}}
    assert _batch_counts(nothing_back) == {"requests": 2, "succeeded": 0, "failed": 0, "missing": 2}
    joined = {"stage": "delivered", "requests": 9,
              "outputs": {"results": {"counts": {"succeeded": 7, "failed": 1, "missing": 1}},
                          "output": {"lines": 100}}}
    assert _batch_counts(joined) == {"requests": 9, "succeeded": 7, "failed": 1, "missing": 1}


def test_a_sidecar_is_served_only_from_a_configured_failed_folder(ran: tuple[Path, Any], tmp_path: Path) -> None:
    tmp, cfg = ran
    failed = tmp / "inbox" / "failed"
    good = str(failed / "bad.jsonl.error.json")
    assert sidecar_path(cfg, good) == failed / "bad.jsonl.error.json"
    assert sidecar_path(cfg, str(failed / ".." / "failed" / "bad.jsonl.error.json")) == failed / "bad.jsonl.error.json"
    outside = tmp_path / "x.error.json"
    outside.write_text("{}")
    assert sidecar_path(cfg, str(outside)) is None  # not a failed folder
    assert sidecar_path(cfg, str(failed / "bad.jsonl")) is None  # not an error sidecar
    assert sidecar_path(cfg, "inbox/failed/bad.jsonl.error.json") is None  # relative
    assert sidecar_path(cfg, good + "\0") is None
    assert sidecar_path(cfg, str(failed / ".." / ".." / outside.name)) is None
    link = tmp_path / "to-failed"
    link.symlink_to(tmp_path)  # a symlinked folder that resolves outside
    assert sidecar_path(cfg, str(link / "x.error.json")) is None


def test_read_sidecar_refuses_symlinks_fifos_and_big_files(tmp_path: Path) -> None:
    body = tmp_path / "a.error.json"
    body.write_bytes(b'{"stage": "check"}')
    assert read_sidecar(body) == b'{"stage": "check"}'
    link = tmp_path / "l.error.json"
    link.symlink_to(body)
    assert read_sidecar(link) is None  # never followed
    fifo = tmp_path / "f.error.json"
    os.mkfifo(fifo)
    assert read_sidecar(fifo) is None  # opened without blocking, and not a regular file
    big = tmp_path / "big.error.json"
    big.write_bytes(b"x" * ((1 << 20) + 1))
    assert read_sidecar(big) is None
    assert read_sidecar(tmp_path / "gone.error.json") is None


def test_live_status_is_built_at_most_once_per_cache_period(ran: tuple[Path, Any]) -> None:
    tmp, cfg = ran
    calls: list[str] = []

    def health() -> tuple[bool, dict[str, Any]]:
        calls.append("health")
        return True, {"problems": []}

    page = LiveStatus(lambda: cfg, lambda: None, health, started=0.0, extra=lambda: {"events": {"hook": {}}})
    first = page.status()
    assert page.status() is first and calls == ["health"]  # cached
    assert first["health"] == {"healthy": True, "problems": []} and first["events"] == {"hook": {}}
    assert first["inboxes"][0]["state"] == "not watched"  # no snapshot yet: an empty one
    page.CACHE_SECONDS = 0.0
    assert page.status() is not first and calls == ["health", "health"]
    failed = tmp / "inbox" / "failed"
    assert json.loads(page.sidecar(str(failed / "bad.jsonl.error.json")) or b"")["stage"] == "validate"
    assert page.sidecar(str(tmp / "inbox" / "done" / "a.jsonl.manifest.json")) is None
