"""Validation speed and memory, side by side with the official checkers (issue 5).

    .venv/bin/python bench/validate.py [--mb 100] [--runs 3]

Generates a ~100 MB conversation fine-tune file and a ~100 MB batch file, then times, each in
a child process (wall, median of --runs; peak RSS from ru_maxrss of the child):
inboxd strict vs the 1.x client's `check_file`, inboxd basic vs the 3.x client's check.
inboxd's figures include the sha256 of the file (the same pass computes it); the official
checkers compute none.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.helpers.venvs import official_python  # noqa: E402

INBOXD = "import sys; from inboxd.check import check_file; r = check_file(sys.argv[1], sys.argv[2], sys.argv[3]); assert r.passed, r.errors[:1]"
V1 = "import sys; from together.utils.files import check_file; r = check_file(sys.argv[1]); assert r['is_check_passed'], r"
V3 = ("import sys; from together.lib.utils.files import check_file; r = check_file(sys.argv[1], purpose=sys.argv[2]); "
      "assert r['is_check_passed'], r")


def make_files(folder: Path, mb: int) -> tuple[Path, Path]:
    rng = random.Random(1)
    words = "the of and to in is you that it he was for on are as with his they at be this have from".split()
    conv, batch = folder / "conversation.jsonl", folder / "batch.jsonl"
    with open(conv, "w") as f:
        while f.tell() < mb * 10**6:
            turns = [{"role": "system", "content": "You are concise."}]
            for _ in range(rng.randint(1, 3)):
                turns.append({"role": "user", "content": " ".join(rng.choices(words, k=rng.randint(10, 60)))})
                turns.append({"role": "assistant", "content": " ".join(rng.choices(words, k=rng.randint(20, 120)))})
            f.write(json.dumps({"messages": turns}) + "\n")
    with open(batch, "w") as f:
        i = 0
        while f.tell() < mb * 10**6 * 0.98:  # the batch limit is 100 MB
            body = {"model": "meta-llama/Llama-3-8b", "max_tokens": 256,
                    "messages": [{"role": "user", "content": " ".join(rng.choices(words, k=rng.randint(700, 1200)))}]}
            f.write(json.dumps({"custom_id": f"req-{i}", "body": body}) + "\n")
            i += 1
    return conv, batch


def measure(python: str, script: str, *args: str, runs: int) -> tuple[float, float]:
    """(median wall seconds, peak RSS MiB) of the child, its own rusage from wait4."""
    walls, rss = [], 0.0
    env = {**os.environ, "TOGETHER_DISABLE_TQDM": "1", "PYTHONWARNINGS": "ignore"}
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen([python, "-c", script, *args], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - t0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{python} {script[:60]} {args} failed: exit {proc.returncode}")
        rss = max(rss, usage.ru_maxrss / 1024)
    return statistics.median(walls), rss


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    py1, py3 = str(official_python("1")), str(official_python("3"))
    (REPO / ".cache").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=REPO / ".cache") as tmp:
        conv, batch = make_files(Path(tmp), args.mb)
        rows = []
        targets: list[tuple[str, float, float]] = []
        for label, file, purpose in (("conversation fine-tune", conv, "fine-tune"), ("batch", batch, "batch-api")):
            size = file.stat().st_size / 1e6
            if purpose == "fine-tune":
                strict = measure(sys.executable, INBOXD, str(file), purpose, "strict", runs=args.runs)
                v1 = measure(py1, V1, str(file), runs=args.runs)
                rows.append((label, size, "inboxd strict (+sha256)", strict, "1.x check_file", v1))
                basic = measure(sys.executable, INBOXD, str(file), purpose, "basic", runs=args.runs)
                v3 = measure(py3, V3, str(file), purpose, runs=args.runs)
                rows.append((label, size, "inboxd basic (+sha256)", basic, "3.x check", v3))
                targets.append(("fine-tune strict vs the 1.x checker", v1[0] / strict[0], 3.0))
                targets.append(("fine-tune basic vs the 3.x checker", v3[0] / basic[0], 2.0))
            else:
                strict = measure(sys.executable, INBOXD, str(file), purpose, "strict", runs=args.runs)
                basic = measure(sys.executable, INBOXD, str(file), purpose, "basic", runs=args.runs)
                v3 = measure(py3, V3, str(file), "batch-api", runs=args.runs)
                rows.append((label, size, "inboxd strict (+sha256)", strict, "3.x check (1.x checks no batch rules)",
                             v3))
                rows.append((label, size, "inboxd basic (+sha256)", basic, "3.x check", v3))
                targets.append(("batch strict vs the 3.x checker", v3[0] / strict[0], 3.0))
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} cores, shared; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the "
          f"end; Python {sys.version.split()[0]}; median of {args.runs}; peak RSS of the child process")
    print("| file | MB | inboxd | wall s | RSS MiB | official | wall s | RSS MiB | speed-up |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, size, ours, (w, r), theirs, other in rows:
        if other is None:
            print(f"| {label} | {size:.0f} | {ours} | {w:.2f} | {r:.0f} | {theirs} | | | |")
        else:
            print(f"| {label} | {size:.0f} | {ours} | {w:.2f} | {r:.0f} | {theirs} | {other[0]:.2f} | {other[1]:.0f} "
                  f"| {other[0] / w:.1f}x |")
    print()
    for what, ratio, target in targets:
        print(f"{what}: {ratio:.2f}x (target >= {target:.0f}x): {'met' if ratio >= target else 'MISSED'}")
    peak = max(r[3][1] for r in rows)
    print(f"inboxd peak RSS: {peak:.0f} MiB (target <= 100): {'met' if peak <= 100 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
