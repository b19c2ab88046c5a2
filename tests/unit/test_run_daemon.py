"""`inboxd run --once` in process (`pipeline.command.run_daemon`) against the emulator started
in this process: the whole batch round trip of two batch inboxes (upload, create, follow,
download, join, deliver into the outbox), what the operations layer saw of it (sd_notify
datagrams on a real AF_UNIX socket, the metrics, the health verdict), the batch rows of the
overview, and the reasons a start is refused before anything is created."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import structlog

from inboxd.config import load_config
from inboxd.emulator import Emulator
from inboxd.pipeline import hooks
from inboxd.pipeline.command import StartRefused, run_daemon
from inboxd.pipeline.overview import overview
from inboxd.schemas import BATCH_V2, load_schema
from inboxd.state.lock import lock_state_dir
from tests.helpers.notify import NotifySocket

KEY = "unit-run-key-0123"
LINE = '{"custom_id": "r%d", "body": {"model": "%s", "messages": [{"role": "user", "content": "hi %d"}]}}\n'


@pytest.fixture(autouse=True)
def _quiet_and_signals_put_back() -> Iterator[None]:
    """Log lines dropped; the daemon's signal handlers (SIGTERM, SIGINT, SIGHUP, SIGIO) put back."""
    structlog.configure(processors=[structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
                        logger_factory=structlog.ReturnLoggerFactory())
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGIO)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def write_config(tmp: Path, base_url: str, *, metrics: str = "") -> Path:
    path = tmp / "inboxd.toml"
    path.write_text(f"""
[api]
base_url = "{base_url}"
api_key_env = "UNIT_RUN_KEY"
max_retries = 1

[daemon]
state_dir = "{tmp}/state"
metrics_address = "{metrics}"
settle_seconds = 0.05
workers = 2

[[inboxes]]
path = "{tmp}/joined"
purpose = "batch-api"
[inboxes.batch]
poll_seconds = 0.05
join = true
resubmit_rounds = 0

[[inboxes]]
path = "{tmp}/plain"
purpose = "batch-api"
[inboxes.batch]
poll_seconds = 0.05
resubmit_rounds = 0
""")
    for d in ("state", "joined", "plain"):
        (tmp / d).mkdir(exist_ok=True)
    return path


def lines(n: int, unknown: tuple[int, ...] = (), start: int = 0) -> str:
    return "".join(LINE % (i, "unknown-model" if i in unknown else "m", i) for i in range(start, start + n))


