"""What an operator sees: the object `inboxd status --json` prints and a running daemon serves
as /status.json (and renders as its status page at /).

`status_data` (the journal, and a look at each inbox folder) and, per inbox, its last files
(outcome, time, file id) and its failed files with the stage, rule and line that failed them
and the path of their error sidecar; the batch jobs the journal and the command's ledgers
know (`inboxd batches --json`'s rows). A running daemon adds `live`: each inbox's state
(watching; paused, missing, not claiming or watch lost, with why) and the health problems
/healthz reports. From the command line those are null: it reads the journal, not the daemon.

Two sections belong to other parts of inboxd and are passed through as they come
(`extra`): "ledger" (batch rounds and parts) and "events" (the event sinks' backlog); the
page shows them when present.

Names and paths are data: this module returns them as they are; the page sets them as text,
the command line escapes them.
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config
from ..state.sidecars import ERROR_SUFFIX, iso
from .status import journal_path, status_data

RECENT = 10  # last files per inbox
MAX_SIDECAR_BYTES = 1 << 20


def overview(config: Config, live: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
             base: dict[str, Any] | None = None) -> dict[str, Any]:
    """The status object. `live` (from a running daemon): {"snapshot": hooks.snapshot(),
    "health": (ok, body), "started": epoch}; `extra`: sections named by their owners; `base`:
    `status_data(config)` when the caller has it already."""
    data = status_data(config) if base is None else base
    recent = _recent_files(journal_path(config), [str(i.path) for i in config.inboxes])
    snap = (live or {}).get("snapshot")
    for inbox in data["inboxes"]:
        inbox["recent"] = recent.get(inbox["inbox"], [])
        for f in inbox["recent_failures"]:
            f.update(_failure_details(f))
        inbox["state"], inbox["state_why"] = _state(inbox, snap)
        if snap is not None:
            s = snap["inboxes"].get(inbox["inbox"], {})
            inbox["queued"] = s.get("queued", 0)
            inbox["in_flight"] = s.get("in_flight", inbox["in_flight"])
    data["batches"], data["batches_error"] = _batches(config)
    data["generated_at"] = iso(time.time())
    data["daemon"] = None
    data["health"] = None
    if live is not None:
        ok, body = live["health"]
        data["daemon"] = {"running": True, "pid": os.getpid(), "started_at": iso(live.get("started")),
                          "paused": bool(snap and snap["paused"])}
        data["health"] = {"healthy": ok, "problems": list(body.get("problems", []))}
    data["ledger"] = _ledgers(config, data["batches"])
    for name in ("ledger", "events"):
        data[name] = (extra or {}).get(name, data.get(name))  # status_data has the events' backlog
    return data


def _state(inbox: dict[str, Any], snap: dict[str, Any] | None) -> tuple[str | None, str | None]:
    if snap is None:
        return None, None  # the command line: it reads the journal, it does not ask the daemon
    s = snap["inboxes"].get(inbox["inbox"])
    if s is None:
        return "not watched", "this daemon does not watch it (configured after the start?)"
    if s.get("missing") or not inbox["exists"]:
        return "missing", "the inbox folder does not exist"
    if snap["paused"]:
        return "paused", "the API rejects the key: uploads are paused until it is accepted"
    if s.get("held"):
        return "not claiming", str(s["held"])
    if not s.get("watch_alive", True):
        return "watch lost", "the folder's watch stopped; files are found by the rescan only"
    return "watching", None


def _recent_files(path: Path, inboxes: list[str]) -> dict[str, list[dict[str, Any]]]:
    """The last finished files per inbox, read-only (no lock taken on the journal)."""
    out: dict[str, list[dict[str, Any]]] = {}
    if not path.exists():
        return out
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return out
    try:
        for key in inboxes:
            rows = db.execute(
                "SELECT name, stage, updated_at, file_id, target, method FROM files WHERE inbox = ? "
                "AND stage IN ('archived', 'failed') ORDER BY updated_at DESC LIMIT ?", (key, RECENT)).fetchall()
            out[key] = [{"name": name, "outcome": "failed" if stage == "failed" else
                         "existing" if method == "existing" else "done",
                         "at": iso(at), "file_id": file_id, "path": target}
                        for name, stage, at, file_id, target, method in rows]
    except sqlite3.Error:
        pass
    finally:
        db.close()
    return out


def _failure_details(f: dict[str, Any]) -> dict[str, Any]:
    """stage, rule and line of a failed file, from its error sidecar beside it (or the journal's
    error when the sidecar is gone)."""
    error = f.get("error") or {}
    details: dict[str, Any] = {"stage": error.get("stage"), "rule": error.get("kind"), "line": error.get("line"),
                               "sidecar": None}
    target = f.get("path")
    if target:
        sidecar = Path(str(target) + ERROR_SUFFIX)
        body = _read_json(sidecar)
        if body is not None:
            details["sidecar"] = str(sidecar)
            details["stage"] = body.get("stage") or details["stage"]
            e = body.get("error") or {}
            details["rule"] = e.get("kind") or details["rule"]
            details["line"] = e.get("line") if e.get("line") is not None else details["line"]
    return details


def _read_json(path: Path) -> dict[str, Any] | None:
    content = read_sidecar(path)
    if content is None:
        return None
    try:
        body = json.loads(content)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _ledgers(config: Config, batches: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The batch ledgers: `inboxd batch FILE`'s (kept in the state dir) and those of the inputs
    the daemon follows (beside their manifests in done/): parts, rounds, progress."""
    from ..batch.command import ledger_summaries

    folder = config.daemon.state_dir / "ledgers"
    named = [str(p) for p in sorted(folder.glob("*.ledger.json"))] if folder.is_dir() else []
    files = [Path(p) for p in dict.fromkeys([*named, *(r.get("ledger") for r in batches)]) if p]
    try:
        return ledger_summaries(files)
    except Exception:  # noqa: BLE001 - one section that cannot be read does not hide the others
        return []


