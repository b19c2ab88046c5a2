"""The Batch API under /v1/batches (SPEC §9), with a deterministic fake model.

Routes (route names in stats and scripts in brackets):
  POST /v1/batches              [batch_create]  json {input_file_id, endpoint, completion_window?,
                                                priority?, model_id?} -> 201 {"job": BatchJob, "warning": ...}
  GET  /v1/batches              [batch_list]    -> a plain JSON array of BatchJobs (oldest first)
  GET  /v1/batches/{id}         [batch_retrieve] -> the BatchJob itself
  POST /v1/batches/{id}/cancel  [batch_cancel]  -> the BatchJob (CANCELING, CANCELLED shortly after);
                                                a terminal job: 409; an unknown id: 404
Errors of these routes are {"error": "..."} (auth failures and the generic random or scripted
faults keep the Files API's {"error": {"message": ...}}). A create needs an existing input file
of purpose batch-api whose processing_status is COMPLETED, and a known endpoint
(/v1/chat/completions, /v1/completions, /v1/audio/transcriptions, /v1/audio/translations);
anything else is a 400.

Time: a job's state is computed from timestamps whenever it is looked at (retrieve, list,
cancel, stats); no thread runs per job. With S = --batch-seconds (default 2.0; also
`POST /v1/_emulator/faults {"batch_seconds": S}` for jobs created afterwards) a job is
VALIDATING for the first 10% of S, then IN_PROGRESS with progress rising, and at S it ends
(COMPLETED, or a scripted outcome). S = 0: done at the first look after the create. A
cancelled job is CANCELING for min(0.5, S/4) seconds, then CANCELLED with the output of the
lines done when it was cancelled (progress x lines).

The fake model answers each input line (streamed; memory bounded by a block of lines):
  chat: the last user message reversed, as a chat.completion with a usage block;
  /v1/completions: the prompt reversed, as a text_completion; audio: the `file` value reversed.
  Output line: {"id", "custom_id", "response": {"status_code": 200, "request_id", "body"}, "error": null}
  A line whose body asks for model "unknown-model" (or a chat line without messages, a
  completion without prompt) goes to the error file instead:
  {"custom_id": ..., "error": {"message": ..., "code": "model_not_available" | "invalid_request"}}.
Lines are written reversed in blocks of 4 (input 1..8 -> 4 3 2 1 8 7 6 5), so the output is in a
different order from the input, deterministically. The output and error files are emulator
Files (purpose batch-output, processing_status COMPLETED, method "generated"), each created only
when it has a line; `GET /v1/files/{id}/content` serves them, with `Range: bytes=N-` (206).

Scripted behaviour: `POST /v1/_emulator/batches` with a list of entries, each used once
(or "times" times), in order:
  {"outcome": "FAILED", "error"?: msg}    the next create's job ends FAILED: no files, only error
  {"outcome": "EXPIRED", "fraction"?: 0.5} ends EXPIRED with the answers of the first half of
                                           the lines (the rest missing) and an error message
  {"outcome": "CANCELLED", "fraction"?: 0.25} is CANCELING from 80% of S, CANCELLED at S with
                                           the answers of the first quarter of the lines
  {"outcome": "COMPLETED"}                 (the default)
  {"create_status": 429, "retry_after"?: 1.0, "error_type"?: "dynamic_request_limited"}
                                           the next create is answered with that status
                                           (429 with Retry-After and retry-after-ms); no job
  {"cut_download": 0.5, "file_id"?: id}    the next content download (of that file, or any)
                                           sends that fraction of its body, then closes the
                                           connection (the client sees a short body)
The answer is {"batch_script": [what is left]}. The generic script works on batch routes too
({"route": "batch_create", "status": 503}). `POST /v1/_emulator/reset` clears the batch script
and the counters, not the jobs.

Stats (`GET /v1/_emulator/stats`): batch_creates (successful creates), batch_creates_by_input
({input_file_id: n}: a second create for the same input shows as 2), batches (every job as a
BatchJob plus "outcome" and "lines", oldest first).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

from . import _faults
from ._forms import params
from ._routing import Api, RouteFn
from ._store import Store
from ._wire import Done

if TYPE_CHECKING:
    from ._handler import Handler

ENDPOINTS = {"/v1/chat/completions", "/v1/completions", "/v1/audio/transcriptions", "/v1/audio/translations"}
TERMINAL = {"COMPLETED", "FAILED", "EXPIRED", "CANCELLED"}
OUTCOMES = {"COMPLETED", "FAILED", "EXPIRED", "CANCELLED"}
DEFAULT_FRACTION = {"COMPLETED": 1.0, "FAILED": 0.0, "EXPIRED": 0.5, "CANCELLED": 0.25}
UNKNOWN_MODEL = "unknown-model"
USER_ID = "user-emulator"
BLOCK = 4  # output order: input lines reversed in blocks of this many
VALIDATING_SHARE = 0.1  # of the job's time
SCRIPTED_CANCELING_AT = 0.8  # a scripted CANCELLED job shows CANCELING from here
WARNING = "completion_window is best-effort: most jobs finish within 24h, some take longer"


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


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
            "id": self.id,
            "user_id": USER_ID,
            "input_file_id": self.input_file_id,
            "file_size_bytes": self.file_size_bytes,
            "status": self.status,
            "job_deadline": _iso(self.created_wall + window * 3600),
            "created_at": _iso(self.created_wall),
            "endpoint": self.endpoint,
            "progress": round(self.progress, 2),
            "model_id": self.model_id,
            "error": self.error,
            "completed_at": _iso(self.completed_wall),
        }
        if self.priority is not None:
            out["priority"] = self.priority
        if self.output_file_id:
            out["output_file_id"] = self.output_file_id
        if self.error_file_id:
            out["error_file_id"] = self.error_file_id
        return out


class BatchBook:
    """The jobs, their scripted outcomes, and the batch counters."""

    def __init__(self, store: Store, seconds: float) -> None:
        self.store = store
        self.seconds = seconds
        self.lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self.creates = 0
        self.creates_by_input: Counter[str] = Counter()
        self._script: list[dict[str, Any]] = []

    # -- the script ------------------------------------------------------------------------------

    @staticmethod
    def bad_entries(entries: Any) -> list[Any]:
        if not isinstance(entries, list):
            return [entries]
        bad = []
        for e in entries:
            ok = isinstance(e, dict) and sum(k in e for k in ("outcome", "create_status", "cut_download")) == 1
            if ok and "outcome" in e:
                frac = e.get("fraction", 0.5)
                ok = e["outcome"] in OUTCOMES and isinstance(frac, (int, float)) and 0 <= frac <= 1
            elif ok and "create_status" in e:
                ok = isinstance(e["create_status"], int) and 400 <= e["create_status"] <= 599
            elif ok:
                ok = isinstance(e["cut_download"], (int, float)) and 0 <= e["cut_download"] < 1
            if not ok:
                bad.append(e)
        return bad

    def add_script(self, entries: list[dict[str, Any]]) -> None:
        with self.lock:
            for e in entries:
                self._script.append({**e, "times": int(e.get("times", 1))})

    def script_snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(e) for e in self._script]

    def _take(self, kind: str, match: Any = None) -> dict[str, Any] | None:
        with self.lock:
            for e in self._script:
                if kind in e and (match is None or e.get("file_id") in (None, match)):
                    e["times"] -= 1
                    if e["times"] <= 0:
                        self._script.remove(e)
                    return dict(e)
        return None

    def take_cut(self, file_id: str) -> float | None:
        """The share of the body to send before the connection is cut, for this download."""
        e = self._take("cut_download", file_id)
        return None if e is None else float(e["cut_download"])

    def reset(self) -> None:
        with self.lock:
            self._script.clear()
            self.creates = 0
            self.creates_by_input.clear()

    # -- jobs ------------------------------------------------------------------------------------

    def create(self, fields: dict[str, Any], input_lines: int, input_bytes: int) -> Job:
        scripted = self._take("outcome") or {}
        outcome = str(scripted.get("outcome", "COMPLETED"))
        now_wall, now_mono = time.time(), time.monotonic()
        job = Job(id=_job_id(), input_file_id=fields["input_file_id"], file_size_bytes=input_bytes,
                  lines=input_lines, endpoint=fields["endpoint"], completion_window=fields["completion_window"],
                  priority=fields["priority"], model_id=fields["model_id"], created_wall=now_wall,
                  created_mono=now_mono, seconds=self.seconds, outcome=outcome,
                  fraction=float(scripted.get("fraction", DEFAULT_FRACTION[outcome])),
                  scripted_error=scripted.get("error"))
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
            now, total = time.monotonic(), job.seconds
            if job.cancel_mono is not None:
                if now - job.cancel_mono >= min(0.5, total / 4):
                    self._finish(job, "CANCELLED", math.floor(job.lines * job.cancel_progress / 100))
                return
            elapsed = now - job.created_mono
            if elapsed >= total:
                done = 0 if job.outcome == "FAILED" else math.floor(job.lines * job.fraction)
                self._finish(job, job.outcome, done)
                return
            start = VALIDATING_SHARE * total
            if elapsed < start:
                job.status, job.progress = "VALIDATING", 0.0
                return
            end = SCRIPTED_CANCELING_AT * total if job.outcome == "CANCELLED" else total
            target = 0.0 if job.outcome == "FAILED" else 100.0 * job.fraction
            job.progress = min(target, target * (elapsed - start) / max(end - start, 1e-9))
            job.status = "CANCELING" if elapsed >= end else "IN_PROGRESS"

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
                job.output_file_id, job.error_file_id = self._run_model(job, src, done)
        job.status, job.error, job.completed_wall = status, error, time.time()
        job.progress = 100.0 if status == "COMPLETED" else round(100.0 * done / max(job.lines, 1), 2)

    def _run_model(self, job: Job, src: Path, limit: int) -> tuple[str | None, str | None]:
        outs = {"output": _Sink(self.store.data_dir / "files" / f".{job.id}.output.part"),
                "errors": _Sink(self.store.data_dir / "files" / f".{job.id}.errors.part")}
        try:
            block: list[tuple[str, bytes]] = []
            number = answered = 0
            with open(src, "rb") as f:
                for raw in f:
                    number += 1
                    if not raw.strip():
                        continue
                    if answered >= limit:
                        break
                    answered += 1
                    block.append(answer_line(job, number, raw))
                    if len(block) == BLOCK:
                        for kind, line in reversed(block):
                            outs[kind].write(line)
                        block.clear()
            for kind, line in reversed(block):
                outs[kind].write(line)
            ids = []
            for kind, sink in outs.items():
                ids.append(sink.keep(self.store, f"{job.id}_{kind}.jsonl"))
            return ids[0], ids[1]
        finally:
            for sink in outs.values():
                sink.discard()

    def stats(self) -> dict[str, Any]:
        jobs = self.all()
        with self.lock:
            creates, by_input = self.creates, dict(self.creates_by_input)
        listed = []
        for job in jobs:
            with job.lock:
                listed.append({**job.public(), "outcome": job.outcome, "lines": job.lines})
        return {"batch_creates": creates, "batch_creates_by_input": by_input, "batches": listed,
                "batch_script_left": self.script_snapshot()}


class _Sink:
    """One output file being written: bytes, sha256, lines; kept as an emulator File or dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[bytes] | None = None
        self.sha = hashlib.sha256()
        self.size = self.lines = 0

    def write(self, line: bytes) -> None:
        if self.file is None:
            self.file = open(self.path, "wb")  # noqa: SIM115 - closed in keep/discard
        self.file.write(line)
        self.sha.update(line)
        self.size += len(line)
        self.lines += 1

    def keep(self, store: Store, filename: str) -> str | None:
        if self.file is None:
            return None
        self.file.close()
        self.file = None
        return store.add_generated("batch-output", filename, self.path, self.size, self.sha.hexdigest(),
                                   self.lines).id

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.path.unlink(missing_ok=True)


