"""The reconciliation scan: the directory listing is the source of truth (SPEC §2)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .ignore import is_candidate, is_ignored_name


@dataclass(frozen=True)
class Entry:
    path: str
    name: str
    st: os.stat_result

    @property
    def kind(self) -> str:
        return file_kind(self.st.st_mode)


def file_kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "regular"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "unknown"


def inspect_path(path: str, patterns: Sequence[str], skip: Sequence[str] = ()) -> Entry | None:
    """lstat one path (never follows a link); None when it is gone or not a candidate."""
    name = os.path.basename(path)
    if name in skip or not is_candidate(name, patterns):
        return None
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return Entry(path, name, st)


def scan_inbox(folder: Path, patterns: Sequence[str], skip: Sequence[str] = (),
               unmatched: list[str] | None = None) -> list[Entry]:
    """Every candidate in the folder (not recursive), lstat'ed; raises OSError if the folder is gone.
    `unmatched` collects the names that are not temp or dot names yet match no pattern."""
    out: list[Entry] = []
    with os.scandir(folder) as it:
        for d in it:
            if d.name in skip or not is_candidate(d.name, patterns):
                if unmatched is not None and d.name not in skip and not is_ignored_name(d.name):
                    unmatched.append(d.name)
                continue
            try:
                st = d.stat(follow_symlinks=False)
            except OSError:
                continue
            out.append(Entry(d.path, d.name, st))
    return out


def candidate_names(folder: Path | str, patterns: Sequence[str], skip: Sequence[str] = (),
                    unmatched: list[str] | None = None) -> Iterator[tuple[str, str]]:
    """(path, name) of every candidate in the folder, in directory order, one at a time and
    without a stat: a scan of a folder of a million names holds one name at a time, and stats
    only the ones its caller takes (`inspect_path`). Raises OSError if the folder is gone;
    `unmatched` as in `scan_inbox`."""
    with os.scandir(folder) as it:
        for d in it:
            name = d.name
            if name in skip or not is_candidate(name, patterns):
                if unmatched is not None and name not in skip and not is_ignored_name(name):
                    unmatched.append(name)
                continue
            yield d.path, name
