"""`inboxd upload FILE --purpose P [--config] [--mode M | --no-check] [--json] [--wait]` and
`inboxd validate FILE… --purpose P [--mode basic|strict] [--json]`.

upload: exit 0 uploaded; 1 the file failed (its check, the upload, or the server's processing
ended FAILED/INVALID_FORMAT); 2 usage. One line on stderr per failure; with --json stdout is
always exactly one JSON object: the file object, or ``{"error": {...}}`` (with the file
object too when the server has one). A progress bar on stderr when it is a terminal.

validate: exit 0 every file passes, 1 any fails (a file that cannot be read fails).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._constants import EXIT_FAILED, EXIT_OK, PURPOSES
from ._common import Subcommands, add_verbosity, config_and_key, config_of
from .render import ProgressBar, err, issue_lines, out, print_json

if TYPE_CHECKING:
    from ..api.command import Uploaded, UploadFailure
    from ..check.command import Verdict

# --- inboxd upload ----------------------------------------------------------------------


def cmd_upload(args: argparse.Namespace) -> int:
    from ..api.command import UploadFailure, upload_file

    config, key = config_and_key(args)  # a usage error: `main` prints it (--json: one object)
    path = Path(args.file)
    bars: list[ProgressBar] = []

    def progress(total: int) -> Callable[[int], None]:
        bars.append(ProgressBar(path.name, total))
        return bars[-1].advance

    try:
        outcome = upload_file(config, key, path, args.purpose, wait=args.wait, mode=args.mode, check=args.check,
                              progress=progress if sys.stderr.isatty() else None)
    finally:
        for bar in bars:
            bar.close()
    if isinstance(outcome, UploadFailure):
        return _upload_failed(path, outcome, as_json=args.json)
    _uploaded(path, outcome, as_json=args.json)
    return EXIT_OK


def _uploaded(path: Path, done: Uploaded, *, as_json: bool) -> None:
    if as_json:
        print_json(done.file)
        return
    status = f", {done.obj.processing_status}" if done.obj.processing_status else ""
    out(f"{done.obj.id}  {path.name}  {done.result.bytes} bytes  {done.result.method}{status}  "
          f"{done.result.seconds:.2f} s")


def _upload_failed(path: Path, failure: UploadFailure, *, as_json: bool) -> int:
    if not as_json:
        for line in issue_lines(path, failure.issues):
            err(line)
    err(f"inboxd: {path.name}: {failure.message}")
    if as_json:
        error = {"kind": failure.kind, "stage": failure.stage, "message": failure.message, "name": str(path),
                 **{k: v for k, v in failure.details.items() if v is not None}}
        body: dict[str, Any] = {"error": error}
        if failure.file is not None:
            body["file"] = failure.file
        print_json(body)
    return EXIT_FAILED


# --- inboxd validate --------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from ..check.command import validate_files

    config = config_of(args)
    entries: list[dict[str, Any]] = []
    failed = False
    for verdict in validate_files(config, [Path(f) for f in args.files], args.purpose, args.mode):
        failed |= not verdict.passed
        entries.append(verdict.to_json())
        if not args.json:
            _print_verdict(verdict)
    if args.json:
        print_json(entries if len(entries) != 1 else entries[0])
    return EXIT_FAILED if failed else EXIT_OK


def _print_verdict(verdict: Verdict) -> None:
    path, report = verdict.path, verdict.report
    if report is None:
        err(f"{path}: file.unreadable: {verdict.unreadable}")
        return
    if report.passed:
        fmt = f", {report.format}" if report.format else ""
        out(f"{path}: ok ({report.records} records, {report.bytes} bytes{fmt}; {report.mode})")
        return
    for line in issue_lines(path, report.errors):
        out(line)
    more = " (stopped at the error limit)" if report.truncated else ""
    out(f"{path}: FAILED, {len(report.errors)} error(s){more}")


# --- the parser ----------------------------------------------------------------------


def add_upload(sub: Subcommands) -> None:
    p = sub.add_parser("upload", help="upload one file")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--purpose", required=True, choices=PURPOSES)
    p.add_argument("--config", metavar="PATH")
    p.add_argument("--json", action="store_true", help="print the file object as JSON")
    p.add_argument("--wait", action="store_true", help="wait until the server has processed the file")
    p.add_argument("--mode", choices=("off", "basic", "strict"), default="basic",
                   help="check the file first as the daemon does (default basic)")
    p.add_argument("--no-check", dest="check", action="store_false", help="upload without checking the file first")
    add_verbosity(p)
    p.set_defaults(func=cmd_upload)


def add_validate(sub: Subcommands) -> None:
    p = sub.add_parser("validate", help="check files the way the daemon does before upload")
    p.add_argument("files", metavar="FILE", nargs="+")
    p.add_argument("--purpose", required=True, choices=PURPOSES)
    p.add_argument("--mode", choices=("off", "basic", "strict"), default="basic")
    p.add_argument("--config", metavar="PATH")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_validate)
