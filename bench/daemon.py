"""Benchmark of the daemon (issue 4), not a test. One run, one emulator, three measurements:

1. Burst: N batch files of ~230 KB renamed into an inbox as fast as possible; files/s from
   the first rename to the last manifest, p50/p99 rename -> manifest latency; next to the
   official 3.x client (`together>=3`) uploading a same-sized set one after another in one
   process against the same emulator (its defaults: `check=True`).
2. Steady: 50 files/s offered for 60 s: p50/p99 rename -> manifest latency.
3. Idle: CPU of the daemon over 60 s with 4 empty inboxes.

    .venv/bin/python bench/daemon.py [--files 2000] [--steady-seconds 60] [--idle-seconds 60]

The two sets have different contents (the emulator answers 409 to a checksum it has seen,
which would flatter whoever goes second). Latency is the manifest's mtime minus the time of
the rename, both on the wall clock of this machine. Shared machine, 2 cores: the daemon,
the emulator and this script compete for them; quote medians of several runs if you can.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.helpers.venvs import official_python, together_version  # noqa: E402

PY = sys.executable
KEY = "bench-key-" + os.urandom(6).hex()


def batch_file(path: Path, tag: str, lines: int = 1000) -> None:
    """~230 bytes a line: a chat-completions batch request."""
    pad = "x" * 120
    with path.open("w") as f:
        for i in range(lines):
            body = {"model": "bench-model", "max_tokens": 64,
                    "messages": [{"role": "user", "content": f"{tag} request {i} {pad}"}]}
            f.write(json.dumps({"custom_id": f"{tag}-{i}", "body": body}) + "\n")


def make_set(folder: Path, tag: str, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{tag}-{i:05d}.jsonl"
        batch_file(p, f"{tag}{i}")
        out.append(p)
    return out


def start_emulator(data: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [PY, "-m", "inboxd", "emulator", "--port", "0", "--data-dir", str(data), "--key", KEY],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    assert proc.stdout is not None
    base_url = proc.stdout.readline().strip()
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, base_url


def write_config(root: Path, base_url: str, inboxes: list[Path], workers: int, validate: str = "basic") -> Path:
    cfg = root / "inboxd.toml"
    text = f"""[api]
base_url = "{base_url}"
[daemon]
state_dir = "{root / 'state'}"
workers = {workers}
settle_seconds = 1.0
rescan_seconds = 60
log_format = "json"
log_level = "warning"
metrics_address = ""
"""
    for inbox in inboxes:
        text += f'\n[[inboxes]]\npath = "{inbox}"\npurpose = "batch-api"\nvalidate = "{validate}"\n'
    cfg.write_text(text)
    return cfg


def start_daemon(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TOGETHER_API_KEY": KEY}
    proc = subprocess.Popen([PY, "-m", "inboxd", "run", "--config", str(cfg)], env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    time.sleep(2.0)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def drop(files: list[Path], inbox: Path, rate: float | None) -> dict[str, float]:
    """Rename each file into the inbox (at `rate` files/s, or as fast as possible)."""
    times: dict[str, float] = {}
    t0 = time.monotonic()
    for i, p in enumerate(files):
        if rate:
            delay = t0 + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        times[p.name] = time.time()
        os.rename(p, inbox / p.name)
    return times


def collect(inbox: Path, times: dict[str, float], timeout: float) -> dict[str, float]:
    """Wait for every manifest; return name -> latency (manifest mtime - rename time)."""
    done = inbox / "done"
    deadline = time.monotonic() + timeout
    lat: dict[str, float] = {}
    while len(lat) < len(times) and time.monotonic() < deadline:
        for name in list(times.keys() - lat.keys()):
            m = done / f"{name}.manifest.json"
            try:
                lat[name] = m.stat().st_mtime - times[name]
            except FileNotFoundError:
                pass
        time.sleep(0.1)
    return lat


def official(files: list[Path], base_url: str) -> dict[str, float]:
    python = official_python("3")
    script = r"""
import json, sys, time
from together import Together
base_url, key = sys.argv[1], sys.argv[2]
paths = sys.stdin.read().split("\n")
client = Together(api_key=key, base_url=base_url)
lat = []
t0 = time.perf_counter()
for p in paths:
    s = time.perf_counter()
    client.files.upload(file=p, purpose="batch-api")
    lat.append(time.perf_counter() - s)
