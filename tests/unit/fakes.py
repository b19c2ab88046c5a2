"""An in-memory Files and Batch API behind the client Protocol (`inboxd.api.Client`), for
unit tests of the logic above the client. It keeps what a server keeps (files, jobs) and
what a test asks about (the calls), and fails where a test tells it to."""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from inboxd.api import ApiError, FileObject, TransientError, UploadResult
from inboxd.api._batches import BatchJob


class FakeClient:
    def __init__(self) -> None:
        self.files: dict[str, FileObject] = {}
        self.jobs: dict[str, BatchJob] = {}
        self.calls: list[tuple[str, Any]] = []
        self.fail: dict[str, list[BaseException]] = {}  # method -> exceptions to raise, in turn
        self.processing = "COMPLETED"
        self.during_upload: Callable[[], None] | None = None  # runs between the create and the bytes
        self.api = SimpleNamespace(max_retries=0)  # create_once tries once more than the API retries
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def _call(self, name: str, arg: Any) -> None:
        with self._lock:
            self.calls.append((name, arg))
            pending = self.fail.get(name)
            if pending:
                raise pending.pop(0)

    def count(self, name: str) -> int:
        return sum(1 for n, _ in self.calls if n == name)

    def upload(self, path: Path, purpose: str, *, file_name: str | None = None, sha256: str | None = None,
               progress: Callable[[int], None] | None = None, cancel: threading.Event | None = None,
               on_created: Any = None, expected_size: int | None = None) -> UploadResult:
        self._call("upload", Path(path).name)
        data = Path(path).read_bytes()
        file_id = f"file-{next(self._ids)}"
        if on_created is not None:
            on_created(file_id, None)
        if self.during_upload is not None:
            self.during_upload()
        obj = FileObject(id=file_id, purpose=purpose, filename=file_name, bytes=len(data), processed=True,
                         processing_status=self.processing, line_count=data.count(b"\n"))
        self.files[file_id] = obj
        if progress is not None:
            progress(len(data))
        return UploadResult(file=obj, method="single", parts=1, attempts=1,
                            sha256=sha256 or hashlib.sha256(data).hexdigest(), bytes=len(data), seconds=0.0)

    def wait_for_processing(self, file_id: str, timeout: float | None = None, cancel: threading.Event | None = None,
                            on_poll: Callable[[], None] | None = None) -> FileObject:
        self._call("wait_for_processing", file_id)
        if on_poll is not None:
            on_poll()
        obj = self.files[file_id] = self.files[file_id].model_copy(update={"processing_status": "COMPLETED"})
        return obj

    def lookup(self, file_id: str) -> FileObject | None:
        self._call("lookup", file_id)
        return self.files.get(file_id)

    def delete(self, file_id: str) -> bool:
        self._call("delete", file_id)
        return self.files.pop(file_id, None) is not None

    def abort_multipart(self, upload_id: str, file_id: str) -> None:
        self._call("abort_multipart", upload_id)
        self.files.pop(file_id, None)

    def check_key(self) -> None:
        self._call("check_key", None)

    def close(self) -> None:
        pass

    def create_batch(self, input_file_id: str, endpoint: str, *, completion_window: str | None = "24h",
                     priority: int | None = None, model_id: str | None = None,
                     cancel: threading.Event | None = None) -> tuple[BatchJob, str | None]:
        self._call("create_batch", input_file_id)
        job = BatchJob.model_validate({"id": f"batch-{next(self._ids)}", "input_file_id": input_file_id,
                                       "endpoint": endpoint, "status": "VALIDATING", "progress": 0.0})
        self.jobs[job.id] = job
        return job, None

    def get_batch(self, batch_id: str, *, retries: bool = True, cancel: threading.Event | None = None) -> BatchJob:
        self._call("get_batch", batch_id)
        return self.jobs[batch_id]

    def list_batches(self, *, retries: bool = True, cancel: threading.Event | None = None) -> list[BatchJob]:
        self._call("list_batches", None)
        return list(self.jobs.values())

    def cancel_batch(self, batch_id: str) -> BatchJob:
        self._call("cancel_batch", batch_id)
        return self.jobs[batch_id]

    def file_content(self, file_id: str, *, offset: int = 0, cancel: threading.Event | None = None) -> Any:
        raise ApiError("not served by the fake")


def transient(message: str = "503 from the fake") -> TransientError:
    return TransientError(message, route="upload", status=503)
