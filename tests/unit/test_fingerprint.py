"""The rule of a shared inbox's settings (pipeline/fingerprint.py), in process: two claim
areas in one inbox stand for two daemons (flock is per open file, so one process can hold
two folders' locks and see each other's)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inboxd.config import InboxConfig, parse_config
from inboxd.pipeline.claim import ClaimArea, Liveness
from inboxd.pipeline.fingerprint import (
    HOLDER,
    RECORD,
    Agreement,
    assess,
    differing_keys,
    digest,
    fate_settings,
    read_record,
)


def _inbox(path: Path, **keys: Any) -> InboxConfig:
    return parse_config({"inboxes": [{"path": str(path), "purpose": "batch-api", **keys}]}).inboxes[0]


def _daemon(inbox: InboxConfig, name: str) -> Agreement:
    area = ClaimArea(inbox.work, name, Liveness("auto", 60))
    area.ensure()
    return Agreement(area)


def test_the_fate_settings_and_what_differs(tmp_path: Path) -> None:
    plain = _inbox(tmp_path)
    batch = _inbox(tmp_path, batch={"poll_seconds": 1, "join": True})
    assert fate_settings(plain)["done_dir"] == "done" and fate_settings(plain)["batch"] is None
    assert fate_settings(batch)["batch"]["outbox"] == "outbox"
    assert "poll_seconds" not in fate_settings(batch)["batch"]  # pacing only
    assert differing_keys(fate_settings(plain), fate_settings(batch)) == ["batch"]
    slower = _inbox(tmp_path, batch={"poll_seconds": 30, "join": True})
    assert digest(fate_settings(batch)) == digest(fate_settings(slower))
    other = _inbox(tmp_path, batch={"endpoint": "/v1/completions", "join": True}, on_success="keep")
    assert differing_keys(fate_settings(batch), fate_settings(other)) == ["batch.endpoint", "on_success"]
    # patterns are a set; per-host keys are not recorded
    assert digest(fate_settings(_inbox(tmp_path, patterns=["*.a", "*.b"], observer="polling"))) == \
        digest(fate_settings(_inbox(tmp_path, patterns=["*.b", "*.a"])))


def test_folders_inside_the_inbox_are_recorded_relative_to_it(tmp_path: Path) -> None:
    """Two hosts that mount the share at different paths agree."""
    one = _inbox(tmp_path / "mnt1" / "inbox", done_dir=str(tmp_path / "mnt1" / "inbox" / "archive"))
    two = _inbox(tmp_path / "mnt2" / "inbox", done_dir=str(tmp_path / "mnt2" / "inbox" / "archive"))
    assert digest(fate_settings(one)) == digest(fate_settings(two))
    apart = _inbox(tmp_path / "mnt1" / "inbox", done_dir=str(tmp_path / "elsewhere"))
    assert fate_settings(apart)["done_dir"] == str(tmp_path / "elsewhere")


def test_the_first_daemon_records_and_one_that_differs_waits(tmp_path: Path) -> None:
    old, new = _inbox(tmp_path), _inbox(tmp_path, on_success="keep")
    a, b = _daemon(old, "a"), _daemon(old, "b")
    first = a.check(old)
    assert first.agreed and first.recorded == "created"
    record = read_record(old.work)
    assert record is not None and record["settings"] == fate_settings(old)
    assert json.loads((old.work / "a" / HOLDER).read_text())["digest"] == record["digest"]
    assert b.check(old).agreed and b.check(old).recorded == ""

    # b reloads to new settings: a still holds the old, so b waits and says why
    held = b.check(new)
    assert not held.agreed and held.keys == ["on_success"] and held.holders == ["a"]
    assert "on_success" in held.reason() and "a" in held.reason()
    assert read_record(old.work)["digest"] == record["digest"]  # type: ignore[index]
    assert not assess(new, Liveness("auto", 60)).agreed  # what status / config check see
    assert assess(old, Liveness("auto", 60)).agreed

    # a reloads too: no live daemon holds the old settings any more, a moves the record
    moved = a.check(new)
    assert moved.agreed and moved.recorded == "replaced" and moved.keys == ["on_success"]
    assert read_record(old.work)["settings"] == fate_settings(new)  # type: ignore[index]
    assert b.check(new).agreed  # and b, paused, claims again at its next check


def test_a_dead_holder_does_not_hold_the_record(tmp_path: Path) -> None:
    old, new = _inbox(tmp_path), _inbox(tmp_path, validate="strict")
    a, b = _daemon(old, "a"), _daemon(old, "b")
    assert a.check(old).agreed
    assert not b.check(new).agreed
    a.area.release()  # a dies: its flock is gone, its holder file stays
    taken = b.check(new)
    assert taken.agreed and taken.recorded == "replaced" and taken.keys == ["validate"]


def test_a_daemon_that_withdraws_frees_the_record(tmp_path: Path) -> None:
    old, new = _inbox(tmp_path), _inbox(tmp_path, patterns=["*.ndjson"])
    a, b = _daemon(old, "a"), _daemon(old, "b")
    assert a.check(old).agreed and not b.check(new).agreed
    a.withdraw()  # a leaves the inbox (reload without it, or a stop) while its folder lives on
    assert b.check(new).agreed


def test_of_two_first_daemons_one_record_wins(tmp_path: Path) -> None:
    one, two = _inbox(tmp_path), _inbox(tmp_path, on_success="delete")
    a, b = _daemon(one, "a"), _daemon(one, "b")
    b._hold(fate_settings(two), digest(fate_settings(two)))  # b is half-way: its settings held, no record
    assert a.check(one).recorded == "created"
    second = b.check(two)
    assert not second.agreed and second.holders == ["a"]


def test_an_unreadable_record_is_replaced(tmp_path: Path) -> None:
    inbox = _inbox(tmp_path)
    a = _daemon(inbox, "a")
    (inbox.work / RECORD).write_text("{not json")
    verdict = a.check(inbox)
    assert verdict.agreed and verdict.recorded == "replaced" and read_record(inbox.work) is not None
