"""Stopping: once the daemon has its SIGTERM, nothing new is claimed (the daemon as a real
process against the emulator). Uploads in flight finish within the grace period; a file
that arrives after the signal stays in the inbox, untouched, for the next start."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.helpers.daemon import DaemonProc, start_daemon, write_config
from tests.helpers.files import batch_lines, claimed, drop, sha

pytestmark = pytest.mark.emulator(no_dedupe=True)


def _daemon(root: Path, emu) -> tuple[DaemonProc, Path]:
    """A daemon with 2 workers on an inbox of its own, one slow upload in flight (one worker
    busy, the other free to take whatever it is handed)."""
    inbox = root / "inbox"
    inbox.mkdir(parents=True)
    cfg = write_config(root, base_url=emu.base_url,
                       inboxes=[{"path": str(inbox), "purpose": "batch-api", "validate": "basic"}],
                       daemon={"workers": 2, "stop_grace_seconds": 30, "settle_seconds": 0.1})
    d = start_daemon(cfg, key=emu.key, timeout=60)  # (generous: a loaded machine starts slowly)
    d.wait_event("inbox.watching", timeout=60)
    drop(inbox, "slow.jsonl", batch_lines(f"slow-{root.name}"), root / "stage")
    d.wait_event("file.checked", name="slow.jsonl", timeout=60)
    return d, inbox


def test_files_dropped_after_sigterm_stay_in_the_inbox_untouched(tmp_path, emu):
    emu.set_faults(slow_seconds=0.5)  # every answer late: the upload in flight outlasts the drops below
    # two daemons stopped side by side: the loop may be between two waits when its signal
    # comes (a claim after it then needs a file in the same pass), so each run is one chance
    daemons: list[tuple[DaemonProc, Path]] = []
    after: dict[Path, tuple[int, int]] = {}
    try:
        for name in ("a", "b"):
            daemons.append(_daemon(tmp_path / name, emu))
        for d, _ in daemons:
            d.signal(signal.SIGTERM)
        deadline = time.monotonic() + 1.0  # drops while the daemons stop (a loop waits up to a tick)
        i = 0
        while time.monotonic() < deadline:
            for d, inbox in daemons:
                if d.proc.poll() is None:
                    path = inbox / f"r{i}.jsonl"
                    drop(inbox, path.name, batch_lines(f"{inbox.parent.name}-{path.name}"), inbox.parent / "stage")
                    st = os.stat(path)
                    after[path] = (st.st_ino, st.st_mtime_ns)
            i += 1
            time.sleep(0.01)
        for d, _ in daemons:
            assert d.wait_exit(60) == 0
    finally:
        for d, _ in daemons:
            d.stop()
    sent = set(emu.creates_by_sha256())
    for d, inbox in daemons:
        assert d.events("daemon.stopped")
        assert d.events("file.archived", name="slow.jsonl"), "the upload in flight at SIGTERM was not finished"
        late = {p.name for p in after if p.parent == inbox}
        late_claims = [e["name"] for e in d.events("file.claimed") if e.get("name") in late]
        assert not late_claims, f"claimed after SIGTERM: {late_claims}"
        assert not claimed(inbox)
        assert not (inbox / "done").exists() or not list((inbox / "done").glob("r*"))
    for path, (ino, mtime) in after.items():
        st = os.stat(path)
        assert (st.st_ino, st.st_mtime_ns) == (ino, mtime), f"{path.name} was moved or changed"
        assert sha(batch_lines(f"{path.parent.parent.name}-{path.name}")) not in sent
