"""Benchmark of the batch round trip (issue 12), not a test. Against one `inboxd emulator`
with the job time set to 0 (`--batch-seconds 0`) and no processing delay:

1. join RSS: `inboxd batch big.jsonl --endpoint /v1/chat/completions --join` on a 50,000-line
   ~100 MB input (the whole one-shot: check, upload, create, poll, download ~100 MB of output,
   join), its peak RSS from wait4(); then the join alone in a fresh process on the delivered
   files (RSS before and after it).
2. drop to results, N small batch files (default 1,000):
   - `--mode library` (default): the one-shot's pieces in one process, as the daemon will use
     them: per file the basic check, FilesClient.upload, wait_for_processing, create_once
     (workers threads), one Poller delivering every outbox. Latency per file = from the start
     of its check to its delivered_at; files/s from the first start to the last delivery.
   - `--mode cli`: `inboxd batch FILE` processes, `--cli-concurrency` at a time (Python start-up
     included).
   - `--mode daemon`: `inboxd run` with a batch-api inbox that has `[inboxes.batch]`; files
     renamed in; latency = rename to the appearance of `<stem>.batch.json` in the outbox.
     Needs the daemon to be wired to inboxd.batch; says so when no batch.json ever shows.

    .venv/bin/python bench/roundtrip.py [--files 1000] [--mode library|cli|daemon] [--skip-join]
           [--skip-files] [--join-lines 50000] [--join-mb 100] [--ledger-lines 1000000 [--ledger-daemon]]
           [--ledger-late-lines 100] [--ledger-late-delay 5] [--ledger-log-dir DIR [--ledger-log-level debug]]

1b. with --ledger-lines N: `inboxd batch --join` of one input of N requests (~100 bytes each),
   split into parts of 50,000 by the ledger, every part's job, the merge into one results file;
   wall time and the command's own peak RSS (wait4).
   With --ledger-daemon as well: `inboxd run` with one batch-api inbox ([inboxes.batch] join =
   true, outbox in the work folder) and the same input renamed into it, wall time from the rename
   to the appearance of `<stem>.batch.json`, then SIGTERM and the daemon's peak RSS (wait4); then
   the same for a 50,000-request input (one job). All three lines are printed side by side, each
   with a check that results.jsonl has one line per request and batch.json counts none missing.
   Fairness: in the N-request daemon run a small input (`--ledger-late-lines`, default 100) is
   renamed into the same inbox `--ledger-late-delay` s (default 5) after the big one; its
   rename-to-batch.json time is printed beside the same small input's time in a daemon on its
   own (a fourth daemon run), with the times of its logged events. `--ledger-log-dir` keeps
   each daemon's JSON log (`--ledger-log-level debug` for more).

Shared machine, 2 cores: the emulator, the client and this script compete for them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "daemon"))

PY = sys.executable
KEY = "bench-key-" + os.urandom(6).hex()
ENDPOINT = "/v1/chat/completions"


def start_emulator(data: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    data.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [PY, "-m", "inboxd", "emulator", "--key", KEY, "--data-dir", str(data), "--batch-seconds", "0",
         "--processing-delay", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http"):
        raise SystemExit(f"the emulator did not start: {url!r}")
    return proc, url


def env_for(url: str, state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOGETHER_")}
    env.update(TOGETHER_API_KEY=KEY, TOGETHER_BASE_URL=url, XDG_STATE_HOME=str(state), PYTHONUNBUFFERED="1")
    return env


def write_batch(path: Path, tag: str, lines: int, line_bytes: int) -> None:
    """`lines` chat requests of about `line_bytes` bytes each."""
    base = len(json.dumps({"custom_id": f"{tag}-{lines}", "body": {
        "model": "bench-model", "messages": [{"role": "user", "content": ""}]}}))
    pad_len = max(0, line_bytes - base - 8)
    words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor ".split()
    rnd = random.Random(tag)
    with path.open("w") as f:
        for i in range(lines):
            text = []
            size = 0
            while size < pad_len:
                w = rnd.choice(words)
                text.append(w)
                size += len(w) + 1
            body = {"model": "bench-model", "messages": [{"role": "user", "content": " ".join(text)[:pad_len]}]}
            f.write(json.dumps({"custom_id": f"{tag}-{i}", "body": body}) + "\n")


def mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


# --- 1. join RSS -----------------------------------------------------------------------------------

_JOIN_ALONE = """
import resource, sys
from pathlib import Path
from inboxd.batch.join import ERRORS, OUTPUT, join_results
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
d, stem = Path(sys.argv[1]), sys.argv[2]
out = d / f"{stem}.output.jsonl"
err = d / f"{stem}.errors.jsonl"
c = join_results(Path(sys.argv[3]), {OUTPUT: out, ERRORS: err if err.exists() else None}, d / "bench.results.tmp",
                 work_dir=d)
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, c.succeeded, c.failed, c.missing)
(d / "bench.results.tmp").unlink()
"""


def bench_join(work: Path, lines: int, size_mb: float) -> None:
    emu, url = start_emulator(work / "emu-join")
    try:
        src = work / "join" / "big.jsonl"
        src.parent.mkdir(parents=True)
        write_batch(src, "big", lines, int(size_mb * 1e6 / lines))
        size = src.stat().st_size
        print(f"join: input {src.name}: {lines} lines, {mb(size)}")
        t0 = time.monotonic()
        proc = subprocess.Popen([PY, "-m", "inboxd", "batch", str(src), "--endpoint", ENDPOINT, "--join", "--json",
                                 "--poll-seconds", "1"], env=env_for(url, work / "state-join"), cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate()
        seconds = time.monotonic() - t0
        # communicate() waited already; the child's rusage is in RUSAGE_CHILDREN (only child so far)
        import resource

        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if proc.returncode != 0:
            print(f"join: inboxd batch failed ({proc.returncode}): {err[-2000:]}")
            return
        answer = json.loads(out)
        outputs = answer["outputs"]
        print(f"join: inboxd batch --join: {seconds:.1f} s end to end; output {mb(outputs['output']['bytes'])}, "
              f"results {mb(outputs['results']['bytes'])}, counts {answer['counts']}")
        print(f"join: peak RSS of the whole one-shot process (check, upload, poll, download, join): "
              f"{peak_kb / 1024:.1f} MiB")
        r = subprocess.run([PY, "-c", _JOIN_ALONE, str(src.parent / "outbox"), "big", str(src)], cwd=REPO,
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO / "daemon")})
        before, peak, ok, failed, missing = (int(x) if x != "None" else None for x in r.stdout.split())
        assert before is not None and peak is not None
        print(f"join: the join alone in a fresh process: RSS {before / 1024:.1f} MiB before, peak "
              f"{peak / 1024:.1f} MiB (+{(peak - before) / 1024:.1f} MiB) for {mb(size)} in + "
              f"{mb(outputs['output']['bytes'])} out; {ok} succeeded, {failed} failed, {missing} missing")
    finally:
        emu.terminate()
        emu.wait(10)


# --- 1b. the ledger: one input of any size -------------------------------------------------------


def _run_measured(args: list[str], env: dict[str, str]) -> tuple[int, str, str, float, float]:
    """(exit code, stdout, stderr, wall seconds, peak RSS in MiB) of one child, its own rusage
    from wait4 (not the maximum over every child so far)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read() if proc.stderr else ""))
    reader.start()
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    return proc.returncode, out, "".join(err), time.monotonic() - t0, usage.ru_maxrss / 1024


