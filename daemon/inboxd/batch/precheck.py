"""The basic check of an input that will be split (`inboxd batch FILE`), in memory bounded by
one part: each part is checked on its own (the per-job limits apply per part; a part's issues
carry the input's line numbers), then custom_ids unique across parts are checked from their
hashes in an array (8 bytes an id), not a dict of a million ids. An input that is one part is
checked whole.
"""

from __future__ import annotations

import dataclasses
import hashlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from .answers import custom_id_of
from .split import RangeReader, Span, lines

if TYPE_CHECKING:
    from ..check import CheckIssue

SPLIT_RULES = ("batch.too_many_lines", "batch.too_large")  # the whole input's limits: per part now
BUCKETS = 256


@dataclass(frozen=True)
class Checked:
    sha256: str
    bytes: int
    records: int
    errors: tuple[CheckIssue, ...] = ()


def _part_issues(path: Path, part: Span, max_line_bytes: int, max_errors: int, mode: str) -> list[CheckIssue]:
    from ..check import check_file

    with RangeReader(path, part.start, part.end) as src:
        report = check_file(cast(BinaryIO, src), "batch-api", mode, name=path.name,
                            max_line_bytes=max_line_bytes, max_errors=max_errors)
    return [dataclasses.replace(e, line=e.line + part.line - 1) if e.line is not None else e
            for e in report.errors if e.rule not in SPLIT_RULES]


def _ids(path: Path) -> Iterator[tuple[int, str]]:
    for n, (_, raw) in enumerate(lines(path), start=1):
        if raw.strip():
            cid = custom_id_of(raw)
            if cid is not None:
                yield n, cid


def _duplicate(path: Path) -> CheckIssue | None:
    """The first custom_id that two lines of the input share, as the check words it. The ids'
    64-bit hashes are kept in arrays (8 bytes each), by bucket; only ids whose hash repeats are
    looked at again, by name, in a second pass."""
    from ..check import CheckIssue

    buckets = [array("q") for _ in range(BUCKETS)]
    for _, cid in _ids(path):
        h = hash(cid)
        buckets[h % BUCKETS].append(h)
    repeated: set[int] = set()
    for bucket in buckets:  # one bucket's set at a time: a few thousand ints, not a million
        seen: set[int] = set()
        for h in bucket:
            if h in seen:
                repeated.add(h)
            seen.add(h)
    del buckets
    if not repeated:
        return None
    first: dict[str, int] = {}
    for n, cid in _ids(path):
        if hash(cid) in repeated:
            if cid in first:
                return CheckIssue(n, "batch.custom_id.duplicate",
                                  f"`custom_id` {cid!r} appears twice: first on line {first[cid]}")
            first[cid] = n
    return None  # only hashes collided


def check_input(path: Path, parts: list[Span], *, max_line_bytes: int, max_errors: int,
                mode: str = "basic") -> Checked:
    """The check (`mode`: basic, strict; off hashes only) of the input at `path`, cut into `parts`."""
    from ..check import check_file

    if len(parts) == 1:
        report = check_file(path, "batch-api", mode, name=path.name, max_line_bytes=max_line_bytes,
                            max_errors=max_errors)
        return Checked(report.sha256, report.bytes, report.records,
                       tuple(e for e in report.errors if e.rule not in SPLIT_RULES))
    errors: list[CheckIssue] = []
    for part in parts:
        errors += _part_issues(path, part, max_line_bytes, max_errors, mode)
        if len(errors) >= max_errors:
            break
    if not errors and mode != "off":
        dup = _duplicate(path)
        errors += [dup] if dup is not None else []
    with open(path, "rb") as f:
        sha = hashlib.file_digest(f, "sha256").hexdigest()
    return Checked(sha, parts[-1].end, sum(p.requests for p in parts), tuple(errors[:max_errors]))
