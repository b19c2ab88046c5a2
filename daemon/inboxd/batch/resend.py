"""Which requests of a finished job go into the next round (SPEC §10).

A request answered with a failure whose HTTP status is in `resubmit_codes` (default 429, 500,
502, 503, 504), and a request in neither answer file (an EXPIRED, FAILED or server-cancelled
job's unfinished work), is resent: its input line, byte for byte, goes into the next round's
input. Every other answer is final (a success; a refusal of the request itself, such as 400).
Memory: one entry per request of the job (a job holds at most max_requests_per_job).
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from .answers import ERRORS, OUTPUT, Verdict, custom_id_of, read_answer
from .split import Range, coalesce, lines

DEFAULT_CODES = (429, 500, 502, 503, 504)


def job_verdicts(answers: dict[int, Path | None]) -> dict[str, Verdict]:
    """custom_id -> what its answer says, from a job's output and error files (the output's
    answer first; a custom_id answered twice keeps its first answer)."""
    out: dict[str, Verdict] = {}
    for kind in (OUTPUT, ERRORS):
        path = answers.get(kind)
        if path is None:
            continue
        for _, raw in lines(path):
            if not raw.strip():
                continue
            cid, v = read_answer(raw, kind)
            if cid is not None and cid not in out:
                out[cid] = v
    return out


def select_resends(input_path: Path, ranges: list[Range], verdicts: dict[str, Verdict],
                   codes: Collection[int]) -> tuple[list[Range], int]:
    """(the byte ranges of the input lines to send again, how many requests they hold)."""
    picked: list[Range] = []
    n = 0
    for offset, raw in lines(input_path, ranges):
        if not raw.strip():
            continue
        cid = custom_id_of(raw)
        v = verdicts.get(cid) if cid is not None else None
        if v is None or (v.failed and v.code in codes):
            picked.append((offset, offset + len(raw)))
            n += 1
    return coalesce(picked), n
