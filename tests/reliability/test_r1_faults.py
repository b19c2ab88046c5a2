"""R1: faults on every path. Files flow through the daemon while the emulator injects
HTTP 500 on API calls, 429 with Retry-After, connections cut mid-PUT and 503 on part PUTs.
Every file must be uploaded exactly once, byte-identical, with one manifest, none left behind.

The emulator runs with `--no-dedupe`, so a second upload of a file would be a second file
on the server; creates are counted per sha256."""

from __future__ import annotations

from tests.helpers.daemon import start_daemon, wait_until, write_config
from tests.helpers.emulator import start_emulator
from tests.helpers.files import (
    batch_lines,
    big_batch,
    claimed,
    drop,
    error_sidecars,
    extra_creates,
    manifests,
    once_on_server,
    resolved,
    waiting,
)

from .common import Clock, record, scale

KEY = "r1-key-5d1f0c2b9e8a7"


def test_r1_faults_on_every_path(tmp_path):
    n_multi = scale(2, 5)
    n_small = scale(40, 500 - n_multi)
    emu = start_emulator(tmp_path / "emu", key=KEY, no_dedupe=True)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(
        tmp_path,
        base_url=emu.base_url,
        inboxes=[{"path": str(inbox), "purpose": "batch-api", "validate": "basic"}],
        api={"max_retries": 8, "timeout_seconds": 10},
        upload={"multipart_threshold": "6MiB", "part_size": "5MiB", "part_concurrency": 3},
        daemon={"workers": 4, "settle_seconds": 0.2, "rescan_seconds": 2},
    )
    faults = dict(error_rate=0.10, rate_limit_rate=0.05, retry_after_seconds=0.2, drop_rate=0.02, part_error_rate=0.03)
    emu.set_faults(**faults)
    clock = Clock()
    expected: dict[str, str] = {}
    stage = tmp_path / "st"
    try:
        with start_daemon(cfg, key=KEY) as d:
            for i in range(n_multi):
                expected[drop(inbox, f"big-{i}.jsonl", big_batch(f"big{i}", 13 * 2**20), stage)] = f"big-{i}.jsonl"
            for i in range(n_small):
                expected[drop(inbox, f"f{i:04d}.jsonl", batch_lines(f"r1-{i}", 30), stage)] = f"f{i:04d}.jsonl"
            wait_until(lambda: resolved(inbox) >= len(expected), scale(240, 1200), interval=0.5,
                       what="every file archived")
            pid = d.pid
            assert d.proc.poll() is None
        stats = emu.stats()
    finally:
        emu.stop()

    assert not error_sidecars(inbox), list(error_sidecars(inbox).values())[:3]
    ms = list(manifests(inbox).values())
    assert len(ms) == len(expected)
    assert {m["source"]["sha256"] for m in ms} == set(expected)
    # a legitimate re-send: a file whose attempt failed for good (file.retry) starts over
    # with a new create; each retry allows one more create, never a second whole file
    retries = {digest: len(d.events("file.retry", name=name)) for digest, name in expected.items()}
    problems = once_on_server(stats, expected, resends=retries)
    assert not problems, problems[:10]
    on_server = {f["sha256"]: f for f in stats["files"]}
    for m in ms:
        assert m["file"]["id"] == on_server[m["source"]["sha256"]]["id"]
    assert {m["upload"]["method"] for m in ms if m["source"]["name"].startswith("big-")} == {"multipart"}
    assert not claimed(inbox) and waiting(inbox) == []
    injected = stats.get("faults_injected", {})
    assert sum(injected.values()) > 0, stats
    record("R1 faults", files=len(expected), multipart=n_multi, faults_injected=sum(injected.values()),
           faults=injected, lost=0, duplicated=0, failed=0, resent=extra_creates(stats, expected),
           file_retries=sum(retries.values()), seconds=clock.seconds, pid=pid)
