"""The state_dir's lock: one holder; the next is told who holds it; free again once released."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inboxd.state.lock import StateDirBusy, lock_state_dir, state_dir_busy


def test_one_holder_and_the_next_is_told_who(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    assert state_dir_busy(state_dir) is None and not state_dir.exists()  # the probe creates nothing
    held = lock_state_dir(state_dir)
    assert held.held
    with pytest.raises(StateDirBusy) as exc:
        lock_state_dir(state_dir)  # flock is per open file: a second open conflicts, in one process too
    assert exc.value.holder["pid"] == os.getpid()
    assert str(state_dir) in str(exc.value) and f"pid {os.getpid()}" in str(exc.value)
    busy = state_dir_busy(state_dir)
    assert busy is not None and busy.holder["pid"] == os.getpid()
    held.release()
    assert state_dir_busy(state_dir) is None
    lock_state_dir(state_dir).release()


def test_an_unreadable_holder_is_said_as_unknown(tmp_path: Path) -> None:
    held = lock_state_dir(tmp_path)
    (tmp_path / "lock").write_text("not json")  # someone scribbled on it: the lock still holds
    with pytest.raises(StateDirBusy, match="its pid unknown"):
        lock_state_dir(tmp_path)
    held.release()
