"""Daemons sharing an inbox agree on its settings, or the one that differs does not claim
there (pipeline/fingerprint.py, docs/shared-inboxes.md). Real daemon processes on one inbox
(two "hosts": two configs, two state_dirs) against the emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers.daemon import REPO, DaemonProc, start_daemon, wait_until, write_config
from tests.helpers.files import batch_lines, claimed, drop, manifests

FAST = {"claim_timeout_seconds": 3, "rescan_seconds": 2}  # a settings check every 0.5 s
# a daemon claims at most this many files ahead of its workers (Daemon.capacity, 2 workers): more
# files than that leave some for the other daemon, whatever the race for the first ones
CAPACITY = 16


def _host(tmp_path: Path, name: str, emu: Any, inbox: dict[str, Any], **daemon: Any) -> Path:
    return write_config(tmp_path, base_url=emu.base_url, name=f"{name}.toml", inboxes=[inbox],
                        daemon={"state_dir": str(tmp_path / f"state-{name}"), **FAST, **daemon})


def _cli(*args: str, key: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOGETHER_")}
    env["TOGETHER_API_KEY"] = key
    return subprocess.run([sys.executable, "-m", "inboxd", *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=REPO)


def _healthz(d: DaemonProc) -> tuple[int, dict[str, Any]]:
    address = d.wait_event("metrics.listening")[0]["address"]
    try:
        with urllib.request.urlopen(f"http://{address}/healthz", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _archived_by(d: DaemonProc) -> set[str]:
    return {e["name"] for e in d.events("file.archived")}


def test_a_daemon_without_the_batch_table_does_not_claim_in_a_batch_inbox(tmp_path: Path, emu: Any) -> None:
    inbox, staging = tmp_path / "inbox", tmp_path / "staging"
    inbox.mkdir()
    with_batch = _host(tmp_path, "a", emu, {"path": inbox, "purpose": "batch-api",
                                             "batch": {"poll_seconds": 0.2}})
    without = _host(tmp_path, "b", emu, {"path": inbox, "purpose": "batch-api"}, metrics_address="127.0.0.1:0")
    with start_daemon(with_batch, key=emu.key) as a, start_daemon(without, key=emu.key) as b:
        said = b.wait_event("inbox.settings_differ")[0]
        assert said["differs"] == ["batch"] and said["held_by"], said
        names = [f"r{i:02d}.jsonl" for i in range(CAPACITY + 8)]
        for name in names:
            drop(inbox, name, batch_lines(name, 3), staging)
        wait_until(lambda: len(manifests(inbox)) == len(names), 60, what="every input archived")
        wait_until(lambda: len(_archived_by(a) | _archived_by(b)) == len(names), 10, what="every archive logged")
        assert not b.events("file.claimed") and not _archived_by(b), f"{len(_archived_by(b))} archived by b"
        assert _archived_by(a) == set(names)
        # every input became a job (the host without the table would have archived its share without one)
        wait_until(lambda: emu.batch_creates() == len(names), 30, interval=0.2, what="a batch job for every input")

        # what the host without the table says: /healthz, status, config check
        status, body = _healthz(b)
        assert status == 503 and any("batch" in p and "not claiming" in p for p in body["problems"]), body
        st = _cli("status", "--config", str(without), "--json", key=emu.key)
        assert st.returncode == 0, st.stderr
        settings = json.loads(st.stdout)["inboxes"][0]["settings"]
        assert not settings["agreed"] and settings["differs"] == ["batch"], settings
        check = _cli("config", "check", "--config", str(without), key=emu.key)
        assert check.returncode == 2 and "inboxes[0]" in check.stderr and "batch" in check.stderr, check.stderr
        assert _cli("config", "check", "--config", str(with_batch), key=emu.key).returncode == 0

        # a one-shot run with the same settings as b ends at once, exit 1, rather than wait for ever
        once = _host(tmp_path, "c", emu, {"path": inbox, "purpose": "batch-api"})
        drop(inbox, "waits.jsonl", batch_lines("waits", 3), staging)
        with DaemonProc(once, key=emu.key, extra_args=["--once"]) as c:
            assert c.wait_exit(30) == 1, c.tail()
            assert c.events("daemon.once_held") and not c.events("file.claimed")
        a.wait_event("file.archived", name="waits.jsonl")

        # the host with the table stops: no live daemon holds the recorded settings, b takes over
        assert a.stop() == 0
        b.wait_event("inbox.settings_recorded")
        b.wait_event("inbox.settings_agreed")
        drop(inbox, "late.jsonl", batch_lines("late", 3), staging)
        b.wait_event("file.archived", name="late.jsonl")
        wait_until(lambda: not any("not claiming" in p for p in _healthz(b)[1]["problems"]), 10,
                   what="/healthz without the hold (its snapshot is refreshed every second)")


def test_a_reload_on_every_host_in_turn_strands_nothing(tmp_path: Path, emu: Any) -> None:
    """The settings change on both hosts, one reload after the other: the new done_dir shows
    which settings archived each file. Between the two reloads the host already on the new
    settings claims nothing; the other serves the inbox alone. After the second, both run the
    new settings and every file is archived exactly once."""
    inbox, staging = tmp_path / "inbox", tmp_path / "staging"
    inbox.mkdir()
    old = {"path": inbox, "purpose": "batch-api"}
    new = {**old, "done_dir": inbox / "archive"}
    cfg_a, cfg_b = _host(tmp_path, "a", emu, old), _host(tmp_path, "b", emu, old)
    dropped: list[str] = []

    def drop_some(tag: str, n: int) -> list[str]:
        names = [f"{tag}{i:02d}.jsonl" for i in range(n)]
        for name in names:
            drop(inbox, name, batch_lines(name, 2), staging)
        dropped.extend(names)
        return names

    def archived_in(folder: str) -> set[str]:
        return {p.name for p in (inbox / folder).glob("*.jsonl")} if (inbox / folder).exists() else set()

    with start_daemon(cfg_a, key=emu.key) as a, start_daemon(cfg_b, key=emu.key) as b:
        first = drop_some("one", 10)
        wait_until(lambda: archived_in("done") >= set(first), 60, what="the first files in done/")

        _host(tmp_path, "a", emu, new)  # the new settings, on host a first
        a.signal(signal.SIGHUP)
        said = a.wait_event("inbox.settings_differ")[0]
        assert said["differs"] == ["done_dir"] and said["held_by"], said
        second = drop_some("two", CAPACITY + 8)
        wait_until(lambda: archived_in("done") >= set(second), 60, what="the second files in done/ (host b)")
        assert not archived_in("archive")
        assert not set(second) & _archived_by(a), "a host on the new settings claimed while b held the old"

        _host(tmp_path, "b", emu, new)  # then on host b
        b.signal(signal.SIGHUP)
        b.wait_event("inbox.settings_recorded")
        a.wait_event("inbox.settings_agreed")
        third = drop_some("three", 10)
        wait_until(lambda: archived_in("archive") >= set(third), 60, what="the third files in archive/")
        assert not (archived_in("done") | archived_in("archive")) - set(dropped)
        assert archived_in("done") == set(first + second) and archived_in("archive") == set(third)
        wait_until(lambda: len(a.events("file.archived")) + len(b.events("file.archived")) >= len(dropped), 20,
                   what="every archive logged")
        assert sorted(e["name"] for e in a.events("file.archived") + b.events("file.archived")) == sorted(dropped)
        assert not claimed(inbox) and sorted(p.name for p in inbox.glob("*.jsonl")) == []
        record = json.loads((inbox / ".inboxd" / ".settings.json").read_text())
        assert record["settings"]["done_dir"] == "archive"
