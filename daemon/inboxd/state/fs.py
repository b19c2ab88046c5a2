"""Filesystem steps that must not lose or overwrite anything.

`write_atomic`: temp file in the same folder, fsync, rename, fsync the folder (SPEC §2).
`place`: move a file into a folder under a name nobody uses yet, never replacing one
(hard link then unlink, which fails instead of overwriting; rename with a check where the
filesystem has no hard links).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, sync_folder: bool = True) -> None:
    """`data` at `path`, whole or not at all: a temp file, fsynced, renamed; then the folder is
    fsynced (unless `sync_folder` is False: a file that is renamed on into a folder fsynced later)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync_folder:
        fsync_dir(path.parent)


NAME_MAX = 255
# room for the longest sidecar suffix, the temp name write_atomic writes it under, and ".<n>"
SIDECAR_ROOM = len(".") + len(".manifest.json") + len(".12345678.tmp") + 8


def fit_name(name: str, reserve: int) -> str:
    """`name`, or a shortened form that leaves `reserve` bytes under NAME_MAX: the stem is cut
    (on a character boundary) and marked with a hash of the whole name; the extension stays."""
    raw = os.fsencode(name)
    if len(raw) + reserve <= NAME_MAX:
        return name
    stem, dot, ext = name.rpartition(".")
    if not stem or len(os.fsencode(ext)) > 16:
        stem, dot, ext = name, "", ""
    mark = "~" + hashlib.sha256(raw).hexdigest()[:10]
    room = NAME_MAX - reserve - len(os.fsencode(dot + ext)) - len(mark)
    cut = os.fsencode(stem)[:max(1, room)]
    return os.fsdecode(cut.decode("utf-8", "ignore").encode("utf-8")) + mark + dot + ext


def candidate_names(name: str) -> Iterator[str]:
    """x.jsonl, x.2.jsonl, x.3.jsonl, ... (the extension stays last: it gives the file type).
    A name too long to carry a sidecar next to it is shortened first (`fit_name`)."""
    name = fit_name(name, SIDECAR_ROOM)
    yield name
    stem, dot, ext = name.rpartition(".")
    if not stem:
        stem, dot, ext = name, "", ""
    n = 2
    while True:
        yield f"{stem}.{n}{dot}{ext}"
        n += 1


def free_name(folder: Path, name: str, sidecar: str) -> str:
    """The first of `candidate_names` for which neither the file nor its sidecar exists."""
    for cand in candidate_names(name):
        if not os.path.lexists(folder / cand) and not os.path.lexists(folder / (cand + sidecar)):
            return cand
    raise AssertionError("unreachable")


def move_no_replace(src: Path, dst: Path) -> None:
    """Move `src` to `dst`; FileExistsError instead of replacing an existing `dst`."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV,
                         errno.ENOSYS):
            if os.path.lexists(dst):
                raise FileExistsError(errno.EEXIST, "exists", str(dst)) from None
            os.rename(src, dst)
            return
        raise
    os.unlink(src)


def place(src: Path, folder: Path, name: str, sidecar: str, *,
          on_reserved: Callable[[Path], None] | None = None) -> Path:
    """Move `src` into `folder` under a free name derived from `name`; return the new path.

    `on_reserved(dst)` is called before the move (the journal records the target first).
    The folder is not fsynced here: the sidecar written next to the file does that.
    """
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        dst = folder / free_name(folder, name, sidecar)
        if on_reserved is not None:
            on_reserved(dst)
        try:
            move_no_replace(src, dst)
        except FileExistsError:
            continue
        return dst  # the caller's sidecar write (write_atomic) fsyncs this folder next


def same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# network filesystems: SQLite in WAL mode needs a local disk (SPEC §2), and flock there may not
# be seen by other hosts (claim liveness uses heartbeats instead)
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "fuse.sshfs", "sshfs", "9p", "ceph", "glusterfs",
    "fuse.glusterfs", "lustre", "afs",
})


def nearest_existing(path: Path) -> Path:
    """`path` itself, or its nearest ancestor that exists."""
    p = path
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def filesystem_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The type of the filesystem `path` (or its nearest existing ancestor) lives on, from
    /proc/self/mountinfo: the longest mount point that contains it, the last one mounted."""
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    target = os.path.realpath(nearest_existing(path))
    best, best_len = None, -1
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if not sep or len(fields) < 5 or not rest:
            continue
        mount = _unescape(fields[4])
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= best_len:
            best, best_len = rest[0], len(mount)
    return best


def is_network_filesystem(path: Path) -> bool:
    fstype = filesystem_type(path)
    return fstype is not None and (fstype in NETWORK_FILESYSTEMS or fstype.startswith("fuse"))
