"""`inboxd run --config PATH [--emulator] [--once]` (the daemon in the foreground) and
`inboxd status --config PATH [--json]` (from the journal)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._constants import EXIT_OK, EXIT_USAGE
from ._common import Subcommands, config_of, fail_usage
from .render import err, error_json, out, print_json

# --- inboxd run ---------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from ..log import configure
    from ..pipeline.command import StartRefused, run_daemon

    if not args.config:
        fail_usage("inboxd run: --config PATH is required")
    config = config_of(args)
    configure(config.daemon.log_level, config.daemon.log_format)
    if not config.inboxes:
        err("inboxd run: the configuration has no [[inboxes]]")
        return EXIT_USAGE
    try:
        return run_daemon(config, Path(args.config), emulator=args.emulator, once=args.once)
    except StartRefused as exc:
        for reason in exc.reasons:
            err(f"inboxd: {reason}")
        return EXIT_USAGE


# --- inboxd status ------------------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    from ..pipeline.overview import overview
    from ..pipeline.status import StatusUnavailable, read_status

    config = config_of(args)
    try:
        data = overview(config, base=read_status(config))  # the object the daemon serves as /status.json
    except StatusUnavailable as exc:
        if args.json:
            error_json(exc.kind, exc.message, indent=None)
        err(f"inboxd status: {exc.message}")
        return EXIT_USAGE
    if args.json:
        print_json(data)
    else:
        _print_status(data)
    return EXIT_OK


def _print_status(data: dict[str, Any]) -> None:
    out(f"journal: {data['journal']}")
    for i in data["inboxes"]:
        state = "" if i["exists"] else "  (folder missing)"
        out()
        out(f"{i['inbox']}  [{i['purpose']}]{state}")
        out(f"  waiting {i['waiting'] if i['waiting'] is not None else '?'}  in flight {i['in_flight']}"
              f"  done {i['done']}  failed {i['failed']}  last success {i['last_success'] or '-'}")
        for label, key in (("held open for writing", "held_open"), ("stuck (waiting > 3 rescans; see file.stuck "
                                                                     "in the log)", "stuck"),
                           ("ignored (matches no pattern)", "ignored")):
            if i.get(key):
                shown = ", ".join(i[key][:5]) + (f" and {len(i[key]) - 5} more" if len(i[key]) > 5 else "")
                out(f"  {label}: {len(i[key])}: {shown}")
        if i.get("settings") and not i["settings"]["agreed"]:
            out(f"  NOT CLAIMING: {i['settings']['reason']}")
        for f in i["recent_failures"]:
            e = f["error"] or {}
            where = f" at {f['stage']}" if f.get("stage") else ""
            line = f" line {f['line']}" if f.get("line") is not None else ""
            out(f"  failed {f['at']}  {f['name']}{where}: {e.get('kind', '?')}{line}: {e.get('message', '')}")
    for label, b in (data.get("events") or {}).items():
        oldest = b.get("oldest_pending_seconds")
        out(f"event sink {label}: pending {b['pending']}  dead {b['dead']}  delivered {b['delivered']}"
            f"  oldest pending {f'{oldest:.0f} s' if oldest is not None else '-'}")
    batches = data.get("batches") or []
    if batches:
        out()
        out(f"batch jobs: {len(batches)} (inboxd batches lists them)")


# --- the parser ----------------------------------------------------------------------


def add_run(sub: Subcommands) -> None:
    p = sub.add_parser("run", help="run the daemon in the foreground")
    p.add_argument("--config", metavar="PATH", required=True)
    p.add_argument("--emulator", action="store_true", help="start the embedded emulator and use it")
    p.add_argument("--once", action="store_true", help="handle what is in the inboxes now, then exit")
    p.set_defaults(func=cmd_run)


def add_status(sub: Subcommands) -> None:
    p = sub.add_parser("status", help="counts, in flight and recent failures, from the journal")
    p.add_argument("--config", metavar="PATH", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
