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
  render        JSON, stderr lines, a check's issues, the status line, the progress bar
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from .._constants import EXIT_INTERRUPTED, EXIT_USAGE
from ..log import configure
from ._common import UsageError
from .batch import add_batch, add_batches
from .config_check import add_config
from .daemon import add_run, add_status
from .emulator import add_emulator
from .files import add_upload, add_validate
from .render import err

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inboxd",
        description="Watch inbox folders and upload JSONL files to the Together Files API.",
    )
    parser.add_argument("--version", action="version", version=f"inboxd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in (add_run, add_upload, add_validate, add_status, add_config, add_batch, add_batches, add_emulator):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # stdout is the command's answer (one JSON object with --json): the library's log lines
    # (a retry, a cut download) go to stderr, warnings and up; `run` sets up its own logging
    configure("warning", "console", stream=sys.stderr)
    try:
        return int(args.func(args))
    except UsageError as exc:
        err(f"inboxd: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
