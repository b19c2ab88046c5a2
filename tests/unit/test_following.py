"""The daemon's side of a ledger (`batch/following.py`, `LedgerFollower`), in process: an
archived batch input as the daemon leaves it (data, manifest naming its ledger, journal row)
followed against the in-process emulator with a real FilesClient, Journal and BatchStore.

Planning by the lock holder (a one-part input's job is the upload its manifest names; a split
input gets one job per part), delivery into the outbox, admission by max_jobs_in_flight across
the inbox's ledgers, the job ids named elsewhere (never adopted), and a ledger whose follow lock
another holder has (never stepped here; its delivery is journalled)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inboxd.api import FilesClient
from inboxd.batch.following import LedgerFollower
from inboxd.batch.ledger import Ledger, Limits, ledger_path
from inboxd.batch.manifest import ledger_section
from inboxd.batch.orphans import Watchers, lock_path, record_fields
from inboxd.batch.split import plan_parts
from inboxd.batch.store import BatchRecord, BatchStore
from inboxd.config import ApiConfig, BatchConfig, InboxConfig, UploadConfig
from inboxd.emulator import Emulator
from inboxd.state import sidecars
from inboxd.state.journal import Journal
from inboxd.state.sidecars import MANIFEST_SUFFIX

KEY = "unit-following-key-5521"


def requests_of(n: int, tag: str) -> bytes:
    return b"".join(json.dumps({"custom_id": f"{tag}-{i}", "body": {"model": "m", "messages": [
        {"role": "user", "content": f"hi {i}"}]}}).encode() + b"\n" for i in range(n))


class Host:
    """One daemon's view: its journal, its batch store, its follower, what it emitted."""

    def __init__(self, tmp: Path, server: Emulator, inboxes: list[InboxConfig]) -> None:
        self.server = server
        self.client = FilesClient(ApiConfig(base_url=server.base_url, max_retries=2), UploadConfig(), KEY)
        self.journal = Journal(tmp / "state")
        self.store = BatchStore(self.journal)
        self.inboxes = inboxes
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.followers = Watchers()
        self.follower = LedgerFollower(lambda: self.client, self.store, self.followers, threading.Event(),
                                       tmp / "work", lambda: self.inboxes, self.emit)
        self.seen_in_manifest: list[tuple[str, list[str]]] = []  # (job id, the manifest's jobs) at batch.status

    def emit(self, name: str, **fields: Any) -> None:
        self.events.append((name, fields))
        if name == "batch.status":  # what the manifest says at the moment the job is announced
            rec = self.store.get(fields["claim"])
            assert rec is not None and rec.manifest
            section = json.loads(Path(rec.manifest).read_text(encoding="utf-8"))["batch"]
            self.seen_in_manifest.append((fields["batch_id"], list(section["jobs"])))

    def close(self) -> None:
        self.followers.close()
        self.journal.close()
        self.client.close()

    def archive(self, inbox: InboxConfig, name: str, n: int, *, split: bool = False,
                file_id: str | None = None) -> BatchRecord:
        """Archive `n` requests as <done>/<name> the way the daemon does: uploaded whole (or, a
        split input, not at all: `file` null) and the manifest naming its ledger; the journal
        row at `following`."""
        done = inbox.done
        done.mkdir(parents=True, exist_ok=True)
        data = done / name
        data.write_bytes(requests_of(n, name))
        sha = hashlib.sha256(data.read_bytes()).hexdigest()
        file_object: dict[str, Any] | None = None
        if not split:
            if file_id is None:
                file_id = self.client.upload(data, "batch-api", sha256=sha).file.id
            file_object = self.client.wait_for_processing(file_id).manifest_dict()
        now = time.time()
        manifest = sidecars.manifest(file_object=file_object, inbox=inbox.path, name=name, path=data,
                                     size=data.stat().st_size, sha256=sha, mtime_ns=data.stat().st_mtime_ns,
                                     validation={"mode": "basic", "passed": True, "records": n},
                                     timing=(now, now), method="split" if split else "single", parts=0, attempts=1)
        manifest["batch"] = ledger_section(ledger_path(data))
        mpath = done / f"{name}{MANIFEST_SUFFIX}"
        sidecars.write(mpath, manifest)
        return self.store.begin(f"claim:{data}", dropped_at=now, uploaded_at=now,
                                **record_fields(inbox, mpath, json.loads(mpath.read_text(encoding="utf-8"))))

    def step(self, rec: BatchRecord) -> float | None:
        fresh = self.store.get(rec.claim)
        assert fresh is not None
        return self.follower.step(fresh)

    def follow(self, rec: BatchRecord, seconds: float = 10.0) -> int:
        """Step until delivered (the merge runs on a thread of its own: looked at again until it
        is over); how many looks it took."""
        deadline, looks = time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            looks += 1
            if self.step(rec) is None:
                return looks
            time.sleep(0.01)
        raise AssertionError(f"{rec.claim} not delivered after {looks} looks")


