"""A backlog larger than the claimer's window (the daemon as a real process): every file is
still archived, once each, the window taken in again by refill scans (the periodic rescan is
set far beyond the test's time, so it is not what finds them)."""

from __future__ import annotations

import pytest

from tests.helpers.daemon import start_daemon, write_config
from tests.helpers.files import batch_lines, drop, once_on_server, sha

pytestmark = pytest.mark.emulator(no_dedupe=True)


def test_a_backlog_beyond_the_window_is_all_archived(tmp_path, emu):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    names = [f"b{i:02}.jsonl" for i in range(20)]
    for n in names:  # waiting before the daemon starts: its first scan sees them all
        drop(inbox, n, batch_lines(n, n=2), tmp_path / "stage")
    cfg = write_config(tmp_path, base_url=emu.base_url,
                       inboxes=[{"path": str(inbox), "purpose": "batch-api", "validate": "basic"}],
                       daemon={"workers": 2, "candidate_window": 6, "rescan_seconds": 3600, "settle_seconds": 0.1})
    with start_daemon(cfg, key=emu.key) as d:
        late = [f"late{i}.jsonl" for i in range(4)]
        for n in late:  # and a burst while the window is full: their events are turned away
            drop(inbox, n, batch_lines(n, n=2), tmp_path / "stage")
        for n in names + late:
            d.wait_event("file.archived", name=n, timeout=30)
    problems = once_on_server(emu.stats(), [sha(batch_lines(n, n=2)) for n in names + late])
    assert not problems, problems
