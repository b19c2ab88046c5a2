"""R6: load. Many small files dropped at once into one inbox (bounded memory: the daemon's
peak RSS is reported), and several daemons on one shared inbox. Every file exactly once:
the emulator runs with `--no-dedupe` (a second upload would be a second file) and counts
creates per sha256; nothing here interrupts an upload, so no re-send is allowed."""

from __future__ import annotations

import os

from tests.helpers.daemon import start_daemon, wait_until, write_config
from tests.helpers.emulator import start_emulator
from tests.helpers.files import batch_line, claimed, error_sidecars, manifests, once_on_server, sha, waiting

from .common import Clock, record, scale, vm_hwm_kib

KEY = "r6-key-77aa55cc33ee1"


def small(i: int) -> bytes:
    return batch_line(f"r6-{i}", {"model": "m", "messages": [{"role": "user", "content": f"n{i}"}]})


def _drop_all(inbox, stage, start: int, n: int) -> dict[str, str]:
    stage.mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(start, start + n):
        data = small(i)
        (stage / f"l{i:05d}.jsonl").write_bytes(data)
        out[sha(data)] = f"l{i:05d}.jsonl"
    for name in out.values():
        os.rename(stage / name, inbox / name)
    return out


def _check_exactly_once(inbox, expected, stats):
    ms = manifests(inbox).values()
    assert not error_sidecars(inbox)
    assert len(ms) == len(expected)
    assert {m["source"]["sha256"] for m in ms} == set(expected)
    problems = once_on_server(stats, expected)
    assert not problems, problems[:5]
    assert not claimed(inbox) and waiting(inbox) == []


def test_r6_burst_into_one_inbox(tmp_path):
    n = scale(2000, 30_000)
    emu = start_emulator(tmp_path / "emu", key=KEY, no_dedupe=True)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(tmp_path, base_url=emu.base_url,
                       inboxes=[{"path": str(inbox), "purpose": "batch-api", "validate": "basic"}],
                       daemon={"workers": 4, "settle_seconds": 0.2, "rescan_seconds": 5})
    try:
        with start_daemon(cfg, key=KEY) as d:
            clock = Clock()
            expected = _drop_all(inbox, tmp_path / "stage", 0, n)
            wait_until(lambda: len(os.listdir(inbox / "done")) >= 2 * n if (inbox / "done").exists() else False,
                       scale(240, 2400), interval=1.0, what=f"{n} manifests")
            seconds = clock.seconds
            rss = vm_hwm_kib(d.pid)
        stats = emu.stats()
    finally:
        emu.stop()
    _check_exactly_once(inbox, expected, stats)
    record("R6 burst", files=n, daemons=1, peak_rss_mib=round((rss or 0) / 1024, 1), lost=0, duplicated=0,
           seconds=seconds, files_per_second=round(n / max(seconds, 0.1), 1))
    assert rss is not None and rss < 300 * 1024, f"peak RSS {rss} KiB"


def test_r6_three_daemons_on_one_shared_inbox(tmp_path):
    n_each = scale(150, 1000)
    emu = start_emulator(tmp_path / "emu", key=KEY, no_dedupe=True)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfgs = [write_config(tmp_path / f"d{i}", base_url=emu.base_url,
                         inboxes=[{"path": str(inbox), "purpose": "batch-api", "validate": "basic"}],
                         daemon={"workers": 2, "settle_seconds": 0.2, "rescan_seconds": 2})
            for i in range(3) if (tmp_path / f"d{i}").mkdir() is None]
    try:
        daemons = [start_daemon(c, key=KEY) for c in cfgs]
        try:
            clock = Clock()
            expected: dict[str, str] = {}
            for k in range(3):
                expected |= _drop_all(inbox, tmp_path / "stage", k * n_each, n_each)
            wait_until(lambda: len(manifests(inbox)) >= 3 * n_each, scale(180, 900), interval=0.5,
                       what=f"{3 * n_each} manifests")
            seconds = clock.seconds
        finally:
            for d in daemons:
                d.stop()
        # every daemon has stopped (SIGTERM finishes what is in flight): a late second upload
        # would be in their logs and on the server by now
        per_daemon = [len(d.events("file.archived")) for d in daemons]
        stats = emu.stats()
    finally:
        emu.stop()
    _check_exactly_once(inbox, expected, stats)
    assert sum(per_daemon) == 3 * n_each
    record("R6 shared inbox", files=3 * n_each, daemons=3, per_daemon=per_daemon, lost=0, duplicated=0,
           seconds=seconds)