def inbox_config(tmp: Path, name: str = "inbox", **batch: Any) -> InboxConfig:
    path = tmp / name
    path.mkdir(parents=True, exist_ok=True)
    return InboxConfig(path=path, purpose="batch-api", batch=BatchConfig(poll_seconds=1, **batch))


@pytest.fixture
def emulator(server: Emulator) -> Iterator[Emulator]:
    """The module's emulator, its jobs done at the first look again after each test."""
    yield server
    server.set_faults({"batch_seconds": 0.0})


def file_creates(server: Emulator) -> int:
    return int(server.stats()["creates"])


def batch_creates(server: Emulator, file_id: str | None) -> int:
    return int(server.batches.creates_by_input.get(file_id or "", 0))


def manifest_batch(rec: BatchRecord) -> dict[str, Any]:
    assert rec.manifest
    section: dict[str, Any] = json.loads(Path(rec.manifest).read_text(encoding="utf-8"))["batch"]
    return section


def outbox_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


# --- 1. planned by the lock holder, delivered -----------------------------------------------------

def test_a_one_part_input_is_planned_on_the_upload_its_manifest_names_and_delivered(
        tmp_path: Path, emulator: Emulator) -> None:
    inbox = inbox_config(tmp_path)
    host = Host(tmp_path, emulator, [inbox])
    try:
        rec = host.archive(inbox, "x.jsonl", 4)
        lfile = Path(rec.ledger or "")
        assert not lfile.exists() and manifest_batch(rec)["ledger"] == str(lfile)
        uploads = file_creates(emulator)
        host.follow(rec)  # job time 0: planned, created, ended, settled in one look; then the merge
        assert file_creates(emulator) == uploads  # the job's input is the manifest's file: no upload made
        ledger = Ledger.load(lfile)
        [job] = ledger.jobs
        assert job.input_file_id == rec.input_file_id and job.id and job.stage == "settled"
        assert batch_creates(emulator, rec.input_file_id) == 1
        # the manifest named the job before it was announced, and names it (and the outbox) now
        assert host.seen_in_manifest and all(jid in jobs for jid, jobs in host.seen_in_manifest)
        section = manifest_batch(rec)
        outbox = Path(rec.outbox or "")
        assert section["ledger"] == str(lfile) and section["jobs"] == [job.id] and section["id"] == job.id
        assert section["sidecar"] == str(outbox / "x.batch.json")
        sidecar = json.loads((outbox / "x.batch.json").read_text(encoding="utf-8"))
        assert sidecar["schema"] == "inboxd.batch/v2"
        assert sidecar["counts"] == {"succeeded": 4, "failed": 0, "missing": 0}
        assert [j["id"] for j in sidecar["jobs"]] == [job.id]
        assert len(outbox_lines(outbox / "x.output.jsonl")) == 4
        row = host.store.get(rec.claim)
        assert row is not None and row.stage == "delivered" and row.batch_id == job.id
        assert row.status == "COMPLETED" and row.delivered_at == ledger.delivered_at and row.stem == "x"
        assert [n for n, _ in host.events].count("batch.delivered") == 1
        assert not lock_path(Path(rec.manifest or "")).exists()  # let go once delivered
        assert not list((tmp_path / "work").glob("*/*"))  # part inputs and answers removed
    finally:
        host.close()


