"""Logs an operator can live with (issue 15), each item from the first-day trial as a test:
one info line per file, retries inside a request said (rate-limited), the duplicate
custom_id's first line named, `left_claimed` that tells the truth, claim names that do not
stack across restarts, and `recovered` that agrees with `file.recovered`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.helpers.daemon import REPO, start_daemon, write_config


def batch_lines(tag: str, n: int = 5) -> bytes:
    return "".join(json.dumps({"custom_id": f"{tag}-{i}", "body": {"model": "m", "messages": [
        {"role": "user", "content": f"{tag} {i}"}]}}) + "\n" for i in range(n)).encode()


def drop(inbox: Path, name: str, data: bytes) -> None:
    tmp = inbox.parent / f".{name}.tmp"
    tmp.write_bytes(data)
    os.rename(tmp, inbox / name)


def test_one_info_line_per_file_and_retries_said_once_per_burst(tmp_path, emu):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{"path": str(inbox), "purpose": "batch-api"}],
                       api={"max_retries": 5}, daemon={"log_level": "info"})
    emu.script([{"route": "create", "status": 503, "times": 3}])
    with start_daemon(cfg, key=emu.key) as d:
        for i in range(3):
            drop(inbox, f"f{i}.jsonl", batch_lines(f"f{i}"))
        d.wait_event("file.archived", count=3)
        per_file = [e for e in d.lines if e.get("name", "").startswith("f") and e.get("level") == "info"]
        retries = d.events("api.retry")
    assert sorted(e["event"] for e in per_file) == ["file.archived"] * 3, [e["event"] for e in per_file]
    archived = per_file[0]
    for key in ("sha256", "bytes", "file_id", "method", "seconds", "manifest", "records"):
        assert archived.get(key) is not None, (key, archived)
    # three 503s in a row on one route: said at info with status, attempt and wait, once per 5 s
    assert len(retries) == 1 and retries[0]["status"] == 503 and retries[0]["level"] == "info", retries
    assert {"attempt", "wait", "route"} <= set(retries[0]), retries[0]


def test_a_duplicate_custom_id_names_its_first_line(tmp_path):
    f = tmp_path / "dup.jsonl"
    lines = batch_lines("d", 5).decode().splitlines()
    lines[4] = lines[1]
    f.write_text("\n".join(lines) + "\n")
    out = subprocess.run([sys.executable, "-m", "inboxd", "validate", str(f), "--purpose", "batch-api", "--json"],
                         capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 1
    assert "first on line 2" in out.stdout and '"line": 5' in out.stdout, out.stdout


def test_left_claimed_tells_the_truth_and_a_restart_neither_stacks_names_nor_forgets_recovered(tmp_path, emu):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{"path": str(inbox), "purpose": "batch-api"}],
                       daemon={"stop_grace_seconds": 0.5})
    emu.set_faults(slow_seconds=3.0)  # the upload is still under way when SIGTERM's grace runs out
    with start_daemon(cfg, key=emu.key) as d:
        drop(inbox, "big300-a.jsonl", batch_lines("big", 50))
        d.wait_event("file.checked", name="big300-a.jsonl")
        d.signal(signal.SIGTERM)
        assert d.wait_exit(20) == 0
        (stopped,) = d.events("daemon.stopped")
    left = [p for p in (inbox / ".inboxd").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert stopped["left_claimed"] == len(left) == 1, (stopped, left)
    for _ in range(2):  # two restarts (the server still slow): the claim name must not grow a prefix
        with start_daemon(cfg, key=emu.key) as d:
            (recovered,) = d.wait_event("file.recovered", name="big300-a.jsonl")
            assert re.fullmatch(r"\d+\.big300-a\.jsonl", Path(recovered["claim"]).name), recovered["claim"]
            d.signal(signal.SIGKILL)
            d.wait_exit(10)
    emu.set_faults(slow_seconds=0.0)
    with start_daemon(cfg, key=emu.key) as d:
        (archived,) = d.wait_event("file.archived", name="big300-a.jsonl", timeout=30)
        assert archived["recovered"] is True, archived
        (recovered,) = d.events("file.recovered", name="big300-a.jsonl")
        assert re.fullmatch(r"\d+\.big300-a\.jsonl", Path(recovered["claim"]).name), recovered["claim"]


def test_a_retry_does_not_hash_the_file_again(tmp_path, emu):
    """The upload fails for good on the first attempt (the create answers 503 past the retries);
    the second attempt reuses the journaled sha256 and verdict: one `file.checked`, not two."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{"path": str(inbox), "purpose": "batch-api"}],
                       api={"max_retries": 1})
    emu.script([{"route": "create", "status": 503, "times": 2}])
    with start_daemon(cfg, key=emu.key) as d:
        drop(inbox, "r.jsonl", batch_lines("r"))
        d.wait_event("file.archived", name="r.jsonl", timeout=30)
        assert d.events("file.retry", name="r.jsonl"), "the first attempt failed"
        assert len(d.events("file.checked", name="r.jsonl")) == 1
