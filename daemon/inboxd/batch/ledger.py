"""The ledger of one batch input: its parts, the jobs of every part and round, and which
requests are final (SPEC §10 "The ledger").

It is a JSON file (`inboxd.ledger/v1`) that travels with the input (beside the claim, then
beside the manifest in done/), written atomically and fsynced (`state.fs.write_atomic`)
before the step it enables, so every host of a shared inbox can read it and a host that
takes the input over follows it on. A job moves through its stages, each saved first:

  planned    its requests are known: byte ranges of the input (a part; or a resend)
  uploaded   its input is uploaded: `input_file_id`
  creating   `listed_before` holds the ids of the jobs the server listed for that
             input_file_id just before the create: after a crash, only a job NOT among them
             (and named by no other ledger) may be adopted as this one; no clocks compared
  created    the server's job id (the manifest names it from now on)
  ended      terminal: its status and answer file ids
  settled    its answers are counted: `final` requests have their final answer; the others
             (`resend`) are the next round's job, added in the same write

Which requests are final: all of a part's requests but those of its last job while that job
is not settled. A job the operator cancelled is settled with nothing resent.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from ..state.fs import write_atomic
from .split import Range, Span

SCHEMA = "inboxd.ledger/v1"
SUFFIX = ".ledger.json"
TERMINAL = ("COMPLETED", "FAILED", "EXPIRED", "CANCELLED")
Stage = Literal["planned", "uploaded", "creating", "created", "ended", "settled"]


class LedgerJob(BaseModel):
    part: int  # from 1
    round: int  # from 1; round r > 1 resends what round r - 1 left
    stage: Stage = "planned"
    ranges: list[Range]
    requests: int
    bytes: int
    input_file_id: str | None = None
    listed_before: list[str] | None = None
    id: str | None = None
    status: str | None = None
    progress: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: str | None = None
    completed_at: str | None = None
    error: str | None = None
    cancelled_by_operator: bool = False
    rejected: bool = False  # the server refused the create (4xx): its requests are final, never resent
    create_status: int | None = None  # the HTTP status of that refusal
    final: int | None = None  # requests that got their final answer in this job (settled)
    resend: int | None = None  # requests sent on to the next round (settled)

    @property
    def name(self) -> str:
        """A name for its files: p<part>r<round>."""
        return f"p{self.part}r{self.round}"

    @property
    def open(self) -> bool:
        """Sent to the server and not yet terminal: it takes a slot of max_jobs_in_flight (an
        uploaded input waiting for a slot does not)."""
        return self.stage in ("creating", "created")


class LedgerInput(BaseModel):
    path: str
    sha256: str | None = None
    bytes: int
    requests: int


class Limits(BaseModel):
    max_requests_per_job: int
    max_bytes_per_job: int
    resubmit_rounds: int
    resubmit_codes: list[int]


class Ledger(BaseModel):
    schema_: str = Field(SCHEMA, alias="schema")
    input: LedgerInput
    limits: Limits
    parts: list[Span]
    jobs: list[LedgerJob]
    host: str = Field(default_factory=socket.gethostname)
    follower: str | None = None  # the claimer (daemon) following it: on a network filesystem, where
    # another host cannot see its follow lock, its heartbeat says whether it is alive
    stem: str | None = None  # <outbox>/<stem>.*: chosen (and saved) before the first outbox file
    outbox: str | None = None
    manifest: str | None = None  # the input's manifest in done/, once archived
    dropped_at: float | None = None
    uploaded_at: float | None = None
    finished_at: float | None = None
    delivered_at: float | None = None
    updated_at: float = 0.0

    model_config = {"populate_by_name": True}

    @classmethod
    def plan(cls, input_path: Path, parts: list[Span], limits: Limits, *, sha256: str | None,
             dropped_at: float | None = None) -> Ledger:
        """A new ledger: one round-1 job per part."""
        jobs = [LedgerJob(part=i, round=1, ranges=[(p.start, p.end)], requests=p.requests, bytes=p.bytes)
                for i, p in enumerate(parts, start=1)]
        size = parts[-1].end if parts else 0
        return cls(input=LedgerInput(path=str(input_path), sha256=sha256, bytes=size,
                                     requests=sum(p.requests for p in parts)),
                   limits=limits, parts=parts, jobs=jobs, dropped_at=dropped_at)

    # --- reading -------------------------------------------------------------------------

    def last_jobs(self) -> Iterator[LedgerJob]:
        """The latest job of every part."""
        latest: dict[int, LedgerJob] = {}
        for job in self.jobs:
            if job.part not in latest or job.round >= latest[job.part].round:
                latest[job.part] = job
        yield from (latest[p] for p in sorted(latest))

    def final_requests(self) -> int:
        """Requests with their final answer: every request but those of an unsettled last job."""
        pending = sum(j.requests for j in self.last_jobs() if j.stage != "settled")
        return self.input.requests - pending

    @property
    def done(self) -> bool:
        return all(j.stage == "settled" for j in self.jobs)

    @property
    def rounds(self) -> int:
        return max((j.round for j in self.jobs), default=0)

    def in_flight(self) -> int:
        return sum(1 for j in self.jobs if j.open)

    def job_ids(self) -> list[str]:
        return [j.id for j in self.jobs if j.id]

    # --- writing -------------------------------------------------------------------------

    def settle(self, job: LedgerJob, resend: list[Range], resend_requests: int) -> LedgerJob | None:
        """Mark `job` settled; add the next round's job for `resend` (the requests answered with a
        transient error or not at all) when rounds are left and the operator did not cancel it.
        What is not resent is final. The caller saves the ledger: both in one write."""
        job.stage = "settled"
        if not resend or job.cancelled_by_operator or job.rejected or job.round > self.limits.resubmit_rounds:
            job.final, job.resend = job.requests, 0
            return None
        job.final, job.resend = job.requests - resend_requests, resend_requests
        nxt = LedgerJob(part=job.part, round=job.round + 1, ranges=resend, requests=resend_requests,
                        bytes=sum(e - s for s, e in resend))
        self.jobs.append(nxt)
        return nxt

    def to_bytes(self) -> bytes:
        return (json.dumps(self.model_dump(mode="json", by_alias=True), separators=(",", ":")) + "\n").encode("utf-8")

    def save(self, path: Path) -> None:
        """Atomically and fsynced (the folder too): the step it enables may follow."""
        self.updated_at = time.time()
        write_atomic(path, self.to_bytes())

    @classmethod
    def load(cls, path: Path) -> Ledger:
        return cls.model_validate_json(path.read_bytes())


def ledger_path(beside: Path) -> Path:
    """The ledger of the input at `beside` (a claim or an archived input): <name>.ledger.json."""
    return beside.with_name(beside.name + SUFFIX)