def _batches(config: Config) -> tuple[list[dict[str, Any]], str | None]:
    from ..batch.command import NoJournal, list_batches

    try:
        _, records = list_batches(config.daemon.state_dir)
    except NoJournal:
        return [], None
    except Exception as exc:  # noqa: BLE001 - one section that cannot be read does not hide the others
        return [], f"{type(exc).__name__}: {exc}"
    rows = []
    for r in records:
        row = r.to_json()
        for k, v in list(row.items()):
            if k.endswith("_at") and isinstance(v, (int, float)):
                row[k] = iso(v)
        row["counts"] = _batch_counts(row)
        rows.append(row)
    return rows, None


def _batch_counts(row: dict[str, Any]) -> dict[str, int | None]:
    """requests in the input; once the results are in the outbox, how many succeeded (lines of
    the output file), failed (lines of the errors file) and are missing from both."""
    outputs = row.get("outputs") or {}
    joined = ((outputs.get("results") or {}).get("counts")) or {}
    succeeded = joined.get("succeeded", (outputs.get("output") or {}).get("lines"))
    failed = joined.get("failed", (outputs.get("errors") or {}).get("lines"))
    delivered = row.get("stage") == "delivered"
    if delivered:
        succeeded, failed = succeeded or 0, failed or 0
    requests = row.get("requests")
    missing = joined.get("missing")
    if missing is None and delivered and isinstance(requests, int):
        missing = max(0, requests - (succeeded or 0) - (failed or 0))
    return {"requests": requests, "succeeded": succeeded, "failed": failed, "missing": missing}


def sidecar_path(config: Config, requested: str) -> Path | None:
    """`requested` if it names an error sidecar directly inside a configured inbox's failed/
    folder (after resolving it: no `..`, no symlink out), else None."""
    if not requested.endswith(ERROR_SUFFIX) or "\0" in requested or not os.path.isabs(requested):
        return None
    path = Path(os.path.normpath(requested))
    try:
        parent = path.parent.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    for inbox in config.inboxes:
        try:
            failed = inbox.failed.resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if parent == failed:
            return parent / path.name
    return None


def read_sidecar(path: Path) -> bytes | None:
    """The bytes of a regular file of at most 1 MiB, opened without following a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_SIDECAR_BYTES:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(MAX_SIDECAR_BYTES + 1)[:MAX_SIDECAR_BYTES]
    except OSError:
        return None
    finally:
        os.close(fd)


class LiveStatus:
    """A running daemon's source for the status page (`service.status_page.StatusSource`):
    `overview` with the daemon's last snapshot and its health, built at most once every
    CACHE_SECONDS (every open page polls; the folder scans are paid once for all of them)."""

    CACHE_SECONDS = 2.0

    def __init__(self, config: Callable[[], Config], snapshot: Callable[[], dict[str, Any] | None],
                 health: Callable[[], tuple[bool, dict[str, Any]]], started: float,
                 extra: Callable[[], dict[str, Any]] | None = None) -> None:
        self._config, self._snapshot, self._health, self._started = config, snapshot, health, started
        self._extra = extra
        self._lock = threading.Lock()
        self._cached: tuple[float, dict[str, Any]] | None = None

    def status(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.CACHE_SECONDS:
                return self._cached[1]
            snap = self._snapshot() or {"paused": False, "inboxes": {}}
            live = {"snapshot": snap, "health": self._health(), "started": self._started}
            data = overview(self._config(), live, self._extra() if self._extra else None)
            self._cached = (now, data)
            return data

    def sidecar(self, path: str) -> bytes | None:
        found = sidecar_path(self._config(), path)
        return read_sidecar(found) if found is not None else None
