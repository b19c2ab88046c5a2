"""Claiming: whoever wins the atomic rename into `.inboxd/` owns the file (SPEC §2).

Each daemon claims into its own folder `.inboxd/<claimer>/` (`<claimer>` is
host-pid-token). The folder is made under a dot-name with its `.owner` file (host, boot
id, pid) inside, then renamed into place, so no peer ever sees it without an owner.

Liveness, without depending on a lock shared between hosts:
- the owner refreshes the mtime of `.owner` every few seconds (`beat`): the heartbeat;
- a folder's owner is dead when it is on this host and boot and its pid is gone, or when
  its heartbeat is older than `claim_timeout_seconds`;
- with `claim_liveness = "auto"` on a local filesystem, the owner also holds an exclusive
  `flock` on the folder and a folder whose lock can be taken is dead at once (the fast
  path); on a network or FUSE filesystem, flock may not be seen by other hosts, so only
  the heartbeat counts there.

Taking over is a rename of the dead folder to `.takeover.<us>.<dead>`: of two survivors,
one wins. Its files are then claimed into our folder one by one (again by rename).

A claim folder carries what a survivor on another host needs, since the journal is one
host's local index: the claimed file's state (the file id, written when the upload is
created) in an extended attribute of the file itself, `user.inboxd.state`, or where the
filesystem has none (sshfs, some NFS) in `.<claim name>.state.json`; and
`.<claim name>.manifest.json` (the manifest, written before the data moves to done/ and
moved after it). The attribute needs no new file (a new inode costs kernel time on every
claim) and travels with the file on every rename. Claim names are `<n>.<original name>`,
unique within the folder.

A move into done/ cut between its link and its unlink (a filesystem without renameat2, see
`inboxd.state.fs`) leaves the claimed file at its waiting manifest's target too: the survivor
finishes that move (`finish_half_move`) instead of archiving the file a second time.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from ..retry import FS_CACHE
from ..state.fs import fit_name, fsync_dir, is_network_filesystem, move_no_replace, same_data, write_atomic
from ..state.sidecars import MANIFEST_SUFFIX

_counter = itertools.count(1)
_CLAIM_NAME = re.compile(r"^(\d+)\.(.+)$")
OWNER = ".owner"
STATE_SUFFIX = ".state.json"
STATE_XATTR = "user.inboxd.state"
# setxattr's answers where the state goes to the state file instead: no user attributes on
# this filesystem, or not for us (not the file's owner), or no room for one
NO_XATTR = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES, errno.E2BIG, errno.ERANGE,
                      errno.ENOSPC, errno.EDQUOT, errno.ENOSYS})
TAKEOVER = ".takeover."
CACHE_RETRY_SECONDS = 5.0  # network filesystems: ENOENT right after our own mkdir/rename
# what a claim name must leave under NAME_MAX for the dot-files that travel with it: the
# temp name write_atomic gives ".<claim>.manifest.json" is ".." + claim + ".manifest.json.<8 hex>.tmp"
CLAIM_SIDE_ROOM = len("..") + len(MANIFEST_SUFFIX) + len(".12345678.tmp")

T = TypeVar("T")


def new_claimer() -> str:
    return f"{_host_token()}-{os.getpid()}-{secrets.token_hex(4)}"


def _host_token() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:40] or "host"


def original_name(claim_name: str) -> str:
    m = _CLAIM_NAME.match(claim_name)
    return m.group(2) if m else claim_name


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def state_path(claim: Path) -> Path:
    """Where the claim folder keeps a claimed file's state (its file id once uploaded)."""
    return claim.with_name(f".{claim.name}{STATE_SUFFIX}")


def manifest_path(claim: Path) -> Path:
    """Where the manifest waits in the claim folder while the data moves to done/."""
    return claim.with_name(f".{claim.name}{MANIFEST_SUFFIX}")


