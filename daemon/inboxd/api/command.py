"""The work of `inboxd upload FILE --purpose P [--mode M | --no-check] [--wait]`, as data.

The file is checked as the daemon checks it (the same `check_file`, `--mode` default basic)
before a byte is sent. `upload_file` returns `Uploaded`, or `UploadFailure` when the file
failed: its check, the upload, or the server's processing (FAILED/INVALID_FORMAT, with or
without --wait). The command line (`inboxd.cli.files`) renders either, as text or --json.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from .._constants import PROCESSING_FAILED
from ..config import Config
from ..log import register_secret
from ._client import FilesClient, UploadResult
from ._errors import ApiError, RejectedError
from ._models import FileObject

if TYPE_CHECKING:
    from ..check import CheckIssue

# called with the file's size when its bytes start to flow; returns what is told each chunk sent
Progress = Callable[[int], Callable[[int], None]]


@dataclass(frozen=True)
class Uploaded:
    file: dict[str, Any]  # the file object, with an "inboxd" section (method, parts, attempts, sha256, seconds)
    obj: FileObject
    result: UploadResult


@dataclass(frozen=True)
class UploadFailure:
    kind: str
    message: str
    stage: str  # inspect | validate | upload | processing
    details: dict[str, Any] = field(default_factory=dict)  # route, status, line, validation...: None = not known
    file: dict[str, Any] | None = None  # the file object, when the server has one
    issues: tuple[CheckIssue, ...] = ()  # the check's errors, when it was the check that failed


def upload_file(config: Config, key: SecretStr, path: Path, purpose: str, *, wait: bool, mode: str = "basic",
                check: bool = True, progress: Progress | None = None) -> Uploaded | UploadFailure:
    register_secret(key.get_secret_value())
    name = path.name
    path = path.resolve()  # a link the user named on the command line is followed (the daemon never does)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return UploadFailure("unreadable", f"{path}: {exc.strerror}", "inspect")
    if check:
        failed = _check(config, path, purpose, mode)
        if failed is not None:
            return failed
    client = FilesClient(config.api, config.upload, key)
    try:
        advance = progress(size) if progress is not None else None
        result = client.upload(path, purpose, file_name=name, progress=advance)
        file_obj = result.file
        if wait and file_obj.processing_status not in PROCESSING_FAILED:
            file_obj = client.wait_for_processing(file_obj.id)
    except ApiError as exc:
        details: dict[str, Any] = {"route": exc.route, "status": exc.status}
        if isinstance(exc, RejectedError) and exc.report is not None:
            details["validation_report"] = exc.report
        return UploadFailure(exc.kind, f"upload failed ({exc.kind}): {_explain(exc, config.api.base_url)}", "upload",
                             details)
    except OSError as exc:
        return UploadFailure("unreadable", f"cannot read it: {exc.strerror}", "upload")
    finally:
        client.close()
    file_json = {**file_obj.model_dump(mode="json"), "inboxd": {
        "method": result.method, "parts": result.parts, "attempts": result.attempts,
        "sha256": result.sha256, "seconds": round(result.seconds, 3)}}
    if file_obj.processing_status in PROCESSING_FAILED:
        # the server took the bytes and refused the content: the file failed, --wait or not
        why = (file_obj.validation_report or {}).get("error") or file_obj.processing_status
        return UploadFailure("rejected", f"{file_obj.id}: processing ended {file_obj.processing_status}: {why}",
                             "processing", file=file_json)
    return Uploaded(file_json, file_obj, result)


def _check(config: Config, path: Path, purpose: str, mode: str) -> UploadFailure | None:
    """The daemon's check (pipeline/process.py `_check`): None when the file passes."""
    from ..check import check_file

    try:
        report = check_file(path, purpose, mode, name=path.name, max_line_bytes=config.check.max_line_bytes,
                            max_errors=config.check.max_errors)
    except OSError as exc:
        return UploadFailure("unreadable", f"cannot read it: {exc.strerror}", "inspect")
    if report.passed:
        return None
    first = report.errors[0] if report.errors else None
    message = (f"not uploaded: the {mode} check failed ({len(report.errors)} error(s)"
               f"{', stopped at the limit' if report.truncated else ''}); --no-check uploads it anyway")
    return UploadFailure(first.rule if first else "invalid", message, "validate",
                         {"line": first.line if first else None, "validation": report.to_json()},
                         issues=tuple(report.errors))


def _explain(exc: ApiError, base_url: str) -> str:
    """The error, and for a 404 on /files from a base_url without /v1 what is probably wrong."""
    text = str(exc)
    path = urlsplit(base_url).path.rstrip("/")
    if exc.status == 404 and exc.route in ("create", "initiate") and not path.endswith("/v1"):
        text += (f" -- {base_url} answers 404 on /files: the base url probably lacks /v1 "
                 f"(try {base_url.rstrip('/')}/v1)")
    return text
