"""What the batch round trip needs of the Files API client, as a Protocol: `inboxd.api.FilesClient`
and the pipeline's `inboxd.api.Client` are ones; tests give a fake of just these calls."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

from ..api._batches import BatchJob


class BatchClient(Protocol):
    def upload(self, path: Path, purpose: str, *, sha256: str | None = None,
               expected_size: int | None = None) -> Any: ...  # UploadResult: .file.id

    def wait_for_processing(self, file_id: str) -> Any: ...  # FileObject: .id

    def create_batch(self, input_file_id: str, endpoint: str, *, completion_window: str | None = "24h",
                     priority: int | None = None, model_id: str | None = None,
                     cancel: threading.Event | None = None) -> tuple[BatchJob, str | None]: ...

    def get_batch(self, batch_id: str, *, retries: bool = True,
                  cancel: threading.Event | None = None) -> BatchJob: ...

    def list_batches(self, *, retries: bool = True, cancel: threading.Event | None = None) -> list[BatchJob]: ...

    def file_content(self, file_id: str, *, offset: int = 0, cancel: threading.Event | None = None) -> Any: ...
