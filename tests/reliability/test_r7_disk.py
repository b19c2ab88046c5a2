"""R7: disk trouble. `done/` made unwritable, the state disk full, the inbox folder deleted
and recreated. Nothing is lost; the daemon says what is wrong, and recovers by itself once
the cause is gone. Needs root (chattr +i, mounting a small tmpfs): skipped otherwise."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tests.helpers.daemon import start_daemon, wait_until, write_config
from tests.helpers.emulator import start_emulator

from .common import Clock, batch_bytes, claimed, drop, error_sidecars, manifests, record, waiting

KEY = "r7-key-0f1e2d3c4b5a6"

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for chattr and mount")


def _config(tmp_path, emu, inbox, state_dir=None):
    daemon = {"workers": 2, "settle_seconds": 0.2, "rescan_seconds": 1}
    if state_dir:
        daemon["state_dir"] = str(state_dir)
    return write_config(tmp_path, base_url=emu.base_url,
                        inboxes=[{"path": str(inbox), "purpose": "batch-api", "validate": "basic"}], daemon=daemon)


@needs_root
def test_r7_done_unwritable_then_writable(tmp_path):
    emu = start_emulator(tmp_path / "emu", key=KEY)
    inbox = tmp_path / "inbox"
    (inbox / "done").mkdir(parents=True)
    cfg = _config(tmp_path, emu, inbox)
    if subprocess.run(["chattr", "+i", str(inbox / "done")], capture_output=True).returncode != 0:
        pytest.skip("chattr +i not supported here")
    clock = Clock()
    try:
        with start_daemon(cfg, key=KEY) as d:
            digests = [drop(inbox, f"u{i}.jsonl", batch_bytes(f"r7u{i}"), tmp_path / "st") for i in range(5)]
            d.wait_for(lambda: [e for e in d.lines if e.get("level") in ("error", "warning")
                                and "done" in str(e)], timeout=30, what="a log line about done/")
            time.sleep(2)
            assert not manifests(inbox)
            assert d.proc.poll() is None
            reported = [e["event"] for e in d.lines if e.get("level") in ("error", "warning")]
            subprocess.run(["chattr", "-i", str(inbox / "done")], check=True)
            wait_until(lambda: len(manifests(inbox)) == 5, 60, interval=0.3, what="5 manifests after the fix")
        on_server = emu.files_by_sha256()
    finally:
        subprocess.run(["chattr", "-i", str(inbox / "done")])
        emu.stop()
    assert {m["source"]["sha256"] for m in manifests(inbox)} == set(digests)
    assert all(len(on_server[s]) == 1 for s in digests), "re-uploaded while done/ was unwritable"
    assert not claimed(inbox) and not error_sidecars(inbox)
    record("R7 done/ unwritable", files=5, reported=sorted(set(reported)), lost=0, duplicated=0, seconds=clock.seconds)


@needs_root
def test_r7_state_disk_full_then_freed(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(state)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    emu = start_emulator(tmp_path / "emu", key=KEY)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = _config(tmp_path, emu, inbox, state_dir=state)
    clock = Clock()
    try:
        with start_daemon(cfg, key=KEY) as d:
            first = drop(inbox, "before.jsonl", batch_bytes("r7before"), tmp_path / "st")
            wait_until(lambda: len(manifests(inbox)) == 1, 30, what="the first file")
            filler = state / "filler"
            with open(filler, "wb") as f:  # fill the disk to the last block
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass
            digests = [drop(inbox, f"full{i}.jsonl", batch_bytes(f"r7full{i}"), tmp_path / "st") for i in range(4)]
            d.wait_for(lambda: [e for e in d.lines if e.get("level") in ("error", "warning", "critical")],
                       timeout=30, what="the daemon to report the full disk")
            time.sleep(2)
            alive_while_full = d.proc.poll() is None
            reported = sorted({e["event"] for e in d.lines if e.get("level") in ("error", "warning", "critical")})
            os.unlink(filler)
            if not alive_while_full:  # it chose to exit (systemd restarts it): restart it as systemd would
                d.stop()
                d2 = start_daemon(cfg, key=KEY)
            else:
                d2 = None
            wait_until(lambda: len(manifests(inbox)) == 5, 60, interval=0.3, what="all files after space came back")
            if d2:
                d2.stop()
        on_server = emu.files_by_sha256()
    finally:
        emu.stop()
        subprocess.run(["umount", "-l", str(state)])
    assert {m["source"]["sha256"] for m in manifests(inbox)} == set(digests) | {first}
    assert all(len(on_server[s]) == 1 for s in digests)
    assert not claimed(inbox) and not error_sidecars(inbox) and waiting(inbox) == []
    record("R7 state disk full", files=5, reported=reported, daemon_stayed_up=alive_while_full, lost=0,
           duplicated=0, seconds=clock.seconds)


def test_r7_inbox_deleted_and_recreated(tmp_path):
    emu = start_emulator(tmp_path / "emu", key=KEY)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = _config(tmp_path, emu, inbox)
    try:
        with start_daemon(cfg, key=KEY) as d:
            drop(inbox, "a.jsonl", batch_bytes("r7a"), tmp_path / "st")
            wait_until(lambda: len(manifests(inbox)) == 1, 30, what="first file")
            shutil.rmtree(inbox)
            time.sleep(1.5)
            inbox.mkdir()
            digest = drop(inbox, "b.jsonl", batch_bytes("r7b"), tmp_path / "st")
            wait_until(lambda: len(manifests(inbox)) == 1, 30, what="a file in the recreated inbox")
            assert d.proc.poll() is None
    finally:
        emu.stop()
    assert manifests(inbox)[0]["source"]["sha256"] == digest
