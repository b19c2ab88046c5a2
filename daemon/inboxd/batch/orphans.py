"""Jobs whose follower died for good: found in done/ and followed on by another host.

A job's input is archived in done/ with its manifest, whose `batch` section names the job id
as soon as the poller follows it. The host following a job holds an ``flock`` on
``done/.<input name>.batch.lock`` (`Watchers`); the kernel lets go of it when that process dies,
however it dies. Every poller looks through the done/ folders of its batch inboxes now and
then (`orphans`): a manifest that names a job, is not delivered (no `sidecar` in its `batch`
section), is not in this host's journal, and whose lock can be taken, is a job nobody follows:
this host journals it (`adopt`) and follows it to its outbox. A network filesystem whose
flock is not seen by other hosts cannot tell a live follower from a dead one: there, only
the host that made a job follows it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import structlog

from ..config import InboxConfig
from ..state.sidecars import MANIFEST_SUFFIX
from .store import BatchRecord, BatchStore

log = structlog.get_logger("inboxd.batch")

ADOPTED = "done:"  # the claim key of a job taken over from done/: done:<manifest path>


def lock_path(manifest: Path) -> Path:
    return manifest.with_name(f".{manifest.name[: -len(MANIFEST_SUFFIX)]}.batch.lock")


class Watchers:
    """The follow locks this process holds, by claim key."""

    def __init__(self) -> None:
        self._fds: dict[str, int] = {}

    def take(self, key: str, lock: Path) -> bool:
        """True when this process follows the job (it holds the lock, or took it now)."""
        if key in self._fds:
            return True
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError:
            return True  # no lock possible (a read-only done/): follow as before
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fds[key] = fd
        return True

    def release(self, key: str, lock: Path | None = None) -> None:
        fd = self._fds.pop(key, None)
        if fd is None:
            return
        if lock is not None:
            try:
                os.unlink(lock)
            except OSError:
                pass
        os.close(fd)

    def close(self) -> None:
        for key in list(self._fds):
            self.release(key)


def orphans(inboxes: Iterable[InboxConfig], store: BatchStore) -> Iterator[tuple[InboxConfig, Path, dict[str, Any]]]:
    """(inbox, manifest, its content) of every job in a batch inbox's done/ that is not
    delivered and not in this journal."""
    for inbox in inboxes:
        if inbox.batch is None or not inbox.done.is_dir():
            continue
        for manifest in sorted(inbox.done.glob(f"*{MANIFEST_SUFFIX}")):
            try:
                data = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            section = data.get("batch") if isinstance(data, dict) else None
            if not isinstance(section, dict) or section.get("sidecar"):
                continue
            ledger = section.get("ledger")
            if isinstance(ledger, str):  # followed through its ledger (from before its first job)
                if store.by_ledger(ledger) is None:
                    yield inbox, manifest, data
            elif section.get("id") and store.by_batch_id(str(section["id"])) is None:
                yield inbox, manifest, data


def adopt(store: BatchStore, inbox: InboxConfig, manifest: Path, data: dict[str, Any]) -> BatchRecord:
    """Journal a job found in done/ as ours, at `following`."""
    assert inbox.batch is not None
    cfg, section, file = inbox.batch, data["batch"], data.get("file") or {}
    key = f"{ADOPTED}{manifest}"
    archived = manifest.with_name(manifest.name[: -len(MANIFEST_SUFFIX)])
    box = cfg.outbox if cfg.outbox is not None else inbox.path / "outbox"
    records = (data.get("validation") or {}).get("records")
    store.begin(key, inbox=str(inbox.path), input_file_id=str(file.get("id") or ""), endpoint=cfg.endpoint,
                poll_seconds=cfg.poll_seconds, completion_window=cfg.completion_window, model_id=cfg.model_id,
                priority=cfg.priority, join=cfg.join, outbox=str(box), manifest=str(manifest),
                input_path=str(archived) if archived.is_file() else None, requests=records)
    rec = store.update(key, stage="following", batch_id=str(section["id"]), status=section.get("status"))
    log.info("batch.taken_over", manifest=str(manifest), batch_id=rec.batch_id, inbox=str(inbox.path))
    return rec


def adopt_ledger(store: BatchStore, inbox: InboxConfig, manifest: Path, data: dict[str, Any]) -> BatchRecord:
    """Journal an input found in done/ whose ledger nobody follows, at `following`: this host
    follows it on from what its ledger says (or plans it, if its owner died before that)."""
    assert inbox.batch is not None
    key = f"{ADOPTED}{manifest}"
    rec = store.begin(key, **record_fields(inbox, manifest, data))
    log.info("batch.taken_over", manifest=str(manifest), ledger=rec.ledger, inbox=str(inbox.path))
    return rec


def record_fields(inbox: InboxConfig, manifest: Path, data: dict[str, Any]) -> dict[str, Any]:
    """The journal row of an archived input followed through its ledger."""
    assert inbox.batch is not None
    cfg, source = inbox.batch, data.get("source") or {}
    box = cfg.outbox if cfg.outbox is not None else inbox.path / "outbox"
    return {"inbox": str(inbox.path), "input_file_id": str((data.get("file") or {}).get("id") or ""),
            "endpoint": cfg.endpoint, "poll_seconds": cfg.poll_seconds, "completion_window": cfg.completion_window,
            "model_id": cfg.model_id, "priority": cfg.priority, "join": cfg.join, "outbox": str(box),
            "manifest": str(manifest), "input_path": source.get("path"), "input_sha256": source.get("sha256"),
            "requests": (data.get("validation") or {}).get("records"), "stage": "following",
            "ledger": data["batch"]["ledger"]}