def _count_lines(path: Path) -> int:
    n = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            n += chunk.count(b"\n")
    return n


def _delivery_check(results: Path, sidecar: Path, lines: int) -> tuple[bool, str]:
    """(complete, words): the delivered results file has one line per request and batch.json
    counts no request missing."""
    n = _count_lines(results) if results.exists() else 0
    counts = (json.loads(sidecar.read_text(encoding="utf-8")).get("counts") or {}) if sidecar.exists() else {}
    missing = counts.get("missing")
    ok = n == lines and missing == 0
    return ok, (f"{'complete' if ok else 'INCOMPLETE'}: results.jsonl {n}/{lines} lines, "
                f"batch.json counts.missing = {missing}")


def bench_ledger(work: Path, src: Path, lines: int, poll: float) -> dict[str, Any] | None:
    """`inboxd batch --join` of one input of `lines` requests (split into parts of 50,000):
    wall time from the start of the command to its exit, and the command's peak RSS."""
    emu, url = start_emulator(work / "emu-ledger")
    try:
        code, out, err, seconds, peak = _run_measured(
            [PY, "-m", "inboxd", "batch", str(src), "--endpoint", ENDPOINT, "--join", "--json",
             "--poll-seconds", str(poll)], env_for(url, work / "state-ledger"))
        if code != 0:
            print(f"ledger: inboxd batch failed ({code}): {err[-2000:]}")
            return None
        answer = json.loads(out)
        outputs = answer["outputs"]
        stem = src.name[: -len(".jsonl")]
        ok, words = _delivery_check(src.parent / "outbox" / f"{stem}.results.jsonl",
                                    src.parent / "outbox" / f"{stem}.batch.json", lines)
        print(f"ledger: inboxd batch --join: {seconds:.1f} s end to end, peak RSS {peak:.1f} MiB; "
              f"{len(answer['jobs'])} jobs in {answer['rounds']} round(s); output {mb(outputs['output']['bytes'])}, "
              f"results {mb(outputs['results']['bytes'])}, counts {answer['counts']}; {words}", flush=True)
        return {"seconds": seconds, "peak": peak, "jobs": len(answer["jobs"]), "ok": ok}
    finally:
        emu.terminate()
        emu.wait(10)