def _job_id() -> str:
    return Store.new_id("batch")


# -- the fake model ---------------------------------------------------------------------------------


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _tokens(text: str) -> int:
    return max(1, len(text.split()))


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


def answer_line(job: Job, number: int, raw: bytes) -> tuple[str, bytes]:
    """("output", line) or ("errors", line) for input line `number`."""
    try:
        obj = json.loads(raw)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        return "errors", _line({"custom_id": None,
                                "error": {"message": f"line {number} is not a JSON object", "code": "invalid_request"}})
    cid = obj.get("custom_id")

    def failed(message: str, code: str) -> tuple[str, bytes]:
        return "errors", _line({"custom_id": cid, "error": {"message": message, "code": code}})

    body = obj.get("body")
    if not isinstance(body, dict):
        return failed("body must be an object", "invalid_request")
    model = body.get("model") or job.model_id
    if model == UNKNOWN_MODEL:
        return failed(f"Unable to access model {model}. Please visit https://api.together.ai/models "
                      "to view the list of supported models.", "model_not_available")
    rid = hashlib.sha256(f"{job.id}\n{number}\n{cid}".encode()).hexdigest()[:24]
    created = int(job.created_wall)
    if job.endpoint == "/v1/chat/completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return failed("messages must be a non-empty list", "invalid_request")
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"] or messages
        last = users[-1]
        reply = _text(last.get("content") if isinstance(last, dict) else last)[::-1]
        prompt_tokens = sum(_tokens(_text(m.get("content"))) for m in messages if isinstance(m, dict))
        answer: dict[str, Any] = {
            "id": f"chatcmpl-{rid}", "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                         "finish_reason": "stop", "logprobs": None}],
        }
    elif job.endpoint == "/v1/completions":
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return failed("prompt must be a string", "invalid_request")
        reply, prompt_tokens = prompt[::-1], _tokens(prompt)
        answer = {"id": f"cmpl-{rid}", "object": "text_completion", "created": created, "model": model,
                  "choices": [{"index": 0, "text": reply, "finish_reason": "stop", "logprobs": None}]}
    else:  # audio transcriptions and translations
        reply = str(body.get("file", ""))[::-1]
        prompt_tokens = 1
        answer = {"text": reply}
    answer["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": _tokens(reply),
                       "total_tokens": prompt_tokens + _tokens(reply)}
    return "output", _line({"id": f"batch_req_{rid}", "custom_id": cid,
                            "response": {"status_code": 200, "request_id": f"req_{rid}", "body": answer},
                            "error": None})


