"""`inboxd emulator [--host] [--port] [--data-dir] [--key] [--tls] [--no-dedupe] [--latency-ms] ...`:
a local Files API on loopback (SPEC §5); its base url is the first stdout line."""

from __future__ import annotations

import argparse
from pathlib import Path

from .._constants import EXIT_USAGE
from ._common import Subcommands
from .render import err


def cmd_emulator(args: argparse.Namespace) -> int:
    from ..emulator import EmulatorSettings, Faults, serve_forever

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
        batch_max_requests=args.batch_max_requests,
        batch_max_bytes=args.batch_max_bytes,
        batch_transient_rate=args.batch_transient_rate,
        batch_expire_next=args.batch_expire_next,
        tls=args.tls,
        faults=faults,
    )
    if args.tls:
        try:  # only --tls needs it, so only --tls imports it
            import trustme  # noqa: F401
        except ImportError:
            err("inboxd emulator: --tls needs the trustme package: pip install 'inboxd[tls]'")
            return EXIT_USAGE
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
    p.add_argument("--batch-max-requests", type=int, default=50_000, metavar="N", help="per-job limit (400 above)")
    p.add_argument("--batch-max-bytes", type=int, default=100 * 10**6, metavar="N", help="per-job limit (400 above)")
    p.add_argument("--batch-transient-rate", type=float, default=0.0, metavar="R",
                   help="share of batch requests answered with a 429 in the error file (per job and request)")
    p.add_argument("--batch-expire-next", type=int, default=0, metavar="N",
                   help="the next N batch jobs end EXPIRED with half their requests answered")
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


# --- the parser ----------------------------------------------------------------------


def add_emulator(sub: Subcommands) -> None:
    p = sub.add_parser("emulator", help="serve a local Files API on loopback")
    _add_emulator_args(p)
    p.set_defaults(func=cmd_emulator)
