"""Benchmark of the daemon (issues 4 and 14), not a test. Side by side in one run:

1. Loopback burst: N batch files of ~230 KB renamed into an inbox as fast as possible, inboxd
   with `--workers` (validate=basic, journal, manifests: all on) against the official 3.x
   client (`together>=3`) uploading a same-sized set one after another in one process (its
   defaults: `check=True`). For each: files/s and CPU per file. inboxd's CPU is utime+stime
   of the daemon from /proc/<pid>/stat, read just before the first rename and when the last
   manifest is seen; the client's is the rusage of its child process (import time included).
2. Latency: a second emulator with `--latency-ms` (every API and storage answer waits), a
   burst per worker count in `--latency-workers`: files/s against the bound
   0.9 x workers / (requests per file x latency), requests per file counted by the emulator;
   p50/p99 drop-to-manifest (manifest mtime - rename time); the daemon's CPU per file.
3. Steady (optional): 50 files/s offered for --steady-seconds: p50/p99 drop-to-manifest.
4. Idle (optional): CPU of the daemon over --idle-seconds with 4 empty inboxes.

    .venv/bin/python bench/daemon.py [--files 1000] [--workers 4] [--latency-ms 50]
        [--latency-workers 8,32] [--latency-files 600] [--steady-seconds 0] [--idle-seconds 0]
        [--dir D] [--repeat 3]

`--repeat 3` is how the figures in docs/benchmarks.md are made: three whole comparisons, each ratio taken
within its run (client and inboxd back to back), then the median (with --files below ~1,000
the client's import time dominates its CPU per file).

Every set has its own contents (the emulator answers 409 to a checksum it has seen, which
would flatter whoever goes second). Shared machine, 2 cores: the daemon, the emulator and
this script compete for them; the load average is printed; quote medians of several runs.
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

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.helpers.venvs import official_python, together_version  # noqa: E402

PY = sys.executable
KEY = "bench-key-" + os.urandom(6).hex()
TARGET_CPU = 0.8  # inboxd CPU per file <= 0.8 x the 3.x client's
TARGET_RATE = 1.5  # loopback burst >= 1.5 x the 3.x client's files/s
TARGET_BOUND = 0.9  # with latency: >= 0.9 x workers / (requests per file x latency)


def batch_file(path: Path, tag: str, lines: int = 1000) -> None:
    """~230 bytes a line: a chat-completions batch request."""
    pad = "x" * 120
    head = '{"custom_id": "%s-%d", "body": {"model": "bench-model", "max_tokens": 64, "messages": ' \
           '[{"role": "user", "content": "%s request %d %s"}]}}\n'
    with path.open("w") as f:
        f.write("".join(head % (tag, i, tag, i, pad) for i in range(lines)))


def make_set(folder: Path, tag: str, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{tag}-{i:05d}.jsonl"
        batch_file(p, f"{tag}{i}")
        out.append(p)
    return out


def start_emulator(data: Path, latency_ms: float = 0) -> tuple[subprocess.Popen[str], str]:
    cmd = [PY, "-m", "inboxd", "emulator", "--port", "0", "--data-dir", str(data), "--key", KEY]
    if latency_ms:
        cmd += ["--latency-ms", str(latency_ms)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    base_url = proc.stdout.readline().strip()
    threading.Thread(target=proc.stdout.read, daemon=True).start()
    return proc, base_url


def emulator_requests(base_url: str) -> int:
    r = requests.get(f"{base_url}/_emulator/stats", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    return sum(n for route, n in r.json()["requests"].items() if route != "control")


def write_config(root: Path, base_url: str, inboxes: list[Path], workers: int, validate: str = "basic") -> Path:
    cfg = root / "inboxd.toml"
    (root / "state").mkdir(parents=True, exist_ok=True)
    text = f"""[api]
base_url = "{base_url}"
[daemon]
state_dir = "{root / 'state'}"
workers = {workers}
settle_seconds = 1.0
rescan_seconds = 60
log_format = "json"
log_level = "info"
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


SUFFIX = ".manifest.json"


