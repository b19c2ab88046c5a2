"""`inboxd upload FILE --purpose P [--config PATH] [--mode M | --no-check] [--json] [--wait]`.

The file is checked as the daemon checks it (the same `check_file`, `--mode` default basic)
before a byte is sent. Exit 0 uploaded; 1 the file failed (its check, the upload, or the
server's processing ended FAILED/INVALID_FORMAT, with or without --wait); 2 is the caller's
(usage). With --json stdout is always exactly one JSON object: the file object, or
``{"error": {...}}`` (with the file object too when the server has one).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

from ..config import Config
from ..log import register_secret
from ._client import FilesClient
from ._errors import ApiError

FAILED_STATUSES = ("FAILED", "INVALID_FORMAT")


def upload_command(config: Config, key: SecretStr, path: Path, purpose: str, *, as_json: bool, wait: bool,
                   mode: str = "basic", check: bool = True) -> int:
    """Exit 0 uploaded, 1 the file or its upload failed (one line on stderr), 2 is the caller's (usage)."""
    register_secret(key.get_secret_value())
    out = _Output(path, as_json)
    try:
        size = path.stat().st_size
    except OSError as exc:
        return out.fail("unreadable", f"{path}: {exc.strerror}", stage="inspect")
    if check:
        failed = _check(config, path, purpose, mode, out)
        if failed is not None:
            return failed
    client = FilesClient(config.api, config.upload, key)
    bar = _progress_bar(path.name, size) if sys.stderr.isatty() else None
    try:
        result = client.upload(path, purpose, progress=bar.advance if bar else None)
        file_obj = result.file
        if wait and file_obj.processing_status not in FAILED_STATUSES:
            file_obj = client.wait_for_processing(file_obj.id)
    except ApiError as exc:
        extra: dict[str, Any] = {"route": exc.route, "status": exc.status}
        report = getattr(exc, "report", None)
        if report is not None:
            extra["validation_report"] = report
        return out.fail(exc.kind, f"upload failed ({exc.kind}): {_explain(exc, config.api.base_url)}",
                        stage="upload", **extra)
    except OSError as exc:
        return out.fail("unreadable", f"cannot read it: {exc.strerror}", stage="upload")
    finally:
        if bar:
            bar.close()
        client.close()
    file_json = {**file_obj.model_dump(mode="json"), "inboxd": {
        "method": result.method, "parts": result.parts, "attempts": result.attempts,
        "sha256": result.sha256, "seconds": round(result.seconds, 3)}}
    if file_obj.processing_status in FAILED_STATUSES:
        # the server took the bytes and refused the content: the file failed, --wait or not
        why = (file_obj.validation_report or {}).get("error") or file_obj.processing_status
        return out.fail("rejected", f"{file_obj.id}: processing ended {file_obj.processing_status}: {why}",
                        stage="processing", file=file_json)
    if as_json:
        print(json.dumps(file_json, indent=2))
    else:
        status = f", {file_obj.processing_status}" if file_obj.processing_status else ""
        print(f"{file_obj.id}  {path.name}  {result.bytes} bytes  {result.method}{status}  "
              f"{result.seconds:.2f} s")
    return 0


def _check(config: Config, path: Path, purpose: str, mode: str, out: _Output) -> int | None:
    """The daemon's check (pipeline/process.py `_check`): None when the file passes."""
    from ..check import check_file

    try:
        report = check_file(path, purpose, mode, name=path.name, max_line_bytes=config.check.max_line_bytes,
                            max_errors=config.check.max_errors)
    except OSError as exc:
        return out.fail("unreadable", f"cannot read it: {exc.strerror}", stage="inspect")
    if report.passed:
        return None
    first = report.errors[0] if report.errors else None
    if not out.as_json:
        for issue in report.errors:
            where = f"{path}:{issue.line}" if issue.line is not None else f"{path}"
            print(f"{where}: {issue.rule}: {issue.message}", file=sys.stderr)
    message = (f"not uploaded: the {mode} check failed ({len(report.errors)} error(s)"
               f"{', stopped at the limit' if report.truncated else ''}); --no-check uploads it anyway")
    return out.fail(first.rule if first else "invalid", message, stage="validate",
                    line=first.line if first else None, validation=report.to_json())


def _explain(exc: ApiError, base_url: str) -> str:
    """The error, and for a 404 on /files from a base_url without /v1 what is probably wrong."""
    text = str(exc)
    path = urlsplit(base_url).path.rstrip("/")
    if exc.status == 404 and exc.route in ("create", "initiate") and not path.endswith("/v1"):
        text += (f" -- {base_url} answers 404 on /files: the base url probably lacks /v1 "
                 f"(try {base_url.rstrip('/')}/v1)")
    return text


class _Output:
    """One line on stderr per failure; with --json also exactly one JSON object on stdout."""

    def __init__(self, path: Path, as_json: bool) -> None:
        self.path, self.as_json = path, as_json

    def fail(self, kind: str, message: str, *, stage: str, file: dict[str, Any] | None = None, **extra: Any) -> int:
        print(f"inboxd: {self.path.name}: {message}", file=sys.stderr)
        if self.as_json:
            error = {"kind": kind, "stage": stage, "message": message, "name": str(self.path),
                     **{k: v for k, v in extra.items() if v is not None}}
            body: dict[str, Any] = {"error": error}
            if file is not None:
                body["file"] = file
            print(json.dumps(body, indent=2))
        return 1


def usage_error_json(message: str) -> None:
    """`inboxd upload --json` with a usage error (no key, a bad config): still one JSON object."""
    print(json.dumps({"error": {"kind": "usage", "stage": "config", "message": message}}, indent=2))


class _Bar:
    """tqdm over the bytes sent; retried bytes never push it past the total."""

    def __init__(self, name: str, total: int) -> None:
        from tqdm import tqdm

        self.total = total
        self.sent = 0
        self.tqdm = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr,
                         dynamic_ncols=True)

    def advance(self, n: int) -> None:
        n = min(n, self.total - self.sent)
        if n > 0:
            self.sent += n
            self.tqdm.update(n)

    def close(self) -> None:
        self.tqdm.close()


def _progress_bar(name: str, total: int) -> _Bar:
    return _Bar(name, total)
