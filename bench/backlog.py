"""Benchmark (not a test): the daemon's memory with a backlog of files waiting behind a slow server.

N small valid batch files are renamed into one inbox (written in a staging folder on the same
filesystem first, the Maildir habit) while the daemon runs against an emulator whose every
answer waits `--latency-ms`: the workers crawl, the files wait. Once every file is in, the
script waits for `--hold` seconds (by default two rescans, so the backlog is seen by the
watch and by full scans), then prints the daemon's peak RSS (VmHWM of /proc/<pid>/status),
its RSS now, its CPU seconds per rescan period while it holds the backlog, and how many
files it got through.

    .venv/bin/python bench/backlog.py --files 100000 [--latency-ms 3000] [--workers 4]
        [--dir /tmp] [--window N] [--hold S] [--rescan S]

`--dir` is where the inbox goes (default: a new folder under the system temp directory; on
the reference machine that is the root ext4 disk; a tmpfs such as /dev/shm works too, at a
page of RAM per file). The bench process's own memory is not the daemon's: only the daemon's
is reported.
"""

from __future__ import annotations

import argparse
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
LINE = '{"custom_id": "c-%d", "body": {"model": "m", "messages": [{"role": "user", "content": "hi %d"}]}}\n'


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fill(inbox: Path, stage: Path, n: int) -> float:
    """Write n files in `stage`, rename each into `inbox`; seconds it took."""
    stage.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    for i in range(n):
        name = f"f{i:07d}.jsonl"
        tmp = stage / name
        with open(tmp, "w") as f:
            f.write(LINE % (i, i))
        os.rename(tmp, inbox / name)
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--latency-ms", type=int, default=3000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--rescan", type=float, default=10.0, help="the daemon's rescan_seconds")
    ap.add_argument("--hold", type=float, default=None, help="seconds to hold the backlog (default: 2 rescans + 5)")
    ap.add_argument("--window", type=int, default=None, help="the daemon's candidate_window (default: its own)")
    ap.add_argument("--dir", type=Path, default=None)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="inboxd-backlog-", dir=args.dir))
    inbox = root / "inbox"
    inbox.mkdir()
    emu = start_emulator(root / "emu", key=KEY, latency_ms=args.latency_ms, no_dedupe=True)
    daemon_settings: dict[str, object] = {"workers": args.workers, "settle_seconds": 1.0,
                                          "rescan_seconds": args.rescan, "log_level": "info",
                                          "stop_grace_seconds": 1}
    if args.window is not None:
        daemon_settings["candidate_window"] = args.window
    cfg = write_config(root, base_url=emu.base_url, inboxes=[{"path": str(inbox), "purpose": "batch-api"}],
                       daemon=daemon_settings)
    d = start_daemon(cfg, key=KEY)
    try:
        d.wait_event("inbox.watching")
        idle_hwm = status_kib(d.pid, "VmHWM")
        seconds = fill(inbox, root / "stage", args.files)
        hold = args.hold if args.hold is not None else 2 * args.rescan + 5
        c0, t0 = cpu_seconds(d.pid), time.monotonic()
        time.sleep(hold)
        cpu = cpu_seconds(d.pid) - c0
        held = time.monotonic() - t0
        hwm, rss = status_kib(d.pid, "VmHWM"), status_kib(d.pid, "VmRSS")
        done = len(os.listdir(inbox / "done")) // 2 if (inbox / "done").exists() else 0
        fs = os.statvfs(inbox)
        print(f"files={args.files} dir={root} (f_type via df: see `df -T {root}`) bsize={fs.f_bsize}")
        print(f"filled in {seconds:.1f}s; emulator latency {args.latency_ms} ms; workers {args.workers}; "
              f"window {args.window if args.window is not None else 'default'}")
        print(f"daemon peak RSS (VmHWM): {hwm / 1024:.1f} MiB (idle before the files: {idle_hwm / 1024:.1f} MiB); "
              f"RSS now {rss / 1024:.1f} MiB")
        print(f"daemon CPU while holding the backlog: {cpu:.1f}s over {held:.0f}s "
              f"({cpu / held * args.rescan:.2f}s per rescan period of {args.rescan:.0f}s)")
        print(f"archived meanwhile: {done}; still in the inbox: {sum(1 for _ in os.scandir(inbox)) - 3}")
    finally:
        d.stop(timeout=60)
        emu.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
