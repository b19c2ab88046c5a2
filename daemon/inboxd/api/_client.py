"""`FilesClient`: the one object the rest of inboxd uses to talk to the Files API."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from pydantic import SecretStr

from .._constants import PROCESSING_FAILED
from ..config import ApiConfig, UploadConfig
from ..retry import PROCESSING_POLL
from . import _batches
from ._answers import check_id, error_text
from ._bandwidth import Bandwidth, metered
from ._batches import BatchJob
from ._bodies import sha256_of
from ._errors import AuthError, Cancelled, ProtocolError, RejectedError, SourceChangedError, TransientError
from ._models import FileObject
from ._network import resolve_network
from ._transport import Observer, Transport
from ._upload import OnCreated, Source, abort, file_type_of, multipart, retrieve, single


@dataclass
class UploadResult:
    file: FileObject
    method: str  # single | multipart | existing
    parts: int
    attempts: int  # 1 + the requests that were retried (0 retries: 1)
    sha256: str
    bytes: int
    seconds: float


class FilesClient:
    """Thread-safe: each thread gets its own `requests.Session` (connection reuse per worker)."""

    def __init__(self, api: ApiConfig, upload: UploadConfig, key: SecretStr | str, *,
                 observer: Observer | None = None) -> None:
        self.api, self.upload_config = api, upload
        self.base = api.base_url.rstrip("/")
        secret = key.get_secret_value() if isinstance(key, SecretStr) else key
        self._t = Transport(secret, timeout=api.timeout_seconds, max_retries=api.max_retries, observer=observer,
                            network=resolve_network(api))
        # upload.max_bytes_per_second: one bucket for every thread that uploads through this client
        self.bandwidth = Bandwidth.of(upload.max_bytes_per_second)

    def __repr__(self) -> str:
        return f"FilesClient(base={self.base!r})"

    def upload(self, path: Path, purpose: str, *, file_name: str | None = None, sha256: str | None = None,
               progress: Callable[[int], None] | None = None, cancel: threading.Event | None = None,
               on_created: OnCreated | None = None, limiter: Bandwidth | None = None,
               expected_size: int | None = None) -> UploadResult:
        """`limiter`: a bucket of this upload's own (an inbox's cap), charged besides the client's.
        `sha256` given with `expected_size` (the size it was computed for) is not hashed again; a
        file that no longer has that size raises SourceChangedError (not the server's BadDigest)."""
        t0 = time.monotonic()
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
        try:
            before = os.fstat(fd)
            if sha256 and expected_size is not None and before.st_size != expected_size:
                raise SourceChangedError(f"{Path(path).name}: {before.st_size} bytes, not the {expected_size} "
                                         "that were checked")
            digest = sha256 or sha256_of(fd, before.st_size, cancel)
            src = Source(fd=fd, size=before.st_size, name=file_name or Path(path).name,
                         file_type=file_type_of(file_name or Path(path).name), sha256=digest,
                         progress=metered(progress, limiter, self.bandwidth), cancel=cancel)
            if src.size > self.upload_config.multipart_threshold:
                out = multipart(self._t, self.base, src, purpose, self.upload_config, on_created)
            else:
                out = single(self._t, self.base, src, purpose, on_created)
            after = os.fstat(fd)
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
                raise SourceChangedError(f"{path.name}: the file changed while it was uploaded")
        finally:
            os.close(fd)
        return UploadResult(file=out.file, method=out.method, parts=out.parts, attempts=out.attempts,
                            sha256=digest, bytes=src.size, seconds=time.monotonic() - t0)

    def retrieve(self, file_id: str) -> FileObject:
        return retrieve(self._t, self.base, file_id)

    def wait_for_processing(self, file_id: str, timeout: float | None = None,
                            cancel: threading.Event | None = None,
                            on_poll: Callable[[], None] | None = None) -> FileObject:
        """Poll until processing_status is terminal; RejectedError on FAILED/INVALID_FORMAT.
        `cancel` ends the wait (Cancelled); `on_poll` is called after every answer (a heartbeat)."""
        limit = timeout if timeout is not None else self.upload_config.processing_timeout_seconds
        deadline = time.monotonic() + limit
        polls = 0
        while True:
            obj = retrieve(self._t, self.base, file_id, cancel=cancel)
            polls += 1
            delay = PROCESSING_POLL.delay(polls)
            if on_poll is not None:
                on_poll()
            status = obj.processing_status
            if status is None or status == "COMPLETED":
                return obj
            if status in PROCESSING_FAILED:
                report = obj.validation_report
                why = (report or {}).get("error") or status
                raise RejectedError(f"processing of {file_id} ended {status}: {why}", route="retrieve",
                                    report=report)
            if time.monotonic() + delay > deadline:
                raise TransientError(f"processing of {file_id} still {status} after the timeout", route="retrieve")
            if cancel is not None and cancel.wait(delay):
                raise Cancelled("cancelled while waiting for processing")
            if cancel is None:
                time.sleep(delay)

    def lookup(self, file_id: str) -> FileObject | None:
        """The file object, or None when the server does not know the id (404)."""
        try:
            return retrieve(self._t, self.base, file_id)
        except ProtocolError as exc:
            if exc.status == 404:
                return None
            raise

    def delete(self, file_id: str) -> bool:
        """Delete a file object (an orphan of an abandoned upload); True if it existed."""
        route = "delete"
        r = self._t.request(route, "DELETE", f"{self.base}/files/{check_id(file_id, route)}")
        if r.status_code in (200, 204):
            r.close()
            return True
        if r.status_code == 404:
            r.close()
            return False
        text = error_text(r, route)
        raise ProtocolError(f"{route}: HTTP {r.status_code}: {text}", route=route, status=r.status_code)

    def abort_multipart(self, upload_id: str, file_id: str) -> None:
        """Abort a multipart upload left by an earlier run (it cannot be resumed: SPEC §9)."""
        abort(self._t, self.base, upload_id, file_id)

    def check_key(self) -> None:
        """A cheap authenticated call: AuthError if the key is refused."""
        route = "retrieve"
        r = self._t.request(route, "GET", f"{self.base}/files/{check_id('inboxd-key-probe', route)}")
        if r.status_code not in (200, 404):
            text = error_text(r, route)
            raise ProtocolError(f"key probe: unexpected HTTP {r.status_code}: {text}", route=route,
                                status=r.status_code)
        r.close()

    def close(self) -> None:
        self._t.close()

    # --- the Batch API (SPEC §9; api/_batches.py) --------------------------------------------

    def create_batch(self, input_file_id: str, endpoint: str, *, completion_window: str | None = "24h",
                     priority: int | None = None, model_id: str | None = None,
                     cancel: threading.Event | None = None) -> tuple[BatchJob, str | None]:
        """One POST /batches, never retried (not idempotent): (job, warning)."""
        return _batches.create(self._t, self.base, input_file_id, endpoint, completion_window=completion_window,
                               priority=priority, model_id=model_id, cancel=cancel)

    def get_batch(self, batch_id: str, *, retries: bool = True,
                  cancel: threading.Event | None = None) -> BatchJob:
        return _batches.get(self._t, self.base, batch_id, retries=retries, cancel=cancel)

    def list_batches(self, *, retries: bool = True, cancel: threading.Event | None = None) -> list[BatchJob]:
        return _batches.list_jobs(self._t, self.base, retries=retries, cancel=cancel)

    def cancel_batch(self, batch_id: str) -> BatchJob:
        return _batches.cancel_job(self._t, self.base, batch_id)

    def file_content(self, file_id: str, *, offset: int = 0,
                     cancel: threading.Event | None = None) -> requests.Response:
        """GET /files/{id}/content from `offset`, streamed (the caller reads and closes it)."""
        return _batches.content(self._t, self.base, file_id, offset=offset, cancel=cancel)


__all__ = ["FilesClient", "UploadResult", "AuthError"]
