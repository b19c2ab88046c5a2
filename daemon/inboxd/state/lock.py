"""One daemon per state_dir: an exclusive `flock` on `<state_dir>/lock`, held for the
daemon's life.

Two daemons on one journal would each take the other's in-flight rows for orphans, and
their batch pollers would both follow (and deliver) the same jobs. Before this lock, a
second daemon was refused only by accident, when it could not bind the metrics port; with
metrics off both ran. The lock is taken before the journal is opened; a second daemon is
refused (`StateDirBusy`, exit 2 like every start-up conflict of the configuration) with
the state_dir and the pid, host and start time of the daemon that holds it.

The kernel drops the lock when the holder exits, however it exits (kill -9 included), so
there is never a stale lock to clean up; the file stays, and its content (who took it
last) is only informative. The descriptor is close-on-exec: a child the daemon starts (an
event command) never holds the lock after the daemon is gone. `state_dir` is local (SPEC
§2), where `flock` works; a filesystem that refuses `flock` itself (ENOLCK, EOPNOTSUPP)
gives no lock, said by the caller, rather than no daemon.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

LOCK_NAME = "lock"
NO_FLOCK = frozenset({errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})


class StateDirBusy(Exception):
    """Another daemon holds the state_dir's lock. `holder` is what it wrote into the lock file
    (pid, host, started), or {} when that cannot be read."""

    def __init__(self, state_dir: Path, holder: dict[str, Any]) -> None:
        self.state_dir, self.holder = state_dir, holder
        who = describe_holder(holder)
        super().__init__(f"{state_dir} is in use by another inboxd ({who}); one daemon per state_dir: stop that "
                         "one, or give this one its own daemon.state_dir")


def describe_holder(holder: dict[str, Any]) -> str:
    parts = []
    if isinstance(holder.get("pid"), int):
        parts.append(f"pid {holder['pid']}")
    if isinstance(holder.get("host"), str):
        parts.append(f"on {holder['host']}")
    if isinstance(holder.get("started"), (int, float)):
        parts.append("since " + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(holder["started"])))
    return " ".join(parts) or "its pid unknown"


class StateLock:
    """The held lock; `release()` (or the process's exit) lets the next daemon in."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path, self._fd = path, fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_holder(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def lock_state_dir(state_dir: Path) -> StateLock:
    """Take `<state_dir>/lock` (creating the folder and the file as needed), or raise
    StateDirBusy naming who holds it. A filesystem without flock gives a StateLock that holds
    nothing (`held` is False). OSError for a state_dir that cannot be used at all."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise StateDirBusy(state_dir, read_holder(path)) from None
        if exc.errno in NO_FLOCK:
            return StateLock(path, None)
        raise
    try:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": round(time.time(), 3)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
    except OSError:
        pass  # who holds it is only informative; the lock itself is what counts
    return StateLock(path, fd)


def state_dir_busy(state_dir: Path) -> StateDirBusy | None:
    """Whether another daemon holds the lock, found without creating anything (the checks
    before start create nothing on disk): None when the lock file is missing or free."""
    path = state_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return StateDirBusy(state_dir, read_holder(path))
        return None
    finally:
        os.close(fd)
    return None
