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
