"""The ignore rules of SPEC §2: names inboxd never touches."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")


def is_ignored_name(name: str) -> bool:
    """Dot-files (including `.nfsXXXX` leftovers and inboxd's own `.inboxd/`) and temp names."""
    return not name or name.startswith(".") or name.endswith(IGNORED_SUFFIXES)


def is_candidate(name: str, patterns: Sequence[str]) -> bool:
    """A name inboxd should look at: not ignored, and matching one of the inbox patterns."""
    if is_ignored_name(name):
        return False
    return any(fnmatchcase(name, p) for p in patterns)
