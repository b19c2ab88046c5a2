"""How fast the emulator takes a PUT, and how much memory it needs for it (issue 2).

    .venv/bin/python bench/emulator_put.py [--size-mib 1024] [--runs 3] [--dir DIR]

Starts `inboxd emulator` as a child process, makes a file of --size-mib, and PUTs it with
`curl -T` into a fresh presigned url three times; prints MB/s (median) and the emulator's
peak RSS (VmHWM). curl is the client so that only the emulator is measured.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-key"


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=str(REPO / ".cache" / "bench"))
    args = ap.parse_args()
    Path(args.dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        data = Path(tmp) / "big.jsonl"
        with open(data, "wb") as f:
            block = os.urandom(2**20)
            for _ in range(args.size_mib):
                f.write(block)
        emu = subprocess.Popen([sys.executable, "-m", "inboxd", "emulator", "--key", KEY, "--data-dir",
                                str(Path(tmp) / "emu")], stdout=subprocess.PIPE, text=True, cwd=REPO)
        base = emu.stdout.readline().strip()
        hwm_idle = vm_hwm_kib(emu.pid)
        rates = []
        try:
            for _ in range(args.runs):
                r = requests.post(f"{base}/files", headers={"Authorization": f"Bearer {KEY}"}, allow_redirects=False,
                                  files={"purpose": (None, "fine-tune"), "file_name": (None, "big.jsonl")}, timeout=30)
                url = r.headers["Location"]
                t0 = time.perf_counter()
                subprocess.run(["curl", "-sS", "-f", "-o", "/dev/null", "-T", str(data), url], check=True)
                rates.append(args.size_mib * 2**20 / 1e6 / (time.perf_counter() - t0))
            hwm = vm_hwm_kib(emu.pid)
        finally:
            emu.terminate()
            emu.wait(10)
    print(f"machine: {os.cpu_count()} cores, shared; file {args.size_mib} MiB on {args.dir}")
    print(f"curl -T into the emulator: {statistics.median(rates):.0f} MB/s median of {args.runs} "
          f"({', '.join(f'{r:.0f}' for r in rates)})")
    print(f"emulator peak RSS: {hwm / 1024:.1f} MiB (idle before the PUTs: {hwm_idle / 1024:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
