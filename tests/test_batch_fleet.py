"""The batch ledger across hosts, in the daemon: a dead host's ledger followed on, two drops
of the same bytes across a takeover, an unwritable outbox, a host killed for good while its
jobs run. Real daemons against the emulator with its dedupe off. (Apart from
test_batch_daemon.py so that the two long files run side by side.)"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.daemon import start_daemon, wait_until, write_config
from tests.helpers.emulator import start_emulator
from tests.test_batch_daemon import batch_input, batch_sidecars, check_outbox, drop


def test_a_dead_hosts_ledger_left_at_creating_is_followed_on_and_its_job_adopted(tmp_path):
    """A host archived an input, saved in its ledger what the server listed for the input file
    id, sent the create and died for good before the answer was saved (its journal gone with
    it). A host with a fresh state dir finds the ledger in done/ (its follow lock free), and
    before creating anything asks the server: the job that is not among the listed ones and
    that no other ledger names is adopted; no second job."""
    from inboxd.api import FilesClient
    from inboxd.batch.ledger import Ledger, Limits, ledger_path
    from inboxd.batch.manifest import ledger_section
    from inboxd.batch.split import plan_parts
    from inboxd.config import ApiConfig, UploadConfig
    from inboxd.state import sidecars

    emu = start_emulator(tmp_path / "emu", no_dedupe=True, batch_seconds=0.3, processing_delay=0.05)
    try:
        inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
        done = inbox / "done"
        done.mkdir(parents=True)
        data = batch_input("t", 6)
        sha = hashlib.sha256(data).hexdigest()
        (done / "t.jsonl").write_bytes(data)
        # the dead host's work: the upload, the archive with its manifest and ledger, the create
        client = FilesClient(ApiConfig(base_url=emu.base_url), UploadConfig(), emu.key)
        up = client.upload(done / "t.jsonl", "batch-api", sha256=sha)
        client.wait_for_processing(up.file.id, timeout=30)
        lfile = ledger_path(done / "t.jsonl")
        ledger = Ledger.plan(done / "t.jsonl", plan_parts(done / "t.jsonl", 50_000, 10**8),
                             Limits(max_requests_per_job=50_000, max_bytes_per_job=10**8, resubmit_rounds=3,
                                    resubmit_codes=[429, 500, 502, 503, 504]), sha256=sha)
        job = ledger.jobs[0]
        job.input_file_id, job.stage, job.listed_before = up.file.id, "creating", []
        ledger.save(lfile)
        manifest = sidecars.manifest(
            file_object=up.file.manifest_dict(), inbox=inbox, name="t.jsonl", path=done / "t.jsonl", size=len(data),
            sha256=sha, mtime_ns=(done / "t.jsonl").stat().st_mtime_ns,
            validation={"mode": "basic", "passed": True, "records": 6}, method="single", parts=1, attempts=1,
            timing=(time.time(), time.time()))
        manifest["batch"] = ledger_section(lfile)
        sidecars.write(done / "t.jsonl.manifest.json", manifest)
        made, _ = client.create_batch(up.file.id, "/v1/chat/completions")  # the answer the dead host never saved
        cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{
            "path": str(inbox), "purpose": "batch-api", "batch": {"poll_seconds": 0.2, "outbox": str(outbox)}}])
        with start_daemon(cfg, key=emu.key) as d:
            d.wait_for(lambda: "t.batch.json" in batch_sidecars(outbox), 30, what="the results")
            assert d.events("batch.taken_over"), d.tail(30)
            assert d.events("batch.adopted"), d.tail(30)
        assert emu.batch_creates() == 1
        assert [j["id"] for j in batch_sidecars(outbox)["t.batch.json"]["jobs"]] == [made.id]
        assert json.loads((done / "t.jsonl.manifest.json").read_text())["batch"]["jobs"] == [made.id]
    finally:
        emu.stop()


def _dead_claim(inbox: Path, name: str, data: bytes, file_id: str, **state) -> None:
    """A dead host's claim folder (an old heartbeat) holding `name` uploaded as `file_id`."""
    dead = inbox / ".inboxd" / "deadhost-4243-0badf00d"
    dead.mkdir(parents=True)
    (dead / ".owner").write_text(json.dumps({"claimer": "deadhost-4243-0badf00d", "host": "deadhost",
                                             "boot_id": "gone", "pid": 4243, "started": 0, "flock": False}))
    os.utime(dead / ".owner", (time.time() - 3600, time.time() - 3600))
    claimed = dead / f"1.{name}"
    claimed.write_bytes(data)
    st = claimed.stat()
    validation = {"mode": "basic", "passed": True, "records": len(data.splitlines()), "format": "batch"}
    os.setxattr(claimed, "user.inboxd.state", json.dumps({
        "file_id": file_id, "sha256": hashlib.sha256(data).hexdigest(), "bytes": st.st_size,
        "mtime_ns": st.st_mtime_ns, "validation": json.dumps(validation), "method": "single",
        "purpose": "batch-api", **state}).encode())


