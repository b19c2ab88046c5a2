"""`inboxd events --config PATH [--dead] [--json]` (the event sinks' backlog and the pending or
dead-lettered events, from the journal) and `inboxd events retry --config PATH [ID...|--all]`
(dead-lettered events back to pending: the running daemon's senders pick them up within a
second, under their first webhook-id)."""

from __future__ import annotations

import argparse
import sqlite3
import time
from datetime import UTC, datetime
from typing import Any

from .._constants import EXIT_FAILED, EXIT_OK
from ._common import Subcommands, UsageError, config_of, fail_usage
from .render import err, error_json, out, print_json


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _store(args: argparse.Namespace) -> Any:
    from ..events import EventStore
    from ..state.db import FILE_NAME, Database

    if not args.config:
        fail_usage("inboxd events: --config PATH is required (the daemon's state_dir holds the events)")
    config = config_of(args)
    path = config.daemon.state_dir / FILE_NAME
    if not path.exists():
        message = (f"no journal at {path} (daemon.state_dir): the daemon has not run with this configuration, "
                   "or it uses another state_dir")
        if args.json:
            error_json("no_journal", message, indent=None)
        exc = UsageError(message)
        exc.answered = bool(args.json)  # one JSON object on stdout: this one
        raise exc
    try:
        return config, path, EventStore(Database(config.daemon.state_dir))
    except (OSError, sqlite3.Error) as exc:
        fail_usage(f"cannot read the journal at {path}: {getattr(exc, 'strerror', None) or exc}")


def cmd_events(args: argparse.Namespace) -> int:
    if getattr(args, "events_command", None) == "retry":
        return cmd_retry(args)
    config, path, store = _store(args)
    state = "dead" if args.dead else "pending"
    rows = store.list(state=state, limit=args.limit)
    backlog = store.backlog()
    configured = [s.label for s in config.events]
    sinks = {label: backlog.get(label, {"pending": 0, "delivered": 0, "dead": 0, "oldest_pending_seconds": None})
             for label in configured}
    for label, b in backlog.items():  # events kept for a sink no longer configured
        sinks.setdefault(label, {**b, "configured": False})
    if args.json:
        events = [{**r.to_json(), "created_at": _iso(r.created_at), "next_at": _iso(r.next_at),
                   "delivered_at": _iso(r.delivered_at)} for r in rows]
        print_json({"journal": str(path), "sinks": sinks, "state": state, "events": events})
        return EXIT_OK
    out(f"journal: {path}")
    for label, b in sinks.items():
        oldest = b.get("oldest_pending_seconds")
        extra = "" if b.get("configured", True) else "  (not in the configuration)"
        out(f"sink {label}: pending {b['pending']}  dead {b['dead']}  delivered {b['delivered']}"
            f"  oldest pending {f'{oldest:.0f} s' if oldest is not None else '-'}{extra}")
    if not rows:
        out(f"no {state} events")
        return EXIT_OK
    out()
    out(f"{'ID':<33} {'SINK':<24} {'TYPE':<16} {'TRIES':>5} {'AGE':>7}  SIDECAR / LAST ERROR")
    now = time.time()
    for r in rows:
        out(f"{r.id:<33} {r.sink[:24]:<24} {r.type:<16} {r.attempts:>5} {now - r.created_at:>6.0f}s  {r.source}")
        if r.last_error:
            out(f"{'':<33} {'':<24} {'':<16} {'':>5} {'':>7}  {r.last_error}")
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    if not args.all and not args.ids:
        fail_usage("inboxd events retry: name the event ids, or --all for every dead-lettered event")
    if args.all and args.ids:
        fail_usage("inboxd events retry: either event ids or --all, not both")
    _, path, store = _store(args)
    n = store.retry(None if args.all else args.ids)
    if args.json:
        print_json({"journal": str(path), "requeued": n})
    elif n:
        out(f"{n} event(s) back to pending; the daemon sends them under their first webhook-id")
    else:
        err("inboxd events retry: no dead-lettered event " + ("to retry" if args.all else "with those ids"))
    return EXIT_OK if n or args.all else EXIT_FAILED


def add_events(sub: Subcommands) -> None:
    p = sub.add_parser("events", help="the event sinks' backlog; pending or dead-lettered events")
    p.add_argument("--config", metavar="PATH")
    p.add_argument("--dead", action="store_true", help="list the dead-lettered events (default: pending)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=1000, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_events)
    esub = p.add_subparsers(dest="events_command", metavar="SUBCOMMAND")
    r = esub.add_parser("retry", help="send dead-lettered events again (their ids, or --all)")
    r.add_argument("ids", nargs="*", metavar="ID")
    r.add_argument("--all", action="store_true")
    # given before or after "retry" (SUPPRESS: an absent one does not undo the events parser's)
    r.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS)
    r.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    r.set_defaults(func=cmd_retry)


__all__ = ["add_events"]
