"""The command line (SPEC §5). Nothing else in the package knows about argv.

Exit codes: 0 ok, 1 the work failed, 2 usage or configuration error.
Each command is one `cmd_*` function over the parsed arguments; the work itself lives in
the package (`pipeline`, `api`, `check`, `emulator`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from . import __version__
from .config import PURPOSES, Config, ConfigError, config_from_env, load_config, redacted_dict, resolve_api_key

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad arguments or configuration: exit 2 with the message."""


def _fail_usage(message: str) -> NoReturn:
    raise UsageError(message)


def _load_config(args: argparse.Namespace) -> Config:
    try:
        if getattr(args, "config", None):
            return load_config(args.config)
        return config_from_env()
    except ConfigError as exc:
        _fail_usage(str(exc))


# --- inboxd config check ----------------------------------------------------------------


def cmd_config_check(args: argparse.Namespace) -> int:
    from .api._transport import redact_proxy, resolve_network
    from .config import format_size

    config = _load_config(args)
    try:
        _, key_source = resolve_api_key(config.api)
        key: dict[str, str | None] = {"api_key": "<redacted>", "api_key_source": key_source}
    except ConfigError as exc:
        key = {"api_key": None, "api_key_problem": str(exc)}
    data = redacted_dict(config)
    # the proxy is shown with its password as ***, never in full (its value is a SecretStr)
    proxy = config.api.proxy.get_secret_value() if config.api.proxy is not None else None
    data["api"]["proxy"] = redact_proxy(proxy)
    for section in (data["upload"], *data["inboxes"]):
        section["max_bytes_per_second"] = format_size(section["max_bytes_per_second"])
    # the route the API calls will take (storage hosts are only known per upload; same rules),
    # and the CA bundle, each with where it came from
    network = resolve_network(config.api).describe(config.api.base_url)
    data["resolved"] = {**key, **network}
    # issue 15: the machine, not only the syntax (folders, filesystems, state_dir, key source)
    problems = _machine_checks(config, args)
    if args.json:
        data["checks"] = {"machine": "skipped (--offline)" if args.offline else "failed" if problems else "ok",
                          "problems": [p.to_json() for p in problems]}
        print(json.dumps(data, indent=2))
    else:
        print(f"# effective configuration of {args.config} (the key is never shown)")
        _print_toml(data)
        _print_checks(problems, offline=args.offline)
    for p in problems:
        print(f"inboxd: {p}", file=sys.stderr)
    return EXIT_USAGE if problems else EXIT_OK


def _machine_checks(config: Config, args: argparse.Namespace) -> list:
    from .pipeline.command import machine_problems

    return [] if args.offline else machine_problems(config)


def _print_checks(problems: list, *, offline: bool) -> None:
    if offline:
        print("\n# machine checks: skipped (--offline)")
    elif not problems:
        print("\n# machine checks: ok (folders exist and are writable, done/failed on the inbox's filesystem, "
              "state_dir local, key source readable)")
    else:
        print(f"\n# machine checks: {len(problems)} problem(s)")
        for p in problems:
            print(f"# {p}")


def _print_toml(data: dict) -> None:
    def value(v: object) -> str:
        return json.dumps(v) if v is not None else '""  # not set'

    def table(name: str, body: dict) -> None:
        print(f"\n[{name}]")
        for k, v in body.items():
            print(f"{k} = {value(v)}")

    for name, body in data.items():
        if name == "inboxes":
            for inbox in body:
                print("\n[[inboxes]]")
                for k, v in inbox.items():
                    print(f"{k} = {value(v)}")
        elif name == "resolved":
            print("\n# resolved at start")
            for k, v in body.items():
                print(f"# {k} = {value(v)}")
        else:
            table(name, body)


# --- inboxd emulator --------------------------------------------------------------------


def cmd_emulator(args: argparse.Namespace) -> int:
    from .emulator import EmulatorSettings, Faults, serve_forever

    faults = Faults(
        error_rate=args.fail_rate,
        part_error_rate=args.part_fail_rate,
        rate_limit_rate=args.rate_limit_rate,
        retry_after_seconds=args.retry_after,
        drop_rate=args.drop_rate,
        slow_seconds=args.slow_seconds,
    )
    settings = EmulatorSettings(
        host=args.host,
        port=args.port,
        data_dir=Path(args.data_dir) if args.data_dir else None,
        key=args.key,
        url_ttl_seconds=args.url_ttl,
        processing_delay_seconds=args.processing_delay,
        dedupe=args.dedupe,
        latency_ms=args.latency_ms,
        batch_seconds=args.batch_seconds,
        tls=args.tls,
        faults=faults,
    )
    if args.tls:
        try:  # only --tls needs it, so only --tls imports it
            import trustme  # noqa: F401
        except ImportError:
            print("inboxd emulator: --tls needs the trustme package: pip install 'inboxd[tls]'", file=sys.stderr)
            return 2
    return serve_forever(settings)


