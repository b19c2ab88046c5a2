"""`inboxd status`: per inbox, from the journal (and a look at the folder for "waiting")."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..config import Config
from ..watch.scan import scan_inbox
from .journal import Journal
from .sidecars import iso

IN_FLIGHT = ("claimed", "checked", "uploading", "uploaded")


def journal_path(config: Config) -> Path:
    return config.daemon.state_dir / "journal.sqlite3"


def status_data(config: Config) -> dict[str, Any]:
    """`inboxd status` checks that the journal exists first (no journal: exit 2, issue 15);
    without one this still answers, with the folders' counts only."""
    path = journal_path(config)
    journal = Journal(config.daemon.state_dir) if path.exists() else None
    counts = journal.counts() if journal else {}
    inboxes = []
    for inbox in config.inboxes:
        key = str(inbox.path)
        c = counts.get(key, {})
        try:
            skip = [f.name for f in (inbox.done, inbox.failed, inbox.work) if f.parent == inbox.path]
            waiting: int | None = len(scan_inbox(inbox.path, inbox.patterns, skip))
        except OSError:
            waiting = None
        failures = journal.recent_failures(key) if journal else []
        inboxes.append({
            "inbox": key,
            "purpose": inbox.purpose,
            "exists": os.path.isdir(inbox.path),
            "waiting": waiting,
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
    if journal:
        journal.close()
    return {"journal": str(path), "inboxes": inboxes}


def print_status(data: dict[str, Any], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2))
        return
    print(f"journal: {data['journal']}")
    for i in data["inboxes"]:
        state = "" if i["exists"] else "  (folder missing)"
        print(f"\n{i['inbox']}  [{i['purpose']}]{state}")
        print(f"  waiting {i['waiting'] if i['waiting'] is not None else '?'}  in flight {i['in_flight']}"
              f"  done {i['done']}  failed {i['failed']}  last success {i['last_success'] or '-'}")
        for f in i["recent_failures"]:
            err = f["error"] or {}
            print(f"  failed {f['at']}  {f['name']}: {err.get('kind', '?')}: {err.get('message', '')}")
