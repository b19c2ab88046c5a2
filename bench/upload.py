"""Upload speed and memory, side by side with curl and the official clients (issue 3).

    .venv/bin/python bench/upload.py [--size-mib 1024] [--runs 3]
    .venv/bin/python bench/upload.py --cap 4MiB [--seconds 30] [--uploads 2]

One `inboxd emulator` on loopback; one file of --size-mib. Single upload: `curl -T` into a
presigned url (from POST /v1/files), `inboxd upload`, the 3.x and the 1.x client. Multipart
in 250 MiB parts (every client's threshold lowered below the file size): inboxd, 3.x, 1.x.
Each upload is a child process; wall is the median of --runs, peak RSS is the child's VmHWM
(read from /proc as it runs, the high-water mark of its own memory). The content differs per
run (a fresh header line) so that no upload is answered by the checksum 409.

--cap BYTES_PER_SECOND (issue 13) measures the bandwidth cap instead: --uploads files at once
through one FilesClient with upload.max_bytes_per_second = the cap, multipart in 5 MiB parts
with 4 in flight each (so 4 x --uploads streams share one bucket), cap x --seconds bytes in all,
against `inboxd emulator`. It prints the target, the rate achieved while bytes flowed (from
the progress callbacks: first to last byte handed to the socket), the end-to-end rate
(hashing and API calls included), and the lowest and highest rate over any 5 s window.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.helpers.venvs import official_python  # noqa: E402

KEY = "bench-upload-key"
PART = 250

V3 = """
import sys
import together.lib.resources.files as lf
lf.MULTIPART_THRESHOLD_GB = float(sys.argv[2]) / 1024
lf.TARGET_PART_SIZE_MB = %d
from together import Together
Together().files.upload(file=sys.argv[1], purpose="fine-tune", check=False)
""" % PART
V1 = """
import sys
import together.resources.files as rf
import together.filemanager as fm
rf.MULTIPART_THRESHOLD_GB = float(sys.argv[2]) / 1024
fm.TARGET_PART_SIZE_MB = %d
from together import Together
Together().files.upload(file=sys.argv[1], purpose="fine-tune", check=False)
""" % PART


SHA256 = """
import hashlib, sys
h = hashlib.sha256()
with open(sys.argv[1], "rb", buffering=0) as f:
    while chunk := f.read(4 * 2**20):
        h.update(chunk)
