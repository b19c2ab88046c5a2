"""The batch round trip's pieces (inboxd.batch) against a real `inboxd emulator` process:
create exactly once (adopt after a crash, never another input's job, 429 retried without a
second job, 400 rejected), the one poller delivering byte-identical outputs and results in
input order, a cut download resumed with Range, a restart resuming a half-written download
and never downloading a renamed file again, FAILED / EXPIRED / CANCELLED sidecars, 429
backoff, and jobs followed from the journal alone.

No mocks: real HTTP to the emulator, a real journal, real files."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from inboxd.api import FilesClient
from inboxd.batch import BatchInput, BatchRejected, BatchStore, Poller, create_once
from inboxd.batch.store import BatchRecord
from inboxd.config import BatchConfig, parse_config
from inboxd.schemas import BATCH, MANIFEST, load_schema
from inboxd.state.journal import Journal
from tests.helpers.daemon import wait_until
from tests.helpers.emulator import EmulatorProc
from tests.helpers.files import batch_line, batch_lines, sha

pytestmark = pytest.mark.emulator(batch_seconds=0.4)

BAD = {"model": "unknown-model", "messages": [{"role": "user", "content": "nope"}]}


class World:
    """An emulator, a client, a journal and an inbox-like folder with done/ and outbox/."""

    def __init__(self, emu: EmulatorProc, tmp: Path) -> None:
        self.emu, self.tmp = emu, tmp
        cfg = parse_config({"api": {"base_url": emu.base_url, "max_retries": 2, "timeout_seconds": 30}})
        self.client = FilesClient(cfg.api, cfg.upload, emu.key)
        self.journal = Journal(tmp / "state")
        self.store = BatchStore(self.journal)
        self.inbox = tmp / "inbox"
        (self.inbox / "done").mkdir(parents=True)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self.pollers: list[Poller] = []

    def on_event(self, name: str, **fields: Any) -> None:
        with self._lock:
            self.events.append((name, fields))

    def named(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [f for n, f in self.events if n == name]

    def cfg(self, **kw: Any) -> BatchConfig:
        return BatchConfig(poll_seconds=kw.pop("poll_seconds", 0.1), outbox=self.inbox / "outbox", **kw)

    def archived(self, name: str, data: bytes) -> tuple[Path, Path, str]:
        """Upload `data` as the daemon would, and leave it archived in done/ with a manifest."""
        path = self.inbox / "done" / name
        path.write_bytes(data)
        up = self.client.upload(path, "batch-api")
        obj = self.client.wait_for_processing(up.file.id)
        manifest = path.with_name(path.name + ".manifest.json")
        manifest.write_text(json.dumps({
            "schema": MANIFEST, "file": obj.manifest_dict(),
            "source": {"inbox": str(self.inbox), "name": name, "path": str(path), "bytes": len(data),
                       "sha256": sha(data), "mtime": "2026-11-24T22:00:00Z"},
            "validation": {"mode": "basic", "passed": True, "records": data.count(b"\n")},
            "upload": {"method": "single", "parts": 1, "attempts": 1, "started_at": "2026-11-24T22:00:00Z",
                       "finished_at": "2026-11-24T22:00:01Z", "seconds": 1.0, "host": "h", "inboxd_version": "x"},
        }))
        return path, manifest, obj.id

    def job(self, claim: str, data: bytes, name: str | None = None, **cfg: Any) -> BatchRecord:
        """Archived, created and attached: a record the poller can follow."""
        path, manifest, file_id = self.archived(name or f"{claim}.jsonl", data)
        create_once(self.client, self.store, BatchInput(claim, file_id, self.cfg(**cfg), inbox=self.inbox,
                                                        sha256=sha(data), dropped_at=time.time(),
                                                        uploaded_at=time.time()))
        return self.store.attach(claim, manifest=manifest, input_path=path)

    def poller(self) -> Poller:
        p = Poller(lambda: self.client, self.store, self.on_event)
        self.pollers.append(p)
        p.start()
        return p

    def delivered(self, claim: str, timeout: float = 20.0) -> BatchRecord:
        def done() -> BatchRecord | None:
            rec = self.store.get(claim)
            return rec if rec is not None and rec.stage == "delivered" else None

        return wait_until(done, timeout, what=f"{claim} delivered")

    def server_file(self, file_id: str) -> bytes:
        return (self.emu.data_dir / "files" / file_id).read_bytes()

    def close(self) -> None:
        for p in self.pollers:
            p.stop()
        self.client.close()
        self.journal.close()


@pytest.fixture
def world(emu: EmulatorProc, tmp_path: Path):
    w = World(emu, tmp_path)
    yield w
    w.close()


def _sidecar(rec: BatchRecord) -> dict[str, Any]:
    data = json.loads(rec.path("batch.json").read_text())
    jsonschema.validate(data, load_schema(BATCH))
    return data


def _ids(data: bytes) -> list[str]:
    return [json.loads(line)["custom_id"] for line in data.splitlines() if line.strip()]


# --- create exactly once ------------------------------------------------------------------------


def test_create_once_adopts_the_job_a_crash_left_instead_of_creating_again(world: World) -> None:
    _, _, file_id = world.archived("a.jsonl", batch_lines("a", 10))
    job = create_once(world.client, world.store, BatchInput("claim-a", file_id, world.cfg(), inbox=world.inbox))
    assert world.emu.batch_creates() == 1
    # the crash: the POST went through, the batch id never reached the journal
    world.store.update("claim-a", stage="creating", batch_id=None, status=None, job=None)
    [pending] = world.store.unfinished_creates()  # what the daemon's recovery finishes
    assert pending.claim == "claim-a" and pending.config() == world.cfg()
    again = create_once(world.client, world.store, BatchInput("claim-a", file_id, pending.config(), inbox=world.inbox))
    assert again["id"] == job["id"]
    assert world.emu.batch_creates() == 1
    assert world.emu.batch_creates_by_input() == {file_id: 1}
    assert world.store.get("claim-a").batch_id == job["id"]
    # and once recorded, no call at all
    before = world.emu.stats()["requests"]
    again = create_once(world.client, world.store, BatchInput("claim-a", file_id, world.cfg(), inbox=world.inbox))
    assert again["id"] == job["id"]
    assert world.emu.stats()["requests"] == before


def test_create_once_never_adopts_a_job_another_input_owns(world: World) -> None:
    """A second drop of the same bytes shares the file id (dedupe): it gets its own job."""
    _, _, file_id = world.archived("a.jsonl", batch_lines("a", 5))
    first = create_once(world.client, world.store, BatchInput("claim-1", file_id, world.cfg(), inbox=world.inbox))
    world.store.begin("claim-2", inbox=str(world.inbox), input_file_id=file_id, endpoint="/v1/chat/completions",
                      poll_seconds=0.1)  # claim-2 crashed at `creating` before its POST went out
    second = create_once(world.client, world.store, BatchInput("claim-2", file_id, world.cfg(), inbox=world.inbox))
    assert second["id"] != first["id"]
    assert world.emu.batch_creates_by_input() == {file_id: 2}


def test_create_once_retries_a_429_without_a_second_job(world: World) -> None:
    _, _, file_id = world.archived("a.jsonl", batch_lines("a", 5))
    world.emu.next_batch_create_status(429, retry_after=0.1, times=2)
    job = create_once(world.client, world.store, BatchInput("claim-a", file_id, world.cfg(), inbox=world.inbox),
                      attempts=5)
    assert world.emu.batch_creates() == 1
    assert world.store.get("claim-a").batch_id == job["id"]
    assert world.emu.stats()["statuses"].get("batch_create 429") == 2


def test_create_once_a_400_is_rejected_and_not_retried(world: World) -> None:
    _, _, file_id = world.archived("a.jsonl", batch_lines("a", 5))
    with pytest.raises(BatchRejected) as err:
        create_once(world.client, world.store,
                    BatchInput("claim-a", file_id, world.cfg(endpoint="/v1/embeddings"), inbox=world.inbox))
    assert err.value.status == 400
    assert world.store.get("claim-a").stage == "failed"
    with pytest.raises(BatchRejected):  # a retry by the caller does not call the server again
        create_once(world.client, world.store, BatchInput("claim-a", file_id, world.cfg(), inbox=world.inbox))
    assert world.emu.stats()["requests"].get("batch_create") == 1
    assert world.emu.batch_creates() == 0


# --- the poller and the outbox --------------------------------------------------------------------


def test_poller_delivers_outputs_byte_identical_and_results_in_input_order(world: World) -> None:
    data = b"".join(batch_line(f"r-{i}", BAD if i in (3, 17, 30) else None) for i in range(41))
    data = data.replace(b'"content": "hi"', b'"content": "hello there"')
    rec = world.job("in", data, join=True)
    poller = world.poller()
    poller.follow(rec)
    rec = world.delivered("in")
    assert rec.status == "COMPLETED"
    out = rec.path("output.jsonl").read_bytes()
    err = rec.path("errors.jsonl").read_bytes()
    assert out == world.server_file(rec.output_file_id)
    assert err == world.server_file(rec.error_file_id)
    inputs = _ids(data)
    assert set(_ids(out)) | set(_ids(err)) == set(inputs)
    assert _ids(out) != [i for i in inputs if i in set(_ids(out))]  # the server's order is not the input's
    results = [json.loads(line) for line in rec.path("results.jsonl").read_bytes().splitlines()]
    assert [r["custom_id"] for r in results] == inputs
    assert [r["line"] for r in results] == list(range(1, 42))
    assert [r["status"] for r in results if r["status"] != "succeeded"] == ["failed"] * 3
    assert {r["custom_id"] for r in results if r["status"] == "failed"} == {"r-3", "r-17", "r-30"}
    ok = results[0]
    assert ok["response"]["body"]["choices"][0]["message"]["content"] == "ereht olleh"
    assert results[3]["error"]["code"] == "model_not_available"
    side = _sidecar(rec)
    assert side["batch"]["status"] == "COMPLETED" and side["batch"]["id"] == rec.batch_id
    assert side["counts"] == {"succeeded": 38, "failed": 3, "missing": 0}
    assert side["outputs"]["output"]["sha256"] == hashlib.sha256(out).hexdigest()
    assert side["outputs"]["output"]["lines"] == 38 and side["outputs"]["errors"]["lines"] == 3
    assert side["outputs"]["results"]["lines"] == 41
    assert side["input"] == {"manifest": rec.manifest, "path": rec.input_path, "sha256": sha(data), "requests": 41}
    # the manifest gained its batch section, and is still a valid manifest
    manifest = json.loads(Path(rec.manifest).read_text())
    jsonschema.validate(manifest, load_schema(MANIFEST))
    assert manifest["batch"]["id"] == rec.batch_id and manifest["batch"]["status"] == "COMPLETED"
    assert manifest["batch"]["progress"] == 100.0
    assert manifest["batch"]["sidecar"] == str(rec.path("batch.json"))
    # nothing else in the outbox: no temp names, no lock, no index
    assert sorted(p.name for p in rec.path("x").parent.iterdir()) == [
        "in.batch.json", "in.errors.jsonl", "in.output.jsonl", "in.results.jsonl"]
    statuses = [e["status"] for e in world.named("batch.status")]
    assert statuses[-1] == "COMPLETED"
    assert len(world.named("batch.delivered")) == 1
    assert world.named("batch.delivered")[0]["seconds"] > 0
    assert {e["outcome"] for e in world.named("batch.download")} == {"ok"}


def test_one_poller_thread_follows_many_jobs(world: World) -> None:
    before = threading.active_count()
    poller = world.poller()
    claims = [f"j{i}" for i in range(6)]
    for c in claims:
        poller.follow(world.job(c, batch_lines(c, 8)))
    for c in claims:
        rec = world.delivered(c)
        assert rec.path("output.jsonl").read_bytes() == world.server_file(rec.output_file_id)
    assert threading.active_count() <= before + 1
    assert world.emu.batch_creates() == 6


def test_a_download_cut_at_half_resumes_with_range(world: World) -> None:
    data = batch_lines("cut", 400, pad=200)
    rec = world.job("cut", data)
    world.emu.cut_next_download(0.5)
    world.poller().follow(rec)
    rec = world.delivered("cut")
    out = rec.path("output.jsonl").read_bytes()
    server = world.server_file(rec.output_file_id)
    assert out == server and len(out) > 100_000
    assert _sidecar(rec)["outputs"]["output"]["sha256"] == hashlib.sha256(server).hexdigest()
    stats = world.emu.stats()
    assert stats["faults_injected"].get("cut_download") == 1
    assert stats["statuses"].get("content 206") == 1  # the rest came with Range: bytes=N-
    outcomes = [(e["outcome"], e.get("bytes")) for e in world.named("batch.download")]
    assert outcomes[0][0] == "cut" and 0 < outcomes[0][1] < len(server)
    assert outcomes[-1] == ("resumed", len(server))


def test_a_restart_resumes_a_half_written_download_and_never_downloads_a_renamed_file_again(world: World) -> None:
    data = b"".join(batch_line(f"k-{i}", BAD if i % 10 == 0 else None) for i in range(200))
    rec = world.job("rs", data)
    job = wait_until(lambda: (lambda j: j if j.terminal else None)(world.client.get_batch(rec.batch_id)), 10)
    out_bytes = world.server_file(job.output_file_id)
    err_bytes = world.server_file(job.error_file_id)
    # a first run was killed during the output download: stage downloading, half of it in the temp name
    rec = world.store.update("rs", stage="downloading", status="COMPLETED", progress=100.0,
                             output_file_id=job.output_file_id, error_file_id=job.error_file_id,
                             job=job.model_dump(mode="json"))
    outbox = Path(rec.outbox)
    outbox.mkdir()
    half = len(out_bytes) // 2
    (outbox / ".rs.output.jsonl.part").write_bytes(out_bytes[:half])
    world.poller().resume()
    rec = world.delivered("rs")
    assert rec.path("output.jsonl").read_bytes() == out_bytes
    assert rec.path("errors.jsonl").read_bytes() == err_bytes
    first = {e["kind"]: e for e in world.named("batch.download")}
    assert first["output"]["outcome"] == "resumed" and first["output"]["resumed_from"] == half
    assert world.emu.stats()["statuses"].get("content 206") == 1

    # a second run killed after both renames, before batch.json: nothing is downloaded again
    rec.path("batch.json").unlink()
    world.store.update("rs", stage="downloading", delivered_at=None)
    world.emu.reset()
    world.poller().resume()
    wait_until(lambda: rec.path("batch.json").exists(), 10)
    world.delivered("rs")
    assert world.emu.stats()["requests"].get("content") is None
    assert rec.path("output.jsonl").read_bytes() == out_bytes
    assert _sidecar(rec)["counts"] == {"succeeded": 180, "failed": 20, "missing": 0}


@pytest.mark.parametrize("outcome", ["FAILED", "EXPIRED", "CANCELLED"])
def test_failed_expired_cancelled_deliver_what_exists(world: World, outcome: str) -> None:
    data = batch_lines(outcome.lower(), 40)
    fraction = {"FAILED": None, "EXPIRED": 0.5, "CANCELLED": 0.25}[outcome]
    world.emu.next_batch_outcome(outcome, fraction)
    rec = world.job("x", data)
    world.poller().follow(rec)
    rec = world.delivered("x")
    side = _sidecar(rec)
    assert side["batch"]["status"] == outcome == rec.status
    if outcome == "FAILED":
        assert side["batch"]["error"]
        assert side["outputs"] == {"output": None, "errors": None, "results": None}
        assert side["counts"] == {"succeeded": 0, "failed": 0, "missing": 40}
        assert not rec.path("output.jsonl").exists()
    else:
        done = int(40 * fraction)
        assert rec.path("output.jsonl").read_bytes() == world.server_file(rec.output_file_id)
        assert side["outputs"]["output"]["lines"] == done
        assert side["counts"] == {"succeeded": done, "failed": 0, "missing": 40 - done}
        if outcome == "EXPIRED":
            assert side["batch"]["error"]
    manifest = json.loads(Path(rec.manifest).read_text())
    assert manifest["batch"]["status"] == outcome
    jsonschema.validate(manifest, load_schema(MANIFEST))


def test_expired_with_join_marks_the_unfinished_requests_missing(world: World) -> None:
    data = batch_lines("ex", 20)
    world.emu.next_batch_outcome("EXPIRED", 0.5)
    rec = world.job("ex", data, join=True)
    world.poller().follow(rec)
    rec = world.delivered("ex")
    results = [json.loads(line) for line in rec.path("results.jsonl").read_bytes().splitlines()]
    assert [r["custom_id"] for r in results] == _ids(data)
    assert [r["status"] for r in results] == ["succeeded"] * 10 + ["missing"] * 10
    assert _sidecar(rec)["counts"] == {"succeeded": 10, "failed": 0, "missing": 10}


def test_the_poller_backs_off_on_429_and_503(world: World) -> None:
    world.emu.script([{"route": "batch_retrieve", "status": 429, "times": 2},
                      {"route": "batch_retrieve", "status": 503, "times": 1}])
    rec = world.job("bo", batch_lines("bo", 5))
    t0 = time.monotonic()
    world.poller().follow(rec)
    world.delivered("bo")
    errors = world.named("batch.poll_error")
    assert [e["status"] for e in errors] == [429, 429, 503]
    delays = [e["delay"] for e in errors]
    assert delays[1] > delays[0]  # exponential
    assert time.monotonic() - t0 >= sum(delays) * 0.8


def test_jobs_are_followed_from_the_journal_alone(world: World, tmp_path: Path) -> None:
    """A restart (a new journal connection, no config at all) finishes every job not delivered;
    the record carries its outbox, stem and join flag."""
    recs = [world.job(f"r{i}", batch_lines(f"r{i}", 6), join=(i == 0)) for i in range(3)]
    world.journal.close()
    journal = Journal(tmp_path / "state")
    store = BatchStore(journal)
    poller = Poller(lambda: world.client, store)
    try:
        poller.start()
        assert poller.resume() == 3
        for r in recs:
            wait_until(lambda r=r: (store.get(r.claim) or r).stage == "delivered", 20)
        assert recs[0].path("results.jsonl").exists() and not recs[1].path("results.jsonl").exists()
        assert poller.resume() == 0
    finally:
        poller.stop()
        journal.close()


@pytest.mark.emulator(batch_seconds=3.0)
def test_the_manifest_follows_the_job_as_it_moves(world: World) -> None:
    rec = world.job("mf", batch_lines("mf", 10), poll_seconds=0.2)
    world.poller().follow(rec)
    seen: list[tuple[str, float]] = []

    def section() -> dict[str, Any]:
        return json.loads(Path(rec.manifest).read_text()).get("batch") or {}

    def moving() -> bool:
        b = section()
        if b and (b["status"], b["progress"]) not in seen:
            seen.append((b["status"], b["progress"]))
        return sum(1 for s, _ in seen if s == "IN_PROGRESS") >= 2

    wait_until(moving, 10, interval=0.05)
    b = section()
    assert b["id"] == rec.batch_id and 0 < b["progress"] < 100
    assert "sidecar" not in b and not rec.path("batch.json").exists()
    world.delivered("mf")  # the stage is journaled just before the manifest names the batch.json
    wait_until(lambda: section().get("sidecar"), 10, what="the manifest names the batch.json")
    assert section()["status"] == "COMPLETED" and section()["sidecar"] == str(rec.path("batch.json"))