def test_the_same_bytes_dropped_twice_across_a_takeover_make_two_jobs(tmp_path):
    """Two drops of the same bytes share one file id. The first drop's job exists (another host
    made it and delivered it; this daemon's journal never saw it). The second drop's host died
    after its upload, before it listed or created anything: the survivor that takes it over must
    not adopt the first drop's job: a job of its own, its own complete delivery. Then the first
    drop's host, had it died after its create, is followed by its listed_before: it adopts its
    own job, not the second's."""
    from inboxd.api import FilesClient
    from inboxd.config import ApiConfig, UploadConfig

    emu = start_emulator(tmp_path / "emu", no_dedupe=True, batch_seconds=0.2, processing_delay=0.05)
    try:
        inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
        data = batch_input("s", 6)
        (tmp_path / "s.jsonl").write_bytes(data)
        client = FilesClient(ApiConfig(base_url=emu.base_url), UploadConfig(), emu.key)
        up = client.upload(tmp_path / "s.jsonl", "batch-api", sha256=hashlib.sha256(data).hexdigest())
        client.wait_for_processing(up.file.id, timeout=30)
        first, _ = client.create_batch(up.file.id, "/v1/chat/completions")  # the first drop's job
        _dead_claim(inbox, "s.jsonl", data, up.file.id)  # the second drop: uploaded, nothing listed
        cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{
            "path": str(inbox), "purpose": "batch-api", "batch": {"poll_seconds": 0.1, "outbox": str(outbox),
                                                                  "join": True}}])
        with start_daemon(cfg, key=emu.key) as d:
            d.wait_for(lambda: "s.batch.json" in batch_sidecars(outbox), 30, what="the second drop's results")
            assert d.events("file.adopted", name="s.jsonl"), d.tail(30)
            assert not d.events("batch.adopted"), d.tail(30)
        side = batch_sidecars(outbox)["s.batch.json"]
        assert side["jobs"][0]["id"] != first.id and side["jobs"][0]["status"] == "COMPLETED"
        assert emu.batch_creates_by_input() == {up.file.id: 2}
        results = [json.loads(x) for x in (outbox / "s.results.jsonl").read_text().splitlines()]
        assert len(results) == 6 and all(r["status"] != "missing" for r in results)
    finally:
        emu.stop()


