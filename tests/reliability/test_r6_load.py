"""R6: load. Many small files dropped at once into one inbox (bounded memory: the daemon's
peak RSS is reported), and several daemons on one shared inbox. Every file exactly once."""

from __future__ import annotations

import os
import time

from tests.helpers.daemon import start_daemon, wait_until, write_config
from tests.helpers.emulator import start_emulator

from .common import Clock, claimed, error_sidecars, manifests, record, scale, sha, vm_hwm_kib, waiting

KEY = "r6-key-77aa55cc33ee1"


def small(i: int) -> bytes:
    return b'{"custom_id": "r6-%d", "body": {"model": "m", "messages": [{"role": "user", "content": "n%d"}]}}\n' % (i, i)


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


def _check_exactly_once(inbox, expected, on_server):
    ms = manifests(inbox)
    assert not error_sidecars(inbox)
    assert len(ms) == len(expected)
    assert {m["source"]["sha256"] for m in ms} == set(expected)
    twice = [expected[s] for s in expected if len(on_server.get(s, [])) != 1]
    assert not twice, twice[:5]
    assert not claimed(inbox) and waiting(inbox) == []


def test_r6_burst_into_one_inbox(tmp_path):
    n = scale(2000, 30_000)
    emu = start_emulator(tmp_path / "emu", key=KEY)
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
        on_server = emu.files_by_sha256()
    finally:
        emu.stop()
    _check_exactly_once(inbox, expected, on_server)
    record("R6 burst", files=n, daemons=1, peak_rss_mib=round((rss or 0) / 1024, 1), lost=0, duplicated=0,
           seconds=seconds, files_per_second=round(n / max(seconds, 0.1), 1))
    assert rss is not None and rss < 300 * 1024, f"peak RSS {rss} KiB"


def test_r6_three_daemons_on_one_shared_inbox(tmp_path):
    n_each = scale(150, 1000)
    emu = start_emulator(tmp_path / "emu", key=KEY)
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
            time.sleep(1.0)
            seconds = clock.seconds
            per_daemon = [len(d.events("file.archived")) for d in daemons]
        finally:
            for d in daemons:
                d.stop()
        on_server = emu.files_by_sha256()
    finally:
        emu.stop()
    _check_exactly_once(inbox, expected, on_server)
    assert sum(per_daemon) == 3 * n_each
    record("R6 shared inbox", files=3 * n_each, daemons=3, per_daemon=per_daemon, lost=0, duplicated=0,
           seconds=seconds)
