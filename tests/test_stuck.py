"""Never stall in silence (issues 15 and 16): a file that stays visible for more than 3 rescans
without being claimed gets a `file.stuck` warning naming why, counts in `inboxd_queue_depth`,
and turns /healthz 503; once the cause is gone it is archived and health comes back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import requests

from tests.helpers.daemon import start_daemon, wait_until, write_config
from tests.helpers.emulator import start_emulator


def chattr_works(path) -> bool:
    probe = path / ".probe"
    probe.write_text("x")
    ok = shutil.which("chattr") and subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["chattr", "-i", str(probe)], check=True)
    probe.unlink()
    return bool(ok)


def metric(port: int, name: str, inbox: str) -> float | None:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + "{") and f'inbox="{inbox}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


def test_an_immutable_file_is_stuck_loudly_then_archived(tmp_path):
    if os.geteuid() != 0 or not chattr_works(tmp_path):
        pytest.skip("needs root and a filesystem with chattr +i")
    emu = start_emulator(tmp_path / "emu", no_dedupe=True)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{"path": str(inbox), "purpose": "batch-api"}],
                       daemon={"metrics_address": "127.0.0.1:0", "settle_seconds": 0.1, "rescan_seconds": 0.5})
    f = inbox / "imm.jsonl"
    f.write_text(json.dumps({"custom_id": "a", "body": {"model": "m", "messages": [{"role": "user",
                                                                                   "content": "hi"}]}}) + "\n")
    subprocess.run(["chattr", "+i", str(f)], check=True)  # cannot be renamed: never claimable
    try:
        with start_daemon(cfg, key=emu.key) as d:
            (listening,) = d.wait_event("metrics.listening")
            port = int(listening["address"].rsplit(":", 1)[1])
            (stuck,) = d.wait_event("file.stuck", name="imm.jsonl", timeout=20)
            assert "Operation not permitted" in stuck["reason"], stuck
            assert len(d.events("file.claim_failed", name="imm.jsonl")) == 1, "said once, not at every look"
            wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 503, 10,
                       what="/healthz 503")
            body = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).json()
            assert str(f) in body["stuck"], body
            wait_until(lambda: metric(port, "inboxd_queue_depth", str(inbox)) == 1, 10, what="queue depth 1")
            subprocess.run(["chattr", "-i", str(f)], check=True)
            d.wait_event("file.archived", name="imm.jsonl", timeout=20)
            wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200, 10,
                       what="/healthz 200 again")
            wait_until(lambda: metric(port, "inboxd_queue_depth", str(inbox)) == 0, 10, what="queue depth 0")
    finally:
        subprocess.run(["chattr", "-i", str(f)], capture_output=True)
        emu.stop()


def test_status_shows_files_held_open_stuck_and_ignored(tmp_path):
    """`inboxd status` (another process, reading the folder and the journal) says which waiting
    files a producer still holds open for writing, which have waited more than 3 rescans, and
    which match no pattern."""
    import sys
    import time

    from inboxd.state.journal import Journal
    from tests.helpers.daemon import REPO

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(tmp_path, base_url="http://127.0.0.1:9/v1", inboxes=[{"path": str(inbox),
                                                                               "purpose": "batch-api"}],
                       daemon={"rescan_seconds": 0.1, "settle_seconds": 0.0})
    Journal(tmp_path / "state").close()  # a journal exists, as after a daemon's first start
    (inbox / "U2.JSONL").write_text("{}\n")
    (inbox / "done.jsonl").write_text("{}\n")
    with open(inbox / "open.jsonl", "w") as f:
        f.write("{}\n")
        f.flush()
        time.sleep(0.5)  # older than 3 rescans of 0.1 s
        out = subprocess.run([sys.executable, "-m", "inboxd", "status", "--config", str(cfg), "--json"],
                             capture_output=True, text=True, cwd=REPO, timeout=30)
        text = subprocess.run([sys.executable, "-m", "inboxd", "status", "--config", str(cfg)],
                              capture_output=True, text=True, cwd=REPO, timeout=30)
    assert out.returncode == 0, out.stderr
    (i,) = json.loads(out.stdout)["inboxes"]
    assert i["waiting"] == 2
    assert i["held_open"] == ["open.jsonl"]
    assert i["stuck"] == ["done.jsonl", "open.jsonl"]
    assert i["ignored"] == ["U2.JSONL"]
    assert "held open for writing: 1: open.jsonl" in text.stdout and "ignored (matches no pattern): 1" in text.stdout