@pytest.fixture
def run_env(tmp_path: Path, server: Emulator, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("UNIT_RUN_KEY", KEY)
    notified = NotifySocket(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    services: list[hooks.Service] = []
    real = hooks.make_service

    def capture(config: Any) -> Any:
        services.append(real(config))
        return services[-1]

    monkeypatch.setattr(hooks, "make_service", capture)
    yield {"notified": notified, "services": services}
    notified.close()


def test_a_batch_round_trip_delivers_each_input_into_its_outbox(tmp_path: Path, server: Emulator,
                                                                 run_env: dict[str, Any]) -> None:
    path = write_config(tmp_path, server.base_url, metrics="127.0.0.1:0")
    (tmp_path / "joined" / "in.jsonl").write_text(lines(8, unknown=(2, 5)))
    (tmp_path / "plain" / "in.jsonl").write_text(lines(3))
    (tmp_path / "plain" / "outbox").mkdir()
    (tmp_path / "plain" / "outbox" / "in.batch.json").write_text("{}")  # an earlier job's: never overwritten
    cfg = load_config(path)

    assert run_daemon(cfg, path, emulator=False, once=True) == 0

    joined = tmp_path / "joined" / "outbox"
    sidecar = json.loads((joined / "in.batch.json").read_text())
    jsonschema.validate(sidecar, load_schema(BATCH_V2))
    assert sidecar["jobs"][0]["status"] == "COMPLETED" and sidecar["input"]["requests"] == 8
    assert sidecar["counts"] == {"succeeded": 6, "failed": 2, "missing": 0}
    results = [json.loads(x) for x in (joined / "in.results.jsonl").read_text().splitlines()]
    assert [r["custom_id"] for r in results] == [f"r{i}" for i in range(8)]  # input order
    assert [r["status"] for r in results] == ["failed" if i in (2, 5) else "succeeded" for i in range(8)]
    assert [r["line"] for r in results] == list(range(1, 9))
    assert len((joined / "in.output.jsonl").read_text().splitlines()) == 6
    assert len((joined / "in.errors.jsonl").read_text().splitlines()) == 2
    assert not list(joined.glob(".*.part"))
    plain = tmp_path / "plain" / "outbox"
    assert (plain / "in.batch.json").read_text() == "{}"  # left as it was
    assert len((plain / "in.2.output.jsonl").read_text().splitlines()) == 3  # the next free stem
    assert json.loads((plain / "in.2.batch.json").read_text())["jobs"][0]["status"] == "COMPLETED"
    assert not (plain / "in.2.results.jsonl").exists() and not (plain / "in.2.errors.jsonl").exists()
    # the input's manifest in done/ follows its job to the end and names the outbox's sidecar
    for inbox, stem in (("joined", "in"), ("plain", "in.2")):
        manifest = json.loads((tmp_path / inbox / "done" / "in.jsonl.manifest.json").read_text())
        delivered = json.loads((tmp_path / inbox / "outbox" / f"{stem}.batch.json").read_text())
        assert manifest["file"]["id"] == delivered["jobs"][0]["input_file_id"]
        assert manifest["batch"]["id"] == delivered["jobs"][0]["id"] and manifest["batch"]["status"] == "COMPLETED"
        assert manifest["batch"]["jobs"] == [delivered["jobs"][0]["id"]]
        assert manifest["batch"]["sidecar"] == str(tmp_path / inbox / "outbox" / f"{stem}.batch.json")

    # what the operations layer saw: sd_notify, the metrics, a healthy verdict
    said = run_env["notified"].messages()
    assert said[0] == "READY=1" and said[-1] == "STOPPING=1"
    assert any(m.startswith("STATUS=2 inboxes") for m in said)
    [service] = run_env["services"]
    assert service.server is None  # closed with the run
    text = service.metrics.text().decode()
    for inbox in ("joined", "plain"):
        assert f'inboxd_files_total{{inbox="{tmp_path / inbox}",outcome="done"}} 1.0' in text
    assert 'inboxd_batch_downloads_total{outcome="ok"} 3.0' in text  # output, errors; output
    assert "inboxd_batch_drop_to_results_seconds_count 2.0" in text
    ok, body = service.health()
    assert ok and body["problems"] == [] and body["seconds_since_success"] < 60

    # the overview's batch rows: one per job, delivered, with their counts
    rows = {Path(r["outbox"]).parent.name: r for r in overview(cfg)["batches"]}
    assert rows["joined"]["stage"] == "delivered" and rows["joined"]["counts"] == {
        "requests": 8, "succeeded": 6, "failed": 2, "missing": 0}
    assert rows["plain"]["counts"]["succeeded"] == 3 and rows["plain"]["counts"]["missing"] == 0


def test_a_start_is_refused_before_anything_is_created(tmp_path: Path, server: Emulator,
                                                       run_env: dict[str, Any]) -> None:
    path = write_config(tmp_path, server.base_url)
    (tmp_path / "plain").rmdir()
    with pytest.raises(StartRefused) as e:
        run_daemon(load_config(path), path, emulator=False, once=True)
    assert any(r.startswith("inboxes[1].path:") for r in e.value.reasons)
    assert not (tmp_path / "state" / "journal.sqlite3").exists() and not (tmp_path / "joined" / ".inboxd").exists()


def test_a_second_daemon_on_a_busy_state_dir_is_refused(tmp_path: Path, server: Emulator,
                                                        run_env: dict[str, Any]) -> None:
    path = write_config(tmp_path, server.base_url)
    held = lock_state_dir(tmp_path / "state")
    try:
        with pytest.raises(StartRefused) as e:
            run_daemon(load_config(path), path, emulator=False, once=True)
    finally:
        held.release()
    assert e.value.reasons[0].startswith("daemon.state_dir:")
    assert not (tmp_path / "state" / "journal.sqlite3").exists()


def test_a_key_that_cannot_be_found_is_refused_and_the_lock_let_go(tmp_path: Path, server: Emulator,
                                                                    run_env: dict[str, Any],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_config(tmp_path, server.base_url)
    monkeypatch.delenv("UNIT_RUN_KEY")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(StartRefused) as e:
        run_daemon(load_config(path), path, emulator=False, once=True)
    assert "UNIT_RUN_KEY" in str(e.value)
    lock_state_dir(tmp_path / "state").release()  # not left held


def test_a_file_that_fails_makes_the_run_exit_1_and_the_embedded_emulator_stands_in(
        tmp_path: Path, run_env: dict[str, Any]) -> None:
    """--emulator: the daemon's own emulator replaces the configured url and key (none set)."""
    (tmp_path / "inbox").mkdir()
    (tmp_path / "state").mkdir()
    path = tmp_path / "inboxd.toml"
    path.write_text(f"""
[api]
base_url = "https://api.example.invalid/v1"
api_key_env = "NO_SUCH_KEY_VARIABLE"
[daemon]
state_dir = "{tmp_path}/state"
metrics_address = ""
settle_seconds = 0.05
[[inboxes]]
path = "{tmp_path}/inbox"
purpose = "fine-tune"
""")
    (tmp_path / "inbox" / "ok.jsonl").write_text('{"text": "a"}\n')
    (tmp_path / "inbox" / "bad.jsonl").write_text("{nope\n")
    assert run_daemon(load_config(path), path, emulator=True, once=True) == 1
    assert (tmp_path / "inbox" / "done" / "ok.jsonl.manifest.json").exists()
    assert (tmp_path / "inbox" / "failed" / "bad.jsonl.error.json").exists()
    [service] = run_env["services"]
    text = service.metrics.text().decode()
    assert f'inboxd_files_total{{inbox="{tmp_path / "inbox"}",outcome="failed"}} 1.0' in text
    assert os.environ.get("NO_SUCH_KEY_VARIABLE") is None
