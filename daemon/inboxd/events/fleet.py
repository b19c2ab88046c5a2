"""One event per fleet on a shared inbox: the event file beside the claims.

The journal is one host's local index, so a host that dies for good would take its pending
events with it. Each event of an inbox is therefore also written, atomically and before the
journal commit that records it, as ``<inbox>/.inboxd/.events/<claimer>/<id>.json`` (id, type,
source, body, time: everything a peer needs to send it under the same `webhook-id`), and is
removed once no sink of its host still has it pending.

A host that finds another claimer dead (its claim folder ``.inboxd/<claimer>``, with the
claims' own liveness rule: flock, pid or heartbeat, `ClaimArea.owner_dead`) takes that
claimer's event files over: it renames each into its own ``.events/<claimer>/`` (of two
survivors, one wins each rename) and records it under the same id for its own sinks. The
owner checks, before each delivery, that its file is still where it wrote it; a file gone
means another host has taken the event over (the owner was judged dead: stopped, its claim
folder removed), and the owner's row becomes `moved` instead of being sent twice.

A sidecar is renamed into place before the commit that records its event (done/ says it
first), and the archived stage waits for the next commit: a host that dies in between has
published a sidecar and recorded nothing. So just before a file's sidecar is put in place,
the journal's `publishing` hook writes an intent, ``<id of the publication>.intent`` (the
sidecar's path and the publication's key) in the same folder; the recording removes it. A
survivor that takes the folder over records an event for each intent whose sidecar exists
(and is not recorded yet: an event file taken over says so), as its publisher now; an intent
whose sidecar does not exist was cut before the rename, and the survivor finishes that claim
(and announces it) itself.

The folder is not fsynced per event: after a power loss the journal row is the record, and the
host that comes back sends it; the files are for the host that never comes back.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..state.fs import write_atomic
from .store import NewEvent

EVENTS_DIR = ".events"


def event_dir(work: Path, claimer: str) -> Path:
    return work / EVENTS_DIR / claimer


def write_event_file(work: Path, claimer: str, event: NewEvent) -> str:
    folder = event_dir(work, claimer)
    path = folder / f"{event.id}.json"
    data = {"id": event.id, "type": event.type, "source": event.source, "key": event.key, "inbox": event.inbox,
            "created_at": event.created_at, "body": event.body}
    try:
        write_atomic(path, json.dumps(data).encode("utf-8"), sync_folder=False)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(data).encode("utf-8"), sync_folder=False)
    return str(path)


@dataclass(frozen=True)
class Intent:
    source: str  # the sidecar's path
    key: str
    inbox: str | None


def intent_path(work: Path, claimer: str, key: str) -> Path:
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return event_dir(work, claimer) / f"{digest}.intent"


def write_intent(work: Path, claimer: str, intent: Intent) -> None:
    """Written without an fsync: it matters after a kill, when the page cache survives."""
    path = intent_path(work, claimer, intent.key)
    data = json.dumps({"source": intent.source, "key": intent.key, "inbox": intent.inbox}).encode("utf-8")
    for attempt in (1, 2):
        try:
            fd = os.open(path.with_name(path.name + ".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except FileNotFoundError:
            if attempt == 2:
                raise
            path.parent.mkdir(parents=True, exist_ok=True)
            continue
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.rename(path.with_name(path.name + ".tmp"), path)
        return


def remove_intent(work: Path, claimer: str, key: str) -> None:
    try:
        os.unlink(intent_path(work, claimer, key))
    except FileNotFoundError:
        pass


def remove_event_file(path: str | None) -> None:
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def take_over(work: Path, claimer: str, dead: Callable[[Path], bool]) -> tuple[list[NewEvent], list[Intent]]:
    """The event files of every dead claimer of this inbox, moved into ours, and its intents
    (read and removed; the caller records those whose sidecar exists). See the module."""
    base = work / EVENTS_DIR
    try:
        folders = [d for d in os.scandir(base) if d.is_dir(follow_symlinks=False)]
    except OSError:
        return [], []
    out: list[NewEvent] = []
    intents: list[Intent] = []
    for d in folders:
        if d.name == claimer or d.name.startswith(".") or not dead(work / d.name):
            continue
        mine = event_dir(work, claimer)
        mine.mkdir(parents=True, exist_ok=True)
        for f in sorted(os.scandir(d.path), key=lambda e: e.name):
            if f.name.startswith(".") or not f.name.endswith(".json"):
                continue
            new = mine / f.name
            try:
                os.rename(f.path, new)
            except FileNotFoundError:
                continue  # another survivor won it
            try:
                data = json.loads(new.read_text(encoding="utf-8"))
                out.append(NewEvent(id=str(data["id"]), type=str(data["type"]), source=str(data["source"]),
                                    key=str(data.get("key") or data["source"]),
                                    inbox=data.get("inbox"), body=str(data["body"]),
                                    created_at=float(data["created_at"]), file=str(new)))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not an event file of ours (a torn write never gets here: writes are atomic)
        for f in os.scandir(d.path):
            if f.name.endswith(".intent"):
                try:
                    data = json.loads(Path(f.path).read_text(encoding="utf-8"))
                    intents.append(Intent(source=str(data["source"]), key=str(data["key"]), inbox=data.get("inbox")))
                except (OSError, ValueError, KeyError, TypeError):
                    pass
            if f.name.endswith((".intent", ".tmp")):
                try:
                    os.unlink(f.path)
                except OSError:
                    pass
        try:
            os.rmdir(d.path)
        except OSError:
            pass
    return out, intents
