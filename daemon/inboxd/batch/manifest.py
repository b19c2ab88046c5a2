"""The `batch` section of the input's manifest in done/ (SPEC §10), rewritten atomically as the
job moves: ``{"id", "status", "progress", "updated_at", "error", "sidecar"}``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import structlog

from ..state import sidecars
from ..state.sidecars import iso
from .store import BatchRecord

log = structlog.get_logger("inboxd.batch")


def batch_section(rec: BatchRecord, *, delivered: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": rec.batch_id,
        "status": rec.status,
        "progress": rec.progress,
        "updated_at": iso(time.time()),
        "error": rec.error if rec.status in ("FAILED", "EXPIRED", "CANCELLED", None) else None,
    }
    if delivered is not None:
        out["sidecar"] = delivered
    return out


def update_manifest(rec: BatchRecord, *, delivered: str | None = None) -> bool:
    """Rewrite the manifest with the job's current `batch` section; False when there is no
    manifest to rewrite (the one-shot command, or a manifest removed by hand)."""
    if not rec.manifest:
        return False
    path = Path(rec.manifest)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        log.warning("batch.manifest_unreadable", claim=rec.claim, manifest=str(path), error=str(exc))
        return False
    if not isinstance(data, dict):
        return False
    found = data.get("batch")
    previous: dict[str, Any] = found if isinstance(found, dict) else {}
    section = batch_section(rec, delivered=delivered or previous.get("sidecar"))
    if {k: v for k, v in previous.items() if k != "updated_at"} == {k: v for k, v in section.items()
                                                                    if k != "updated_at"}:
        return True  # nothing changed: no rewrite
    data["batch"] = section
    sidecars.write(path, data)
    return True
