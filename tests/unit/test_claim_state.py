"""The claimed file's state (its file id): in the attribute `user.inboxd.state` where the
filesystem has user attributes, in `.<claim>.state.json` where it has none (ramfs here, as
sshfs). Real filesystems, no mocks."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from inboxd.pipeline.claim import STATE_XATTR, drop_state, read_state, state_path, sync_state, write_state


@pytest.fixture
def ramfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting ramfs needs root")
    mnt = tmp_path / "ramfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "none", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def claimed(folder: Path) -> Path:
    p = folder / "1.a.jsonl"
    p.write_bytes(b'{"custom_id": "a", "body": {}}\n')
    return p


def test_the_state_rides_on_the_file_where_there_are_attributes(tmp_path: Path) -> None:
    claim = claimed(tmp_path)
    assert write_state(claim, {"file_id": "file-1"}, durable=False) is True
    assert not state_path(claim).exists(), "no new file for the state"
    assert read_state(claim) == {"file_id": "file-1"}
    sync_state(claim, True)
    moved = tmp_path / "2.a.jsonl"
    os.rename(claim, moved)
    assert read_state(moved) == {"file_id": "file-1"}, "it travels with the file"
    drop_state(moved, moved)
    assert read_state(moved) is None
    with pytest.raises(OSError):
        os.getxattr(moved, STATE_XATTR)


def test_without_attributes_the_state_is_a_dot_file(ramfs: Path) -> None:
    claim = claimed(ramfs)
    assert write_state(claim, {"file_id": "file-2"}, durable=False) is False
    assert state_path(claim).exists()
    assert read_state(claim) == {"file_id": "file-2"}
    sync_state(claim, False)
    assert write_state(claim, {"file_id": "file-3"}) is False  # durable: write_atomic
    assert read_state(claim) == {"file_id": "file-3"}
    assert sorted(p.name for p in ramfs.iterdir()) == [".1.a.jsonl.state.json", "1.a.jsonl"], "no temp file left"
    drop_state(claim, claim)
    assert not state_path(claim).exists()
    assert read_state(claim) is None
