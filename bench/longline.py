"""Benchmark (not a test): the daemon's peak memory with files of one long line.

`--files` files, each one valid JSON line of about `--mb` MB (a chat request whose message is
that long), are renamed into one inbox at once; the daemon (`--workers`, validate=basic by
default) checks, uploads and archives them against the emulator; the script prints the
daemon's peak RSS (VmHWM of /proc/<pid>/status) before the files came and once all are archived.

    .venv/bin/python bench/longline.py [--files 4] [--mb 60] [--workers 4]
        [--purpose batch-api|fine-tune|eval] [--validate basic|strict] [--astral] [--dir D]

`--mb 67` makes lines just under the default 64 MiB line limit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.helpers.daemon import start_daemon, write_config  # noqa: E402
from tests.helpers.emulator import start_emulator  # noqa: E402

KEY = "bench-key-" + os.urandom(6).hex()


def long_line(purpose: str, size: int, tag: str, astral: bool = False) -> bytes:
    """One JSON line of about `size` bytes; `astral`: its text ends with a character beyond the
    BMP (an emoji), so that the decoded string takes 4 bytes a character (the worst case)."""
    text = tag + "x" * size + ("\U0001F600" if astral else "")
    if purpose == "batch-api":
        obj: dict[str, object] = {"custom_id": tag, "body": {"model": "m", "messages": [
            {"role": "user", "content": text}]}}
    else:
        obj = {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]}
    return json.dumps(obj, ensure_ascii=False).encode() + b"\n"


def hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--mb", type=float, default=60)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--purpose", default="batch-api")
    ap.add_argument("--validate", default="basic")
    ap.add_argument("--astral", action="store_true", help="end each text with an emoji (the worst case)")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="inboxd-longline-", dir=args.dir))
    inbox, stage = root / "inbox", root / "stage"
    inbox.mkdir()
    stage.mkdir()
    names = [f"long{i}.jsonl" for i in range(args.files)]
    for n in names:  # written before the daemon starts: only the daemon's work is measured
        (stage / n).write_bytes(long_line(args.purpose, int(args.mb * 1e6), n, args.astral))
    emu = start_emulator(root / "emu", key=KEY, no_dedupe=True)
    cfg = write_config(root, base_url=emu.base_url,
                       inboxes=[{"path": str(inbox), "purpose": args.purpose, "validate": args.validate}],
                       daemon={"workers": args.workers, "log_level": "info", "settle_seconds": 0.2})
    d = start_daemon(cfg, key=KEY)
    try:
        d.wait_event("inbox.watching")
        idle = hwm_kib(d.pid)
        t0 = time.monotonic()
        for n in names:
            os.rename(stage / n, inbox / n)
        for n in names:
            d.wait_event("file.archived", name=n, timeout=600)
        seconds = time.monotonic() - t0
        peak = hwm_kib(d.pid)
        failed = d.events("file.failed")
        print(f"{args.files} x {args.mb:g} MB single-line {args.purpose}{' astral' if args.astral else ''} files, validate={args.validate}, "
              f"workers={args.workers}: daemon peak RSS {peak / 1024:.0f} MiB (idle {idle / 1024:.0f} MiB, "
              f"+{(peak - idle) / 1024:.0f} MiB); all archived in {seconds:.1f}s; failed: {len(failed)}")
    finally:
        d.stop(timeout=60)
        emu.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