def collect(inbox: Path, times: dict[str, float], timeout: float,
            daemon: subprocess.Popen[bytes] | None = None) -> dict[str, float]:
    """Wait for every manifest; return name -> latency (manifest mtime - rename time). One
    listing of done/ every 0.2 s (cheap: the driver shares the cores with the daemon)."""
    done = inbox / "done"
    deadline = time.monotonic() + timeout
    lat: dict[str, float] = {}
    while len(lat) < len(times) and time.monotonic() < deadline:
        if daemon is not None and daemon.poll() is not None:
            raise SystemExit(f"the daemon exited ({daemon.returncode}) with {len(lat)}/{len(times)} manifests")
        try:
            with os.scandir(done) as it:
                for e in it:
                    if e.name.endswith(SUFFIX):
                        name = e.name[:-len(SUFFIX)]
                        if name in times and name not in lat:
                            lat[name] = e.stat().st_mtime - times[name]
        except FileNotFoundError:
            pass
        if len(lat) < len(times):
            time.sleep(0.2)
    return lat


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, all its threads, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tck, int(fields[12]) / tck


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def official(files: list[Path], base_url: str) -> dict[str, float]:
    python = official_python("3")
    script = r"""
import json, sys, time
t0 = time.perf_counter()
from together import Together
base_url, key = sys.argv[1], sys.argv[2]
paths = sys.stdin.read().split("\n")
client = Together(api_key=key, base_url=base_url)
lat = []
t1 = time.perf_counter()
for p in paths:
    s = time.perf_counter()
    client.files.upload(file=p, purpose="batch-api")
    lat.append(time.perf_counter() - s)
print(json.dumps({"seconds": time.perf_counter() - t1, "import": t1 - t0, "lat": lat}))
"""
    listing = [str(p) for p in files]
    work = files[0].parent
    os.sync()  # every run starts without the last one's writeback (the files were just made)
    (work / "list.txt").write_text("\n".join(listing))
    with open(work / "list.txt") as fin, open(work / "out.txt", "w") as fout, open(work / "err.txt", "w") as ferr:
        proc = subprocess.Popen([str(python), "-c", script, base_url.removesuffix("/v1"), KEY], stdin=fin,
                                stdout=fout, stderr=ferr)
        _, status, usage = os.wait4(proc.pid, 0)  # the child's own rusage, import time included
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = {"out": (work / "out.txt").read_text(), "err": (work / "err.txt").read_text()}
    if proc.returncode != 0:
        raise SystemExit(f"the official client failed:\n{result['err'][-3000:]}")
    data = json.loads(result["out"].strip().splitlines()[-1])
    return {"n": len(listing), "seconds": data["seconds"], "import": data["import"], "p50": pct(data["lat"], 0.5),
            "p99": pct(data["lat"], 0.99), "cpu": usage.ru_utime + usage.ru_stime, "sys": usage.ru_stime,
            "version": together_version(python)}


