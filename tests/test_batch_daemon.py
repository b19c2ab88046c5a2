"""The batch round trip in the daemon: a batch-api inbox with [inboxes.batch] turns a folder
into a batch inference service. Every input is followed through its ledger (done/<name>.ledger.json)
and delivered as inboxd.batch/v2. The daemon runs as a real process against the emulator (its
fake model answers every request line; `batch_seconds` is its job time)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema

from inboxd.schemas import BATCH_V2, load_schema
from tests.helpers.daemon import start_daemon, wait_until, write_config
from tests.helpers.emulator import start_emulator
from tests.reliability.common import record, scale


def batch_input(tag: str, n: int) -> bytes:
    out = []
    for i in range(n):
        body = {"model": "m" if i % 9 else "unknown-model", "messages": [{"role": "user", "content": f"{tag} {i}"}]}
        out.append(json.dumps({"custom_id": f"{tag}-{i}", "body": body}))
    return ("\n".join(out) + "\n").encode()


def drop(inbox: Path, name: str, data: bytes) -> None:
    tmp = inbox.parent / f".{name}.tmp"
    tmp.write_bytes(data)
    os.rename(tmp, inbox / name)


def batch_sidecars(outbox: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(outbox.glob("*.batch.json"))} if outbox.exists() else {}


def check_outbox(outbox: Path, inputs: dict[str, bytes], emu) -> None:
    """Every input has its results: output lines name custom_ids of its input, results.jsonl is
    one line per input line in input order, the files are the emulator's bytes."""
    schema = load_schema(BATCH_V2)
    jobs = {j["id"]: j for j in emu.batches()}
    for name, data in inputs.items():
        stem = name[:-len(".jsonl")]
        side = json.loads((outbox / f"{stem}.batch.json").read_text())
        jsonschema.validate(side, schema)
        assert [j["status"] for j in side["jobs"]] == ["COMPLETED"] and side["counts"]["missing"] == 0
        ids = [json.loads(line)["custom_id"] for line in data.decode().splitlines()]
        out_ids = [json.loads(line)["custom_id"] for line in (outbox / f"{stem}.output.jsonl").read_text().splitlines()]
        err_ids = [json.loads(line)["custom_id"] for line in (outbox / f"{stem}.errors.jsonl").read_text().splitlines()]
        assert set(out_ids) | set(err_ids) == set(ids) and not set(out_ids) & set(err_ids)
        assert out_ids != [i for i in ids if i in set(out_ids)], "the server's order differs from the input's"
        results = [json.loads(line) for line in (outbox / f"{stem}.results.jsonl").read_text().splitlines()]
        assert [r["custom_id"] for r in results] == ids, "results.jsonl is in input order"
        job = jobs[side["jobs"][0]["id"]]
        for kind, key in (("output", "output_file_id"), ("errors", "error_file_id")):
            got = (outbox / f"{stem}.{kind}.jsonl").read_bytes()
            assert hashlib.sha256(got).hexdigest() == side["outputs"][kind]["sha256"]
            assert got == emu.content(job[key]), f"{stem}.{kind}.jsonl is the server's file, byte for byte"


def test_twenty_batch_files_become_twenty_outboxes(tmp_path):
    emu = start_emulator(tmp_path / "emu", no_dedupe=True, batch_seconds=0.5, processing_delay=0.05)
    try:
        inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
        inbox.mkdir()
        cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{
            "path": str(inbox), "purpose": "batch-api",
            "batch": {"poll_seconds": 0.2, "outbox": str(outbox), "join": True}}])
        inputs = {f"b{i:02d}.jsonl": batch_input(f"b{i}", 10 + i) for i in range(20)}
        t0 = time.monotonic()
        with start_daemon(cfg, key=emu.key) as d:
            for name, data in inputs.items():
                drop(inbox, name, data)
            wait_until(lambda: len(batch_sidecars(outbox)) >= 20, 120, interval=0.2, what="20 batch.json")
            seconds = time.monotonic() - t0
            assert not d.events("file.failed")
            manifest = json.loads((inbox / "done" / "b00.jsonl.manifest.json").read_text())
            wait_until(lambda: json.loads((inbox / "done" / "b00.jsonl.manifest.json").read_text())["batch"]
                       .get("sidecar"), 10, what="the manifest names the batch.json")
            manifest = json.loads((inbox / "done" / "b00.jsonl.manifest.json").read_text())
            assert manifest["batch"]["status"] == "COMPLETED" and len(manifest["batch"]["jobs"]) == 1
            assert manifest["batch"]["ledger"] == str(inbox / "done" / "b00.jsonl.ledger.json")
        assert emu.batch_creates() == 20
        check_outbox(outbox, inputs, emu)
        record("batch round trip", files=20, seconds=round(seconds, 1))
    finally:
        emu.stop()


