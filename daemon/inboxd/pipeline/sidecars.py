"""The two sidecars (SPEC §3): `inboxd.manifest/v1` in done/, `inboxd.error/v1` in failed/.

Plain dicts built from what the pipeline knows; written atomically by `write_sidecar`.
Their JSON Schemas ship in `inboxd.schemas`. No sidecar ever holds the API key: nothing
here is given it, and every message passes through `inboxd.log.redact_text`.
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .. import __version__
from ..log import redact_text
from ..schemas import ERROR, MANIFEST
from ..state.fs import write_atomic
from .failure import Failure

MANIFEST_SUFFIX = ".manifest.json"
ERROR_SUFFIX = ".error.json"


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def iso_ns(ns: int | None) -> str | None:
    return iso(ns / 1e9) if ns is not None else None


def manifest(
    *,
    file_object: dict[str, Any],
    inbox: Path,
    name: str,
    path: Path | None,
    size: int,
    sha256: str,
    mtime_ns: int,
    validation: dict[str, Any],
    method: str,
    parts: int,
    attempts: int,
    started_at: float,
    finished_at: float,
) -> dict[str, Any]:
    return {
        "schema": MANIFEST,
        "file": file_object,
        "source": {
            "inbox": str(inbox),
            "name": name,
            "path": str(path) if path is not None else None,
            "bytes": size,
            "sha256": sha256,
            "mtime": iso_ns(mtime_ns),
        },
        "validation": validation,
        "upload": {
            "method": method,
            "parts": parts,
            "attempts": max(1, attempts),
            "started_at": iso(started_at),
            "finished_at": iso(finished_at),
            "seconds": round(max(0.0, finished_at - started_at), 3),
            "host": socket.gethostname(),
            "inboxd_version": __version__,
        },
    }


def error_sidecar(
    *,
    inbox: Path,
    name: str,
    path: Path,
    failure: Failure,
    size: int | None = None,
    sha256: str | None = None,
    mtime_ns: int | None = None,
    attempts: int = 0,
    when: float,
) -> dict[str, Any]:
    return {
        "schema": ERROR,
        "source": {
            "inbox": str(inbox),
            "name": name,
            "path": str(path),
            "kind": failure.file_kind,
            "bytes": size,
            "sha256": sha256,
            "mtime": iso_ns(mtime_ns),
        },
        "stage": failure.stage,
        "error": {**failure.error(), "message": redact_text(failure.message)},
        "validation": failure.validation,
        "attempts": attempts,
        "time": iso(when),
        "host": socket.gethostname(),
        "inboxd_version": __version__,
    }


def write_sidecar(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode("utf-8"))