def write_state(claim: Path, state: dict[str, Any], *, durable: bool = True) -> bool:
    """The claimed file's state, whole or not at all: the attribute (one call), else the state
    file (a temp file renamed). `durable` also fsyncs it and its folder. True when it is in
    the attribute (what `sync_state` needs to know)."""
    data = json.dumps(state).encode()
    try:
        os.setxattr(claim, STATE_XATTR, data, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in NO_XATTR:
            raise
        if durable:
            write_atomic(state_path(claim), data)
        else:
            tmp = claim.with_name(f".{claim.name}.{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(data)
            os.rename(tmp, state_path(claim))
        return False
    if durable:
        sync_state(claim, in_xattr=True)
    return True


def sync_state(claim: Path, in_xattr: bool) -> None:
    """Make the state already written (at the upload's creation, not fsynced) durable, without
    writing it again: fsync the file that holds it (the claimed file itself for the
    attribute, which also makes its data durable before it is archived) and its folder."""
    fd = os.open(claim if in_xattr else state_path(claim), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(claim.parent)


def read_state(claim: Path) -> dict[str, Any] | None:
    try:
        raw = os.getxattr(claim, STATE_XATTR, follow_symlinks=False)
    except OSError:
        try:
            raw = state_path(claim).read_bytes()
        except OSError:
            return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def drop_state(claim: Path, data: Path | None) -> None:
    """Forget a finished file's state: the state file, and the attribute of the data, now at
    `data` (None: deleted)."""
    try:
        state_path(claim).unlink()
    except FileNotFoundError:
        pass
    if data is not None:
        try:
            os.removexattr(data, STATE_XATTR, follow_symlinks=False)
        except OSError:
            pass  # none there (the state file held it), or gone already


def retry_enoent(step: Callable[[], T], seconds: float = CACHE_RETRY_SECONDS) -> T:
    """Run `step`; on ENOENT retry briefly: a network filesystem's cache may not show a folder
    we just made (or renamed) for a moment. Anything else, or a lasting ENOENT, is raised."""
    deadline = time.monotonic() + seconds
    tries = 0
    while True:
        try:
            return step()
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                raise
            tries += 1
            time.sleep(FS_CACHE.delay(tries))


@dataclass
class Takeover:
    old: Path
    new: Path  # the file's claim path in our folder (kind "manifest": the manifest's final path)
    name: str
    state: dict[str, Any] | None = None  # the dead owner's state file for this file
    # file | manifest (a manifest moved after its data, which was already in done/) | moved (the
    # dead owner's move into done/ was half done, the claimed file linked there: finished)
    kind: str = "file"


@dataclass
class Liveness:
    mode: str = "auto"  # auto | heartbeat
    timeout: float = 60.0

    def heartbeat_every(self) -> float:
        return max(0.5, min(5.0, self.timeout / 6))


class ClaimArea:
    """Our claim folder in one inbox's `.inboxd/`, its heartbeat, and the takeover of dead ones."""

    def __init__(self, work: Path, claimer: str, liveness: Liveness | None = None) -> None:
        self.work = work
        self.claimer = claimer
        self.folder = work / claimer
        self.liveness = liveness or Liveness()
        self._lock_fd: int | None = None
        self._last_beat = 0.0
        self._use_flock: bool | None = None

    @property
    def use_flock(self) -> bool:
        if self._use_flock is None:
            self._use_flock = self.liveness.mode == "auto" and not is_network_filesystem(self.work.parent)
        return self._use_flock

    def ensure(self) -> None:
        """Create (or re-create, if the inbox was deleted or we were taken over) our folder."""
        if self.folder.is_dir() and (self._lock_fd is not None or not self.use_flock):
            return
        self.release()
        retry_enoent(lambda: self.work.mkdir(parents=True, exist_ok=True))
        staging = self.work / f".{self.claimer}.new"
        retry_enoent(lambda: staging.mkdir(exist_ok=True))
        fd = None
        if self.use_flock:
            fd = retry_enoent(lambda: os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW))
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    os.close(fd)
                    raise
                os.close(fd)  # no flock here: the heartbeat alone tells we are alive
                fd, self._use_flock = None, False
        owner = {"claimer": self.claimer, "host": socket.gethostname(), "boot_id": boot_id(), "pid": os.getpid(),
                 "started": time.time(), "flock": fd is not None}
        retry_enoent(lambda: write_atomic(staging / OWNER, json.dumps(owner).encode()))
        retry_enoent(lambda: os.rename(staging, self.folder))
        self._lock_fd = fd
        self._last_beat = time.monotonic()

    def beat(self, now: float | None = None) -> None:
        """Refresh our heartbeat (the mtime of `.owner`) when it is due."""
        now = time.monotonic() if now is None else now
        if now - self._last_beat < self.liveness.heartbeat_every():
            return
        self._last_beat = now
        try:
            os.utime(self.folder / OWNER)
        except FileNotFoundError:
            pass  # our folder is gone (inbox deleted, or taken over): ensure() makes a new one

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def remove(self) -> None:
        """On a clean exit with nothing left claimed: remove our folder."""
        try:
            for leftover in self.folder.iterdir():
                if leftover.name.startswith("."):
                    leftover.unlink()
            self.folder.rmdir()
        except OSError:
            pass
        self.release()

    def claim(self, path: Path, into: Path | None = None) -> Path | None:
        """Rename `path` into our folder; None when someone else got it first (or it is gone)."""
        prefix = f"{next(_counter)}."
        name = original_name(path.name) if into is not None else path.name
        # room for the dot-files that travel with it: ".<claim>.manifest.json" and its temp name
        dst = (into or self.folder) / (prefix + fit_name(name, len(prefix) + CLAIM_SIDE_ROOM))
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
        drop_state(claim, inbox / name)
        try:
            manifest_path(claim).unlink()
        except FileNotFoundError:
            pass
        return True

    def mine(self) -> list[Path]:
        """The claimed data files in our folder (not the dot-files that carry their state)."""
        try:
            return sorted(p for p in self.folder.iterdir() if not p.name.startswith("."))
        except OSError:
            return []

    # --- takeover --------------------------------------------------------------------------

    def take_over_stale(self) -> list[Takeover]:
        """Move the files of every dead claimer's folder into ours."""
        out: list[Takeover] = []
        try:
            entries = list(os.scandir(self.work))
        except OSError:
            return out
        for d in entries:
            if d.name == self.claimer or not d.is_dir(follow_symlinks=False):
                continue
            if d.name.startswith(TAKEOVER):
                taker = d.name[len(TAKEOVER):].split(".", 1)[0]
                if taker == self.claimer:  # ours, left by a pass an error cut short: finish it
                    try:
                        out += self._move_in(Path(d.path), self.work / d.name.split(".")[-1])
                    except FileNotFoundError:
                        pass  # removed already (a network filesystem's listing can lag behind)
                    continue
                if not self.owner_dead(self.work / taker, missing_is_dead=True):
                    continue  # a survivor is taking it over right now
            elif d.name.startswith(".") or not self.owner_dead(Path(d.path)):
                continue
            dead = d.name.split(".")[-1]
            mine = self.work / f"{TAKEOVER}{self.claimer}.{dead}"
            try:
                os.rename(d.path, mine)  # of two survivors, one wins
            except OSError:
                continue
            out += self._move_in(mine, self.work / dead)
        return out

    def _move_in(self, taken: Path, original: Path) -> list[Takeover]:
        """Claim the files of a folder we took over; `Takeover.old` is their path under the dead
        owner's folder name (what its journal, ours after a restart, knows them by)."""
        out: list[Takeover] = []
        for f in sorted(taken.iterdir()):
            if f.name.startswith("."):
                continue
            if same_data(f, self.work.parent / original_name(f.name)):
                f.unlink(missing_ok=True)  # given back to the inbox by a link whose unlink never came
                continue
            final = finish_half_move(f, self.work.parent)
            if final is not None:
                out.append(Takeover(original / f.name, final, original_name(f.name), kind="moved"))
                continue
            state = read_state(f)
            new = self.claim(f, into=self.folder)
            if new is None:
                continue
            if state is not None:
                write_state(new, state)
            _move_manifest(f, new)
            out.append(Takeover(original / f.name, new, original_name(f.name), state))
        for f in sorted(taken.iterdir()):
            if f.name.endswith(MANIFEST_SUFFIX) and f.name.startswith("."):
                final = finish_manifest(f, self.work.parent)  # its data is in done/: the manifest follows
                if final is not None:
                    out.append(Takeover(f, final, original_name(f.name[1:-len(MANIFEST_SUFFIX)]), kind="manifest"))
        for f in taken.iterdir():
            if f.name.startswith("."):
                f.unlink()
        try:
            taken.rmdir()
        except OSError:
            pass
        return out

    def owner_dead(self, folder: Path, *, missing_is_dead: bool = False) -> bool:
        """Whether the daemon that owns claim folder `folder` is provably gone."""
        if not folder.is_dir():
            return missing_is_dead
        beat: float | None
        try:
            owner = json.loads((folder / OWNER).read_text())
            beat = (folder / OWNER).stat().st_mtime
        except (OSError, ValueError):
            owner, beat = {}, _mtime(folder)
        if self.use_flock:
            fd = _lock_if_unlocked(folder)
            if fd is None:
                return False  # its owner holds the lock: alive
            os.close(fd)
            if not owner or owner.get("flock"):
                return True  # it held the lock (older folders: always) and the lock is free: dead
            # a peer that never held a lock (heartbeat only): judge by its heartbeat below
        if owner.get("host") == socket.gethostname() and owner.get("boot_id") == boot_id():
            pid = owner.get("pid")
            if isinstance(pid, int) and not _pid_alive(pid):
                return True
        return beat is not None and time.time() - beat > self.liveness.timeout


def _move_manifest(old_claim: Path, new_claim: Path) -> None:
    src = manifest_path(old_claim)
    if os.path.lexists(src):
        os.rename(src, manifest_path(new_claim))


def _source(claim_manifest: Path, inbox: Path) -> tuple[Path, str | None] | None:
    """Where a waiting manifest says its data goes, seen from `inbox` (our path to the inbox:
    the dead owner may have mounted it elsewhere), and the data's sha256."""
    try:
        source = json.loads(claim_manifest.read_text())["source"]
        target, sha256 = Path(source["path"]), source.get("sha256")
        theirs = Path(source["inbox"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if target.is_relative_to(theirs):
        target = inbox / target.relative_to(theirs)
    return target, sha256 if isinstance(sha256, str) else None


def finish_half_move(claim: Path, inbox: Path) -> Path | None:
    """A claimed file whose move into done/ was cut between the link and the unlink (the
    filesystem had no renameat2): its waiting manifest names the target, and the target holds
    the same file. Finish the move: the claimed name goes, the manifest goes next to the data.
    Returns the manifest's final path, or None when this is not such a file."""
    waiting = manifest_path(claim)
    found = _source(waiting, inbox)
    if found is None:
        return None
    target, sha256 = found
    if not same_data(claim, target, sha256):
        return None
    # its bytes are at target (gone already: a network filesystem's stale view of a name its
    # owner removed); killed here, the next taker finishes the manifest
    claim.unlink(missing_ok=True)
    drop_state(claim, target)
    final = target.with_name(target.name + MANIFEST_SUFFIX)
    try:
        if os.path.lexists(final):
            waiting.unlink()
        else:
            os.rename(waiting, final)
    except FileNotFoundError:
        pass  # moved there by its owner meanwhile
    fsync_dir(final.parent)
    return final


def finish_manifest(claim_manifest: Path, inbox: Path) -> Path | None:
    """A manifest left in a claim folder after its data moved to done/: move it next to the
    data (its `source.path`, seen from `inbox`). Returns the manifest's final path, or None if
    it cannot be."""
    found = _source(claim_manifest, inbox)
    if found is None:
        return None
    target = found[0]
    final = target.with_name(target.name + MANIFEST_SUFFIX)
    if not os.path.lexists(target) or os.path.lexists(final):
        return None
    os.rename(claim_manifest, final)
    return final


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_if_unlocked(folder: Path) -> int | None:
    """An fd holding the lock of `folder`, or None if someone holds it (or it is gone)."""
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


def claimer_alive(folder: Path, liveness: Liveness | None = None) -> bool:
    """Whether the daemon that owns claim folder `folder` is still alive."""
    if not folder.is_dir():
        return False
    probe = ClaimArea(folder.parent, "", liveness)
    return not probe.owner_dead(folder)