def _add_emulator_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--data-dir", metavar="DIR", help="where uploads are kept (default: a temp dir)")
    p.add_argument("--key", default="emulator-key", help="the one API key it accepts")
    p.add_argument("--url-ttl", type=float, default=900.0, metavar="SECONDS", help="presigned url lifetime")
    p.add_argument("--processing-delay", type=float, default=0.2, metavar="SECONDS")
    p.add_argument("--no-dedupe", dest="dedupe", action="store_false",
                   help="never answer the checksum 409: the same bytes uploaded twice become two files")
    p.add_argument("--latency-ms", type=float, default=0.0, metavar="N",
                   help="every API and storage answer is delayed by N ms")
    p.add_argument("--batch-seconds", type=float, default=2.0, metavar="S",
                   help="a batch job's time from create to COMPLETED (0: done at the first look)")
    p.add_argument("--tls", action="store_true",
                   help="serve HTTPS with a throwaway CA made at start (for 127.0.0.1 and localhost); the CA "
                        "file's path is the second stdout line (needs trustme: pip install 'inboxd[tls]')")
    g = p.add_argument_group("fault injection (rates are 0..1)")
    g.add_argument("--fail-rate", type=float, default=0.0, help="HTTP 500 on API calls")
    g.add_argument("--part-fail-rate", type=float, default=0.0, help="HTTP 503 on upload PUTs")
    g.add_argument("--rate-limit-rate", type=float, default=0.0, help="HTTP 429 with Retry-After")
    g.add_argument("--retry-after", type=float, default=1.0, metavar="SECONDS")
    g.add_argument("--drop-rate", type=float, default=0.0, help="connections cut mid-body on PUTs")
    g.add_argument("--slow-seconds", type=float, default=0.0, help="delay before every answer")


# --- inboxd upload ----------------------------------------------------------------------


def cmd_upload(args: argparse.Namespace) -> int:
    from .api.command import upload_command, usage_error_json

    try:
        config = _load_config(args)
        try:
            key, _ = resolve_api_key(config.api)
        except ConfigError as exc:
            _fail_usage(str(exc))
    except UsageError as exc:
        if args.json:  # --json: stdout is always one JSON object
            usage_error_json(str(exc))
        raise
    return upload_command(config, key, Path(args.file), args.purpose, as_json=args.json, wait=args.wait,
                          mode=args.mode, check=args.check)


# --- inboxd validate --------------------------------------------------------------------


def cmd_validate(args: argparse.Namespace) -> int:
    from .check.command import validate_command

    config = _load_config(args)
    return validate_command(config, [Path(f) for f in args.files], args.purpose, args.mode, as_json=args.json)


# --- inboxd run / status ----------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from .pipeline.command import run_command

    if not args.config:
        _fail_usage("inboxd run: --config PATH is required")
    config = _load_config(args)
    return run_command(config, Path(args.config), emulator=args.emulator, once=args.once)


def cmd_status(args: argparse.Namespace) -> int:
    from .pipeline.command import status_command

    config = _load_config(args)
    return status_command(config, as_json=args.json)


# --- inboxd batch / batches (issue 12) ----------------------------------------------------


def _config_and_key(args: argparse.Namespace):  # -> (Config, SecretStr)
    config = _load_config(args)
    try:
        key, _ = resolve_api_key(config.api)
    except ConfigError as exc:
        _fail_usage(str(exc))
    return config, key


def cmd_batch(args: argparse.Namespace) -> int:
    """`inboxd batch FILE --endpoint E ...` (the round trip), or `inboxd batch cancel ID`."""
    from .batch.command import batch_command, cancel_command, state_dir_for

    target = args.target
    try:
        if len(target) == 2 and target[0] == "cancel":
            config, key = _config_and_key(args)
            return cancel_command(config, key, target[1], as_json=args.json)
        if len(target) != 1:
            _fail_usage("inboxd batch: expected FILE, or cancel ID")
        if not args.endpoint:
            _fail_usage("inboxd batch FILE: --endpoint is required (for example /v1/chat/completions)")
        config, key = _config_and_key(args)
    except UsageError as exc:
        if args.json:  # --json: stdout is always one JSON object
            print(json.dumps({"error": {"kind": "usage", "message": str(exc)}}, indent=2))
        raise
    return batch_command(
        config, key, Path(target[0]), endpoint=args.endpoint, model_id=args.model_id,
        outbox=Path(args.outbox) if args.outbox else None, wait=args.wait, as_json=args.json, join=args.join,
        poll_seconds=args.poll_seconds, completion_window=args.completion_window, priority=args.priority,
        state_dir=state_dir_for(config, bool(args.config)))


def cmd_batches(args: argparse.Namespace) -> int:
    from .batch.command import batches_command, state_dir_for

    config = _load_config(args)
    return batches_command(state_dir_for(config, bool(args.config)), as_json=args.json)


# --- the parser -------------------------------------------------------------------------


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
    _add_emulator_args(p)
    p.set_defaults(func=cmd_emulator)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"inboxd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
