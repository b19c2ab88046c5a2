"""R7: disk trouble. `done/` made unwritable, the state disk full, the inbox folder deleted
and recreated. Nothing is lost; the daemon says what is wrong, and recovers by itself once
the cause is gone. Needs root (chattr +i, mounting a small tmpfs): skipped otherwise.

The emulator runs with `--no-dedupe`: a file sent again while its archive or its journal
row could not be written would be a second file on the server, and creates are counted
per sha256. Nothing here allows a re-send."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.helpers.daemon import start_daemon, wait_until, write_config
from tests.helpers.emulator import start_emulator
from tests.helpers.files import batch_lines, claimed, drop, error_sidecars, manifests, once_on_server, waiting

from .common import Clock, record

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
    emu = start_emulator(tmp_path / "emu", key=KEY, no_dedupe=True)
    inbox = tmp_path / "inbox"
    (inbox / "done").mkdir(parents=True)
    cfg = _config(tmp_path, emu, inbox)
    if subprocess.run(["chattr", "+i", str(inbox / "done")], capture_output=True).returncode != 0:
        pytest.skip("chattr +i not supported here")
    clock = Clock()
    try:
        with start_daemon(cfg, key=KEY) as d:
            names = [f"u{i}.jsonl" for i in range(5)]
            digests = [drop(inbox, n, batch_lines(f"r7u{i}"), tmp_path / "st") for i, n in enumerate(names)]
            d.wait_for(lambda: [e for e in d.lines if e.get("level") in ("error", "warning")
                                and "done" in str(e)], timeout=30, what="a log line about done/")

            def retried_twice() -> bool:  # each file's archive failed, and its first retry's too
                return all(any(e.get("attempt", 0) >= 2 for e in d.events("file.retry", name=n)) for n in names)

            d.wait_for(retried_twice, timeout=30, what="a second failed archive of every file")
            assert not manifests(inbox)
            assert d.proc.poll() is None
            while_unwritable = once_on_server(emu.stats(), digests)  # the retries did not upload again
            reported = [e["event"] for e in d.lines if e.get("level") in ("error", "warning")]
            subprocess.run(["chattr", "-i", str(inbox / "done")], check=True)
            wait_until(lambda: len(manifests(inbox)) == 5, 60, interval=0.3, what="5 manifests after the fix")
        stats = emu.stats()
    finally:
        subprocess.run(["chattr", "-i", str(inbox / "done")])
        emu.stop()
    assert not while_unwritable, while_unwritable
    assert {m["source"]["sha256"] for m in manifests(inbox).values()} == set(digests)
    problems = once_on_server(stats, digests)
    assert not problems, f"re-uploaded while done/ was unwritable: {problems}"
    assert not claimed(inbox) and not error_sidecars(inbox)
    record("R7 done/ unwritable", files=5, reported=sorted(set(reported)), lost=0, duplicated=0, seconds=clock.seconds)


@needs_root
def test_r7_state_disk_full_then_freed(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(state)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    emu = start_emulator(tmp_path / "emu", key=KEY, no_dedupe=True)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = _config(tmp_path, emu, inbox, state_dir=state)
    clock = Clock()
    try:
        with start_daemon(cfg, key=KEY) as d:
            first = drop(inbox, "before.jsonl", batch_lines("r7before"), tmp_path / "st")
            wait_until(lambda: len(manifests(inbox)) == 1, 30, what="the first file")
            filler = state / "filler"
            with open(filler, "wb") as f:  # fill the disk to the last block
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass
            digests = [drop(inbox, f"full{i}.jsonl", batch_lines(f"r7full{i}"), tmp_path / "st") for i in range(4)]
            d.wait_for(lambda: [e for e in d.lines if e.get("level") in ("error", "warning", "critical")],
                       timeout=30, what="the daemon to report the full disk")

            def survived_a_retry() -> bool:  # it exited, or tried one file again and reported it again
                if d.proc.poll() is not None:
                    return True
                seen: set[tuple[str, str]] = set()
                for e in d.lines:
                    if e.get("level") in ("error", "warning", "critical") and e.get("name"):
                        if (e["event"], e["name"]) in seen:
                            return True
                        seen.add((e["event"], e["name"]))
                return False

            wait_until(survived_a_retry, 30, what="a second report of one file while the disk is full")
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
        stats = emu.stats()
    finally:
        emu.stop()
        subprocess.run(["umount", "-l", str(state)])
    assert {m["source"]["sha256"] for m in manifests(inbox).values()} == set(digests) | {first}
    problems = once_on_server(stats, [*digests, first])
    assert not problems, problems
    assert not claimed(inbox) and not error_sidecars(inbox) and waiting(inbox) == []
    record("R7 state disk full", files=5, reported=reported, daemon_stayed_up=alive_while_full, lost=0,
           duplicated=0, seconds=clock.seconds)


def test_r7_inbox_deleted_and_recreated(tmp_path):
    emu = start_emulator(tmp_path / "emu", key=KEY, no_dedupe=True)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = _config(tmp_path, emu, inbox)
    try:
        with start_daemon(cfg, key=KEY) as d:
            first = drop(inbox, "a.jsonl", batch_lines("r7a"), tmp_path / "st")
            wait_until(lambda: len(manifests(inbox)) == 1, 30, what="first file")
            shutil.rmtree(inbox)
            d.wait_event("inbox.missing")
            inbox.mkdir()
            digest = drop(inbox, "b.jsonl", batch_lines("r7b"), tmp_path / "st")
            wait_until(lambda: len(manifests(inbox)) == 1, 30, what="a file in the recreated inbox")
            assert d.proc.poll() is None
        stats = emu.stats()
    finally:
        emu.stop()
    (m,) = manifests(inbox).values()
    assert m["source"]["sha256"] == digest
    problems = once_on_server(stats, [digest, first])
    assert not problems, problems