def _vm_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a live process in KiB, (0, 0) once it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def _logged_at(record: dict[str, Any], default: float) -> float:
    """The epoch time a daemon's JSON log record says it was logged (`timestamp`, ISO, UTC)."""
    try:
        return datetime.fromisoformat(str(record["timestamp"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return default


def _input_events(events: list[tuple[float, dict[str, Any]]], stem: str) -> list[tuple[float, dict[str, Any]]]:
    """The logged events that name the input `stem` (its file, archived name, ledger or part)."""
    out = []
    for t, e in events:
        names = " ".join(str(e.get(k) or "") for k in ("name", "input", "path", "file", "ledger", "archived"))
        if f"/{stem}." in names or names.startswith(f"{stem}.") or f" {stem}." in names:
            out.append((t, e))
    return out


def bench_ledger_daemon(work: Path, src: Path, lines: int, poll: float, timeout: float,
                        tag: str, late: tuple[Path, int, float] | None = None, log_dir: Path | None = None,
                        log_level: str = "info") -> dict[str, Any] | None:
    """`inboxd run` with one batch-api inbox ([inboxes.batch] join = true) and one input of
    `lines` requests renamed into it: wall time from the rename to the appearance of
    `<stem>.batch.json` in the outbox, then SIGTERM and the daemon's peak RSS from wait4.
    While it runs, its RSS is sampled from /proc so the report can say when the peak came
    (after which logged event).

    With `late` = (path, requests, delay): that second input is renamed into the same inbox
    `delay` seconds after the first, and its own rename-to-batch.json time is reported (is a
    small input held up by a big one in the same daemon?), with its logged events' times.
    With `log_dir`: the daemon's JSON log is written there as daemon-<tag>.log."""
    base = work / f"daemon-{tag}"
    inbox, outbox, state = base / "inbox", base / "outbox", base / "state"
    for folder in (inbox, outbox, state, base / "staging"):
        folder.mkdir(parents=True)
    emu, url = start_emulator(base / "emu")
    config = base / "inboxd.toml"
    config.write_text(f"""[api]
base_url = "{url}"
[daemon]
state_dir = "{state}"
log_format = "json"
log_level = "{log_level}"
metrics_address = ""
[[inboxes]]
path = "{inbox}"
purpose = "batch-api"
[inboxes.batch]
join = true
poll_seconds = {poll}
outbox = "{outbox}"
""")
    staged = base / "staging" / src.name
    shutil.copyfile(src, staged)
    if late is not None:
        late_staged = base / "staging" / late[0].name
        shutil.copyfile(late[0], late_staged)
    t_start = time.monotonic()
    d = subprocess.Popen([PY, "-m", "inboxd", "run", "--config", str(config)], env=env_for(url, base / "xdg"),
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    events: list[tuple[float, dict[str, Any]]] = []
    watching = threading.Event()
    err: list[str] = []
    log_file = open(log_dir / f"daemon-{tag}.log", "w") if log_dir is not None else None  # noqa: SIM115

    def read_log() -> None:
        assert d.stdout is not None
        for line in d.stdout:
            if log_file is not None:
                log_file.write(line)
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError
            except ValueError:
                record = {"event": line.strip()[:200]}
            events.append((time.monotonic(), record))
            if record.get("event") == "inbox.watching":
                watching.set()

    readers = [threading.Thread(target=read_log, daemon=True),
               threading.Thread(target=lambda: err.append(d.stderr.read() if d.stderr else ""), daemon=True)]
    for r in readers:
        r.start()
    samples: list[tuple[float, int]] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.25):
            rss, _ = _vm_kib(d.pid)
            if rss:
                samples.append((time.monotonic(), rss))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stem = src.name[: -len(".jsonl")]
    sidecar = outbox / f"{stem}.batch.json"
    result: dict[str, Any] | None = None
    try:
        if not watching.wait(60) or d.poll() is not None:
            print(f"ledger daemon: did not start: {''.join(err)[-1500:]}")
            return None
        t0 = time.monotonic()
        os.rename(staged, inbox / src.name)
        deadline = t0 + timeout
        seen: dict[str, float] = {}
        waiting = {sidecar.name: sidecar}
        t_late = t_late_wall = 0.0
        if late is not None:
            late_stem = late[0].name[: -len(".jsonl")]
            waiting[f"{late_stem}.batch.json"] = outbox / f"{late_stem}.batch.json"
        while time.monotonic() < deadline and len(seen) < len(waiting) and d.poll() is None:
            if late is not None and not t_late and time.monotonic() >= t0 + late[2]:
                t_late, t_late_wall = time.monotonic(), time.time()
                os.rename(late_staged, inbox / late[0].name)
            for name, path in waiting.items():
                if name not in seen and path.exists():
                    seen[name] = time.monotonic()
            time.sleep(0.05)
        seconds = seen.get(sidecar.name, time.monotonic()) - t0
        if len(seen) < len(waiting):
            print(f"ledger daemon: no {sorted(set(waiting) - set(seen))} after {time.monotonic() - t0:.0f} s "
                  f"(daemon exit {d.poll()}); last events {[e.get('event') for _, e in events[-10:]]}")
        else:
            result = {"seconds": seconds}
            if late is not None:
                result["late_seconds"] = seen[f"{late_stem}.batch.json"] - t_late
                result["late_before"] = seen[f"{late_stem}.batch.json"] < seen[sidecar.name]
    finally:
        sampling.set()
        sampler.join()
        if d.poll() is None:
            d.terminate()
        _, status, usage = os.wait4(d.pid, 0)
        d.returncode = os.waitstatus_to_exitcode(status)
        for r in readers:
            r.join(10)
        if log_file is not None:
            log_file.close()
        emu.terminate()
        emu.wait(10)
    if result is None:
        return None
    peak = usage.ru_maxrss / 1024
    ok, words = _delivery_check(outbox / f"{stem}.results.jsonl", sidecar, lines)
    data = json.loads(sidecar.read_text(encoding="utf-8"))
    idle = [kib for t, kib in samples if t < t0]
    when = ""
    if samples:
        t_peak, kib = max(samples, key=lambda s: s[1])
        before = [e.get("event") for t, e in events if t <= t_peak]
        when = (f"; sampled RSS {idle[-1] / 1024 if idle else 0:.1f} MiB idle before the rename, highest "
                f"{kib / 1024:.1f} MiB at {t_peak - t0:.1f} s after it (last event before: "
                f"{before[-1] if before else '-'})")
    print(f"ledger daemon ({tag}): inboxd run, rename -> {sidecar.name}: {seconds:.1f} s, peak RSS {peak:.1f} MiB "
          f"(wait4 after SIGTERM, exit {d.returncode}); {len(data.get('jobs') or [])} jobs; "
          f"counts {data.get('counts')}; {words}{when}", flush=True)
    result.update(peak=peak, jobs=len(data.get("jobs") or []), ok=ok, start_to_rename=t0 - t_start)
    if late is not None:
        late_ok, late_words = _delivery_check(outbox / f"{late_stem}.results.jsonl",
                                              outbox / f"{late_stem}.batch.json", late[1])
        result["late_ok"] = late_ok
        print(f"ledger daemon ({tag}): {late[0].name} ({late[1]:,} requests) renamed {t_late - t0:.1f} s after "
              f"{src.name}: rename -> {late_stem}.batch.json {result['late_seconds']:.1f} s, delivered "
              f"{'before' if result['late_before'] else 'after'} {src.name}; {late_words}", flush=True)
        print(f"  {late_stem}'s logged events, seconds after its rename by the daemon's timestamps (the "
              f"{src.name} run's batch.* events in between are in the daemon's log):", flush=True)
        for t, e in _input_events(events, late_stem):
            print(f"    {_logged_at(e, t - t_late + t_late_wall) - t_late_wall:7.2f} s  {e.get('event')}", flush=True)
    return result


def bench_ledgers(work: Path, lines: int, line_bytes: int, poll: float, daemon: bool, timeout: float,
                  late_lines: int = 100, late_delay: float = 5.0, log_dir: Path | None = None,
                  log_level: str = "info") -> None:
    """The one-shot command on one input of `lines` requests; with `daemon` also `inboxd run`
    on the same bytes, with a small input (`late_lines` requests) renamed into the same inbox
    `late_delay` seconds later, on 50,000 requests (one job), and on the small input alone in a
    daemon of its own; printed side by side."""
    src = work / "ledger" / "huge.jsonl"
    src.parent.mkdir(parents=True)
    write_batch(src, "huge", lines, line_bytes)
    print(f"ledger: input {src.name}: {lines} requests, {mb(src.stat().st_size)}; load average "
          f"{' '.join(Path('/proc/loadavg').read_text().split()[:3])}", flush=True)
    rows: list[tuple[str, int, dict[str, Any] | None]] = [("inboxd batch --join", lines,
                                                           bench_ledger(work, src, lines, poll))]
    if not daemon:
        return
    tiny = work / "ledger-small" / "small.jsonl"
    tiny.parent.mkdir(parents=True)
    write_batch(tiny, "small", late_lines, line_bytes)
    with_big = bench_ledger_daemon(work, src, lines, poll, timeout, "n", late=(tiny, late_lines, late_delay),
                                   log_dir=log_dir, log_level=log_level)
    rows.append(("inboxd run (join = true)", lines, with_big))
    small_lines = 50_000
    small = work / "ledger-50k" / "fifty.jsonl"
    small.parent.mkdir(parents=True)
    write_batch(small, "fifty", small_lines, line_bytes)
    rows.append(("inboxd run (join = true)", small_lines,
                 bench_ledger_daemon(work, small, small_lines, poll, timeout, "50k", log_dir=log_dir,
                                     log_level=log_level)))
    alone = bench_ledger_daemon(work, tiny, late_lines, poll, timeout, "small-alone", log_dir=log_dir,
                                log_level=log_level)
    rows.append(("inboxd run (join = true)", late_lines, alone))
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\nledger, side by side (poll {poll} s, {os.cpu_count()} cores, load average {' '.join(load)} now):")
    print(f"  {'process':<26} {'requests':>10} {'jobs':>5} {'wall s':>8} {'peak RSS MiB':>13}  delivery")
    for label, n, r in rows:
        if r is None:
            print(f"  {label:<26} {n:>10,} {'-':>5} {'failed':>8} {'-':>13}  -")
        else:
            print(f"  {label:<26} {n:>10,} {r['jobs']:>5} {r['seconds']:>8.1f} {r['peak']:>13.1f}  "
                  f"{'complete' if r['ok'] else 'INCOMPLETE'}")
    print(f"\nledger daemon, a {late_lines:,}-request input: rename -> batch.json")
    print(f"  {'renamed ' + format(late_delay, 'g') + ' s after the ' + format(lines, ',') + '-request input':<48} "
          f"{'alone in a daemon of its own':<30}")
    beside = (f"{with_big['late_seconds']:.1f} s ({'before' if with_big['late_before'] else 'after'} the big one, "
              f"{'complete' if with_big['late_ok'] else 'INCOMPLETE'})" if with_big else "failed")
    print(f"  {beside:<48} {(format(alone['seconds'], '.1f') + ' s') if alone else 'failed':<30}")


# --- 2. drop to results ----------------------------------------------------------------------------


def make_small(folder: Path, n: int, lines: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"s-{i:05d}.jsonl"
        write_batch(p, f"s{i}", lines, 200)
        out.append(p)
    return out


def report(label: str, latencies: list[float], first: float, last: float, n: int) -> None:
    lat = sorted(latencies)
    if not lat:
        print(f"{label}: nothing delivered")
        return
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    wall = last - first
    print(f"{label}: {len(lat)}/{n} files delivered in {wall:.1f} s = {len(lat) / wall:.1f} files/s; "
          f"drop -> results p50 {p(0.5):.2f} s, p99 {p(0.99):.2f} s, max {lat[-1]:.2f} s, "
          f"mean {statistics.mean(lat):.2f} s")


def bench_library(work: Path, files: list[Path], workers: int, poll: float) -> None:
    from inboxd.api import FilesClient
    from inboxd.batch import BatchInput, BatchStore, Poller, create_once
    from inboxd.check import check_file
    from inboxd.config import BatchConfig, parse_config
    from inboxd.log import configure
    from inboxd.state.journal import Journal

    configure("warning", "console", stream=sys.stderr)
    emu, url = start_emulator(work / "emu-lib")
    journal = Journal(work / "state-lib")
    try:
        cfg = parse_config({"api": {"base_url": url}})
        client = FilesClient(cfg.api, cfg.upload, KEY)
        store = BatchStore(journal)
        bcfg = BatchConfig(poll_seconds=poll, outbox=work / "lib-outbox")
        poller = Poller(lambda: client, store)
        poller.start()
        started: dict[str, float] = {}

        def one(path: Path) -> None:
            t0 = time.time()
            started[path.name] = t0
            rep = check_file(path, "batch-api", "basic")
            up = client.upload(path, "batch-api", sha256=rep.sha256, expected_size=rep.bytes)
            obj = client.wait_for_processing(up.file.id)
            create_once(client, store, BatchInput(path.name, obj.id, bcfg, inbox=path.parent, sha256=rep.sha256,
                                                  dropped_at=t0, uploaded_at=time.time(), requests=rep.records,
                                                  input_path=path), attempts=3)
            poller.follow(path.name)

        t_first = time.time()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, files))
        t_created = time.time()
        done_then = sum(r.stage == "delivered" for r in store.all())
        deadline = time.time() + 600
        while time.time() < deadline:
            recs = store.all()
            if sum(r.stage == "delivered" for r in recs) == len(files):
                break
            time.sleep(0.2)
        poller.stop()
        recs = [r for r in store.all() if r.stage == "delivered"]
        lat = [r.delivered_at - (r.dropped_at or 0) for r in recs if r.delivered_at]
        report(f"drop->results (library, {workers} workers, one poller, poll {poll} s)", lat, t_first,
               max((r.delivered_at or 0) for r in recs) if recs else time.time(), len(files))
        print(f"  (every file uploaded and its job created {t_created - t_first:.1f} s after the first; "
              f"{done_then} delivered by then)")
        client.close()
    finally:
        journal.close()
        emu.terminate()
        emu.wait(10)


def bench_cli(work: Path, files: list[Path], concurrency: int) -> None:
    emu, url = start_emulator(work / "emu-cli")
    env = env_for(url, work / "state-cli")
    lat: list[float] = []
    lock = threading.Lock()
    try:
        def one(path: Path) -> None:
            t0 = time.time()
            r = subprocess.run([PY, "-m", "inboxd", "batch", str(path), "--endpoint", ENDPOINT, "--poll-seconds",
                                "0.5"], env=env, cwd=REPO, capture_output=True, text=True)
            if r.returncode == 0:
                with lock:
                    lat.append(time.time() - t0)

        t_first = time.time()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, files))
        report(f"drop->results (inboxd batch processes, {concurrency} at a time)", lat, t_first, time.time(),
               len(files))
    finally:
        emu.terminate()
        emu.wait(10)


