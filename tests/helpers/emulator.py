"""Start `python -m inboxd emulator` as a real subprocess and talk to its control endpoints.

    emu = start_emulator(tmp_path, key="test-key")
    emu.set_faults(error_rate=0.1)            # POST /v1/_emulator/faults
    emu.script([{"route": "part_put", "part_number": 2, "status": 503, "times": 2}])
    emu.files_by_sha256()                     # {sha256: [file entries]} from the stats
    emu.conflicts(), emu.creates_by_sha256()  # checksum 409s given; creates counted by sha256

    start_emulator(tmp_path, no_dedupe=True, latency_ms=50)   # True is a bare --no-dedupe
    start_emulator(tmp_path, batch_seconds=0.5)               # a batch job's time
    start_emulator(tmp_path, tls=True)    # HTTPS; emu.ca_path is the CA file it printed second

    emu.batch_script([{"outcome": "EXPIRED", "fraction": 0.5}])   # POST /v1/_emulator/batches
    emu.next_batch_outcome("FAILED"); emu.next_batch_create_status(429, retry_after=1)
    emu.cut_next_download(0.5)                                     # the next content download is cut
    emu.batch_creates(), emu.batch_creates_by_input(), emu.batches()
    emu.stop()
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]


class EmulatorProc:
    def __init__(self, proc: subprocess.Popen[str], base_url: str, key: str, data_dir: Path,
                 ca_path: Path | None = None) -> None:
        self.proc = proc
        self.base_url = base_url
        self.key = key
        self.data_dir = data_dir
        self.ca_path = ca_path  # with tls=True: the emulator's CA (its second stdout line)
        self._http = requests.Session()
        self._http.headers["Authorization"] = f"Bearer {key}"
        # per request, as a session's own verify loses to REQUESTS_CA_BUNDLE in the environment
        self._verify: dict[str, Any] = {"verify": str(ca_path)} if ca_path is not None else {}

    def _control(self, method: str, what: str, payload: Any = None) -> Any:
        r = self._http.request(method, f"{self.base_url}/_emulator/{what}", json=payload, timeout=30,
                               **self._verify)
        r.raise_for_status()
        return r.json()

    def stats(self) -> dict[str, Any]:
        return self._control("GET", "stats")

    def set_faults(self, **values: float) -> dict[str, Any]:
        return self._control("POST", "faults", values)

    def script(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return self._control("POST", "script", entries)["script"]

    def reset(self) -> None:
        self._control("POST", "reset")

    def files_by_sha256(self) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for f in self.stats()["files"]:
            out.setdefault(f["sha256"], []).append(f)
        return out

    def conflicts(self) -> int:
        """How many checksum 409s the emulator has answered."""
        return int(self.stats()["conflicts"])

    def creates_by_sha256(self) -> dict[str, int]:
        """Successful creates (POST /files, multipart initiate) by the checksum sent, or the
        content's sha256 for a create that sent none: a re-send shows as a count of 2."""
        return dict(self.stats()["creates_by_sha256"])

    # -- batches (daemon/inboxd/emulator/_batches.py) -----------------------------------------

    def batch_script(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Scripted batch behaviour, each entry used once (or "times" times): {"outcome": FAILED |
        EXPIRED | CANCELLED | COMPLETED, "fraction"?, "error"?}, {"create_status": 429, "retry_after"?},
        {"cut_download": 0.5, "file_id"?}. Returns what is left of the batch script."""
        return self._control("POST", "batches", entries)["batch_script"]

    def next_batch_outcome(self, outcome: str, fraction: float | None = None, times: int = 1) -> None:
        """The next create's job ends this way (EXPIRED/CANCELLED keep `fraction` of the lines' answers)."""
        entry: dict[str, Any] = {"outcome": outcome, "times": times}
        if fraction is not None:
            entry["fraction"] = fraction
        self.batch_script([entry])

    def next_batch_create_status(self, status: int = 429, retry_after: float = 1.0, times: int = 1) -> None:
        """The next batch create is answered with `status` (429: with Retry-After) and makes no job."""
        self.batch_script([{"create_status": status, "retry_after": retry_after, "times": times}])

    def cut_next_download(self, fraction: float = 0.5, file_id: str | None = None) -> None:
        """The next content download (of `file_id`, or any) sends `fraction` of its body, then closes."""
        entry: dict[str, Any] = {"cut_download": fraction}
        if file_id:
            entry["file_id"] = file_id
        self.batch_script([entry])

    def content(self, file_id: str) -> bytes:
        """A file's content as the server serves it (GET /files/{id}/content)."""
        r = self._http.get(f"{self.base_url}/files/{file_id}/content", timeout=60, **self._verify)
        r.raise_for_status()
        return r.content

    def batch_creates(self) -> int:
        """How many batch jobs were created (POST /v1/batches answered 201)."""
        return int(self.stats()["batch_creates"])

    def batch_creates_by_input(self) -> dict[str, int]:
        """Batch creates by input_file_id: a second job for the same input shows as 2."""
        return dict(self.stats()["batch_creates_by_input"])

    def batches(self) -> list[dict[str, Any]]:
        """Every job (brought up to date with the clock) as a BatchJob plus "outcome" and "lines"."""
        return list(self.stats()["batches"])

    def stop(self) -> None:
        self._http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def __enter__(self) -> EmulatorProc:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_emulator(tmp_path: Path, key: str = "test-key-emulator-0001", **flags: Any) -> EmulatorProc:
    """Flags are the command's options without dashes: url_ttl=1.0, processing_delay=0.1, fail_rate=0.1 ...
    A flag set to True is passed bare (no_dedupe=True: --no-dedupe); False or None leaves it out.
    tls=True: HTTPS; the second stdout line, the CA file, becomes `emu.ca_path`."""
    data_dir = Path(tmp_path) / "emulator-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "inboxd", "emulator", "--key", key, "--data-dir", str(data_dir)]
    for name, value in flags.items():
        option = f"--{name.replace('_', '-')}"
        if value is True:
            args.append(option)
        elif value is not False and value is not None:
            args += [option, str(value)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("http"):
        proc.kill()
        raise RuntimeError(f"the emulator did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}")
    ca_path = None
    if flags.get("tls") is True:
        ca_line = proc.stdout.readline().strip()
        if not ca_line or not Path(ca_line).is_file():
            proc.kill()
            raise RuntimeError(f"the emulator printed no CA file: {ca_line!r} "
                               f"{proc.stderr.read() if proc.stderr else ''}")
        ca_path = Path(ca_line)
    emu = EmulatorProc(proc, line, key, data_dir, ca_path)
    deadline = time.monotonic() + 10
    while True:
        try:
            emu.stats()
            return emu
        except requests.RequestException:
            if time.monotonic() > deadline:
                emu.stop()
                raise
            time.sleep(0.05)
