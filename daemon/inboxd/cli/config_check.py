"""`inboxd config check --config PATH [--json] [--offline] [--ping]`: the effective configuration
(secrets redacted) as TOML or JSON, and the machine checks: exit 2 on a problem;
with --ping, one test event to each event sink: exit 1 when one is not delivered."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .._constants import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from ._common import Subcommands, config_of
from .render import err, out, print_json


def cmd_config_check(args: argparse.Namespace) -> int:
    from ..pipeline.command import effective_config, machine_problems

    config = config_of(args)
    data = effective_config(config)
    # the machine, not only the syntax (folders, filesystems, state_dir, key source)
    problems = [] if args.offline else machine_problems(config)
    pings = _ping(config) if args.ping else None
    if args.json:
        data["checks"] = {"machine": "skipped (--offline)" if args.offline else "failed" if problems else "ok",
                          "problems": [p.to_json() for p in problems]}
        if pings is not None:
            data["checks"]["ping"] = pings
        print_json(data)
    else:
        out(f"# effective configuration of {args.config} (the key is never shown)")
        _print_toml(data)
        _print_checks([str(p) for p in problems], offline=args.offline)
        for ping in pings or []:
            said = "ok" if ping["ok"] else f"FAILED ({ping['reason']}): {ping['error']}"
            out(f"# ping {ping['sink']}: {said}")
    for p in problems:
        err(f"inboxd: {p}")
    if problems:
        return EXIT_USAGE
    return EXIT_FAILED if pings and not all(ping["ok"] for ping in pings) else EXIT_OK


def _ping(config: Any) -> list[dict[str, Any]]:
    """--ping: one `ping` event to each [[events]] sink, signed as the daemon signs (SPEC §11)."""
    from ..events import ping

    return ping(config)


def _print_checks(problems: list[str], *, offline: bool) -> None:
    if offline:
        out()
        out("# machine checks: skipped (--offline)")
    elif not problems:
        out()
        out("# machine checks: ok (folders exist and are writable, done/failed on the inbox's filesystem, "
              "state_dir local, key source readable)")
    else:
        out()
        out(f"# machine checks: {len(problems)} problem(s)")
        for p in problems:
            out(f"# {p}")


def _print_toml(data: dict[str, Any]) -> None:
    def value(v: object) -> str:
        return json.dumps(v) if v is not None else '""  # not set'

    def table(name: str, body: dict[str, Any]) -> None:
        out()
        out(f"[{name}]")
        for k, v in body.items():
            print(f"{k} = {value(v)}")  # JSON escapes every control character: valid TOML, as is

    for name, body in data.items():
        if isinstance(body, list):  # an array of tables: [[inboxes]], [[events]]
            for item in body:
                out()
                out(f"[[{name}]]")
                for k, v in item.items():
                    print(f"{k} = {value(v)}")  # JSON escapes every control character: valid TOML, as is
        elif name == "resolved":
            out()
            out("# resolved at start")
            for k, v in body.items():
                print(f"# {k} = {value(v)}")
        else:
            table(name, body)


# --- the parser ----------------------------------------------------------------------


def add_config(sub: Subcommands) -> None:
    p = sub.add_parser("config", help="configuration commands")
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    c = csub.add_parser("check", help="print the effective configuration, secrets redacted")
    c.add_argument("--config", metavar="PATH", required=True)
    c.add_argument("--json", action="store_true")
    c.add_argument("--offline", action="store_true",
                   help="check the syntax only, not the machine (folders, filesystems, state_dir, key source)")
    c.add_argument("--ping", action="store_true",
                   help="send each [[events]] sink one ping event (exit 1 when one is not delivered)")
    c.set_defaults(func=cmd_config_check)