# -- routes -----------------------------------------------------------------------------------------


_JOB_ROUTE = re.compile(r"^/v1/batches/([^/]+)(/cancel)?$")


def match(method: str, path: str) -> tuple[str, str | None]:
    if path == "/v1/batches":
        return {"POST": "batch_create", "GET": "batch_list"}.get(method, "unknown"), None
    m = _JOB_ROUTE.match(path)
    if m:
        route = {("GET", None): "batch_retrieve", ("POST", "/cancel"): "batch_cancel"}.get((method, m.group(2)))
        if route:
            return route, m.group(1)
    return "unknown", None


def _fail(h: Handler, status: int, message: str, headers: dict[str, str] | None = None,
          **extra: Any) -> NoReturn:
    h.drain()
    h.send(status, {"error": message, **extra}, headers)
    raise Done


def _create_fields(h: Handler, fields: dict[str, Any]) -> dict[str, Any]:
    input_file_id, endpoint = fields.get("input_file_id"), fields.get("endpoint")
    if not isinstance(input_file_id, str) or not input_file_id:
        _fail(h, 400, "input_file_id is required")
    if not isinstance(endpoint, str) or not endpoint:
        _fail(h, 400, "endpoint is required")
    if endpoint not in ENDPOINTS:
        _fail(h, 400, f"unsupported endpoint {endpoint!r}; supported: {', '.join(sorted(ENDPOINTS))}")
    window = fields.get("completion_window") or "24h"
    if not isinstance(window, str) or not re.fullmatch(r"[1-9]\d{0,3}h", window):
        _fail(h, 400, f"invalid completion_window {window!r} (expected hours, such as 24h)")
    priority = fields.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        _fail(h, 400, "priority must be an integer")
    model_id = fields.get("model_id")
    if model_id is not None and not isinstance(model_id, str):
        _fail(h, 400, "model_id must be a string")
    return {"input_file_id": input_file_id, "endpoint": endpoint, "completion_window": window,
            "priority": priority, "model_id": model_id or None}