def test_an_unwritable_outbox_is_unhealthy_with_the_reason_then_delivered_once_fixed(tmp_path):
    """Results that cannot be written (the outbox folder is read-only) are trouble the operator
    sees: /healthz 503 naming the outbox and the reason, `inboxd batches` the reason, the
    downloads counter an error outcome; once the folder is writable, delivered once."""
    import requests

    emu = start_emulator(tmp_path / "emu", no_dedupe=True, batch_seconds=0.2, processing_delay=0.05)
    try:
        inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
        inbox.mkdir()
        outbox.mkdir()
        outbox.chmod(0o500)
        if os.access(outbox, os.W_OK):  # root ignores the mode: a file where the folder must be instead
            outbox.chmod(0o700)
            outbox.rmdir()
            outbox.write_text("not a folder")
        cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{
            "path": str(inbox), "purpose": "batch-api", "batch": {"poll_seconds": 0.1, "outbox": str(outbox)}}],
            daemon={"metrics_address": "127.0.0.1:0"})
        with start_daemon(cfg, key=emu.key) as d:
            (listening,) = d.wait_event("metrics.listening")
            base = f"http://{listening['address']}"
            drop(inbox, "u.jsonl", batch_input("u", 6))
            d.wait_event("batch.delivery_error", timeout=30)

            def unhealthy() -> dict | None:
                r = requests.get(f"{base}/healthz", timeout=5)
                return r.json() if r.status_code == 503 else None

            body = wait_until(unhealthy, 20, what="/healthz unhealthy")
            [problem] = [p for p in body["problems"] if "cannot be delivered" in p]
            assert str(outbox) in problem and ("Permission denied" in problem or "Not a directory" in problem
                                               or "File exists" in problem)
            metrics = requests.get(f"{base}/metrics", timeout=5).text
            assert 'inboxd_batch_downloads_total{outcome="error"}' in metrics
            listed = subprocess.run([sys.executable, "-m", "inboxd", "batches", "--config", str(cfg)],
                                    capture_output=True, text=True, timeout=30)
            assert "undeliverable" in listed.stdout, listed.stdout
            if outbox.is_file():
                outbox.unlink()
            else:
                outbox.chmod(0o700)
            wait_until(lambda: "u.batch.json" in batch_sidecars(outbox), 60, what="delivered once writable")
            wait_until(lambda: requests.get(f"{base}/healthz", timeout=5).status_code == 200, 20,
                       what="healthy again")
        assert emu.batch_creates() == 1
        assert sorted(p.name for p in outbox.iterdir()) == ["u.batch.json", "u.errors.jsonl", "u.output.jsonl"]
    finally:
        emu.stop()


def test_a_host_killed_for_good_while_its_jobs_run_a_fresh_host_delivers_them(tmp_path):
    """Two hosts follow one batch inbox; one is killed -9 for good (its state dir gone) while its
    jobs run; a third joins with a fresh state dir. Every input is delivered, once, each job
    created once: the manifests in done/ name the jobs, and a job whose follow lock is free is
    followed on by a live host: 60 of 60 inputs delivered."""
    import shutil

    emu = start_emulator(tmp_path / "emu", no_dedupe=True, batch_seconds=30.0, processing_delay=0.05)
    try:
        inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
        inbox.mkdir()

        def config(host: str) -> Path:
            (tmp_path / host).mkdir()
            return write_config(tmp_path / host, base_url=emu.base_url, inboxes=[{
                "path": str(inbox), "purpose": "batch-api",
                "batch": {"poll_seconds": 0.2, "outbox": str(outbox), "join": True}}])

        inputs = {f"f{i:02d}.jsonl": batch_input(f"f{i}", 8) for i in range(60)}
        a = start_daemon(config("a"), key=emu.key)  # a takes every input; b joins while the jobs run
        b = None
        try:
            for name, data in inputs.items():
                drop(inbox, name, data)

            def named() -> int:
                found = 0
                for p in (inbox / "done").glob("*.manifest.json"):
                    try:
                        found += bool((json.loads(p.read_text()).get("batch") or {}).get("id"))
                    except ValueError:
                        pass
                return found

            wait_until(lambda: named() == len(inputs), 60, what="every job named by its manifest")
            b = start_daemon(config("b"), key=emu.key)
            assert not batch_sidecars(outbox), "the jobs still run when the host dies"
            a.kill9()
            orphaned = len(a.events("batch.created"))
            assert orphaned == len(inputs), "the dead host had every job"
        finally:
            a.stop()
        shutil.rmtree(tmp_path / "a" / "state")
        try:
            with start_daemon(config("c"), key=emu.key) as c:
                wait_until(lambda: len(batch_sidecars(outbox)) >= len(inputs), 90, interval=0.2,
                           what="every input delivered")
                taken = len(c.events("batch.taken_over")) + len(b.events("batch.taken_over"))
                assert taken == orphaned, (taken, orphaned)
        finally:
            if b is not None:
                b.stop()
        assert sorted(batch_sidecars(outbox)) == sorted(f"{n[:-6]}.batch.json" for n in inputs)  # no x.2.*
        by_input = emu.batch_creates_by_input()
        assert sorted(by_input.values()) == [1] * len(inputs), by_input
        check_outbox(outbox, inputs, emu)
    finally:
        emu.stop()
