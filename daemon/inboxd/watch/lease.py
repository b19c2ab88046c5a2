"""Is anyone still writing this file? Asked of the kernel, not guessed (SPEC §2).

On Linux a read lease (`F_SETLEASE`, `F_RDLCK`) is refused with `EAGAIN` while any process
holds the file open for writing. Taking one and dropping it at once costs one `open` and two
`fcntl` calls. The lease needs the file's owner or `CAP_LEASE` (the systemd unit grants it);
network and FUSE filesystems do not offer leases at all. Where no lease can be taken the
answer is "unknown", and readiness falls back to the evidence there is (`readiness.py`).

While the lease is held, a writer opening the file would break it and the kernel would send
this process `SIGIO`, whose default action ends the process: `ignore_lease_breaks()` is
called once at daemon start.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
from enum import Enum

F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)


class Writers(Enum):
    NONE = "none"  # nobody has the file open for writing
    OPEN = "open"  # someone does: not ready
    UNKNOWN = "unknown"  # no lease possible here (permissions, filesystem): use other evidence


def open_for_writing(path: str) -> Writers:
    """Whether some process holds `path` open for writing (never follows a symlink)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return Writers.OPEN  # someone holds a write lease on it
        return Writers.UNKNOWN
    try:
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EBUSY):
            return Writers.OPEN
        return Writers.UNKNOWN  # EACCES without CAP_LEASE, EINVAL on NFS/FUSE/overlay
    else:
        fcntl.fcntl(fd, F_SETLEASE, fcntl.F_UNLCK)
        return Writers.NONE
    finally:
        os.close(fd)


def ignore_lease_breaks() -> None:
    """A writer that opens the file during our instant of lease sends SIGIO: it must not kill us."""
    if hasattr(signal, "SIGIO"):
        signal.signal(signal.SIGIO, signal.SIG_IGN)