def create(h: Handler, _id: str | None, query: dict[str, str]) -> None:
    book = h.emu.batches
    fields = params(h, query)
    fault = book._take("create_status")
    if fault:
        status = int(fault["create_status"])
        _faults.injected(h, f"batch_create_{status}")
        headers, extra = {}, {}
        if status == 429:
            headers = _faults.retry_after_headers(float(fault.get("retry_after", h.emu.faults.retry_after_seconds)))
            extra = {"error_type": str(fault.get("error_type", "dynamic_request_limited"))}
        _fail(h, status, f"scripted {status} on batch create", headers, **extra)
    wanted = _create_fields(h, fields)
    rec = h.store.get(wanted["input_file_id"])
    if rec is None or rec.state != "uploaded":
        _fail(h, 400, f"input file {wanted['input_file_id']} not found")
    if rec.purpose != "batch-api":
        _fail(h, 400, f"input file {rec.id} has purpose {rec.purpose!r}, not 'batch-api'")
    if rec.processing_status != "COMPLETED":
        _fail(h, 400, f"input file {rec.id} is not processed (processing_status {rec.processing_status})")
    job = book.create(wanted, rec.line_count or 0, rec.bytes)
    with job.lock:
        answer = {"job": job.public(), "warning": WARNING}
    h.send(201, answer)


def _job(h: Handler, job_id: str | None) -> Job:
    job = h.emu.batches.get(job_id or "")
    if job is None:
        _fail(h, 404, f"batch job {job_id} not found")
    return job


def retrieve(h: Handler, job_id: str | None, query: dict[str, str]) -> None:
    h.drain()
    job = _job(h, job_id)
    with job.lock:
        answer = job.public()
    h.send(200, answer)


def listing(h: Handler, _id: str | None, query: dict[str, str]) -> None:
    h.drain()
    answer = []
    for job in h.emu.batches.all():
        with job.lock:
            answer.append(job.public())
    h.send(200, answer)


def cancel(h: Handler, job_id: str | None, query: dict[str, str]) -> None:
    h.drain()
    job = _job(h, job_id)
    terminal = h.emu.batches.cancel(job)
    if terminal:
        _fail(h, 409, f"Cannot cancel job - already in terminal state: {terminal}")
    with job.lock:
        answer = job.public()
    h.send(200, answer)


ROUTES: dict[str, RouteFn] = {
    "batch_create": create,
    "batch_list": listing,
    "batch_retrieve": retrieve,
    "batch_cancel": cancel,
}

BATCHES = Api(root="/v1/batches", match=match, routes=ROUTES)
