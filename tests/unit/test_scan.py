"""The reconciliation scan (`watch.scan`) on a real folder: candidates are the names matching a
pattern that are not dot or temp names nor a skipped folder, lstat'ed (a symlink is seen as
one, never followed); names matching no pattern are collected as ignored; a single path is
inspected the same way."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from inboxd.watch.scan import candidate_names, file_kind, inspect_path, scan_inbox


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    for name in ("a.jsonl", "b.jsonl", "notes.txt", ".hidden.jsonl", "c.jsonl.part", "d.jsonl~", "e.jsonl.tmp"):
        (tmp_path / name).write_text("{}\n")
    (tmp_path / "done").mkdir()
    (tmp_path / "sub.jsonl").mkdir()
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "a.jsonl")
    os.mkfifo(tmp_path / "pipe.jsonl")
    return tmp_path


def test_the_scan_finds_candidates_and_names_the_unmatched(folder: Path) -> None:
    unmatched: list[str] = []
    entries = {e.name: e for e in scan_inbox(folder, ["*.jsonl"], skip=["done"], unmatched=unmatched)}
    assert sorted(entries) == ["a.jsonl", "b.jsonl", "link.jsonl", "pipe.jsonl", "sub.jsonl"]
    assert {n: e.kind for n, e in entries.items()} == {"a.jsonl": "regular", "b.jsonl": "regular",
                                                       "link.jsonl": "symlink", "pipe.jsonl": "fifo",
                                                       "sub.jsonl": "directory"}
    assert entries["a.jsonl"].path == str(folder / "a.jsonl")
    assert unmatched == ["notes.txt"]  # dot and temp names are not even named; a skipped folder neither


def test_candidate_names_match_the_scan_without_a_stat(folder: Path) -> None:
    unmatched: list[str] = []
    names = sorted(n for _, n in candidate_names(folder, ["*.jsonl"], ["done"], unmatched))
    assert names == sorted(e.name for e in scan_inbox(folder, ["*.jsonl"], ["done"]))
    assert unmatched == ["notes.txt"]
    with pytest.raises(OSError):
        list(candidate_names(folder / "gone", ["*"]))
    with pytest.raises(OSError):
        scan_inbox(folder / "gone", ["*"])


def test_inspect_one_path(folder: Path) -> None:
    entry = inspect_path(str(folder / "link.jsonl"), ["*.jsonl"])
    assert entry is not None and entry.kind == "symlink"  # lstat: never followed
    assert inspect_path(str(folder / "notes.txt"), ["*.jsonl"]) is None
    assert inspect_path(str(folder / "c.jsonl.part"), ["*.jsonl"]) is None
    assert inspect_path(str(folder / "done"), ["*"], skip=["done"]) is None
    assert inspect_path(str(folder / "vanished.jsonl"), ["*.jsonl"]) is None


def test_every_kind_of_file_has_a_name(tmp_path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp_path / "s"))
    try:
        assert file_kind(os.lstat(tmp_path / "s").st_mode) == "socket"
    finally:
        sock.close()
    assert file_kind(os.lstat("/dev/null").st_mode) == "device"
    assert file_kind(0) == "unknown"