def test_a_split_input_gets_one_job_per_part_each_named_by_the_manifest(tmp_path: Path, emulator: Emulator) -> None:
    inbox = inbox_config(tmp_path, max_requests_per_job=2)
    host = Host(tmp_path, emulator, [inbox])
    try:
        rec = host.archive(inbox, "big.jsonl", 5, split=True)
        assert rec.input_file_id == ""  # a split input is not uploaded whole
        uploads = file_creates(emulator)
        host.follow(rec)
        ledger = Ledger.load(Path(rec.ledger or ""))
        assert [(j.part, j.requests) for j in ledger.jobs] == [(1, 2), (2, 2), (3, 1)]
        assert file_creates(emulator) == uploads + 3  # each part uploaded by the ledger
        fids = [j.input_file_id for j in ledger.jobs]
        assert len(set(fids)) == 3 and all(batch_creates(emulator, f) == 1 for f in fids)
        ids = ledger.job_ids()
        assert len(ids) == 3
        assert {jid for jid, _ in host.seen_in_manifest} == set(ids)
        assert all(jid in jobs for jid, jobs in host.seen_in_manifest)
        section = manifest_batch(rec)
        assert section["jobs"] == ids and section["id"] == ids[0]
        outbox = Path(rec.outbox or "")
        sidecar = json.loads((outbox / "big.batch.json").read_text(encoding="utf-8"))
        assert sidecar["schema"] == "inboxd.batch/v2" and [j["id"] for j in sidecar["jobs"]] == ids
        assert sidecar["counts"] == {"succeeded": 5, "failed": 0, "missing": 0}
        assert sorted(x["custom_id"] for x in outbox_lines(outbox / "big.output.jsonl")) == \
            sorted(f"big.jsonl-{i}" for i in range(5))
        row = host.store.get(rec.claim)
        assert row is not None and row.stage == "delivered" and row.batch_id == ids[0]
    finally:
        host.close()


# --- 2. admission: max_jobs_in_flight over every ledger of the inbox --------------------------------

def test_a_second_input_waits_for_a_slot_while_the_first_ones_job_is_open(tmp_path: Path, emulator: Emulator) -> None:
    inbox = inbox_config(tmp_path, max_jobs_in_flight=1)
    other_inbox = inbox_config(tmp_path, "other", max_jobs_in_flight=1)  # its own slot
    host = Host(tmp_path, emulator, [inbox, other_inbox])
    try:
        a = host.archive(inbox, "a.jsonl", 3)
        b = host.archive(inbox, "b.jsonl", 3)
        c = host.archive(other_inbox, "c.jsonl", 3)
        emulator.set_faults({"batch_seconds": 3600.0})  # jobs stay open until a test ends them
        assert host.step(a) is not None
        [job_a] = Ledger.load(Path(a.ledger or "")).jobs
        assert job_a.stage == "created" and job_a.id
        assert manifest_batch(a)["jobs"] == [job_a.id]
        row = host.store.get(a.claim)
        assert row is not None and row.stage == "following" and row.batch_id == job_a.id
        assert host.follower.open_jobs() == 1
        for _ in range(2):
            assert host.step(b) is not None
            [job_b] = Ledger.load(Path(b.ledger or "")).jobs
            assert job_b.stage == "uploaded" and job_b.id is None  # no slot: not created
            assert batch_creates(emulator, b.input_file_id) == 0
            assert manifest_batch(b)["jobs"] == []
        assert host.step(c) is not None  # another inbox's slots are its own
        assert Ledger.load(Path(c.ledger or "")).jobs[0].stage == "created"
        # the first job ends; its input is delivered, which frees the slot
        emulator.set_faults({"batch_seconds": 0.0})
        emulator.batches.jobs[job_a.id].seconds = 0.0
        host.follow(a)
        host.follow(b)
        [job_b] = Ledger.load(Path(b.ledger or "")).jobs
        assert job_b.id and batch_creates(emulator, b.input_file_id) == 1
        row = host.store.get(b.claim)
        assert row is not None and row.stage == "delivered"
    finally:
        host.close()


# --- 3. the job ids another input names -------------------------------------------------------------

def write_ledger(path: Path, ids: list[str | None], *, per_job: int = 1, file_id: str | None = None) -> Ledger:
    """A ledger for the data at `path` (written if missing: one request per id), its parts of
    `per_job` requests, with one job per id (None: not created yet; a file id: at `uploaded`)."""
    if not path.exists():
        path.write_bytes(requests_of(len(ids), path.name))
    limits = Limits(max_requests_per_job=per_job, max_bytes_per_job=10**6, resubmit_rounds=0, resubmit_codes=[429])
    ledger = Ledger.plan(path, plan_parts(path, per_job, 10**6), limits, sha256=None)
    for job, jid in zip(ledger.jobs, ids, strict=True):
        if file_id is not None:
            job.input_file_id, job.stage = file_id, "uploaded"
        if jid is not None:
            job.id, job.stage, job.status = jid, "created", "IN_PROGRESS"
    ledger.save(ledger_path(path))
    return ledger


