"""Benchmark (not a test): event delivery to a local webhook receiver, at a burst of N files.

A receiver process on loopback (tests/helpers/receiver.py) verifies every delivery with the
`standardwebhooks` library and logs when it answered. Two phases, each on a new inbox:

1. live: N small valid batch files renamed into an inbox at once, the receiver up. Latency is
   from the sidecar's publication (the manifest's ctime: set by its rename into done/) to the
   receiver's 2xx answer; its p50, p99 and max, split at the event's recording (the body's
   timestamp: the journal commit that writes the archived stage), and the events per second
   over the burst (bounded by the upload rate: an event exists once its file is archived).
2. drain: the same burst while the receiver answers 500 to everything, so every event waits;
   then the receiver recovers, and the sender's own rate is what empties the backlog (first 2xx
   to last), one sink, one thread, keep-alive.

    .venv/bin/python bench/events.py [--files 1000] [--workers 4] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.helpers.daemon import start_daemon, wait_until, write_config  # noqa: E402
from tests.helpers.emulator import start_emulator  # noqa: E402

KEY = "bench-key-" + os.urandom(6).hex()
SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
LINE = '{"custom_id": "c-%d", "body": {"model": "m", "messages": [{"role": "user", "content": "hi %d"}]}}\n'


def deliveries(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(x) for x in log.read_text().splitlines() if x.strip()]


def ok(log: Path) -> list[dict]:
    return [d for d in deliveries(log) if d["answer"] == 204]


def burst(inbox: Path, staging: Path, n: int, tag: str) -> float:
    staging.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (staging / f"{tag}{i:05d}.jsonl").write_text(LINE % (2 * i, i) + LINE % (2 * i + 1, i))
    started = time.time()
    for i in range(n):
        os.rename(staging / f"{tag}{i:05d}.jsonl", inbox / f"{tag}{i:05d}.jsonl")
    return started


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="inboxd-events-", dir=args.dir))
    log = root / "deliveries.jsonl"
    rec = subprocess.Popen([sys.executable, "-m", "tests.helpers.receiver", "--secret", SECRET, "--log", str(log)],
                           stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert rec.stdout is not None
    url = rec.stdout.readline().strip()
    control = url.rsplit("/", 1)[0] + "/_control"
    emu = start_emulator(root / "emu", key=KEY, no_dedupe=True)
    live, drain = root / "live", root / "drain"
    live.mkdir()
    drain.mkdir()
    cfg = write_config(root, base_url=emu.base_url, daemon={"workers": args.workers, "log_level": "info"},
                       inboxes=[{"path": str(live), "purpose": "batch-api"}, {"path": str(drain), "purpose": "batch-api"}])
    cfg.write_text(cfg.read_text() + f'\n[[events]]\nurl = "{url}"\nsecret_env = "HOOK_SECRET"\n'
                   'backoff_seconds = 0.5\nmax_backoff_seconds = 1.0\n')
    n = args.files
    try:
        import requests

        with start_daemon(cfg, key=KEY, env={"HOOK_SECRET": SECRET}) as d:
            # 1. live
            t0 = burst(live, root / "staging", n, "l")
            wait_until(lambda: len(ok(log)) >= n, 600, 0.2, "every live event delivered")
            got = ok(log)
            published = {}  # the rename into done/ sets the manifest's ctime (its mtime is its writing, earlier)
            for m in (live / "done").glob("*.manifest.json"):
                published[str(m)] = m.stat().st_ctime
            lat = [x["t"] - published[x["body"]["data"]["manifest"]] for x in got]
            recorded = [datetime.fromisoformat(x["body"]["timestamp"].replace("Z", "+00:00")).timestamp() for x in got]
            to_record = [r - published[x["body"]["data"]["manifest"]] for r, x in zip(recorded, got, strict=True)]
            to_send = [x["t"] - r for r, x in zip(recorded, got, strict=True)]
            span = max(x["t"] for x in got) - t0
            # 2. drain
            requests.post(control, json={"fail_rate": 1.0}, timeout=5)
            burst(drain, root / "staging", n, "d")
            wait_until(lambda: len(list((drain / "done").glob("*.manifest.json"))) >= n, 600, 0.2, "drain archived")
            requests.post(control, json={"fail_rate": 0.0}, timeout=5)
            wait_until(lambda: len(ok(log)) >= 2 * n, 600, 0.2, "every drained event delivered")
            drained = [x for x in ok(log) if "/drain/" in x["body"]["data"]["manifest"]]
            drain_span = max(x["t"] for x in drained) - min(x["t"] for x in drained)
            d.stop()
        bad = [x for x in deliveries(log) if not x["verified"]]
        print(json.dumps({
            "files": n, "workers": args.workers, "signature_failures": len(bad),
            "live": {"events": len(got), "seconds": round(span, 2), "events_per_second": round(len(got) / span, 1),
                     "latency_p50_ms": round(1000 * statistics.median(lat), 1),
                     "latency_p99_ms": round(1000 * pct(lat, 99), 1), "latency_max_ms": round(1000 * max(lat), 1),
                     "publish_to_record_p50_ms": round(1000 * statistics.median(to_record), 1),
                     "publish_to_record_p99_ms": round(1000 * pct(to_record, 99), 1),
                     "record_to_delivery_p50_ms": round(1000 * statistics.median(to_send), 1),
                     "record_to_delivery_p99_ms": round(1000 * pct(to_send, 99), 1)},
            "drain": {"events": len(drained), "seconds": round(drain_span, 2),
                      "events_per_second": round(len(drained) / drain_span, 1)},
        }, indent=2))
    finally:
        emu.stop()
        rec.terminate()
        rec.wait(10)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
