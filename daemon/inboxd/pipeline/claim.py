"""Claiming: whoever wins the atomic rename into `.inboxd/` owns the file (SPEC §2).

Each daemon claims into its own folder `.inboxd/<claimer>/`, where `<claimer>` is
host-pid-token, and holds an exclusive `flock` on that folder while it lives (so nothing
but claimed files ever lies in `.inboxd/`). The folder is made under a dot-name, locked,
then renamed into place, so no peer ever sees it unlocked. A claim folder whose lock can
be taken belongs to a daemon that is gone: its files are taken over (renamed into our
folder, again atomically, so one taker wins each file).
Claim names are `<n>.<original name>`, unique within the folder, so a second `x.jsonl`
never replaces a first one still in flight.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from .fsutil import fit_name, move_no_replace

_counter = itertools.count(1)
_CLAIM_NAME = re.compile(r"^(\d+)\.(.+)$")


def new_claimer() -> str:
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def original_name(claim_name: str) -> str:
    m = _CLAIM_NAME.match(claim_name)
    return m.group(2) if m else claim_name


@dataclass
class Takeover:
    old: Path
    new: Path
    name: str


class ClaimArea:
    """Our claim folder in one inbox's `.inboxd/`, and the lock that says we are alive."""

    def __init__(self, work: Path, claimer: str) -> None:
        self.work = work
        self.claimer = claimer
        self.folder = work / claimer
        self._lock_fd: int | None = None

    def ensure(self) -> None:
        """Create (or re-create, if the inbox was deleted) our folder, locked."""
        if self._lock_fd is not None and self.folder.is_dir():
            return
        self.release()
        self.work.mkdir(parents=True, exist_ok=True)
        staging = self.work / f".{self.claimer}.new"
        staging.mkdir(exist_ok=True)
        fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(staging, self.folder)
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def remove(self) -> None:
        """On a clean exit with nothing left claimed: remove our folder."""
        try:
            self.folder.rmdir()
        except OSError:
            pass
        self.release()

    def claim(self, path: Path) -> Path | None:
        """Rename `path` into our folder; None when someone else got it first (or it is gone)."""
        prefix = f"{next(_counter)}."
        dst = self.folder / (prefix + fit_name(path.name, len(prefix)))
        try:
            os.rename(path, dst)
        except FileNotFoundError:
            return None
        except OSError:
            # on NFS a rename that reports an error may still have happened: look at both
            if os.path.lexists(dst) and not os.path.lexists(path):
                return dst
            raise
        return dst

    def unclaim(self, claim: Path, inbox: Path, name: str) -> bool:
        """Give a claimed file back to the inbox (not started at shutdown); False if the name is taken."""
        try:
            move_no_replace(claim, inbox / name)
        except FileExistsError:
            return False
        return True

    def mine(self) -> list[Path]:
        try:
            return sorted(self.folder.iterdir())
        except OSError:
            return []

    def take_over_stale(self) -> list[Takeover]:
        """Move the files of every dead claimer's folder into ours."""
        out: list[Takeover] = []
        try:
            entries = list(os.scandir(self.work))
        except OSError:
            return out
        for d in entries:
            if d.name.startswith(".") or d.name == self.claimer or not d.is_dir(follow_symlinks=False):
                continue
            fd = _lock_if_dead(Path(d.path))
            if fd is None:
                continue
            try:
                for f in sorted(Path(d.path).iterdir()):
                    name = original_name(f.name)
                    new = self.claim(f)
                    if new is not None:
                        out.append(Takeover(f, new, name))
                try:
                    os.rmdir(d.path)
                except OSError:
                    pass
            finally:
                os.close(fd)
        return out


def _lock_if_dead(folder: Path) -> int | None:
    """An fd holding the lock of a dead claimer's folder, or None if it is alive (or gone)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def claimer_alive(folder: Path) -> bool:
    """Whether the daemon that owns claim folder `folder` still holds its lock."""
    if not folder.is_dir():
        return False
    fd = _lock_if_dead(folder)
    if fd is None:
        return True
    os.close(fd)
    return False