def bench_daemon(work: Path, files: list[Path], poll: float, timeout: float) -> None:
    emu, url = start_emulator(work / "emu-daemon")
    inbox = work / "inbox"
    inbox.mkdir()
    outbox = inbox / "outbox"
    config = work / "inboxd.toml"
    config.write_text(f"""[api]
base_url = "{url}"
[daemon]
state_dir = "{work / 'state-daemon'}"
workers = 4
settle_seconds = 0.2
rescan_seconds = 5
log_format = "json"
metrics_address = ""
[[inboxes]]
path = "{inbox}"
purpose = "batch-api"
[inboxes.batch]
poll_seconds = {poll}
""")
    (work / "state-daemon").mkdir()
    d = subprocess.Popen([PY, "-m", "inboxd", "run", "--config", str(config)], env=env_for(url, work / "x"),
                         cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2)
        if d.poll() is not None:
            print(f"daemon: did not start: {(d.stderr.read() if d.stderr else '')[-1500:]}")
            return
        staging = work / "staging"
        staging.mkdir()
        dropped: dict[str, float] = {}
        t_first = time.time()
        for p in files:
            tmp = staging / p.name
            shutil.copyfile(p, tmp)
            dropped[p.name[: -len(".jsonl")]] = time.time()
            os.rename(tmp, inbox / p.name)
        seen: dict[str, float] = {}
        deadline = time.time() + timeout
        while time.time() < deadline and len(seen) < len(files):
            if outbox.exists():
                now = time.time()
                for name in os.listdir(outbox):
                    if name.endswith(".batch.json") and name not in seen:
                        seen[name] = now
            time.sleep(0.05)
        if not seen:
            print(f"daemon: no <stem>.batch.json in {outbox} after {timeout:.0f} s: the daemon is not wired to "
                  "inboxd.batch yet (or failed; see its log)")
            return
        lat = [seen[f"{stem}.batch.json"] - t for stem, t in dropped.items() if f"{stem}.batch.json" in seen]
        report(f"drop->results (inboxd run, [inboxes.batch] poll {poll} s)", lat, t_first, max(seen.values()),
               len(files))
    finally:
        d.terminate()
        try:
            d.wait(30)
        except subprocess.TimeoutExpired:
            d.kill()
        emu.terminate()
        emu.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--lines", type=int, default=20, help="requests per small file")
    ap.add_argument("--mode", choices=("library", "cli", "daemon"), default="library")
    ap.add_argument("--workers", type=int, default=4, help="library mode: upload/create threads")
    ap.add_argument("--poll", type=float, default=1.0, help="poll_seconds (jobs are done at the first look)")
    ap.add_argument("--cli-concurrency", type=int, default=2)
    ap.add_argument("--daemon-timeout", type=float, default=300)
    ap.add_argument("--join-lines", type=int, default=50_000)
    ap.add_argument("--join-mb", type=float, default=99.0, help="input size (the emulator refuses > 100 MB)")
    ap.add_argument("--skip-join", action="store_true")
    ap.add_argument("--ledger-lines", type=int, default=0,
                    help="also one input of this many requests through the ledger (e.g. 1000000)")
    ap.add_argument("--ledger-line-bytes", type=int, default=100)
    ap.add_argument("--ledger-daemon", action="store_true",
                    help="with --ledger-lines: also `inboxd run` on the same input and on 50,000 requests")
    ap.add_argument("--ledger-timeout", type=float, default=3600, help="--ledger-daemon: seconds to wait per input")
    ap.add_argument("--ledger-late-lines", type=int, default=100,
                    help="--ledger-daemon: requests of the small input renamed in after the big one")
    ap.add_argument("--ledger-late-delay", type=float, default=5.0,
                    help="--ledger-daemon: seconds between the big input's rename and the small one's")
    ap.add_argument("--ledger-log-dir", type=Path, help="--ledger-daemon: keep each daemon's JSON log here")
    ap.add_argument("--ledger-log-level", choices=("debug", "info"), default="info",
                    help="--ledger-daemon: the daemons' log_level")
    ap.add_argument("--skip-files", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="inboxd-roundtrip-"))
    try:
        if not args.skip_join:
            bench_join(work, args.join_lines, args.join_mb)
        if args.ledger_lines:
            if args.ledger_log_dir is not None:
                args.ledger_log_dir.mkdir(parents=True, exist_ok=True)
            bench_ledgers(work, args.ledger_lines, args.ledger_line_bytes, args.poll, args.ledger_daemon,
                          args.ledger_timeout, args.ledger_late_lines, args.ledger_late_delay,
                          args.ledger_log_dir, args.ledger_log_level)
        if not args.skip_files:
            files = make_small(work / "small", args.files, args.lines)
            if args.mode == "library":
                bench_library(work, files, args.workers, args.poll)
            elif args.mode == "cli":
                bench_cli(work, files, args.cli_concurrency)
            else:
                bench_daemon(work, files, args.poll, args.daemon_timeout)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