print(json.dumps({"seconds": time.perf_counter() - t0, "lat": lat}))
"""
    listing = [str(p) for p in files]
    out = subprocess.run([str(python), "-c", script, base_url.removesuffix("/v1"), KEY], input="\n".join(listing),
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the official client failed:\n{out.stderr[-3000:]}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return {"n": len(listing), "seconds": data["seconds"], "p50": pct(data["lat"], 0.5),
            "p99": pct(data["lat"], 0.99), "version": together_version(python)}


class _Skip(Exception):
    """A part of the run was switched off (0 seconds)."""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--steady-seconds", type=float, default=60)
    ap.add_argument("--steady-rate", type=float, default=50)
    ap.add_argument("--idle-seconds", type=float, default=60)
    ap.add_argument("--validate", default="basic", choices=("off", "basic", "strict"),
                    help="the inbox's validate mode (the official client checks by default)")
    args = ap.parse_args()
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="inboxd-bench-", dir=REPO / ".cache" if (REPO / ".cache").exists() else None) as tmp:
        root = Path(tmp)
        n_steady = int(args.steady_seconds * args.steady_rate)
        print(f"making {args.files} x 2 + {n_steady} files of ~230 KB ...", file=sys.stderr, flush=True)
        set_official = make_set(root / "stage-official", "off", args.files)
        set_burst = make_set(root / "stage-burst", "burst", args.files)
        set_steady = make_set(root / "stage-steady", "steady", n_steady)
        size = set_burst[0].stat().st_size
        emu, base_url = start_emulator(root / "emu")
        try:
            print("official 3.x client, one file after another ...", file=sys.stderr, flush=True)
            off = official(set_official, base_url)
            off_rate = off["n"] / off["seconds"]
            rows.append((f"official together {off['version']}, sequential, {off['n']} files",
                         f"{off_rate:.1f} files/s", f"p50 {off['p50']*1000:.0f} ms, p99 {off['p99']*1000:.0f} ms (per upload)"))

            inbox = root / "inbox" / "batch-api"
            inbox.mkdir(parents=True)
            cfg = write_config(root, base_url, [inbox], args.workers, args.validate)
            daemon = start_daemon(cfg, root / "daemon.log")
            try:
                print("inboxd burst ...", file=sys.stderr, flush=True)
                times = drop(set_burst, inbox, None)
                lat = collect(inbox, times, timeout=600)
                first = min(times.values())
                last = max(times[n] + v for n, v in lat.items())
                rate = len(lat) / (last - first)
                rows.append((f"inboxd, {args.workers} workers, validate={args.validate}, burst of {args.files} renames ({len(lat)} manifests)",
                             f"{rate:.1f} files/s ({rate / off_rate:.1f}x)",
                             f"p50 {pct(list(lat.values()), .5):.2f} s, p99 {pct(list(lat.values()), .99):.2f} s (rename -> manifest)"))
                if not set_steady:
                    raise _Skip
                print(f"inboxd steady {args.steady_rate}/s for {args.steady_seconds}s ...", file=sys.stderr, flush=True)
                times = drop(set_steady, inbox, args.steady_rate)
                lat = collect(inbox, times, timeout=300)
                vals = list(lat.values())
                rows.append((f"inboxd, {args.steady_rate:.0f} files/s offered for {args.steady_seconds:.0f} s ({len(lat)}/{len(times)} manifests)",
                             f"{len(lat) / args.steady_seconds:.1f} files/s",
                             f"p50 {pct(vals, .5):.2f} s, p99 {pct(vals, .99):.2f} s, max {max(vals):.2f} s"))
            except _Skip:
                pass
            finally:
                stop(daemon)
            if args.idle_seconds <= 0:
                raise _Skip
            idle_root = root / "idle"
            inboxes = [idle_root / f"inbox{i}" for i in range(4)]
            for p in inboxes:
                p.mkdir(parents=True)
            cfg = write_config(idle_root, base_url, inboxes, args.workers)
            daemon = start_daemon(cfg, idle_root / "daemon.log")
            try:
                print(f"inboxd idle for {args.idle_seconds}s ...", file=sys.stderr, flush=True)
                time.sleep(3)
                c0, t0 = cpu_seconds(daemon.pid), time.monotonic()
                time.sleep(args.idle_seconds)
                c1, t1 = cpu_seconds(daemon.pid), time.monotonic()
                rows.append(("inboxd idle, 4 empty inboxes", f"{100 * (c1 - c0) / (t1 - t0):.3f} % of a core",
                             f"{c1 - c0:.2f} CPU s over {t1 - t0:.0f} s"))
            finally:
                stop(daemon)
        except _Skip:
            pass
        finally:
            emu.terminate()
            emu.wait(10)
    print(f"\ninboxd daemon benchmark: files of {size / 1000:.0f} KB, emulator on loopback, "
          f"{os.cpu_count()} cores shared by the daemon, the emulator and the driver\n")
    w = max(len(r[0]) for r in rows)
    print(f"| {'run'.ljust(w)} | throughput | latency |")
    print(f"|{'-' * (w + 2)}|------------|---------|")
    for r in rows:
        print(f"| {r[0].ljust(w)} | {r[1]} | {r[2]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
