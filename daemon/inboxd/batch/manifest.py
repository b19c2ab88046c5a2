"""The `batch` section of the input's manifest in done/ (SPEC §10), rewritten atomically as the
jobs move: ``{"id", "status", "progress", "updated_at", "error", "sidecar", "ledger", "jobs"}``.
An input followed through its ledger names the ledger from the moment it is archived, and
every job id from the moment it exists; `id` is its first job's."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import structlog

from ..state import sidecars
from ..state.sidecars import iso
from .ledger import Ledger
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


def ledger_section(ledger: Path) -> dict[str, Any]:
    """The section an input's manifest is archived with: its ledger, no job yet."""
    return {"id": None, "status": None, "progress": None, "updated_at": iso(time.time()), "error": None,
            "ledger": str(ledger), "jobs": []}


def ledger_status(ledger: Ledger) -> str | None:
    """The last jobs' statuses, one word when they agree (COMPLETED once every part's last job
    completed)."""
    statuses = sorted({j.status or j.stage.upper() for j in ledger.last_jobs()})
    return ", ".join(statuses) if statuses else None


def update_from_ledger(manifest: Path, ledger_file: Path, ledger: Ledger, *, delivered: str | None = None) -> bool:
    """Rewrite the manifest's `batch` section from its ledger (only when something changed)."""
    ids = ledger.job_ids()
    running = [j.progress for j in ledger.last_jobs() if j.progress is not None]
    errors = [j.error for j in ledger.last_jobs() if j.error]
    return _rewrite(manifest, {
        "id": ids[0] if ids else None, "status": ledger_status(ledger),
        "progress": round(sum(running) / len(running), 3) if running else None,
        "error": errors[-1] if errors else None, "ledger": str(ledger_file), "jobs": ids,
    }, delivered, claim=str(manifest))


def update_manifest(rec: BatchRecord, *, delivered: str | None = None) -> bool:
    """Rewrite the manifest with the job's current `batch` section; False when there is no
    manifest to rewrite (the one-shot command, or a manifest removed by hand)."""
    if not rec.manifest:
        return False
    section = batch_section(rec)
    section.pop("sidecar", None)
    return _rewrite(Path(rec.manifest), section, delivered, claim=rec.claim)


def _rewrite(path: Path, section: dict[str, Any], delivered: str | None, *, claim: str) -> bool:
    """Write `section` (and `sidecar`: the delivered batch.json, kept once set) into the manifest
    at `path`, atomically; False when there is no manifest to rewrite."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        log.warning("batch.manifest_unreadable", claim=claim, manifest=str(path), error=str(exc))
        return False
    if not isinstance(data, dict):
        return False
    found = data.get("batch")
    previous: dict[str, Any] = found if isinstance(found, dict) else {}
    section = {**section, "updated_at": iso(time.time())}
    sidecar = delivered or previous.get("sidecar")
    if sidecar is not None:
        section["sidecar"] = sidecar
    if {k: v for k, v in previous.items() if k != "updated_at"} == {k: v for k, v in section.items()
                                                                    if k != "updated_at"}:
        return True  # nothing changed: no rewrite
    data["batch"] = section
    sidecars.write(path, data)
    return True
