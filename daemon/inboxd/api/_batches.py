"""The Batch API calls (SPEC §9), over the same `Transport` as the Files API.

- `create`: ``POST /batches`` → ``201 {"job": BatchJob, "warning": ...}`` (a bare BatchJob is
  accepted too). NOT idempotent, so it is never retried here: a connection cut after the
  request went out may have created the job, and only a look at ``GET /batches`` can tell
  (`inboxd.batch.create_once` does that). A 4xx is `BatchRejected` (permanent: a model the
  account cannot use, an input file of the wrong purpose ...); 429/5xx/resets are
  `TransientError`.
- `get` / `list` / `cancel`: ``GET /batches/{id}`` → the job itself; ``GET /batches`` → a
  plain array (``{"data": [...]}`` accepted too); ``POST /batches/{id}/cancel`` → the job.
  ``retries=False`` makes one attempt (the poller backs off per job on its own instead of
  sleeping inside a call while other jobs wait).
- `content`: ``GET /files/{id}/content``, streamed, from a byte offset (``Range: bytes=N-``).
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import requests
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from .._constants import BATCH_TERMINAL
from ._answers import check_id, error_text, read_json
from ._errors import ProtocolError, RejectedError
from ._transport import Transport

STATUSES = ("VALIDATING", "IN_PROGRESS", "CANCELING", "COMPLETED", "FAILED", "EXPIRED", "CANCELLED")
TERMINAL = BATCH_TERMINAL  # one definition, in inboxd._constants


class BatchRejected(RejectedError):
    """The server refused to create (or cancel) the batch: a 4xx other than 401/403/429. Permanent."""

    kind = "batch_rejected"


class BatchJob(BaseModel):
    """A BatchJob as either official client's server sends it; unknown fields are kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    id: str
    user_id: str | None = None
    input_file_id: str | None = None
    file_size_bytes: int | None = None
    status: str | None = None
    job_deadline: Any = None
    created_at: Any = None
    endpoint: str | None = None
    progress: float | None = None
    model_id: str | None = None
    output_file_id: str | None = Field(None, validation_alias=AliasChoices("output_file_id", "outputFileId"))
    error_file_id: str | None = Field(None, validation_alias=AliasChoices("error_file_id", "errorFileId"))
    error: Any = None
    completed_at: Any = None

    @property
    def terminal(self) -> bool:
        return (self.status or "").upper() in TERMINAL


def job_of(data: Any, route: str) -> BatchJob:
    if isinstance(data, dict) and isinstance(data.get("job"), dict):
        data = data["job"]
    if not isinstance(data, dict):
        raise ProtocolError(f"{route}: the answer is not a batch job", route=route)
    try:
        job = BatchJob.model_validate(data)
    except Exception:  # noqa: BLE001 - pydantic's error echoes the answer; ours names the route
        raise ProtocolError(f"{route}: the answer is not a batch job", route=route) from None
    check_id(job.id, route, "batch")
    for fid in (job.output_file_id, job.error_file_id):
        if fid:
            check_id(fid, route)
    if job.status:
        job.status = job.status.upper()
    return job


def _once(t: Transport) -> Transport:
    """The same transport (sessions, key, proxy, CA) making one attempt per call."""
    quick = copy.copy(t)
    quick.max_retries = 0
    return quick


def _fail(r: requests.Response, route: str, *, rejected: bool = False) -> Exception:
    text = error_text(r, route)
    if rejected and 400 <= r.status_code < 500:
        return BatchRejected(f"{route}: the server refused the batch (HTTP {r.status_code}): {text}", route=route,
                             status=r.status_code)
    return ProtocolError(f"{route}: HTTP {r.status_code}: {text}", route=route, status=r.status_code)


def create(t: Transport, base: str, input_file_id: str, endpoint: str, *, completion_window: str | None = "24h",
           priority: int | None = None, model_id: str | None = None,
           cancel: threading.Event | None = None) -> tuple[BatchJob, str | None]:
    """One ``POST /batches`` (never retried: see the module doc). Returns the job and the warning."""
    route = "batch_create"
    body: dict[str, Any] = {"input_file_id": check_id(input_file_id, route), "endpoint": endpoint}
    if completion_window:
        body["completion_window"] = completion_window
    if priority is not None:
        body["priority"] = priority
    if model_id:
        body["model_id"] = model_id
    r = _once(t).request(route, "POST", f"{base}/batches", json=body, cancel=cancel)
    if r.status_code not in (200, 201):
        raise _fail(r, route, rejected=True)
    data = read_json(r, route)
    warning = data.get("warning") if isinstance(data, dict) else None
    return job_of(data, route), (str(warning) if warning else None)


def get(t: Transport, base: str, batch_id: str, *, retries: bool = True,
        cancel: threading.Event | None = None) -> BatchJob:
    route = "batch_get"
    url = f"{base}/batches/{check_id(batch_id, route, 'batch', given=True)}"
    r = (t if retries else _once(t)).request(route, "GET", url, cancel=cancel)
    if r.status_code != 200:
        raise _fail(r, route)
    return job_of(read_json(r, route), route)


def list_jobs(t: Transport, base: str, *, retries: bool = True,
              cancel: threading.Event | None = None) -> list[BatchJob]:
    route = "batch_list"
    r = (t if retries else _once(t)).request(route, "GET", f"{base}/batches", cancel=cancel)
    if r.status_code != 200:
        raise _fail(r, route)
    data = read_json(r, route)
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise ProtocolError(f"{route}: the answer is not a list of batch jobs", route=route)
    return [job_of(item, route) for item in data]


def cancel_job(t: Transport, base: str, batch_id: str) -> BatchJob:
    """``POST /batches/{id}/cancel``; a job already terminal (409) or unknown (404) is BatchRejected."""
    route = "batch_cancel"
    r = t.request(route, "POST", f"{base}/batches/{check_id(batch_id, route, 'batch', given=True)}/cancel")
    if r.status_code != 200:
        raise _fail(r, route, rejected=True)
    return job_of(read_json(r, route), route)


def content(t: Transport, base: str, file_id: str, *, offset: int = 0,
            cancel: threading.Event | None = None) -> requests.Response:
    """``GET /files/{id}/content`` from `offset` (``Range: bytes=offset-``), streamed: the caller
    reads the body (``iter_content``) and closes it. 200 means the whole file (a server that
    ignored the Range), 206 the rest from `offset`, 416 nothing left; others raise."""
    route = "content"
    # identity: byte offsets are the file's own bytes, never a compressed stream's
    headers = {"Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    r = t.request(route, "GET", f"{base}/files/{check_id(file_id, route)}/content", headers=headers, cancel=cancel,
                  stream_body=True)
    if r.status_code in (200, 206, 416):
        return r
    raise _fail(r, route)
