"""Filesystem steps that must not lose or overwrite anything.

`write_atomic`: temp file in the same folder, fsync, rename, fsync the folder (SPEC §2).
`place`: move a file into a folder under a name nobody uses yet, never replacing one.

`move_no_replace` is one `renameat2(RENAME_NOREPLACE)` where the filesystem has it (ext4, xfs,
btrfs, tmpfs): the file has exactly one of its two names at every moment, whoever dies when.
Where the filesystem refuses the flag (FUSE such as sshfs, NFS) it is a hard link then an
unlink, which also fails instead of overwriting but leaves both names if the process dies
between the two: `same_data` is how recovery recognises that half-done move and finishes it
(rename with a check where the filesystem has no hard links either).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import re
import secrets
import signal
import stat
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


RENAME_NOREPLACE = 1  # <linux/fs.h>
_AT_FDCWD = -100
# renameat2's answers that mean "not on this filesystem" (FUSE without rename2 and NFS say
# EINVAL, older kernels ENOSYS), or "not across these two" (EXDEV): the link path decides
_NO_RENAMEAT2 = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV})
# link's answers on a filesystem without hard links: a rename with a check instead
_NO_LINK = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV, errno.ENOSYS})
# test hook, read at each move (never at import): "link" forces the link + unlink path,
# "link,die-after-link" also SIGKILLs this process between the link and the unlink (of any
# move; "die-after-link:done": of a move into a folder named done)
TEST_HOOK = "INBOXD_TEST_FS"


def _load_renameat2() -> Callable[..., int] | None:
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2  # glibc 2.28 and later
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


class NoRenameat2(Exception):
    """renameat2 with RENAME_NOREPLACE is not available for this move (no glibc symbol, or the
    filesystem or kernel refuses the flag)."""


def rename_no_replace(src: Path, dst: Path) -> None:
    """One `renameat2(src, dst, RENAME_NOREPLACE)`: FileExistsError if `dst` exists (any entry,
    a dangling symlink too); NoRenameat2 where the flag is not supported."""
    if _renameat2 is None:
        raise NoRenameat2("no renameat2 in this C library")
    if _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), RENAME_NOREPLACE) == 0:
        return
    err = ctypes.get_errno()
    if err in _NO_RENAMEAT2:
        raise NoRenameat2(os.strerror(err))
    raise OSError(err, os.strerror(err), str(src), None, str(dst))  # EEXIST: FileExistsError


def move_no_replace(src: Path, dst: Path) -> None:
    """Move `src` to `dst`; FileExistsError instead of replacing an existing `dst`.

    One renameat2(RENAME_NOREPLACE) where the filesystem has it; else a hard link then an
    unlink (killed between the two, both names stay: see `same_data`)."""
    hook = os.environ.get(TEST_HOOK, "")
    if "link" not in hook.split(","):
        try:
            rename_no_replace(src, dst)
            return
        except NoRenameat2:
            pass
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _NO_LINK:
            if os.path.lexists(dst):
                raise FileExistsError(errno.EEXIST, "exists", str(dst)) from None
            os.rename(src, dst)
            return
        raise
    if {"die-after-link", f"die-after-link:{dst.parent.name}"} & set(hook.split(",")):
        os.kill(os.getpid(), signal.SIGKILL)
    os.unlink(src)


def same_data(claim: Path, target: Path, sha256: str | None = None) -> bool:
    """Whether `target` is `claim` moved by a link not yet followed by its unlink: the same
    inode; or, where the filesystem does not show two links as one inode (sshfs gives each
    name its own inode number), the same size and mtime and the content `sha256`. Either way
    the claimed copy can go: its bytes are at `target`."""
    try:
        a, b = os.lstat(claim), os.lstat(target)
    except OSError:
        return False
    if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
        return True
    if not sha256 or not (stat.S_ISREG(a.st_mode) and stat.S_ISREG(b.st_mode)) \
            or a.st_size != b.st_size or a.st_mtime_ns != b.st_mtime_ns:
        return False
    try:
        with open(target, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError:
        return False
    return digest == sha256


def find_moved(src: Path, folder: Path, name: str, sidecar: str, sha256: str | None = None) -> Path | None:
    """The name in `folder` that `src` was linked to by a move cut before its unlink: among the
    names `place` gives `name` (up to the first free one), one without its sidecar that is
    `same_data` as `src` (`sha256`: its content, where inode numbers differ per name). None
    when there is none (the usual case: two lstat calls)."""
    for cand in candidate_names(name):
        path = folder / cand
        taken = os.path.lexists(path)
        has_sidecar = os.path.lexists(folder / (cand + sidecar))
        if not taken and not has_sidecar:
            return None
        if taken and not has_sidecar and same_data(src, path, sha256):
            return path
    raise AssertionError("unreachable")


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
