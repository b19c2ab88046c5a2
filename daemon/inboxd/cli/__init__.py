"""The command line (SPEC §5). Nothing else in the package knows about argv, prints, or
imports this package.

Exit codes (`inboxd._constants`): 0 ok, 1 the work failed, 2 usage or configuration error,
130 interrupted. Each command is one `cmd_*` function over the parsed arguments, in a module
per group beside the `add_*` functions that build its part of the parser; the work itself
lives in the package (`pipeline`, `api`, `check`, `batch`, `emulator`) and comes back as
data, which these modules render as text or --json:

  config_check  inboxd config check
  files         inboxd upload, inboxd validate
  daemon        inboxd run, inboxd status
  batch         inboxd batch FILE, inboxd batch cancel ID, inboxd batches
  emulator      inboxd emulator
  render        JSON, escaped lines, a check's issues, the status line, the progress bar

Three things hold for every command, here in `main`: with --json stdout is one JSON object,
a usage error too (``{"error": {"kind": "usage", ...}}``, exit 2, argparse's usage still on
stderr); a reader that goes away (``inboxd batches | head -1``) ends the command quietly
(exit 141, as a process killed by SIGPIPE); the one-shot commands (upload, batch) show each
retry (``api.retry``, at most one line per route every few seconds) on stderr at their
default level, fewer lines with -q, more with -v.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from .. import __version__
from .._constants import EXIT_INTERRUPTED, EXIT_USAGE
from ..log import configure
from ._common import Subcommands, UsageError
from .batch import add_batch, add_batches
from .config_check import add_config
from .daemon import add_run, add_status
from .emulator import add_emulator
from .events import add_events
from .files import add_upload, add_validate
from .render import err, error_json

__all__ = ["build_parser", "main"]

EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a command whose reader went away


class _ArgumentError(Exception):
    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser, self.message = parser, message


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of exiting on a usage error, so `main` can answer --json
    with one JSON object (the subcommands' parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        raise _ArgumentError(self, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="inboxd",
        description="Watch inbox folders and upload JSONL files to the Together Files API.",
    )
    parser.add_argument("--version", action="version", version=f"inboxd {__version__}")
    sub: Subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                             parser_class=_Parser)
    for add in (add_run, add_upload, add_validate, add_status, add_config, add_batch, add_batches, add_emulator,
                add_events):
        add(sub)
    return parser


def _log_level(args: argparse.Namespace) -> str:
    verbose, quiet = getattr(args, "verbose", 0) or 0, getattr(args, "quiet", 0) or 0
    return ("debug", "info", "warning", "error", "critical")[max(0, min(4, 2 - verbose + quiet))]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _main(argv)
        sys.stdout.flush()  # the last lines too: a reader gone by now is the same closed pipe
        return code
    except BrokenPipeError:
        # the reader is gone: no traceback, and nothing more written to that pipe (Python would
        # flush stdout again at exit and print "Exception ignored ... BrokenPipeError")
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            try:
                os.dup2(devnull, stream.fileno())
            except (OSError, ValueError):
                pass
        os.close(devnull)
        return EXIT_PIPE


def _main(argv: list[str]) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _ArgumentError as exc:
        if "--json" in argv[: argv.index("--") if "--" in argv else len(argv)]:
            error_json("usage", exc.message)
        exc.parser.print_usage(sys.stderr)
        err(f"{exc.parser.prog}: error: {exc.message}")
        return EXIT_USAGE
    # stdout is the command's answer (one JSON object with --json): the library's log lines
    # (a retry, a cut download) go to stderr, warnings and up, and each retry at the default
    # level (-v, -q move the level); `run` sets up its own logging
    level = _log_level(args)
    configure(level, "console", stream=sys.stderr, also=("api.retry",) if level == "warning" else ())
    try:
        return int(args.func(args))
    except UsageError as exc:
        if getattr(args, "json", False) and not exc.answered:
            error_json("usage", str(exc), **exc.fields)
        err(f"inboxd: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