def write_manifest_section(path: Path, section: dict[str, Any]) -> None:
    path.write_text(json.dumps({"schema": "inboxd.manifest/v1", "batch": section}), encoding="utf-8")


def test_named_elsewhere_is_every_other_ledger_and_manifest_in_the_batch_inboxes_done(
        tmp_path: Path, emulator: Emulator) -> None:
    inbox = inbox_config(tmp_path)
    second = inbox_config(tmp_path, "second")
    (tmp_path / "plain").mkdir()
    plain = InboxConfig(path=tmp_path / "plain", purpose="batch-api")
    host = Host(tmp_path, emulator, [inbox, second, plain])
    try:
        done = inbox.done
        done.mkdir()
        (second.done).mkdir()
        plain.done.mkdir()
        own = done / "x.jsonl"
        write_ledger(own, ["batch-own-1", "batch-own-2"])
        write_manifest_section(done / f"x.jsonl{MANIFEST_SUFFIX}",
                               {"id": "batch-own-1", "jobs": ["batch-own-1", "batch-own-2", "batch-own-m"]})
        write_ledger(done / "y.jsonl", ["batch-y1", None])
        write_manifest_section(done / f"z.jsonl{MANIFEST_SUFFIX}", {"id": "batch-z0", "jobs": ["batch-z1"]})
        write_manifest_section(done / f"v1.jsonl{MANIFEST_SUFFIX}", {"id": "batch-v1", "status": "COMPLETED"})
        (done / "broken.jsonl.ledger.json").write_text("{not json", encoding="utf-8")
        (done / f"broken.jsonl{MANIFEST_SUFFIX}").write_text("[1, 2", encoding="utf-8")
        write_ledger(second.done / "w.jsonl", ["batch-w1"])
        write_manifest_section(second.done / f"u.jsonl{MANIFEST_SUFFIX}", {"id": None, "jobs": ["batch-u1"]})
        write_manifest_section(plain.done / f"p.jsonl{MANIFEST_SUFFIX}", {"id": "batch-plain"})  # no [inboxes.batch]
        got = host.follower.named_elsewhere(ledger_path(own))
        assert got == {"batch-y1", "batch-z0", "batch-z1", "batch-v1", "batch-w1", "batch-u1"}
    finally:
        host.close()


def test_a_job_another_input_names_is_never_adopted_one_nobody_names_is(tmp_path: Path, emulator: Emulator) -> None:
    """Two drops of the same bytes share one input file id. An input whose create is in doubt
    (`creating`, no id) adopts the server's job for that file only when no other input names it."""
    inbox = inbox_config(tmp_path)
    host = Host(tmp_path, emulator, [inbox])
    try:
        endpoint = inbox.batch.endpoint if inbox.batch else ""
        first = host.archive(inbox, "first.jsonl", 3)
        fid = first.input_file_id
        named = host.client.create_batch(fid, endpoint)[0].id  # the first input's job, named by its ledger
        write_ledger(Path(first.input_path or ""), [named], per_job=10, file_id=fid)

        def in_doubt(name: str) -> BatchRecord:
            """An input of the same file id whose create was sent and its answer lost."""
            rec = host.archive(inbox, name, 3, file_id=fid)
            ledger = write_ledger(Path(rec.input_path or ""), [None], per_job=10, file_id=fid)
            ledger.jobs[0].stage, ledger.jobs[0].listed_before = "creating", []
            ledger.save(Path(rec.ledger or ""))
            return rec

        second = in_doubt("second.jsonl")
        before = batch_creates(emulator, fid)
        host.step(second)
        [job] = Ledger.load(Path(second.ledger or "")).jobs
        assert job.id and job.id != named  # the first input's job: not this one's
        assert batch_creates(emulator, fid) == before + 1  # so the create was sent again
        # a job of that file nobody names (this input's own lost create): adopted, no new create
        lost, _ = host.client.create_batch(fid, endpoint)
        third = in_doubt("third.jsonl")
        section = manifest_batch(third)
        section["jobs"] = [lost.id]  # its own manifest naming it does not make it someone else's
        data = json.loads(Path(third.manifest or "").read_text(encoding="utf-8"))
        data["batch"] = section
        sidecars.write(Path(third.manifest or ""), data)
        before = batch_creates(emulator, fid)
        host.step(third)
        [job3] = Ledger.load(Path(third.ledger or "")).jobs
        assert job3.id == lost.id and batch_creates(emulator, fid) == before
    finally:
        host.close()


