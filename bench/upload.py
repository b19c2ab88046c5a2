"""Upload speed and memory, side by side with curl and the official clients (issue 3).

    .venv/bin/python bench/upload.py [--size-mib 1024] [--runs 3]

One `inboxd emulator` on loopback; one file of --size-mib. Single upload: `curl -T` into a
presigned url (from POST /v1/files), `inboxd upload`, the 3.x and the 1.x client. Multipart
in 250 MiB parts (every client's threshold lowered below the file size): inboxd, 3.x, 1.x.
Each upload is a child process; wall is the median of --runs, peak RSS is the child's VmHWM
(read from /proc as it runs, the high-water mark of its own memory). The content differs per
run (a fresh header line) so that no upload is answered by the checksum 409.
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


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
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

        inboxd = [sys.executable, "-m", "inboxd", "upload", str(data), "--purpose", "fine-tune", "--config"]
        cases = [
            ("single", "curl -T (presigned url)", lambda: curl(), env),
            ("single", "inboxd upload", lambda: [*inboxd, str(cfg_single)], env),
            ("single", "together 3.x", lambda: [py3, "-c", V3, str(data), big_gib], env3),
            ("single", "together 1.x", lambda: [py1, "-c", V1, str(data), big_gib], env1),
            ("multipart", "inboxd upload", lambda: [*inboxd, str(cfg_multi)], env),
            ("multipart", "together 3.x", lambda: [py3, "-c", V3, str(data), small], env3),
            ("multipart", "together 1.x", lambda: [py1, "-c", V1, str(data), small], env1),
        ]
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
    one_x = results[("multipart", "together 1.x")][0]
    print(f"\nmachine: {os.cpu_count()} cores, shared (the emulator runs on the same 2 cores); file {args.size_mib} MiB; "
          f"parts {PART} MiB; median of {args.runs}; peak RSS = child's VmHWM")
    print("| upload | client | wall s | vs curl | vs 1.x multipart | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for (kind, name), (wall, rss) in results.items():
        vs_curl = f"{wall / curl_wall:.2f}x" if kind == "single" else ""
        vs_1x = f"{wall / one_x:.2f}x" if kind == "multipart" else ""
        print(f"| {kind} | {name} | {wall:.2f} | {vs_curl} | {vs_1x} | {rss:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