def burst(root: Path, base_url: str, files: list[Path], workers: int, validate: str, name: str,
          emu_pid: int, timeout: float = 900) -> dict[str, float]:
    """One daemon, one burst of renames: files/s, latencies, the daemon's CPU over the burst."""
    inbox = root / name / "inbox"
    inbox.mkdir(parents=True)
    cfg = write_config(root / name, base_url, [inbox], workers, validate)
    daemon = start_daemon(cfg, root / name / "daemon.log")
    try:
        prof = None
        if os.environ.get("BENCH_PROFILE"):  # py-spy the daemon over the burst (BENCH_PROFILE_ARGS=--gil ...)
            prof = subprocess.Popen([str(Path(PY).parent / "py-spy"), "record", "--format", "raw", "-r", "100",
                                     *os.environ.get("BENCH_PROFILE_ARGS", "").split(), "-p", str(daemon.pid),
                                     "-o", os.environ["BENCH_PROFILE"] + f".{name}.txt"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        elif os.environ.get("BENCH_PERF"):  # perf record of the daemon over the burst
            prof = subprocess.Popen(["perf", "record", "-F", "999", "-g", "-p", str(daemon.pid), "-o",
                                     os.environ["BENCH_PERF"] + f".{name}.data"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        elif os.environ.get("BENCH_STRACE"):  # syscall counts of the daemon over the burst
            prof = subprocess.Popen(["strace", "-c", "-f", "-p", str(daemon.pid), "-o",
                                     os.environ["BENCH_STRACE"] + f".{name}.txt"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        os.sync()  # every run starts without the last one's writeback (as the official client's)
        u0, s0 = cpu_times(daemon.pid)
        e0 = cpu_seconds(emu_pid)
        times = drop(files, inbox, None)
        lat = collect(inbox, times, timeout=timeout, daemon=daemon)
        u1, s1 = cpu_times(daemon.pid)
        e1 = cpu_seconds(emu_pid)
        if prof is not None:
            prof.send_signal(signal.SIGINT)
            prof.wait(60)
    finally:
        stop(daemon)
    if len(lat) < len(times):
        raise SystemExit(f"{name}: {len(lat)}/{len(times)} manifests; see {root / name / 'daemon.log'}")
    first = min(times.values())
    done_at = sorted(times[n] + v for n, v in lat.items())
    last = done_at[-1]
    vals = list(lat.values())
    cpu = (u1 - u0) + (s1 - s0)
    return {"n": len(lat), "rate": len(lat) / (last - first), "cpu": cpu, "cpu_per_file": cpu / len(lat),
            "sys": s1 - s0, "emu_per_file": (e1 - e0) / len(lat), "first": done_at[0] - first,
            # files/s once manifests flow (first to last manifest): without the start-up of the burst
            "flowing": (len(done_at) - 1) / (last - done_at[0]) if last > done_at[0] else 0.0,
            "p50": pct(vals, .5), "p99": pct(vals, .99), "seconds": last - first}


def fs_label(path: Path) -> str:
    """The filesystem the bench ran on: type, device, and whether ext4 has its journal."""
    best = ("", "?", "?")
    for line in Path("/proc/self/mounts").read_text().splitlines():
        dev, mnt, kind = line.split()[:3]
        if str(path.resolve()).startswith(mnt) and len(mnt) >= len(best[0]):
            best = (mnt, dev, kind)
    return f"{best[2]} ({best[1]} at {best[0]})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--latency-ms", type=float, default=50)
    ap.add_argument("--latency-workers", default="8,32", help="worker counts for the latency bursts ('' skips)")
    ap.add_argument("--latency-files", type=int, default=600)
    ap.add_argument("--steady-seconds", type=float, default=0)
    ap.add_argument("--steady-rate", type=float, default=50)
    ap.add_argument("--idle-seconds", type=float, default=0)
    ap.add_argument("--skip-official", action="store_true")
    ap.add_argument("--dir", type=Path, default=None,
                    help="where the files, inboxes and state live (default .cache/ of the checkout): the "
                         "filesystem under test, the same for inboxd and the official client")
    ap.add_argument("--validate", default="basic", choices=("off", "basic", "strict"),
                    help="the inbox's validate mode (the official client checks by default)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run the whole comparison this many times (each its own process) and print the "
                         "median of each run's ratios after the tables")
    ap.add_argument("--summary-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.repeat > 1:
        return repeat(args.repeat)
    summary: dict[str, float] = {}
    lat_workers = [int(w) for w in args.latency_workers.split(",") if w.strip()]
    load = os.getloadavg()
    rows: list[tuple[str, str, str, str]] = []
    verdicts: list[str] = []
    base = args.dir or (REPO / ".cache" if (REPO / ".cache").exists() else None)
    with tempfile.TemporaryDirectory(prefix="inboxd-bench-", dir=base) as tmp:
        root = Path(tmp)
        n_steady = int(args.steady_seconds * args.steady_rate)
        print("making files of ~230 KB ...", file=sys.stderr, flush=True)
        set_official = [] if args.skip_official else make_set(root / "stage-official", "off", args.files)
        set_burst = make_set(root / "stage-burst", "burst", args.files)
        set_lat = {w: make_set(root / f"stage-lat{w}", f"lat{w}", args.latency_files) for w in lat_workers}
        set_steady = make_set(root / "stage-steady", "steady", n_steady)
        size = set_burst[0].stat().st_size
        emu, base_url = start_emulator(root / "emu")
        try:
            off = None
            if set_official:
                print("official 3.x client, one file after another ...", file=sys.stderr, flush=True)
                e0 = cpu_seconds(emu.pid)
                off = official(set_official, base_url)
                off["emu_per_file"] = (cpu_seconds(emu.pid) - e0) / off["n"]
                off_rate = off["n"] / off["seconds"]
                rows.append((f"official together {off['version']}, sequential, {off['n']} files",
                             f"{off_rate:.1f} files/s",
                             f"{1000 * off['cpu'] / off['n']:.1f} ms ({off['cpu']:.1f} s, sys {off['sys']:.1f}, import "
                             f"{off['import']:.2f} s wall)",
                             f"p50 {off['p50']*1000:.0f} ms, p99 {off['p99']*1000:.0f} ms (per upload); emulator "
                             f"{1000 * off['emu_per_file']:.1f} ms CPU/file"))
            print(f"inboxd burst, {args.workers} workers ...", file=sys.stderr, flush=True)
            r0 = emulator_requests(base_url)
            b = burst(root, base_url, set_burst, args.workers, args.validate, "burst", emu.pid)
            per_file = (emulator_requests(base_url) - r0) / b["n"]
            vs_rate = f" ({b['rate'] / off_rate:.2f}x)" if off else ""
            vs_cpu = f" ({b['cpu_per_file'] / (off['cpu'] / off['n']):.2f}x)" if off else ""
            rows.append((f"inboxd, {args.workers} workers, validate={args.validate}, burst of {b['n']} renames",
                         f"{b['rate']:.1f} files/s{vs_rate}", f"{1000 * b['cpu_per_file']:.1f} ms{vs_cpu} ({b['cpu']:.1f} s, sys {b['sys']:.1f})",
                         f"p50 {b['p50']:.2f} s, p99 {b['p99']:.2f} s (drop -> manifest); {per_file:.1f} requests/file; "
                         f"emulator {1000 * b['emu_per_file']:.1f} ms CPU/file"))
            if off:
                cpu_ratio = b["cpu_per_file"] / (off["cpu"] / off["n"])
                summary.update(cpu_ratio=cpu_ratio, rate_ratio=b["rate"] / off_rate, client_ms=1000 * off["cpu"] / off["n"],
                               inboxd_ms=1000 * b["cpu_per_file"], client_rate=off_rate, inboxd_rate=b["rate"])
                verdicts.append(f"CPU per file {cpu_ratio:.2f}x the 3.x client's (target <= {TARGET_CPU}): "
                                f"{'met' if cpu_ratio <= TARGET_CPU else 'MISSED'}")
                verdicts.append(f"loopback burst {b['rate'] / off_rate:.2f}x the 3.x client's files/s (target >= "
                                f"{TARGET_RATE}): {'met' if b['rate'] / off_rate >= TARGET_RATE else 'MISSED'}")
            if set_steady:
                inbox = root / "steady" / "inbox"
                inbox.mkdir(parents=True)
                daemon = start_daemon(write_config(root / "steady", base_url, [inbox], args.workers, args.validate),
                                      root / "steady" / "daemon.log")
                try:
                    print(f"inboxd steady {args.steady_rate}/s for {args.steady_seconds}s ...", file=sys.stderr,
                          flush=True)
                    times = drop(set_steady, inbox, args.steady_rate)
                    lat = collect(inbox, times, timeout=300, daemon=daemon)
                finally:
                    stop(daemon)
                vals = list(lat.values())
                rows.append((f"inboxd, {args.steady_rate:.0f} files/s offered for {args.steady_seconds:.0f} s "
                             f"({len(lat)}/{len(times)} manifests)", f"{len(lat) / args.steady_seconds:.1f} files/s",
                             "", f"p50 {pct(vals, .5):.2f} s, p99 {pct(vals, .99):.2f} s, max {max(vals):.2f} s"))
            if args.idle_seconds > 0:
                idle_root = root / "idle"
                inboxes = [idle_root / f"inbox{i}" for i in range(4)]
                for p in inboxes:
                    p.mkdir(parents=True)
                daemon = start_daemon(write_config(idle_root, base_url, inboxes, args.workers),
                                      idle_root / "daemon.log")
                try:
                    print(f"inboxd idle for {args.idle_seconds}s ...", file=sys.stderr, flush=True)
                    time.sleep(3)
                    c0, t0 = cpu_seconds(daemon.pid), time.monotonic()
                    time.sleep(args.idle_seconds)
                    c1, t1 = cpu_seconds(daemon.pid), time.monotonic()
                finally:
                    stop(daemon)
                rows.append(("inboxd idle, 4 empty inboxes", "", f"{100 * (c1 - c0) / (t1 - t0):.3f} % of a core",
                             f"{c1 - c0:.2f} CPU s over {t1 - t0:.0f} s"))
        finally:
            emu.terminate()
            emu.wait(10)
        if lat_workers:
            emu, base_url = start_emulator(root / "emu-lat", args.latency_ms)
            try:
                for w in lat_workers:
                    print(f"inboxd burst, {w} workers, {args.latency_ms:.0f} ms latency ...", file=sys.stderr,
                          flush=True)
                    r0 = emulator_requests(base_url)
                    b = burst(root, base_url, set_lat[w], w, args.validate, f"lat{w}", emu.pid)
                    per_file = (emulator_requests(base_url) - r0) / b["n"]
                    bound = w / (per_file * args.latency_ms / 1000)
                    rows.append((f"inboxd, {w} workers, {args.latency_ms:.0f} ms latency, burst of {b['n']}",
                                 f"{b['rate']:.1f} files/s ({b['rate'] / bound:.2f} of {bound:.0f}); "
                                 f"{b['flowing']:.1f} once flowing ({b['flowing'] / bound:.2f}), first manifest "
                                 f"after {b['first']:.2f} s",
                                 f"{1000 * b['cpu_per_file']:.1f} ms ({b['cpu']:.1f} s, sys {b['sys']:.1f})",
                                 f"p50 {b['p50']:.2f} s, p99 {b['p99']:.2f} s (drop -> manifest); "
                                 f"{per_file:.1f} requests/file; emulator {1000 * b['emu_per_file']:.1f} ms CPU/file"))
                    summary[f"bound{w}"] = b["rate"] / bound
                    summary[f"rate{w}"] = b["rate"]
                    if w == 8:
                        verdicts.append(f"{w} workers at {args.latency_ms:.0f} ms: {b['rate'] / bound:.2f} x the "
                                        f"bound {bound:.1f} files/s (target >= {TARGET_BOUND}): "
                                        f"{'met' if b['rate'] >= TARGET_BOUND * bound else 'MISSED'}")
            finally:
                emu.terminate()
                emu.wait(10)
    print(f"\ninboxd daemon benchmark: files of {size / 1000:.0f} KB on {fs_label(Path(base or tempfile.gettempdir()))}, "
          f"emulator on loopback, {os.cpu_count()} cores "
          f"shared by the daemon, the emulator and the driver; load average at start "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    w = max(len(r[0]) for r in rows)
    print(f"| {'run'.ljust(w)} | throughput | CPU per file | latency |")
    print(f"|{'-' * (w + 2)}|------------|--------------|---------|")
    for r in rows:
        print(f"| {r[0].ljust(w)} | {r[1]} | {r[2]} | {r[3]} |")
    print()
    for v in verdicts:
        print(v)
    if args.summary_out is not None:
        args.summary_out.write_text(json.dumps(summary))
    return 0


def repeat(n: int) -> int:
    """Run this benchmark `n` times with the same arguments, each in its own process (its tables
    printed as it goes), then the median of each figure over the runs: ratios are taken within
    a run (the client and inboxd back to back) before the median."""
    argv = [a for a in sys.argv[1:]]
    i = argv.index("--repeat") if "--repeat" in argv else -1
    if i >= 0:
        del argv[i:i + 2]
    argv = [a for a in argv if not a.startswith("--repeat=")]
    runs: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="inboxd-bench-repeat-") as tmp:
        for k in range(n):
            out = Path(tmp) / f"run{k}.json"
            code = subprocess.call([PY, __file__, *argv, "--summary-out", str(out)])
            if code != 0:
                return code
            runs.append(json.loads(out.read_text()))
    print(f"\nmedians of {n} runs (each ratio within its run):")
    for key in runs[0]:
        values = sorted(r[key] for r in runs if key in r)
        print(f"  {key}: {values[len(values) // 2]:.2f}   (runs: {', '.join(f'{v:.2f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