print(h.hexdigest())
"""


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of a child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = [0]

    def watch() -> None:
        while proc.poll() is None:
            try:
                for line in open(f"/proc/{proc.pid}/status"):
                    if line.startswith("VmHWM:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
            except OSError:
                pass
            time.sleep(0.02)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    t.join()
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} failed: {err.decode()[-1500:]}")
    return wall, peak[0] / 1024


def fresh(path: Path, size_mib: int, n: int) -> None:
    """Rewrite the first line so the content (and its sha256) is new; the size stays."""
    with open(path, "r+b") as f:
        f.write(b'{"text": "run %08d"}\n' % n)


def cap_bench(cap: int, seconds: float, uploads: int) -> int:
    from inboxd.api import FilesClient
    from inboxd.config import format_size, parse_config

    total = int(cap * seconds)
    work = REPO / ".cache" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        tmpd = Path(tmp)
        files = []
        line = b'{"text": "' + b"x" * 1000 + b'"}\n'
        for i in range(uploads):
            size = total // uploads
            path = tmpd / f"capped-{i}.jsonl"
            with open(path, "wb") as f:
                f.write(b'{"text": "upload %d %d"}\n' % (i, time.time_ns()))
                while f.tell() + len(line) <= size:
                    f.write(line)
                f.write(b"\n" * (size - f.tell()))
            files.append(path)
        emu = subprocess.Popen([sys.executable, "-m", "inboxd", "emulator", "--key", KEY, "--data-dir",
                                str(tmpd / "emu")], stdout=subprocess.PIPE, text=True, cwd=REPO)
        try:
            assert emu.stdout is not None
            base = emu.stdout.readline().strip()
            cfg = parse_config({"api": {"base_url": base, "proxy": ""},
                                "upload": {"multipart_threshold": "8MiB", "part_size": "5MiB", "part_concurrency": 4,
                                           "max_bytes_per_second": cap}})
            client = FilesClient(cfg.api, cfg.upload, KEY)
            lock = threading.Lock()
            marks: list[tuple[float, int]] = []  # (time, bytes) at every slice handed to the socket

            def progress(n: int) -> None:
                with lock:
                    marks.append((time.perf_counter(), n))

            results: list[object] = []
            errors: list[BaseException] = []

            def one(path: Path) -> None:
                try:
                    results.append(client.upload(path, "fine-tune", progress=progress))
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)

            t0 = time.perf_counter()
            threads = [threading.Thread(target=one, args=(p,)) for p in files]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            client.close()
        finally:
            emu.terminate()
            emu.wait(10)
    if errors:
        raise SystemExit(f"upload failed: {errors[0]!r}")
    sent = sum(n for _, n in marks)
    first, last = marks[0][0], marks[-1][0]
    flowing = (sent - marks[0][1]) / (last - first)  # bytes after the first mark, over first..last
    windows = []
    for start in range(int(last - first) - 4):
        lo, hi = first + start, first + start + 5
        windows.append(sum(n for t, n in marks if lo < t <= hi) / 5)
    parts = [getattr(r, "parts", 0) for r in results]
    print(f"cap {format_size(cap)}/s = {cap} B/s; {uploads} uploads at once, parts {parts}, 4 in flight each; "
          f"{sent} bytes sent (retries included)")
    print(f"  target            {cap / 1e6:8.3f} MB/s")
    print(f"  achieved, flowing {flowing / 1e6:8.3f} MB/s  ({(flowing / cap - 1) * 100:+.2f} %, "
          f"{last - first:.2f} s from first to last byte)")
    print(f"  achieved, end to end {total / wall / 1e6:5.3f} MB/s  ({(total / wall / cap - 1) * 100:+.2f} %, "
          f"{wall:.2f} s wall incl. hashing and API calls)")
    if windows:
        print(f"  5 s windows       {min(windows) / 1e6:8.3f} .. {max(windows) / 1e6:.3f} MB/s "
              f"({(min(windows) / cap - 1) * 100:+.2f} % .. {(max(windows) / cap - 1) * 100:+.2f} %)")
    print(f"machine: {os.cpu_count()} cores, shared; emulator on the same cores")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cap", metavar="BYTES_PER_SECOND",
                    help="measure upload.max_bytes_per_second instead (bytes, or a size such as 4MiB)")
    ap.add_argument("--seconds", type=float, default=30.0, help="with --cap: how long the capped upload lasts")
    ap.add_argument("--uploads", type=int, default=2, help="with --cap: uploads at once through one client")
    ap.add_argument("--single-only", action="store_true", help="only the single uploads (curl, inboxd, 3.x, 1.x)")
    args = ap.parse_args()
    if args.cap:
        from inboxd.config import parse_size

        return cap_bench(parse_size(int(args.cap) if args.cap.isdigit() else args.cap), args.seconds, args.uploads)
    py1, py3 = str(official_python("1")), str(official_python("3"))
    work = REPO / ".cache" / "bench"
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        tmpd = Path(tmp)
        data = tmpd / "big.jsonl"
        line = b'{"text": "' + b"x" * 1000 + b'"}\n'
        with open(data, "wb") as f:
            for _ in range(args.size_mib * 2**20 // len(line)):
                f.write(line)
            f.write(b"\n" * (args.size_mib * 2**20 - f.tell()))
        emu = subprocess.Popen([sys.executable, "-m", "inboxd", "emulator", "--key", KEY, "--data-dir", str(tmpd / "emu")],
                               stdout=subprocess.PIPE, text=True, cwd=REPO)
        base = emu.stdout.readline().strip()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOGETHER_")}
        env.update(TOGETHER_API_KEY=KEY, TOGETHER_DISABLE_TQDM="1", PYTHONWARNINGS="ignore")
        env1 = {**env, "TOGETHER_BASE_URL": base}
        env3 = {**env, "TOGETHER_BASE_URL": base.removesuffix("/v1")}
        big_gib = str(args.size_mib * 4)  # a threshold (MiB, passed as GiB/1024) above the file: single
        small = str(8)  # below the file: multipart
        cfg_single, cfg_multi = tmpd / "single.toml", tmpd / "multi.toml"
        cfg_single.write_text(f'[api]\nbase_url = "{base}"\n[upload]\nmultipart_threshold = "{args.size_mib * 4}MiB"\n')
        cfg_multi.write_text(f'[api]\nbase_url = "{base}"\n[upload]\nmultipart_threshold = "8MiB"\n'
                             f'part_size = "{PART}MiB"\n')

        def curl() -> list[str]:
            r = requests.post(f"{base}/files", headers={"Authorization": f"Bearer {KEY}"}, allow_redirects=False,
                              files={"purpose": (None, "fine-tune"), "file_name": (None, "big.jsonl")}, timeout=30)
            return ["curl", "-sS", "-f", "-o", "/dev/null", "-T", str(data), r.headers["Location"]]

        # --no-check: the bench file is not valid JSON Lines after `fresh` (as the clients are run with check=False)
        inboxd = [sys.executable, "-m", "inboxd", "upload", str(data), "--purpose", "fine-tune", "--no-check", "--config"]
        cases = [
            ("single", "curl -T (presigned url)", lambda: curl(), env),
            ("single", "inboxd upload", lambda: [*inboxd, str(cfg_single)], env),
            ("single", "together 3.x", lambda: [py3, "-c", V3, str(data), big_gib], env3),
            ("single", "together 1.x", lambda: [py1, "-c", V1, str(data), big_gib], env1),
            ("multipart", "inboxd upload", lambda: [*inboxd, str(cfg_multi)], env),
            ("multipart", "together 3.x", lambda: [py3, "-c", V3, str(data), small], env3),
            ("multipart", "together 1.x", lambda: [py1, "-c", V1, str(data), small], env1),
        ]
        if args.single_only:
            cases = [c for c in cases if c[0] == "single"]
        # the floor of a single upload: inboxd must hash the whole file (the checksum goes in the
        # create request) before the first byte is sent; a child process, 4 MiB reads, as inboxd does
        sha_walls = [run([sys.executable, "-c", SHA256, str(data)], env)[0] for _ in range(args.runs)]
        results: dict[tuple[str, str], tuple[float, float]] = {}
        n = 0
        try:
            for kind, name, make, cenv in cases:
                walls, peaks = [], []
                for _ in range(args.runs):
                    n += 1
                    fresh(data, args.size_mib, n)
                    w, p = run(make(), cenv)
                    walls.append(w)
                    peaks.append(p)
                results[(kind, name)] = (statistics.median(walls), max(peaks))
                print(f"  {kind:9} {name:24} {results[(kind, name)][0]:6.2f} s  {results[(kind, name)][1]:6.0f} MiB",
                      flush=True)
        finally:
            emu.terminate()
            emu.wait(10)
    curl_wall = results[("single", "curl -T (presigned url)")][0]
    one_x = results[("multipart", "together 1.x")][0] if ("multipart", "together 1.x") in results else float("nan")
    load = os.getloadavg()
    print(f"\nmachine: {os.cpu_count()} cores, shared (the emulator runs on the same 2 cores); load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end; file {args.size_mib} MiB; "
          f"parts {PART} MiB; median of {args.runs}; peak RSS = child's VmHWM")
    print("| upload | client | wall s | vs curl | vs 1.x multipart | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for (kind, name), (wall, rss) in results.items():
        vs_curl = f"{wall / curl_wall:.2f}x" if kind == "single" else ""
        vs_1x = f"{wall / one_x:.2f}x" if kind == "multipart" else ""
        print(f"| {kind} | {name} | {wall:.2f} | {vs_curl} | {vs_1x} | {rss:.0f} |")
    sha = statistics.median(sha_walls)
    ours = results[("single", "inboxd upload")][0]
    floor = sha + curl_wall
    print(f"\nsingle upload: inboxd {ours:.2f} s = {ours / curl_wall:.2f}x curl (target <= 1.25x): "
          f"{'met' if ours <= 1.25 * curl_wall else 'MISSED'}")
    print(f"the floor: the sha256 pass {sha:.2f} s (a child process) + curl's transfer {curl_wall:.2f} s = {floor:.2f} s; "
          f"inboxd is {ours / floor:.2f}x the floor ({ours - floor:+.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
