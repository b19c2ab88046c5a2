"""The batch ledger in the daemon (SPEC §10 "The ledger"): a batch-api inbox with [inboxes.batch]
archives an input at once with its manifest naming the ledger, and the daemon's poller follows
that ledger: it splits the input into parts, creates each job once, resends transient errors and
unanswered requests, and delivers one set of outbox files per input (inboxd.batch/v2). The
daemon and the emulator run as real processes; the emulator's dedupe is off, so a second
upload or a second job for the same bytes shows in its counts."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from inboxd.batch.ledger import Ledger
from inboxd.batch.sidecar import json_schema
from tests.helpers.daemon import DaemonProc, start_daemon, write_config
from tests.helpers.emulator import EmulatorProc
from tests.helpers.files import batch_line, batch_lines, check_split_results

ENDPOINT = "/v1/chat/completions"


def _drop(inbox: Path, name: str, data: bytes) -> None:
    """Written beside the inbox, then renamed in: the daemon never sees a half-written input."""
    tmp = inbox.parent / f".{name}.tmp"
    tmp.write_bytes(data)
    os.rename(tmp, inbox / name)


def _config(tmp: Path, emu: EmulatorProc, inbox: Path, outbox: Path, **batch: Any) -> Path:
    inbox.mkdir()
    return write_config(tmp, base_url=emu.base_url, inboxes=[{
        "path": str(inbox), "purpose": "batch-api",
        "batch": {"endpoint": ENDPOINT, "poll_seconds": 0.2, "outbox": str(outbox), "join": True, **batch}}])


def _ledger_stage(inbox: Path) -> str:
    """Where the (one) ledger is, wherever it lives (beside the claim or in done/): none, the
    stage of each of its jobs, or delivered."""
    found = sorted(inbox.rglob("*.ledger.json"))
    if not found:
        return "none"
    try:
        ledger = Ledger.load(found[0])
    except (OSError, ValueError):
        return "unreadable"
    return "delivered" if ledger.delivered_at else "+".join(f"{j.name}:{j.stage}" for j in ledger.jobs)


def _results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_bytes().splitlines()]


def _requests(path: Path, n: int, tag: str) -> list[str]:
    """`n` valid requests with unique custom_ids, written in blocks; their ids in input order."""
    with open(path, "wb") as f:
        for i in range(0, n, 1000):
            f.write(batch_lines(tag, min(1000, n - i)).replace(f'"{tag}-'.encode(), f'"{tag}-{i}-'.encode()))
    return [json.loads(raw)["custom_id"] for raw in path.read_bytes().splitlines()]


@pytest.mark.emulator(batch_seconds=1.0, batch_expire_next=2, batch_transient_rate=0.05)
def test_a_split_input_through_expiry_transient_errors_and_two_kill_9_in_the_daemon(
        emu: EmulatorProc, tmp_path: Path) -> None:
    """10,000 requests in a batch inbox that takes 4,000 per job: three parts; the first two
    jobs expire half done; 5 % of requests come back 429; the daemon is killed -9 twice while its
    jobs run (each time after that run's first create) and restarted, then runs to the end:
    one delivery, every request answered in input order but the ones refused for themselves (an
    unknown model: 400), batch.json's counts agree with results.jsonl, each job created once,
    and the manifest in done/ names the ledger and every job."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    cfg = _config(tmp_path, emu, inbox, outbox, max_requests_per_job=4000)
    rows = []
    for i in range(10_000):
        model = "unknown-model" if i % 500 == 0 else "m"
        rows.append(batch_line(f"s-{i}", {"model": model, "messages": [{"role": "user", "content": f"q {i}"}]}))
    data = b"".join(rows)
    _drop(inbox, "s.jsonl", data)

    def delivered() -> bool:
        return (outbox / "s.batch.json").exists()

    stages = []
    for _ in range(2):
        made = emu.batch_creates()  # before the start: a restart may create at once
        d = start_daemon(cfg, key=emu.key, timeout=30)
        try:
            def created(made: int = made, d: DaemonProc = d) -> bool:
                return emu.batch_creates() > made or delivered() or bool(d.events("file.failed"))

            d.wait_for(created, 60, what="this run's first create")
            time.sleep(0.3)
            d.kill9()
            stages.append(_ledger_stage(inbox))
            assert not d.events("file.failed"), d.tail(30)
            assert not delivered(), f"delivered before the kill: the kills must land while jobs run {stages}"
        finally:
            d.stop()
    print("ledger at the kills:", stages)
    with start_daemon(cfg, key=emu.key, timeout=30) as d:
        d.wait_for(lambda: delivered() or d.events("file.failed"), 90, what="s.batch.json after the last restart")
        assert not d.events("file.failed"), d.tail(30)

    answer = json.loads((outbox / "s.batch.json").read_text())
    jsonschema.validate(answer, json_schema())
    assert answer["schema"] == "inboxd.batch/v2"
    jobs = answer["jobs"]
    by_input = emu.batch_creates_by_input()
    assert sorted(by_input.values()) == [1] * len(jobs) == [1] * len(by_input), (by_input, stages)  # each job once
    assert sorted(by_input) == sorted(j["input_file_id"] for j in jobs)
    assert sorted({j["part"] for j in jobs}) == [1, 2, 3], jobs
    assert [(j["part"], j["round"], j["requests"]) for j in jobs[:3]] == [(1, 1, 4000), (2, 1, 4000), (3, 1, 2000)]
    assert [j["status"] for j in jobs[:2]] == ["EXPIRED", "EXPIRED"] and answer["rounds"] >= 2, jobs
    assert answer["rounds"] == max(j["round"] for j in jobs)

    # one delivery: one set of files, no x.2.* from a second delivery after a restart
    assert sorted(p.name for p in outbox.iterdir()) == [
        "s.batch.json", "s.errors.jsonl", "s.output.jsonl", "s.results.jsonl"]
    results, refused = check_split_results(outbox / "s.results.jsonl", answer)
    c = answer["counts"]
    assert answer["errors_by_code"]["400"] == len(refused)
    assert {x["round"] for x in results} == set(range(1, answer["rounds"] + 1))
    # output and errors hold final answers only, each request once
    out_ids = [x["custom_id"] for x in _results(outbox / "s.output.jsonl")]
    err_ids = [x["custom_id"] for x in _results(outbox / "s.errors.jsonl")]
    assert len(out_ids) == len(set(out_ids)) == c["succeeded"]
    assert len(err_ids) == len(set(err_ids)) == c["failed"] and not set(out_ids) & set(err_ids)
    sent_lines = set(data.splitlines())
    for job in jobs:  # every job's input is the input's lines, byte for byte
        sent = emu.content(job["input_file_id"]).splitlines()
        assert set(sent) <= sent_lines and len(sent) == job["requests"], job

    # the input archived once, its manifest naming the ledger and every job
    [manifest_path] = sorted((inbox / "done").glob("*.manifest.json"))
    assert manifest_path.name == "s.jsonl.manifest.json"
    assert (inbox / "done" / "s.jsonl").read_bytes() == data
    assert answer["input"]["manifest"] == str(manifest_path) and answer["input"]["requests"] == 10_000
    section = json.loads(manifest_path.read_text())["batch"]
    assert sorted(section["jobs"]) == sorted(j["id"] for j in jobs), section
    assert section["status"] == "COMPLETED" and Path(section["sidecar"]) == outbox / "s.batch.json", section
    ledger = Ledger.load(Path(section["ledger"]))
    assert Path(section["ledger"]).parent == inbox / "done"
    assert ledger.delivered_at and sorted(ledger.job_ids()) == sorted(section["jobs"])


@pytest.mark.emulator(batch_seconds=0)
def test_a_60000_request_input_is_two_jobs_and_one_complete_results_file_in_the_daemon(
        emu: EmulatorProc, tmp_path: Path) -> None:
    """60,000 requests with the default limits (50,000 per job): two parts, two jobs, one set of
    outbox files; results.jsonl has every request in input order."""
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    cfg = _config(tmp_path, emu, inbox, outbox)
    staged = tmp_path / "big.jsonl"
    ids = _requests(staged, 60_000, "b")
    with start_daemon(cfg, key=emu.key, timeout=30) as d:
        os.rename(staged, inbox / "big.jsonl")
        d.wait_for(lambda: (outbox / "big.batch.json").exists() or d.events("file.failed"), 90,
                   what="big.batch.json")
        assert not d.events("file.failed"), d.tail(30)
    answer = json.loads((outbox / "big.batch.json").read_text())
    jsonschema.validate(answer, json_schema())
    assert [(j["part"], j["round"], j["requests"], j["status"]) for j in answer["jobs"]] == [
        (1, 1, 50_000, "COMPLETED"), (2, 1, 10_000, "COMPLETED")]
    assert answer["counts"] == {"succeeded": 60_000, "failed": 0, "missing": 0} and answer["rounds"] == 1
    assert sorted(emu.batch_creates_by_input().values()) == [1, 1]
    assert [x["custom_id"] for x in _results(outbox / "big.results.jsonl")] == ids
    assert sorted(p.name for p in outbox.iterdir()) == ["big.batch.json", "big.output.jsonl", "big.results.jsonl"]
    section = json.loads((inbox / "done" / "big.jsonl.manifest.json").read_text())["batch"]
    assert sorted(section["jobs"]) == sorted(j["id"] for j in answer["jobs"])
