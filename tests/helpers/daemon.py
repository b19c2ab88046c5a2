"""Run `python -m inboxd run --config ...` as a real subprocess, and watch what it says.

    cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{"path": inbox, "purpose": "batch-api"}])
    with start_daemon(cfg, key=emu.key) as d:
        d.wait_event("inbox.watching")
        ...
        d.wait_event("file.archived", name="x.jsonl")
        d.signal(signal.SIGTERM); assert d.wait_exit() == 0

Every stdout line is parsed as JSON (the daemon logs one object per line); lines that are
not JSON are kept as {"event": "<raw>", "raw": line}. `wait_for(cond, timeout)` polls any
condition with a deadline and fails with the daemon's last lines, so a failing test says why.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def wait_until(cond: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "") -> Any:
    """Poll `cond` until it returns something truthy; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or cond}")
        time.sleep(interval)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


def write_config(
    tmp_path: Path,
    *,
    base_url: str,
    inboxes: Iterable[Mapping[str, Any]],
    api: Mapping[str, Any] | None = None,
    upload: Mapping[str, Any] | None = None,
    daemon: Mapping[str, Any] | None = None,
    name: str = "inboxd.toml",
) -> Path:
    """A config file with test-friendly defaults (json logs, no metrics, fast settle/rescan)."""
    sections: dict[str, dict[str, Any]] = {
        "api": {"base_url": base_url, "timeout_seconds": 30, "max_retries": 2, **(api or {})},
        "upload": {**(upload or {})},
        "daemon": {
            "state_dir": str(tmp_path / "state"),
            "workers": 2,
            "settle_seconds": 0.5,
            "rescan_seconds": 5,
            "log_format": "json",
            "log_level": "debug",  # the stage lines (claimed, checked, uploaded) are at debug
            "metrics_address": "",
            "stop_grace_seconds": 10,
            **(daemon or {}),
        },
    }
    lines: list[str] = []
    for section, body in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in body.items()]
        lines.append("")
    for inbox in inboxes:
        lines.append("[[inboxes]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in inbox.items() if not isinstance(v, Mapping)]
        for k, table in inbox.items():  # sub-tables such as [inboxes.batch]
            if isinstance(table, Mapping):
                lines.append(f"[inboxes.{k}]")
                lines += [f"{tk} = {_toml_value(tv)}" for tk, tv in table.items()]
        lines.append("")
    path = tmp_path / name
    path.write_text("\n".join(lines))
    Path(sections["daemon"]["state_dir"]).mkdir(parents=True, exist_ok=True)  # as StateDirectory= would
    return path


class DaemonProc:
    def __init__(self, config: Path, *, key: str | None = None, extra_args: Iterable[str] = (),
                 env: Mapping[str, str] | None = None, prefix: Iterable[str] = ()) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_SOCKET", "TOGETHER_"))}
        full_env["PYTHONUNBUFFERED"] = "1"
        if key is not None:
            full_env["TOGETHER_API_KEY"] = key
        full_env.update(env or {})
        # `prefix`: a wrapper command, e.g. unshare to run the daemon as another "host"
        self.args = [*prefix, sys.executable, "-m", "inboxd", "run", "--config", str(config), *extra_args]
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, cwd=REPO,
            text=True, bufsize=1,
        )
        self.lines: list[dict[str, Any]] = []
        self.stderr: list[str] = []
        self._cond = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for t in self._readers:
            t.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if not line:
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    obj = {"event": line, "raw": line}
            except ValueError:
                obj = {"event": line, "raw": line}
            with self._cond:
                self.lines.append(obj)
                self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.stderr.append(line.rstrip("\n"))

    # --- looking at the log ------------------------------------------------------------------

    def events(self, event: str | None = None, **match: Any) -> list[dict[str, Any]]:
        with self._cond:
            lines = list(self.lines)
        return [
            e for e in lines
            if (event is None or e.get("event") == event) and all(e.get(k) == v for k, v in match.items())
        ]

    def tail(self, n: int = 30) -> str:
        with self._cond:
            out = [json.dumps(e) for e in self.lines[-n:]] + ["--- stderr:"] + self.stderr[-n:]
        return "\n".join(out)

    def wait_for(self, cond: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = cond()
            if value:
                return value
            if self.proc.poll() is not None and not cond():
                raise AssertionError(
                    f"the daemon exited {self.proc.returncode} while waiting for {what or cond}\n{self.tail()}"
                )
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what or cond}\n{self.tail()}")
            with self._cond:
                self._cond.wait(0.05)

    def wait_event(self, event: str, timeout: float = 20.0, count: int = 1, **match: Any) -> list[dict[str, Any]]:
        """Wait until at least `count` log lines with this event (and these fields) appeared."""
        return self.wait_for(
            lambda: (lambda es: es if len(es) >= count else None)(self.events(event, **match)),
            timeout, what=f"{count} x {event} {match or ''}",
        )

    # --- driving the process ---------------------------------------------------------------

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the daemon did not exit within {timeout}s\n{self.tail()}") from None

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def __enter__(self) -> DaemonProc:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        for t in self._readers:
            t.join(2)


def start_daemon(config: Path, *, key: str | None = None, wait_ready: bool = True, timeout: float = 20.0,
                 **kwargs: Any) -> DaemonProc:
    """Start the daemon; by default wait until it logged `daemon.started`."""
    d = DaemonProc(config, key=key, **kwargs)
    if wait_ready:
        try:
            d.wait_event("daemon.started", timeout=timeout)
        except AssertionError:
            d.stop()
            raise
    return d
