"""What the pipeline and the batch package ask of a Files API client: `FilesClient` is the
real one; the unit tests put an in-memory fake behind the same Protocol."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import requests

from ._batches import BatchJob
from ._client import UploadResult
from ._models import FileObject
from ._upload import OnCreated


class Client(Protocol):
    def upload(self, path: Path, purpose: str, *, file_name: str | None = None, sha256: str | None = None,
               progress: Callable[[int], None] | None = None, cancel: threading.Event | None = None,
               on_created: OnCreated | None = None, expected_size: int | None = None) -> UploadResult: ...

    def wait_for_processing(self, file_id: str, timeout: float | None = None, cancel: threading.Event | None = None,
                            on_poll: Callable[[], None] | None = None) -> FileObject: ...

    def lookup(self, file_id: str) -> FileObject | None: ...

    def delete(self, file_id: str) -> bool: ...

    def abort_multipart(self, upload_id: str, file_id: str) -> None: ...

    def check_key(self) -> None: ...

    def close(self) -> None: ...

    def create_batch(self, input_file_id: str, endpoint: str, *, completion_window: str | None = "24h",
                     priority: int | None = None, model_id: str | None = None,
                     cancel: threading.Event | None = None) -> tuple[BatchJob, str | None]: ...

    def get_batch(self, batch_id: str, *, retries: bool = True, cancel: threading.Event | None = None) -> BatchJob: ...

    def list_batches(self, *, retries: bool = True, cancel: threading.Event | None = None) -> list[BatchJob]: ...

    def cancel_batch(self, batch_id: str) -> BatchJob: ...

    def file_content(self, file_id: str, *, offset: int = 0,
                     cancel: threading.Event | None = None) -> requests.Response: ...
