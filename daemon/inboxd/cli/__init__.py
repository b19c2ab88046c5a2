"""The command line (SPEC §5). Nothing else in the package knows about argv, prints, or
imports this package.

Exit codes (`inboxd._constants`): 0 ok, 1 the work failed, 2 usage or configuration error,
130 interrupted. Each command is one `cmd_*` function over the parsed arguments, in a module
per group; the work itself lives in the package (`pipeline`, `api`, `check`, `batch`,
`emulator`) and comes back as data, which these modules render as text or --json:

  config_check  inboxd config check
  files         inboxd upload, inboxd validate
  daemon        inboxd run, inboxd status
  batch         inboxd batch FILE, inboxd batch cancel ID, inboxd batches
  emulator      inboxd emulator
  render        JSON, stderr lines, a check's issues, the status line, the progress bar
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from .._constants import EXIT_INTERRUPTED, EXIT_USAGE, PURPOSES
from ._common import UsageError
from .batch import cmd_batch, cmd_batches
from .config_check import cmd_config_check
from .daemon import cmd_run, cmd_status
from .emulator import add_emulator_args, cmd_emulator
from .files import cmd_upload, cmd_validate
from .render import err

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inboxd",
        description="Watch inbox folders and upload JSONL files to the Together Files API.",
    )
    parser.add_argument("--version", action="version", version=f"inboxd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="run the daemon in the foreground")
    p.add_argument("--config", metavar="PATH", required=True)
    p.add_argument("--emulator", action="store_true", help="start the embedded emulator and use it")
    p.add_argument("--once", action="store_true", help="handle what is in the inboxes now, then exit")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("upload", help="upload one file")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--purpose", required=True, choices=PURPOSES)
    p.add_argument("--config", metavar="PATH")
    p.add_argument("--json", action="store_true", help="print the file object as JSON")
    p.add_argument("--wait", action="store_true", help="wait until the server has processed the file")
    p.add_argument("--mode", choices=("off", "basic", "strict"), default="basic",
                   help="check the file first as the daemon does (default basic)")
    p.add_argument("--no-check", dest="check", action="store_false", help="upload without checking the file first")
    p.set_defaults(func=cmd_upload)

    p = sub.add_parser("validate", help="check files the way the daemon does before upload")
    p.add_argument("files", metavar="FILE", nargs="+")
    p.add_argument("--purpose", required=True, choices=PURPOSES)
    p.add_argument("--mode", choices=("off", "basic", "strict"), default="basic")
    p.add_argument("--config", metavar="PATH")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("status", help="counts, in flight and recent failures, from the journal")
    p.add_argument("--config", metavar="PATH", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("config", help="configuration commands")
    csub = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    c = csub.add_parser("check", help="print the effective configuration, secrets redacted")
    c.add_argument("--config", metavar="PATH", required=True)
    c.add_argument("--json", action="store_true")
    c.add_argument("--offline", action="store_true",
                   help="check the syntax only, not the machine (folders, filesystems, state_dir, key source)")
    c.set_defaults(func=cmd_config_check)

    p = sub.add_parser("batch", help="the batch round trip for one file (or: batch cancel ID)",
                       usage="%(prog)s FILE --endpoint E [--model-id M] [--outbox DIR] [--join] [--no-wait] "
                             "[--json] [--config PATH]\n       %(prog)s cancel ID [--json] [--config PATH]",
                       description="inboxd batch FILE --endpoint E: upload, create the job, follow it, deliver "
                                   "the results into the outbox. inboxd batch cancel ID: cancel a job.")
    p.add_argument("target", nargs="+", metavar="FILE | cancel ID")
    p.add_argument("--endpoint", help="the API path each request goes to, e.g. /v1/chat/completions")
    p.add_argument("--model-id", help="the model for requests that name none")
    p.add_argument("--outbox", metavar="DIR", help="where results go (default: outbox/ next to FILE)")
    p.add_argument("--join", action="store_true", help="also write <stem>.results.jsonl in input order")
    p.add_argument("--no-wait", dest="wait", action="store_false", help="create the job and exit")
    p.add_argument("--poll-seconds", type=float, default=30.0, metavar="S", help="how often to ask (default 30)")
    p.add_argument("--completion-window", default="24h")
    p.add_argument("--priority", type=int)
    p.add_argument("--config", metavar="PATH", help="api settings and the journal's state_dir from this file")
    p.add_argument("--json", action="store_true", help="print batch.json (or the job) as one JSON object")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("batches", help="batch jobs known to the journal, with their status")
    p.add_argument("--config", metavar="PATH")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_batches)

    p = sub.add_parser("emulator", help="serve a local Files API on loopback")
    add_emulator_args(p)
    p.set_defaults(func=cmd_emulator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        err(f"inboxd: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