def test_kill9_across_upload_create_poll_and_download_makes_one_job_per_input(tmp_path):
    """Killed at random moments (uploads, creates, polls and downloads all in flight), restarted
    each time: exactly one batch per input, outputs byte-identical to the emulator's."""
    rng = random.Random(12)
    emu = start_emulator(tmp_path / "emu", no_dedupe=True, batch_seconds=1.0, processing_delay=0.05)
    try:
        emu.set_faults(slow_seconds=0.03)
        inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
        inbox.mkdir()
        cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{
            "path": str(inbox), "purpose": "batch-api",
            "batch": {"poll_seconds": 0.2, "outbox": str(outbox), "join": True}}])
        kills = scale(8, 15)
        inputs: dict[str, bytes] = {}
        for k in range(kills):
            for i in range(2):
                name = f"k{k:02d}{i}.jsonl"
                inputs[name] = batch_input(f"k{k}{i}", 40)
                drop(inbox, name, inputs[name])
            d = start_daemon(cfg, key=emu.key, timeout=30)
            time.sleep(rng.uniform(0.3, 1.5))
            d.kill9()
            d.stop()
        with start_daemon(cfg, key=emu.key, timeout=30):
            wait_until(lambda: len(batch_sidecars(outbox)) >= len(inputs), 180, interval=0.3,
                       what="every batch.json after the last restart")
        by_input = emu.batch_creates_by_input()
        assert sorted(by_input.values()) == [1] * len(inputs), by_input
        check_outbox(outbox, inputs, emu)
        record("batch kill -9", files=len(inputs), kills=kills, jobs=sum(by_input.values()))
    finally:
        emu.stop()


def test_a_refused_create_is_delivered_with_the_reason_and_never_sent_again(tmp_path):
    """The server refuses the job (a 400: an endpoint it does not serve): the input was checked
    and uploaded, so it stays in done/; its batch.json says why no request was answered, and
    nothing is created or resent."""
    emu = start_emulator(tmp_path / "emu", no_dedupe=True, batch_seconds=0.2, processing_delay=0.05)
    try:
        inbox, outbox = tmp_path / "inbox", tmp_path / "inbox" / "outbox"
        inbox.mkdir()
        cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{
            "path": str(inbox), "purpose": "batch-api", "batch": {"endpoint": "/v1/no-such-endpoint",
                                                                  "poll_seconds": 0.1}}])
        with start_daemon(cfg, key=emu.key) as d:
            drop(inbox, "r.jsonl", batch_input("r", 3))
            d.wait_for(lambda: "r.batch.json" in batch_sidecars(outbox), 30, what="the refusal delivered")
        side = batch_sidecars(outbox)["r.batch.json"]
        [job] = side["jobs"]
        assert job["id"] is None and job["status"] == "FAILED" and "refused" in job["error"]
        assert side["counts"] == {"succeeded": 0, "failed": 0, "missing": 3} and side["rounds"] == 1
        assert (inbox / "done" / "r.jsonl.manifest.json").exists() and not list(inbox.glob("failed/*"))
        assert emu.batch_creates() == 0
    finally:
        emu.stop()


def test_sighup_removing_the_batch_table_still_follows_created_jobs(tmp_path):
    emu = start_emulator(tmp_path / "emu", no_dedupe=True, batch_seconds=3.0, processing_delay=0.05)
    try:
        inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
        inbox.mkdir()
        inbox_cfg = {"path": str(inbox), "purpose": "batch-api", "batch": {"poll_seconds": 0.2, "outbox": str(outbox)}}
        cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[inbox_cfg])
        with start_daemon(cfg, key=emu.key) as d:
            drop(inbox, "h.jsonl", batch_input("h", 5))
            wait_until(lambda: emu.batch_creates() == 1, 30, what="the job created")
            write_config(tmp_path, base_url=emu.base_url, inboxes=[{"path": str(inbox), "purpose": "batch-api"}])
            d.signal(signal.SIGHUP)
            d.wait_event("config.reloaded")
            wait_until(lambda: "h.batch.json" in batch_sidecars(outbox), 30, what="the results after the reload")
        assert batch_sidecars(outbox)["h.batch.json"]["jobs"][0]["status"] == "COMPLETED"
    finally:
        emu.stop()


def test_killed_while_the_create_is_in_flight_the_restart_adopts_the_job(tmp_path):
    """The daemon dies after its ledger says `creating`, while the server (slowed) is still
    making the job: the restart finds the job by its input file id and adopts it; no second job."""
    emu = start_emulator(tmp_path / "emu", no_dedupe=True, batch_seconds=0.3, processing_delay=0.05)
    try:
        inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
        inbox.mkdir()
        cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{
            "path": str(inbox), "purpose": "batch-api", "batch": {"poll_seconds": 0.2, "outbox": str(outbox)}}])
        ledger = inbox / "done" / "c.jsonl.ledger.json"

        def creating() -> bool:
            try:
                return json.loads(ledger.read_text())["jobs"][0]["stage"] == "creating"
            except (OSError, ValueError):
                return False

        d = start_daemon(cfg, key=emu.key)
        try:
            # every answer 1.5 s late: the create too (the job is made anyway, after the daemon died)
            emu.set_faults(slow_seconds=1.5)
            drop(inbox, "c.jsonl", batch_input("c", 6))
            wait_until(creating, 40, interval=0.01, what="the create in the ledger")
            # and received: the server counts a request before its 1.5 s wait (killed before the
            # POST left, the server would never make the job: another case, not this one)
            wait_until(lambda: emu.stats()["requests"].get("batch_create", 0) >= 1, 10, interval=0.005,
                       what="the create at the server")
            d.kill9()
        finally:
            d.stop()
        emu.set_faults(slow_seconds=0.0)
        wait_until(lambda: emu.batch_creates() == 1, 10, what="the server made the job the dead daemon asked for")
        with start_daemon(cfg, key=emu.key) as d:
            d.wait_for(lambda: "c.batch.json" in batch_sidecars(outbox), 30, what="the results")
            assert d.events("batch.adopted")
        assert emu.batch_creates() == 1
    finally:
        emu.stop()


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