# --- 4. a ledger another holder follows -----------------------------------------------------------

def hold_lock(manifest: Path) -> int:
    """Take the follow lock the way another process would: its own open file description."""
    fd = os.open(lock_path(manifest), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def test_a_ledger_whose_lock_is_held_elsewhere_is_not_stepped_here_until_it_says_delivered(
        tmp_path: Path, emulator: Emulator) -> None:
    inbox = inbox_config(tmp_path)
    host = Host(tmp_path, emulator, [inbox])
    fd = -1
    try:
        rec = host.archive(inbox, "x.jsonl", 2)
        manifest, lfile = Path(rec.manifest or ""), Path(rec.ledger or "")
        announced: list[str] = []  # the batch.delivered event is recorded by this hook, in the commit
        host.store.on_delivered(lambda conn, r: announced.append(r.claim))
        fd = hold_lock(manifest)
        uploads = file_creates(emulator)
        when = host.step(rec)
        assert when is not None and when >= time.time() + 4  # looked at now and then, not planned
        assert not lfile.exists()
        # the holder planned it: its job is ready to create, which this host must not do
        ledger = write_ledger(Path(rec.input_path or ""), [None], per_job=10, file_id=rec.input_file_id)
        planned = lfile.read_bytes()
        assert host.step(rec) is not None
        assert lfile.read_bytes() == planned and batch_creates(emulator, rec.input_file_id) == 0
        assert file_creates(emulator) == uploads
        row = host.store.get(rec.claim)
        assert row is not None and row.stage == "following"
        # the holder delivered it: this host journals that and stops following
        ledger.delivered_at, ledger.stem = time.time() - 5, "x"
        ledger.save(lfile)
        delivered = lfile.read_bytes()
        assert host.step(rec) is None
        row = host.store.get(rec.claim)
        assert row is not None and row.stage == "delivered" and row.delivered_at == ledger.delivered_at
        assert row.stem == "x"
        assert lfile.read_bytes() == delivered and batch_creates(emulator, rec.input_file_id) == 0
        assert not [n for n, _ in host.events if n in ("batch.status", "batch.delivered")]
        assert not announced, "the host that delivered it announces it, not this one"
    finally:
        if fd >= 0:
            os.close(fd)
        host.close()


# --- three defects found while writing these, fixed since ---

def test_a_manifest_of_the_same_name_in_another_inbox_is_not_the_inputs_own(tmp_path: Path,
                                                                            emulator: Emulator) -> None:
    inbox, second = inbox_config(tmp_path), inbox_config(tmp_path, "second")
    host = Host(tmp_path, emulator, [inbox, second])
    try:
        inbox.done.mkdir()
        second.done.mkdir()
        # a job made before the ledger (v1: its manifest names it, no ledger) of the same name elsewhere
        write_manifest_section(second.done / f"x.jsonl{MANIFEST_SUFFIX}", {"id": "batch-v1-second", "jobs": []})
        assert "batch-v1-second" in host.follower.named_elsewhere(ledger_path(inbox.done / "x.jsonl"))
    finally:
        host.close()


def test_after_a_restart_a_job_open_in_a_ledger_not_looked_at_yet_takes_its_slot(tmp_path: Path,
                                                                                  emulator: Emulator) -> None:
    inbox = inbox_config(tmp_path, max_jobs_in_flight=1)
    host = Host(tmp_path, emulator, [inbox])
    try:
        a, b = host.archive(inbox, "a.jsonl", 2), host.archive(inbox, "b.jsonl", 2)
        emulator.set_faults({"batch_seconds": 3600.0})
        host.step(a)
        assert Ledger.load(Path(a.ledger or "")).in_flight() == 1
        host.follower = LedgerFollower(lambda: host.client, host.store, host.followers, threading.Event(),
                                       tmp_path / "work", lambda: host.inboxes, host.emit)  # the daemon restarted
        host.step(b)  # b is looked at first
        assert Ledger.load(Path(b.ledger or "")).in_flight() == 0
    finally:
        host.close()


def test_a_host_with_another_outbox_does_not_deliver_a_delivered_ledger_again(tmp_path: Path,
                                                                             emulator: Emulator) -> None:
    inbox = inbox_config(tmp_path)
    first = Host(tmp_path / "first", emulator, [inbox])
    rec = first.archive(inbox, "x.jsonl", 2)
    first.follow(rec)
    first.close()
    # its follower died after batch.json was published and before the manifest said so
    manifest = Path(rec.manifest or "")
    data = json.loads(manifest.read_text(encoding="utf-8"))
    data["batch"].pop("sidecar")
    sidecars.write(manifest, data)
    elsewhere = tmp_path / "outbox-of-another-host"
    other_cfg = InboxConfig(path=inbox.path, purpose="batch-api",
                            batch=BatchConfig(poll_seconds=1, outbox=elsewhere))
    second = Host(tmp_path / "second", emulator, [other_cfg])
    try:
        taken = second.store.begin(f"done:{manifest}", **record_fields(other_cfg, manifest, data))
        assert second.step(taken) is None
        assert not elsewhere.exists() or not list(elsewhere.iterdir())
    finally:
        second.close()


def test_a_small_inputs_merge_runs_beside_big_ones_up_to_a_bound(tmp_path: Path, emulator: Emulator) -> None:
    """Merges run on threads of their own, up to MERGES at once: an input whose jobs are done is
    delivered while other merges run, and waits only when MERGES of them do."""
    from types import SimpleNamespace

    from inboxd.batch import following

    inbox = inbox_config(tmp_path)
    host = Host(tmp_path, emulator, [inbox])
    release = threading.Event()

    def big_merge() -> tuple[Path, dict[str, Any]]:
        release.wait(10)
        raise following.Cancelled("stopped")  # never looked at again here

    try:
        running = host.follower._deliveries
        for i in range(following.MERGES - 1):
            running[f"big-{i}"] = following.Delivery(SimpleNamespace(), big_merge)  # type: ignore[arg-type]
        small = host.archive(inbox, "small.jsonl", 2)
        host.follow(small, seconds=5)  # delivered beside MERGES - 1 running merges
        running[f"big-{following.MERGES - 1}"] = following.Delivery(SimpleNamespace(), big_merge)  # type: ignore[arg-type]
        waiting = host.archive(inbox, "waiting.jsonl", 2)
        deadline = time.monotonic() + 5
        assert host.step(waiting) is not None  # planned
        while not Ledger.load(Path(waiting.ledger or "")).done and time.monotonic() < deadline:
            assert host.step(waiting) is not None
            time.sleep(0.01)
        for _ in range(5):  # every job settled, and all merges busy: it waits
            assert host.step(waiting) is not None
        ledger = Ledger.load(Path(waiting.ledger or ""))
        assert ledger.done and ledger.delivered_at is None
        assert str(waiting.ledger) not in running and len(running) == following.MERGES  # its merge not started
        release.set()
        for key in [k for k in running if k.startswith("big-")]:
            running[key].finished() or time.sleep(0.2)
            del running[key]
        host.follow(waiting, seconds=5)
    finally:
        release.set()
        host.close()


def test_max_jobs_in_flight_counts_the_jobs_of_ledgers_other_hosts_follow(tmp_path: Path,
                                                                           emulator: Emulator) -> None:
    """max_jobs_in_flight is the inbox's: a job open in a ledger another host follows (in the
    same done/, counted at the scan) takes the slot; once it ends, the next scan frees it."""
    inbox = inbox_config(tmp_path, max_jobs_in_flight=1)
    host = Host(tmp_path, emulator, [inbox])
    try:
        inbox.done.mkdir(parents=True, exist_ok=True)
        other = write_ledger(inbox.done / "theirs.jsonl", ["batch-of-another-host"])  # open there
        mine = host.archive(inbox, "mine.jsonl", 2)
        host.follower.count_fleet([inbox])
        for _ in range(3):
            assert host.step(mine) is not None
        [job] = Ledger.load(Path(mine.ledger or "")).jobs
        assert job.stage == "uploaded" and batch_creates(emulator, mine.input_file_id) == 0  # no slot
        other.jobs[0].stage, other.jobs[0].status = "settled", "COMPLETED"
        other.save(ledger_path(inbox.done / "theirs.jsonl"))
        host.follower.count_fleet([inbox])
        host.follow(mine)
        assert batch_creates(emulator, mine.input_file_id) == 1
    finally:
        host.close()
