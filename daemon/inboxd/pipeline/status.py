"""`inboxd status`: per inbox, from the journal (and a look at the folder for "waiting"), as
data; the command line renders it as text or --json."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from ..config import Config, InboxConfig
from ..state.journal import Journal
from ..state.sidecars import iso
from ..watch.lease import Writers, open_for_writing
from ..watch.scan import scan_inbox
from .claim import Liveness
from .fingerprint import assess

IN_FLIGHT = ("claimed", "checked", "uploading", "uploaded")
STUCK_SCANS = 3  # as the daemon's file.stuck: waiting longer than this many rescans


class StatusUnavailable(Exception):
    """No journal to read (a configuration error: exit 2)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


def journal_path(config: Config) -> Path:
    return config.daemon.state_dir / "journal.sqlite3"


def read_status(config: Config) -> dict[str, Any]:
    """`status_data`, or StatusUnavailable when there is no journal or it cannot be read."""
    path = journal_path(config)
    if not path.exists():
        raise StatusUnavailable("no_journal", f"no journal at {path} (daemon.state_dir): the daemon has not run "
                                              "with this configuration, or it uses another state_dir")
    try:
        return status_data(config)
    except (OSError, sqlite3.Error) as exc:
        raise StatusUnavailable("journal_unreadable", f"cannot read the journal at {path}: "
                                                      f"{getattr(exc, 'strerror', None) or exc}") from None


def _look_at_folder(config: Config, inbox: InboxConfig) -> dict[str, Any]:
    """What waits in the folder: how many files, which of them a producer still holds open
    for writing (the kernel's lease; unknown without CAP_LEASE on others' files), which have
    waited longer than 3 rescans (stuck: the daemon logs file.stuck with the reason), and
    the names that match no pattern (ignored, never touched)."""
    skip = [f.name for f in (inbox.done, inbox.failed, inbox.work) if f.parent == inbox.path]
    unmatched: list[str] = []
    try:
        entries = scan_inbox(inbox.path, inbox.patterns, skip, unmatched)
    except OSError:
        return {"waiting": None, "held_open": [], "stuck": [], "ignored": []}
    now = time.time()
    limit = STUCK_SCANS * config.daemon.rescan_seconds + config.daemon.settle_seconds
    held = [e.name for e in entries if open_for_writing(e.path) is Writers.OPEN]
    stuck = [e.name for e in entries if now - e.st.st_ctime > limit]
    ignored = [n for n in unmatched if not (inbox.path / n).is_dir()]
    return {"waiting": len(entries), "held_open": sorted(held), "stuck": sorted(stuck), "ignored": sorted(ignored)}


def status_data(config: Config) -> dict[str, Any]:
    """`inboxd status` checks that the journal exists first (no journal: exit 2);
    without one this still answers, with the folders' counts only."""
    path = journal_path(config)
    journal = Journal(config.daemon.state_dir) if path.exists() else None
    counts = journal.counts() if journal else {}
    inboxes = []
    liveness = Liveness(config.daemon.claim_liveness, config.daemon.claim_timeout_seconds)
    for inbox in config.inboxes:
        key = str(inbox.path)
        c = counts.get(key, {})
        look = _look_at_folder(config, inbox)
        failures = journal.recent_failures(key) if journal else []
        inboxes.append({
            "inbox": key,
            "purpose": inbox.purpose,
            "exists": os.path.isdir(inbox.path),
            # whether a daemon with this configuration claims here (fingerprint.py)
            "settings": assess(inbox, liveness).to_json(),
            **look,
            "in_flight": sum(c.get(s, 0) for s in IN_FLIGHT),
            "done": c.get("archived", 0),
            "failed": c.get("failed", 0),
            "last_success": iso(journal.last_success(key)) if journal else None,
            "recent_failures": [
                {"name": r.name, "at": iso(r.updated_at), "path": r.target,
                 "error": json.loads(r.error) if r.error else None}
                for r in failures
            ],
        })
    events = _event_backlog(config, journal)
    if journal:
        journal.close()
    return {"journal": str(path), "inboxes": inboxes, "events": events}


def _event_backlog(config: Config, journal: Journal | None) -> dict[str, dict[str, Any]]:
    """Per event sink (SPEC §11): pending, dead, delivered and the oldest pending event's age;
    also a sink no longer configured while it still has events kept."""
    from ..events import EventStore

    backlog = EventStore(journal.db).backlog() if journal else {}
    empty = {"pending": 0, "delivered": 0, "dead": 0, "oldest_pending_seconds": None}
    out = {s.label: backlog.get(s.label, dict(empty)) for s in config.events}
    for label, b in backlog.items():
        out.setdefault(label, {**b, "configured": False})
    return out
