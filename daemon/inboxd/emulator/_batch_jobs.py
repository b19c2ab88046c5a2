"""The emulator's batch jobs: their model (`Job`), the book that holds them (`BatchBook`), and
the knobs that shape them (`BatchKnobs`).

Time: a job's state is computed from timestamps whenever it is looked at (retrieve, list,
cancel, stats); no thread runs per job. With S = `seconds` a job is VALIDATING for the first
10% of S, then IN_PROGRESS with progress rising, and at S it ends (COMPLETED, or a scripted
outcome). S = 0: done at the first look after the create. A cancelled job is CANCELING for
min(0.5, S/4) seconds, then CANCELLED with the output of the lines done when it was cancelled.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar

from ._batch_model import Asked
from ._batch_output import run_model
from ._batch_script import BatchScript
from ._store import Store

TERMINAL = {"COMPLETED", "FAILED", "EXPIRED", "CANCELLED"}
DEFAULT_FRACTION = {"COMPLETED": 1.0, "FAILED": 0.0, "EXPIRED": 0.5, "CANCELLED": 0.25}
USER_ID = "user-emulator"
VALIDATING_SHARE = 0.1  # of the job's time
SCRIPTED_CANCELING_AT = 0.8  # a scripted CANCELLED job shows CANCELING from here


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class BatchKnobs:
    """How jobs behave, set by flags or `POST /v1/_emulator/faults` (the key in brackets):
    seconds [batch_seconds] a job's time; max_requests [batch_max_requests] and max_bytes
    [batch_max_bytes] the per-job limits a create enforces (400 above them); transient_rate
    [batch_transient_rate] the share of requests answered with a 429 in the error file."""

    seconds: float = 2.0
    max_requests: int = 50_000
    max_bytes: int = 100 * 10**6
    transient_rate: float = 0.0

    KEYS: ClassVar[dict[str, str]] = {"batch_seconds": "seconds", "batch_max_requests": "max_requests",
                                      "batch_max_bytes": "max_bytes", "batch_transient_rate": "transient_rate"}

    def update(self, values: dict[str, Any]) -> None:
        for key, name in self.KEYS.items():
            if key in values:
                kind = type(getattr(self, name))
                setattr(self, name, kind(values[key]))

    def as_dict(self) -> dict[str, Any]:
        return {key: getattr(self, name) for key, name in self.KEYS.items()}

    def copy(self) -> BatchKnobs:
        return BatchKnobs(**{f.name: getattr(self, f.name) for f in fields(self)})


@dataclass
class Job:
    id: str
    input_file_id: str
    file_size_bytes: int
    lines: int
    endpoint: str
    completion_window: str
    priority: int | None
    model_id: str | None
    created_wall: float
    created_mono: float
    seconds: float  # the job's time scale
    outcome: str  # how it ends unless cancelled
    fraction: float  # share of the lines answered when it ends that way
    transient_rate: float = 0.0
    scripted_error: str | None = None
    status: str = "VALIDATING"
    progress: float = 0.0
    output_file_id: str | None = None
    error_file_id: str | None = None
    error: str | None = None
    completed_wall: float | None = None
    cancel_mono: float | None = None
    cancel_progress: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def public(self) -> dict[str, Any]:
        window = int(self.completion_window[:-1])
        out: dict[str, Any] = {
            "id": self.id, "user_id": USER_ID, "input_file_id": self.input_file_id,
            "file_size_bytes": self.file_size_bytes, "status": self.status,
            "job_deadline": iso(self.created_wall + window * 3600), "created_at": iso(self.created_wall),
            "endpoint": self.endpoint, "progress": round(self.progress, 2), "model_id": self.model_id,
            "error": self.error, "completed_at": iso(self.completed_wall),
        }
        if self.priority is not None:
            out["priority"] = self.priority
        if self.output_file_id:
            out["output_file_id"] = self.output_file_id
        if self.error_file_id:
            out["error_file_id"] = self.error_file_id
        return out

    def asked(self) -> Asked:
        return Asked(self.id, self.endpoint, self.model_id, int(self.created_wall), self.transient_rate)

    def progress_at(self, elapsed: float) -> tuple[str, float]:
        """(status, progress) of a running job `elapsed` seconds after its create."""
        start = VALIDATING_SHARE * self.seconds
        if elapsed < start:
            return "VALIDATING", 0.0
        end = SCRIPTED_CANCELING_AT * self.seconds if self.outcome == "CANCELLED" else self.seconds
        target = 0.0 if self.outcome == "FAILED" else 100.0 * self.fraction
        progress = min(target, target * (elapsed - start) / max(end - start, 1e-9))
        return ("CANCELING" if elapsed >= end else "IN_PROGRESS"), progress


class BatchBook:
    """The jobs, their scripted outcomes, the knobs, and the batch counters."""

    def __init__(self, store: Store, knobs: BatchKnobs) -> None:
        self.store = store
        self.initial = knobs.copy()
        self.knobs = knobs
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self.creates = 0
        self.creates_by_input: Counter[str] = Counter()
        self.script = BatchScript()

    @property
    def seconds(self) -> float:
        return self.knobs.seconds

    def expire_next(self, n: int) -> None:
        """The next `n` jobs end EXPIRED with half their requests answered."""
        if n > 0:
            self.script.add([{"outcome": "EXPIRED", "fraction": 0.5, "times": n}])

    def take_cut(self, file_id: str) -> float | None:
        """The share of the body to send before the connection is cut, for this download."""
        e = self.script.take("cut_download", file_id)
        return None if e is None else float(e["cut_download"])

    def reset(self) -> None:
        self.script.clear()
        self.knobs = self.initial.copy()
        with self.lock:
            self.creates = 0
            self.creates_by_input.clear()

    def limit_exceeded(self, lines: int, size: int) -> str | None:
        """Why an input of `lines` requests and `size` bytes is too big for one job; None if it fits."""
        if lines > self.knobs.max_requests:
            return f"the input file has {lines} requests; a batch job takes at most {self.knobs.max_requests}"
        if size > self.knobs.max_bytes:
            return f"the input file has {size} bytes; a batch job takes at most {self.knobs.max_bytes}"
        return None

    def create(self, wanted: dict[str, Any], input_lines: int, input_bytes: int) -> Job:
        scripted = self.script.take("outcome") or {}
        outcome = str(scripted.get("outcome", "COMPLETED"))
        job = Job(id=Store.new_id("batch"), input_file_id=wanted["input_file_id"], file_size_bytes=input_bytes,
                  lines=input_lines, endpoint=wanted["endpoint"], completion_window=wanted["completion_window"],
                  priority=wanted["priority"], model_id=wanted["model_id"], created_wall=time.time(),
                  created_mono=time.monotonic(), seconds=self.knobs.seconds, outcome=outcome,
                  fraction=float(scripted.get("fraction", DEFAULT_FRACTION[outcome])),
                  transient_rate=self.knobs.transient_rate, scripted_error=scripted.get("error"))
        with self.lock:
            self.jobs[job.id] = job
            self.creates += 1
            self.creates_by_input[job.input_file_id] += 1
        return job

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            job = self.jobs.get(job_id)
        if job is not None:
            self.advance(job)
        return job

    def all(self) -> list[Job]:
        with self.lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            self.advance(job)
        return jobs

    def cancel(self, job: Job) -> str | None:
        """Ask a job to stop; the terminal status that forbids it, else None."""
        self.advance(job)
        with job.lock:
            if job.status in TERMINAL:
                return job.status
            if job.cancel_mono is None and job.status != "CANCELING":
                job.cancel_mono = time.monotonic()
                job.cancel_progress = job.progress if job.status == "IN_PROGRESS" else 0.0
                job.status = "CANCELING"
        return None

    def advance(self, job: Job) -> None:
        """Bring the job's status up to date with the clock (and write its files when it ends)."""
        with job.lock:
            if job.status in TERMINAL:
                return
            now = time.monotonic()
            if job.cancel_mono is not None:
                if now - job.cancel_mono >= min(0.5, job.seconds / 4):
                    self._finish(job, "CANCELLED", math.floor(job.lines * job.cancel_progress / 100))
                return
            elapsed = now - job.created_mono
            if elapsed >= job.seconds:
                self._finish(job, job.outcome, 0 if job.outcome == "FAILED" else math.floor(job.lines * job.fraction))
                return
            job.status, job.progress = job.progress_at(elapsed)

    def _finish(self, job: Job, status: str, done: int) -> None:
        """Called with job.lock held: answer the first `done` lines, file the answers, end the job."""
        error: str | None = None
        if status == "FAILED":
            error = job.scripted_error or "the batch job failed (scripted by the emulator)"
        elif status == "EXPIRED":
            error = job.scripted_error or "the job expired before all requests were processed"
        if status != "FAILED" and done > 0:
            src = self.store.content_path(job.input_file_id)
            if not src.exists():
                status, error, done = "FAILED", f"input file {job.input_file_id} was deleted", 0
            else:
                job.output_file_id, job.error_file_id = run_model(self.store, job.asked(), src, done)
        job.status, job.error, job.completed_wall = status, error, time.time()
        job.progress = 100.0 if status == "COMPLETED" else round(100.0 * done / max(job.lines, 1), 2)

    def stats(self) -> dict[str, Any]:
        jobs = self.all()
        with self.lock:
            creates, by_input = self.creates, dict(self.creates_by_input)
        listed = []
        for job in jobs:
            with job.lock:
                listed.append({**job.public(), "outcome": job.outcome, "lines": job.lines})
        return {"batch_creates": creates, "batch_creates_by_input": by_input, "batches": listed,
                "batch_script_left": self.script.snapshot()}
