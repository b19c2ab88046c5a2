"""A batch outbox is never an inbox, never inside another inbox, never holds one, and never
lies in an inbox's claim area or archives: the config refuses it, naming the key."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from inboxd.config import ConfigError, parse_config
from inboxd.pipeline.inboxes import InboxState


def _batch(path: Path, outbox: Path | None = None, **extra: Any) -> dict[str, Any]:
    table: dict[str, Any] = {"endpoint": "/v1/chat/completions"}
    if outbox is not None:
        table["outbox"] = str(outbox)
    return {"path": str(path), "purpose": "batch-api", "batch": table, **extra}


def _refused(inboxes: list[dict[str, Any]], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"inboxes": inboxes})
    assert str(exc.value).startswith(f"{key}: "), exc.value
    assert fragment in str(exc.value), exc.value


def test_outbox_equal_to_its_own_inbox(tmp_path: Path) -> None:
    _refused([_batch(tmp_path / "a", tmp_path / "a")], "inboxes[0].batch.outbox", "is its own inbox")


def test_outbox_equal_to_another_inbox(tmp_path: Path) -> None:
    inboxes = [{"path": str(tmp_path / "e"), "purpose": "eval"}, _batch(tmp_path / "a", tmp_path / "e")]
    _refused(inboxes, "inboxes[1].batch.outbox", "is inboxes[0].path")


def test_outbox_that_is_another_inbox_through_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "e").mkdir()
    os.symlink(tmp_path / "e", tmp_path / "link")
    inboxes = [_batch(tmp_path / "a", tmp_path / "link"), {"path": str(tmp_path / "e"), "purpose": "eval"}]
    _refused(inboxes, "inboxes[0].batch.outbox", "is inboxes[1].path")


def test_default_outbox_that_is_a_symlink_to_another_inbox(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "e").mkdir()
    os.symlink(tmp_path / "e", tmp_path / "a" / "outbox")
    inboxes = [_batch(tmp_path / "a"), {"path": str(tmp_path / "e"), "purpose": "eval"}]
    _refused(inboxes, "inboxes[0].batch.outbox", "is inboxes[1].path")


def test_outbox_inside_another_inbox(tmp_path: Path) -> None:
    inboxes = [_batch(tmp_path / "a", tmp_path / "e" / "out"), {"path": str(tmp_path / "e"), "purpose": "eval"}]
    _refused(inboxes, "inboxes[0].batch.outbox", "lies inside inboxes[1].path")


def test_outbox_holding_an_inbox(tmp_path: Path) -> None:
    _refused([_batch(tmp_path / "srv" / "a", tmp_path / "srv")], "inboxes[0].batch.outbox", "holds its own inbox")
    inboxes = [_batch(tmp_path / "a", tmp_path / "srv"), {"path": str(tmp_path / "srv" / "e"), "purpose": "eval"}]
    _refused(inboxes, "inboxes[0].batch.outbox", "holds inboxes[1].path")


@pytest.mark.parametrize("sub", ["done", "done/results", "failed", ".inboxd", ".inboxd/x"])
def test_outbox_in_its_own_inbox_folders(tmp_path: Path, sub: str) -> None:
    _refused([_batch(tmp_path / "a", tmp_path / "a" / sub)], "inboxes[0].batch.outbox", "lies in its own inbox's")


def test_outbox_in_a_done_dir_configured_elsewhere(tmp_path: Path) -> None:
    inboxes = [_batch(tmp_path / "a", tmp_path / "archive" / "out"),
               {"path": str(tmp_path / "e"), "purpose": "eval", "done_dir": str(tmp_path / "archive")}]
    _refused(inboxes, "inboxes[0].batch.outbox", "inboxes[1]'s done_dir")


def test_outboxes_that_are_fine(tmp_path: Path) -> None:
    config = parse_config({"inboxes": [_batch(tmp_path / "a")]})
    assert config.inboxes[0].batch is not None and config.inboxes[0].batch.outbox == tmp_path / "a" / "outbox"
    parse_config({"inboxes": [_batch(tmp_path / "a", tmp_path / "a" / "results" / "deep")]})
    parse_config({"inboxes": [_batch(tmp_path / "a", tmp_path / "out"), {"path": str(tmp_path / "e"),
                                                                        "purpose": "eval"}]})


def test_the_scan_skips_an_outbox_inside_the_inbox(tmp_path: Path) -> None:
    """With patterns = ["*"], the outbox folder (or the folder holding it) would be a candidate."""
    config = parse_config({"inboxes": [_batch(tmp_path / "a", patterns=["*"]),
                                       _batch(tmp_path / "b", tmp_path / "b" / "res" / "deep", patterns=["*"])]})
    assert "outbox" in InboxState(config.inboxes[0], "me").skip
    assert "res" in InboxState(config.inboxes[1], "me").skip
