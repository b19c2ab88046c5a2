"""Many hosts on one inbox (issue 13): three daemons, each in its own UTS namespace (so each
has its own hostname, as three hosts would), share one inbox with claim_liveness =
"heartbeat" (no flock). One is SIGKILLed mid-flight and never restarted: its claimed files
are taken over once its heartbeat is older than the timeout, from what its claim folder
holds (the journal of a dead host is out of reach). Every file ends in done/ with its
manifest exactly once, checked against an emulator with the checksum 409 turned off, and no
name in done/ is left without its manifest (a move cut between a link and its unlink).

The same proof on sshfs mounts (a real network filesystem) is in test_sshfs.py; both use
`run_fleet` below. `INBOXD_RELIABILITY=full` runs the full size (1,500 files);
`INBOXD_FLEET_FILES=n` runs n files (docs/reliability-fleet.md). The local fleet moves files into
done/ with the filesystem's renameat2; in the full form (or with INBOXD_FLEET_FILES) also with
every move a link then an unlink (`INBOXD_TEST_FS=link`), as where renameat2 is refused, once
with the victim killed at a random moment and once between the link and the unlink of a move
(the half-done move the survivors must finish).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.daemon import DaemonProc, wait_until, write_config
from tests.helpers.emulator import EmulatorProc, start_emulator
from tests.helpers.files import holding_state
from tests.reliability.common import FULL, record, scale

MANIFEST = ".manifest.json"
TIMEOUT = 4.0  # claim_timeout_seconds: a dead host's claims are taken over after this


def can_unshare() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode == 0


def batch_file(tag: str, n: int = 20) -> bytes:
    out = []
    for i in range(n):
        body = {"model": "m", "messages": [{"role": "user", "content": f"{tag} #{i}"}]}
        out.append(json.dumps({"custom_id": f"{tag}-{i}", "body": body}))
    return ("\n".join(out) + "\n").encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def as_host(name: str) -> list[str]:
    return ["unshare", "--uts", "sh", "-c", f'hostname {name} && exec "$@"', "as-host"]


def claimed_data(work: Path) -> list[Path]:
    """Claimed data files left in `.inboxd/` (the dot-files of a live folder do not count)."""
    if not work.exists():
        return []
    return [p for p in work.rglob("*") if p.is_file() and not p.name.startswith(".")]


def without_manifest(done: Path) -> list[str]:
    """Data files in done/ whose manifest is missing (not the temp files of a sidecar write)."""
    return sorted(p.name for p in done.iterdir() if not p.name.startswith(".")
                  and not p.name.endswith(MANIFEST) and not (done / (p.name + MANIFEST)).exists())


def fleet_files(quick: int, full: int) -> int:
    return int(os.environ.get("INBOXD_FLEET_FILES") or scale(quick, full))


def run_fleet(tmp_path: Path, emu: EmulatorProc, views: list[Path], server_inbox: Path, *,
              n_files: int, drop: Callable[[str, bytes], None], label: str,
              settle_wait: float = 120.0, env: dict[str, str] | None = None,
              victim_env: dict[str, str] | None = None) -> dict[str, Any]:
    """Three daemons, daemon i watching the inbox through `views[i]`; drop `n_files` through
    `drop`; SIGKILL daemon 1 once it holds claimed files (or, given `victim_env`, its own
    environment, wait there for it to kill itself); check every file ends once."""
    daemons: list[DaemonProc] = []
    expected: dict[str, str] = {}
    t0 = time.monotonic()
    try:
        for i, view in enumerate(views):
            (tmp_path / f"host{i}").mkdir(parents=True, exist_ok=True)
            cfg = write_config(tmp_path / f"host{i}", base_url=emu.base_url, name="inboxd.toml",
                               upload={"wait_for_processing": True},
                               inboxes=[{"path": str(view), "purpose": "batch-api", "observer": "polling"}],
                               daemon={"workers": 3, "settle_seconds": 0.2, "rescan_seconds": 1,
                                       "claim_liveness": "heartbeat", "claim_timeout_seconds": TIMEOUT})
            own = victim_env if i == 1 and victim_env is not None else env
            daemons.append(DaemonProc(cfg, key=emu.key, prefix=as_host(f"host-{'abc'[i]}"), env=own))
        for d in daemons:
            d.wait_event("daemon.started", timeout=30)
        victim = daemons[1]
        killed_with: list[str] = []

        def in_flight() -> list[str]:
            return [e["name"] for e in victim.events("file.claimed")
                    if not victim.events("file.archived", name=e["name"])]

        for k in range(n_files):
            data = batch_file(f"{label}-{k}", 10 + k % 7)
            name = f"f{k:04d}.jsonl"
            expected[sha(data)] = name
            drop(name, data)
            if k == n_files // 3 and victim_env is not None:
                assert victim.wait_exit(60) == -9, victim.tail()  # it kills itself at its first move
                killed_with = in_flight()
            elif k == n_files // 3:
                # mid-flight: the victim holds a file it uploaded (its claim folder names the file
                # id) but has not archived, besides the ones it has only claimed
                folder = server_inbox / ".inboxd" / victim.events("daemon.started")[0]["claimer"]
                wait_until(lambda folder=folder: holding_state(folder), 30, interval=0.005,
                           what="the victim holding an uploaded file")
                victim.kill9()
                killed_with = in_flight()
        survivors = [daemons[0], daemons[2]]
        done = server_inbox / "done"
        wait_until(lambda: done.exists() and len(list(done.glob("*.manifest.json"))) >= len(expected),
                   settle_wait, interval=0.5, what="a manifest for every file")
        wait_until(lambda: not claimed_data(server_inbox / ".inboxd"), 30, interval=0.5, what=".inboxd/ emptied")
        seconds = time.monotonic() - t0
        for d in survivors:
            assert d.proc.poll() is None, f"a survivor died\n{d.tail()}"
        takeovers = sum(len([e for e in d.events("file.recovered") if e.get("taken_from")]) for d in survivors)
        half_moves = sum(len([e for e in d.events("file.recovered") if "link and unlink" in e.get("how", "")])
                         for d in survivors)
    finally:
        for d in daemons:
            d.stop()
    manifests = [json.loads(p.read_text()) for p in sorted((server_inbox / "done").glob("*.manifest.json"))]
    by_sha: dict[str, int] = {}
    for m in manifests:
        by_sha[m["source"]["sha256"]] = by_sha.get(m["source"]["sha256"], 0) + 1
    live: dict[str, int] = {}
    for f in emu.stats()["files"]:
        if f.get("sha256"):
            live[f["sha256"]] = live.get(f["sha256"], 0) + 1
    failed = list((server_inbox / "failed").glob("*.error.json")) if (server_inbox / "failed").exists() else []
    assert not failed, [json.loads(p.read_text())["error"] for p in failed[:3]]
    no_manifest = without_manifest(server_inbox / "done")
    assert not no_manifest, no_manifest
    assert set(by_sha) == set(expected), {expected[s] for s in set(expected) - set(by_sha)}
    duplicated = {expected.get(s, s): n for s, n in by_sha.items() if n > 1}
    assert not duplicated, duplicated
    on_server_twice = {expected[s]: live.get(s) for s in expected if live.get(s) != 1}
    assert not on_server_twice, on_server_twice
    assert not claimed_data(server_inbox / ".inboxd")
    creates = emu.creates_by_sha256()
    resent = sum(n - 1 for s, n in creates.items() if s in expected)
    lost = len(set(expected) - set(by_sha))
    figures = {"files": len(expected), "seconds": round(seconds, 1), "killed_holding": len(killed_with),
               "takeovers": takeovers, "half_moves_finished": half_moves, "lost": lost,
               "duplicates": len(duplicated), "in_done_without_manifest": len(no_manifest),
               "resent_interrupted": resent}
    return figures


@pytest.mark.skipif(not can_unshare(), reason="needs root and unshare --uts (this project's CI has both)")
@pytest.mark.parametrize("moves", ["renameat2", "link", "link-cut"])
def test_three_hosts_share_an_inbox_and_one_dies_for_good(tmp_path, moves):
    """moves: renameat2 (this filesystem's), link (every move a link then an unlink, as where
    renameat2 is refused), link-cut (so, and the victim dies between the link and the unlink
    of its first move into done/, by the test hook, instead of a SIGKILL at a random moment)."""
    if moves != "renameat2" and not (FULL or os.environ.get("INBOXD_FLEET_FILES")):
        pytest.skip("the link + unlink fleets run in the full form (test_publish.py covers a kill mid-move)")
    # processing takes a while, so the victim dies holding files it uploaded but had not archived
    emu = start_emulator(tmp_path / "emu", no_dedupe=True, processing_delay=0.1)
    try:
        emu.set_faults(slow_seconds=0.02)
        inbox = tmp_path / "inbox"
        inbox.mkdir()
        staging = tmp_path / "staging"
        staging.mkdir()
        rng = random.Random(13)

        def drop(name: str, data: bytes) -> None:
            (staging / name).write_bytes(data)
            os.rename(staging / name, inbox / name)
            if rng.random() < 0.05:
                time.sleep(0.05)

        link = {"INBOXD_TEST_FS": "link"}
        figures = run_fleet(tmp_path, emu, [inbox, inbox, inbox], inbox, n_files=fleet_files(300, 1500),
                            drop=drop, label="fleet", env=link if moves != "renameat2" else None,
                            victim_env={"INBOXD_TEST_FS": "link,die-after-link:done"} if moves == "link-cut" else None)
        assert figures["killed_holding"] > 0 and figures["takeovers"] >= figures["killed_holding"]
        if moves == "link-cut":
            assert figures["half_moves_finished"] == 1, figures
        record(f"fleet (local, UTS hosts, moves by {moves})", **figures)
        print("\n", figures)
    finally:
        emu.stop()
