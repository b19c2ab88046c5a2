"""`inboxd batch FILE`, `inboxd batches`, `inboxd batch cancel ID` as real processes against a
real `inboxd emulator`: the one-shot round trip end to end (inboxd.batch/v2), --no-wait then a
second run that follows the same job, kill -9 at random moments with exactly one job in the end,
an operator's cancel (not resent), a rejected create, usage errors, the live status line on a
terminal, an input above one job's limits split in two, and expiring jobs with transient errors
resent until every request has its answer."""

from __future__ import annotations

import json
import os
import pty
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from inboxd.batch.ledger import Ledger
from inboxd.batch.sidecar import json_schema
from tests.helpers.daemon import REPO, wait_until
from tests.helpers.emulator import EmulatorProc
from tests.helpers.files import batch_line, batch_lines, check_split_results

pytestmark = pytest.mark.emulator(batch_seconds=0.5)

ENDPOINT = "/v1/chat/completions"


def _env(emu: EmulatorProc, tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOGETHER_")}
    env.update(TOGETHER_API_KEY=emu.key, TOGETHER_BASE_URL=emu.base_url, XDG_STATE_HOME=str(tmp / "state"),
               PYTHONUNBUFFERED="1")
    return env


def inboxd(emu: EmulatorProc, tmp: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inboxd", *args], env=_env(emu, tmp), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def _ledgers(tmp: Path) -> list[Ledger]:
    folder = tmp / "state" / "inboxd" / "ledgers"
    return [Ledger.load(p) for p in sorted(folder.glob("*.ledger.json"))] if folder.is_dir() else []


def _stage(tmp: Path) -> str:
    """Where the (one) ledger is: none, a job stage, or delivered."""
    ledgers = _ledgers(tmp)
    if not ledgers:
        return "none"
    if ledgers[0].delivered_at:
        return "delivered"
    return "+".join(j.stage for j in ledgers[0].jobs)


def _server_file(emu: EmulatorProc, file_id: str) -> bytes:
    return (emu.data_dir / "files" / file_id).read_bytes()


def test_one_shot_round_trip_end_to_end(emu: EmulatorProc, tmp_path: Path) -> None:
    data = b"".join(batch_line(f"q-{i}", {"model": "unknown-model", "messages": [{"role": "user", "content": "x"}]}
                               if i == 5 else None) for i in range(30))
    src = tmp_path / "work" / "questions.jsonl"
    src.parent.mkdir()
    src.write_bytes(data)
    r = inboxd(emu, tmp_path, "batch", str(src), "--endpoint", ENDPOINT, "--join", "--json", "--poll-seconds", "0.1")
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)  # exactly one JSON object on stdout
    jsonschema.validate(answer, json_schema())
    outbox = src.parent / "outbox"
    assert json.loads((outbox / "questions.batch.json").read_text()) == answer
    [job] = answer["jobs"]
    assert job["status"] == "COMPLETED" and (job["part"], job["round"], job["requests"]) == (1, 1, 30)
    assert answer["counts"] == {"succeeded": 29, "failed": 1, "missing": 0} and answer["rounds"] == 1
    assert answer["errors_by_code"] == {"400": 1} and answer["usage"]["total_tokens"] > 0
    assert (outbox / "questions.output.jsonl").read_bytes() == _server_file(emu, job["output_file_id"])
    assert (outbox / "questions.errors.jsonl").read_bytes() == _server_file(emu, job["error_file_id"])
    results = [json.loads(x) for x in (outbox / "questions.results.jsonl").read_text().splitlines()]
    assert [x["custom_id"] for x in results] == [f"q-{i}" for i in range(30)]
    assert emu.batch_creates() == 1

    listed = inboxd(emu, tmp_path, "batches", "--json")
    assert listed.returncode == 0, listed.stderr
    [job] = json.loads(listed.stdout)["batches"]
    assert job["batch_id"] == answer["jobs"][0]["id"] and job["stage"] == "delivered" and job["status"] == "COMPLETED"
    text = inboxd(emu, tmp_path, "batches")
    assert answer["jobs"][0]["id"] in text.stdout and "delivered" in text.stdout
    [row] = [line.split() for line in text.stdout.splitlines() if answer["jobs"][0]["id"] in line]
    assert row[1:3] == ["p1r1", "30"]  # the job's part and round, its requests


def test_no_wait_then_a_second_run_follows_the_same_job(emu: EmulatorProc, tmp_path: Path) -> None:
    src = tmp_path / "a.jsonl"
    src.write_bytes(batch_lines("a", 12))
    r = inboxd(emu, tmp_path, "batch", str(src), "--endpoint", ENDPOINT, "--no-wait")
    assert r.returncode == 0, r.stderr
    batch_id = r.stdout.split()[0]
    assert batch_id.startswith("batch") and emu.batch_creates() == 1
    r = inboxd(emu, tmp_path, "batch", str(src), "--endpoint", ENDPOINT, "--poll-seconds", "0.1", "--json")
    assert r.returncode == 0, r.stderr
    assert [j["id"] for j in json.loads(r.stdout)["jobs"]] == [batch_id]
    assert emu.batch_creates() == 1 and emu.stats()["creates"] == 1  # one upload, one job
    # delivered: a third run is a new round trip, into new names
    r = inboxd(emu, tmp_path, "batch", str(src), "--endpoint", ENDPOINT, "--poll-seconds", "0.1", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["outputs"]["output"]["path"].endswith("a.2.output.jsonl")
    assert emu.batch_creates() == 2


@pytest.mark.emulator(batch_seconds=2.0, latency_ms=40)
def test_kill_9_at_random_moments_makes_exactly_one_job(emu: EmulatorProc, tmp_path: Path) -> None:
    """The one-shot killed -9 again and again (upload, create, polling, download), then run to
    the end: one batch job for the file, outputs byte-identical to the emulator's."""
    src = tmp_path / "k.jsonl"
    src.write_bytes(batch_lines("k", 300, pad=400))
    rnd = random.Random(12)
    args = [sys.executable, "-m", "inboxd", "batch", str(src), "--endpoint", ENDPOINT, "--poll-seconds", "0.1",
            "--json"]
    stages = []
    for _ in range(8):
        p = subprocess.Popen(args, env=_env(emu, tmp_path), cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        # from its first API call on (start-up and the check take a second or more)
        before = sum(emu.stats()["requests"].values())
        wait_until(lambda p=p, before=before: p.poll() is not None or sum(emu.stats()["requests"].values())
                   > before + 1, 30, interval=0.02, what="an API call")
        time.sleep(rnd.uniform(0.0, 0.8))
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        stages.append(_stage(tmp_path))
        if stages[-1] == "delivered":
            break
    if stages[-1] != "delivered":  # (once delivered, another run would be a new round trip)
        r = subprocess.run(args, env=_env(emu, tmp_path), cwd=REPO, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    answer = json.loads((tmp_path / "outbox" / "k.batch.json").read_text())
    assert emu.batch_creates() == 1, (stages, emu.batch_creates_by_input())
    assert (tmp_path / "outbox" / "k.output.jsonl").read_bytes() == _server_file(
        emu, answer["jobs"][0]["output_file_id"])
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == ["k.batch.json", "k.output.jsonl"]
    print("stages at the kills:", stages)
    assert len(set(stages) - {"none"}) >= 1, stages


@pytest.mark.emulator(batch_seconds=30)
def test_cancel_a_running_job(emu: EmulatorProc, tmp_path: Path) -> None:
    src = tmp_path / "c.jsonl"
    src.write_bytes(batch_lines("c", 20))
    r = inboxd(emu, tmp_path, "batch", str(src), "--endpoint", ENDPOINT, "--no-wait")
    batch_id = r.stdout.split()[0]
    r = inboxd(emu, tmp_path, "batch", "cancel", batch_id)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [batch_id, "CANCELING"]
    r = inboxd(emu, tmp_path, "batch", str(src), "--endpoint", ENDPOINT, "--poll-seconds", "0.1", "--json")
    assert r.returncode == 1  # delivered, but the job did not complete
    answer = json.loads(r.stdout)
    assert [j["status"] for j in answer["jobs"]] == ["CANCELLED"]  # the operator's cancel: not resent
    assert answer["counts"]["missing"] > 0 and emu.batch_creates() == 1
    assert (tmp_path / "outbox" / "c.batch.json").exists()
    r = inboxd(emu, tmp_path, "batch", "cancel", batch_id, "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout)["error"]["status"] == 409


def test_a_rejected_create_exits_1_and_usage_errors_exit_2(emu: EmulatorProc, tmp_path: Path) -> None:
    src = tmp_path / "r.jsonl"
    src.write_bytes(batch_lines("r", 3))
    r = inboxd(emu, tmp_path, "batch", str(src), "--endpoint", "/v1/embeddings", "--json")
    assert r.returncode == 1
    err = json.loads(r.stdout)["error"]
    assert err["kind"] == "batch_rejected" and err["status"] == 400
    assert emu.batch_creates() == 0
    r = inboxd(emu, tmp_path, "batch", str(src), "--json")
    assert r.returncode == 2 and json.loads(r.stdout)["error"]["kind"] == "usage"
    r = inboxd(emu, tmp_path, "batches", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 2
    r = subprocess.run([sys.executable, "-m", "inboxd", "batches"], cwd=REPO, capture_output=True, text=True,
                       env={**_env(emu, tmp_path), "XDG_STATE_HOME": str(tmp_path / "nothing")})
    assert r.returncode == 2 and "no journal" in r.stderr


@pytest.mark.emulator(batch_seconds=2.0)
def test_a_live_status_line_on_a_terminal(emu: EmulatorProc, tmp_path: Path) -> None:
    src = tmp_path / "t.jsonl"
    src.write_bytes(batch_lines("t", 10))
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "inboxd", "batch", str(src), "--endpoint", ENDPOINT,
                          "--poll-seconds", "0.2"], env=_env(emu, tmp_path), cwd=REPO,
                         stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert p.wait(30) == 0
    text = seen.decode(errors="replace")
    assert "\r" in text and "IN_PROGRESS" in text and "%" in text and "/10 requests final" in text
    wait_until(lambda: (tmp_path / "outbox" / "t.batch.json").exists(), 5)


def _requests(path: Path, n: int, tag: str) -> None:
    with open(path, "wb") as f:
        for i in range(0, n, 1000):
            f.write(batch_lines(tag, min(1000, n - i)).replace(f'"{tag}-'.encode(), f'"{tag}-{i}-'.encode()))


@pytest.mark.emulator(batch_seconds=0.3)
def test_an_input_over_one_jobs_limit_is_two_jobs_and_one_complete_results_file(emu: EmulatorProc,
                                                                                tmp_path: Path) -> None:
    """60,000 requests with the default limits (50,000 per job): two parts, two jobs, one set of
    outbox files; results.jsonl has every request in input order."""
    src = tmp_path / "big.jsonl"
    _requests(src, 60_000, "b")
    r = inboxd(emu, tmp_path, "batch", str(src), "--endpoint", ENDPOINT, "--join", "--poll-seconds", "0.2", "--json",
               timeout=120)
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert [(j["part"], j["round"], j["requests"], j["status"]) for j in answer["jobs"]] == [
        (1, 1, 50_000, "COMPLETED"), (2, 1, 10_000, "COMPLETED")]
    assert answer["counts"] == {"succeeded": 60_000, "failed": 0, "missing": 0}
    assert emu.batch_creates() == 2
    outbox = tmp_path / "outbox"
    ids = [json.loads(raw)["custom_id"] for raw in src.read_bytes().splitlines()]
    results = (outbox / "big.results.jsonl").read_bytes().splitlines()
    assert [json.loads(x)["custom_id"] for x in results] == ids
    assert sorted(p.name for p in outbox.iterdir()) == ["big.batch.json", "big.output.jsonl", "big.results.jsonl"]


@pytest.mark.emulator(batch_seconds=0.3, batch_expire_next=1, batch_transient_rate=0.05)
def test_an_expired_job_and_transient_errors_are_resent_until_every_request_is_answered(
        emu: EmulatorProc, tmp_path: Path) -> None:
    """The first job expires half done and 5 % of requests come back 429: the leftovers go into
    round 2, 3 ... byte for byte; in the end no request is missing, and output/errors hold final
    answers only (a 429 only for a request that got nothing else in every round it was sent)."""
    src = tmp_path / "e.jsonl"
    _requests(src, 4000, "e")
    r = inboxd(emu, tmp_path, "batch", str(src), "--endpoint", ENDPOINT, "--join", "--poll-seconds", "0.1", "--json",
               timeout=120)
    answer = json.loads(r.stdout)
    assert r.returncode == 0, r.stderr
    jobs = answer["jobs"]
    assert jobs[0]["status"] == "EXPIRED" and answer["rounds"] >= 2 and len(jobs) == answer["rounds"]
    assert jobs[1]["requests"] > 2000  # the unanswered half and the first 429s
    c = answer["counts"]
    assert c["missing"] == 0 and c["succeeded"] + c["failed"] == 4000
    assert c["failed"] == answer["errors_by_code"].get("429", 0) <= 10
    outbox = tmp_path / "outbox"
    out_ids = [json.loads(x)["custom_id"] for x in (outbox / "e.output.jsonl").read_bytes().splitlines()]
    assert len(out_ids) == len(set(out_ids)) == c["succeeded"]
    results = [json.loads(x) for x in (outbox / "e.results.jsonl").read_bytes().splitlines()]
    assert {x["round"] for x in results} == set(range(1, answer["rounds"] + 1))
    for job in jobs[1:]:  # a resend is the input's lines, byte for byte
        sent = _server_file(emu, job["input_file_id"]).splitlines()
        assert set(sent) <= set(src.read_bytes().splitlines()) and len(sent) == job["requests"]


@pytest.mark.emulator(batch_seconds=1.0, batch_expire_next=2, batch_transient_rate=0.05)
def test_a_split_input_through_expiry_transient_errors_and_two_kill_9(emu: EmulatorProc, tmp_path: Path) -> None:
    """10,000 requests cut into 3 parts; the first two jobs expire half done; 5 % of requests come
    back 429; the command is killed -9 twice while its jobs run, then runs to the end: every
    request answered in input order but the ones refused for themselves (an unknown model: 400),
    batch.json's counts agree with results.jsonl, each job created once."""
    src = tmp_path / "s.jsonl"
    rows = []
    for i in range(10_000):
        model = "unknown-model" if i % 500 == 0 else "m"
        rows.append(batch_line(f"s-{i}", {"model": model, "messages": [{"role": "user", "content": f"q {i}"}]}))
    src.write_bytes(b"".join(rows))
    args = [sys.executable, "-m", "inboxd", "batch", str(src), "--endpoint", ENDPOINT, "--join", "--json",
            "--poll-seconds", "0.2", "--max-requests-per-job", "4000"]
    for _ in range(2):
        p = subprocess.Popen(args, env=_env(emu, tmp_path), cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        made = emu.batch_creates()
        wait_until(lambda p=p, made=made: p.poll() is not None or emu.batch_creates() > made, 60,
                   interval=0.05, what="this run's first create")  # killed while its jobs run
        time.sleep(0.3)
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    r = subprocess.run(args, env=_env(emu, tmp_path), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    jobs = answer["jobs"]
    assert sorted({j["part"] for j in jobs}) == [1, 2, 3] and [j["requests"] for j in jobs[:3]] == [4000, 4000, 2000]
    assert [j["status"] for j in jobs[:2]] == ["EXPIRED", "EXPIRED"] and answer["rounds"] >= 2
    by_input = emu.batch_creates_by_input()
    assert sorted(by_input.values()) == [1] * len(jobs) == [1] * len(by_input), by_input  # each job once
    check_split_results(tmp_path / "outbox" / "s.results.jsonl", answer)
