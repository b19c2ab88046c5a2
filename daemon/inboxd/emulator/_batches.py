"""The Batch API under /v1/batches (SPEC §9): the routes, written against `Call`, the few
things a batch route reads of a request; `_batch_jobs` holds the jobs, `_batch_model` the fake
model, `_batch_output` the output and error files.

Routes (route names in stats and scripts in brackets):
  POST /v1/batches              [batch_create]  json {input_file_id, endpoint, completion_window?,
                                                priority?, model_id?} -> 201 {"job": BatchJob, "warning": ...}
  GET  /v1/batches              [batch_list]    -> a plain JSON array of BatchJobs (oldest first)
  GET  /v1/batches/{id}         [batch_retrieve] -> the BatchJob itself
  POST /v1/batches/{id}/cancel  [batch_cancel]  -> the BatchJob (CANCELING, CANCELLED shortly after);
                                                a terminal job: 409; an unknown id: 404
Errors of these routes are {"error": "..."} (auth failures and the generic random or scripted
faults keep the Files API's {"error": {"message": ...}}). A create needs an existing input file
of purpose batch-api whose processing_status is COMPLETED, no more requests than
--batch-max-requests (50,000) nor bytes than --batch-max-bytes (100 MB), and a known endpoint
(/v1/chat/completions, /v1/completions, /v1/audio/transcriptions, /v1/audio/translations);
anything else is a 400.

Knobs (flags, or `POST /v1/_emulator/faults` with the key; a job keeps the values it was
created with): batch_seconds (--batch-seconds, default 2.0: a job's time, 0 = done at the first
look), batch_max_requests, batch_max_bytes, batch_transient_rate (--batch-transient-rate: the
share of requests answered with a 429 in the error file, per job and request, see
`_batch_model`), batch_expire_next (--batch-expire-next N: the next N jobs end EXPIRED with half
their requests answered; the faults endpoint adds N more).

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
({"route": "batch_create", "status": 503}). `POST /v1/_emulator/reset` clears the batch script,
the counters and the knobs set since the start, not the jobs.

Stats (`GET /v1/_emulator/stats`): batch_creates (successful creates), batch_creates_by_input
({input_file_id: n}: a second create for the same input shows as 2), batches (every job as a
BatchJob plus "outcome" and "lines", oldest first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from . import _faults
from ._batch_jobs import BatchBook, Job
from ._forms import params
from ._routing import Api, RouteFn
from ._wire import Done

if TYPE_CHECKING:
    from ._request import Request

ENDPOINTS = {"/v1/chat/completions", "/v1/completions", "/v1/audio/transcriptions", "/v1/audio/translations"}
WARNING = "completion_window is best-effort: most jobs finish within 24h, some take longer"


class InputFile(Protocol):
    """What a create reads of its input file."""

    @property
    def id(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def purpose(self) -> str: ...
    @property
    def processing_status(self) -> str | None: ...
    @property
    def line_count(self) -> int | None: ...
    @property
    def bytes(self) -> int: ...


class Call(Protocol):
    """What a batch route reads of a request."""

    book: BatchBook
    retry_after: float  # the faults' Retry-After, for a scripted 429

    def fields(self) -> dict[str, Any]: ...  # the request's fields (query, JSON body or form)

    def input_file(self, file_id: str) -> InputFile | None: ...

    def injected(self, kind: str) -> None: ...  # count a fault the route injected


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


class Refused(Exception):
    """The route's answer is an error: {"error": message, **extra}."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.answer = Answer(status, {"error": message, **extra}, headers or {})


def _create_fields(fields: dict[str, Any]) -> dict[str, Any]:
    input_file_id, endpoint = fields.get("input_file_id"), fields.get("endpoint")
    if not isinstance(input_file_id, str) or not input_file_id:
        raise Refused(400, "input_file_id is required")
    if not isinstance(endpoint, str) or not endpoint:
        raise Refused(400, "endpoint is required")
    if endpoint not in ENDPOINTS:
        raise Refused(400, f"unsupported endpoint {endpoint!r}; supported: {', '.join(sorted(ENDPOINTS))}")
    window = fields.get("completion_window") or "24h"
    if not isinstance(window, str) or not re.fullmatch(r"[1-9]\d{0,3}h", window):
        raise Refused(400, f"invalid completion_window {window!r} (expected hours, such as 24h)")
    priority = fields.get("priority")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise Refused(400, "priority must be an integer")
    model_id = fields.get("model_id")
    if model_id is not None and not isinstance(model_id, str):
        raise Refused(400, "model_id must be a string")
    return {"input_file_id": input_file_id, "endpoint": endpoint, "completion_window": window,
            "priority": priority, "model_id": model_id or None}


