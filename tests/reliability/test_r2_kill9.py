"""R2: kill -9 at random moments. Files (small and multipart) keep flowing while the daemon
is killed with SIGKILL again and again and restarted each time. Zero lost, zero held twice
by the server, zero manifests missing or duplicated, no claimed file stranded in `.inboxd/`.

The emulator runs with `--no-dedupe`, so a second upload of a file would be a second file
on the server; creates are counted per sha256. An upload a kill interrupted before the
server held it whole is legitimately sent again after its orphan is deleted: at most one
re-send per kill for a file, and at most one per worker busy at each kill."""

from __future__ import annotations

import random
import time

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
    whole_files,
)

from .common import Clock, record, scale

KEY = "r2-key-9c8b7a6f5e4d3"
WORKERS = 3


def test_r2_kill9_at_random_moments(tmp_path):
    kills = scale(5, 20)
    n_files = scale(30, 200)
    n_multi = scale(2, 6)
    rng = random.Random(7)
    emu = start_emulator(tmp_path / "emu", key=KEY, no_dedupe=True)
    emu.set_faults(slow_seconds=0.02)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(
        tmp_path,
        base_url=emu.base_url,
        inboxes=[{"path": str(inbox), "purpose": "batch-api", "validate": "basic"}],
        upload={"multipart_threshold": "6MiB", "part_size": "5MiB", "part_concurrency": 2},
        daemon={"workers": WORKERS, "settle_seconds": 0.2, "rescan_seconds": 2},
    )
    payloads = [(f"m{i}.jsonl", big_batch(f"m{i}", 12 * 2**20)) for i in range(n_multi)]
    payloads += [(f"s{i:03d}.jsonl", batch_lines(f"r2-{i}", 40)) for i in range(n_files - n_multi)]
    rng.shuffle(payloads)
    expected: dict[str, str] = {}
    per_round = -(-len(payloads) // kills)
    clock = Clock()
    try:
        for k in range(kills):
            for name, data in payloads[k * per_round:(k + 1) * per_round]:
                expected[drop(inbox, name, data, tmp_path / "st")] = name
            d = start_daemon(cfg, key=KEY, timeout=30)
            time.sleep(rng.uniform(0.2, 1.5))  # the random moment of the kill (not a wait for an event)
            d.kill9()
            d.stop()
        with start_daemon(cfg, key=KEY, timeout=30):
            wait_until(lambda: resolved(inbox) >= len(expected) and not claimed(inbox),
                       scale(180, 900), interval=0.5, what="every file archived after the last restart")
        # the daemon has stopped (SIGTERM finishes what is in flight): nothing can arrive late
        stats = emu.stats()
    finally:
        emu.stop()

    assert not error_sidecars(inbox), list(error_sidecars(inbox).values())[:3]
    by_sha: dict[str, int] = {}
    for m in manifests(inbox).values():
        by_sha[m["source"]["sha256"]] = by_sha.get(m["source"]["sha256"], 0) + 1
    missing = set(expected) - set(by_sha)
    duplicated_manifests = {s for s, n in by_sha.items() if n > 1}
    whole = whole_files(stats)
    held_twice = {s for s in expected if whole.get(s, 0) > 1}
    assert not missing, [expected[s] for s in missing]
    assert not duplicated_manifests
    assert not held_twice, [expected[s] for s in held_twice]
    problems = once_on_server(stats, expected, resends=kills)
    assert not problems, problems[:10]
    resent = extra_creates(stats, expected)
    assert resent <= kills * WORKERS, f"{resent} re-sends for {kills} kills of {WORKERS} workers"
    assert not claimed(inbox) and waiting(inbox) == []
    record("R2 kill -9", files=len(expected), multipart=n_multi, restarts=kills, lost=len(missing),
           duplicated=len(held_twice), manifests_duplicated=len(duplicated_manifests), resent=resent,
           conflicts=stats["conflicts"], seconds=clock.seconds)