def _scripted_refusal(call: Call) -> None:
    fault = call.book.script.take("create_status")
    if not fault:
        return
    status = int(fault["create_status"])
    call.injected(f"batch_create_{status}")
    headers: dict[str, str] = {}
    extra: dict[str, Any] = {}
    if status == 429:
        headers = _faults.retry_after_headers(float(fault.get("retry_after", call.retry_after)))
        extra = {"error_type": str(fault.get("error_type", "dynamic_request_limited"))}
    raise Refused(status, f"scripted {status} on batch create", headers, **extra)


def _usable_input(call: Call, file_id: str) -> InputFile:
    rec = call.input_file(file_id)
    if rec is None or rec.state != "uploaded":
        raise Refused(400, f"input file {file_id} not found")
    if rec.purpose != "batch-api":
        raise Refused(400, f"input file {rec.id} has purpose {rec.purpose!r}, not 'batch-api'")
    if rec.processing_status != "COMPLETED":
        raise Refused(400, f"input file {rec.id} is not processed (processing_status {rec.processing_status})")
    too_big = call.book.limit_exceeded(rec.line_count or 0, rec.bytes)
    if too_big:
        raise Refused(400, too_big)
    return rec


def create(call: Call, _id: str | None) -> Answer:
    fields = call.fields()
    _scripted_refusal(call)
    wanted = _create_fields(fields)
    rec = _usable_input(call, wanted["input_file_id"])
    job = call.book.create(wanted, rec.line_count or 0, rec.bytes)
    with job.lock:
        return Answer(201, {"job": job.public(), "warning": WARNING})


def _job(call: Call, job_id: str | None) -> Job:
    job = call.book.get(job_id or "")
    if job is None:
        raise Refused(404, f"batch job {job_id} not found")
    return job


def retrieve(call: Call, job_id: str | None) -> Answer:
    job = _job(call, job_id)
    with job.lock:
        return Answer(200, job.public())


def listing(call: Call, _id: str | None) -> Answer:
    answer = []
    for job in call.book.all():
        with job.lock:
            answer.append(job.public())
    return Answer(200, answer)


def cancel(call: Call, job_id: str | None) -> Answer:
    job = _job(call, job_id)
    terminal = call.book.cancel(job)
    if terminal:
        raise Refused(409, f"Cannot cancel job - already in terminal state: {terminal}")
    with job.lock:
        return Answer(200, job.public())


# -- the handler side ---------------------------------------------------------------------------


class _HandlerCall:
    """`Call` over the emulator's request handler."""

    def __init__(self, h: Request, query: dict[str, str]) -> None:
        self.h = h
        self.query = query
        self.book = h.emu.batches
        self.retry_after = h.emu.faults.retry_after_seconds

    def fields(self) -> dict[str, Any]:
        return params(self.h, self.query)

    def input_file(self, file_id: str) -> InputFile | None:
        return self.h.store.get(file_id)

    def injected(self, kind: str) -> None:
        _faults.injected(self.h, kind)


def _route(fn: Any) -> RouteFn:
    def answer(h: Request, path_id: str | None, query: dict[str, str]) -> None:
        try:
            got = fn(_HandlerCall(h, query), path_id)
        except Refused as exc:
            got = exc.answer
        h.drain()
        h.send(got.status, got.body, got.headers or None)
        raise Done

    return answer


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


ROUTES: dict[str, RouteFn] = {
    "batch_create": _route(create),
    "batch_list": _route(listing),
    "batch_retrieve": _route(retrieve),
    "batch_cancel": _route(cancel),
}

BATCHES = Api(root="/v1/batches", match=match, routes=ROUTES)
