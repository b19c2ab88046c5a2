"""`inboxd batch FILE` in process (`batch.command.run_batch`) against the emulator started in this
process: an input split into parts, one job each, followed, settled and delivered as one set
of outbox files (`inboxd.batch/v2`); --no-wait then a second run that follows the same jobs;
a file that fails its check sends nothing; `inboxd batches` lists the ledger's jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import structlog
from pydantic import SecretStr

from inboxd._constants import EXIT_USAGE
from inboxd.batch.command import (
    BatchCreated,
    BatchDelivered,
    BatchFailure,
    NoJournal,
    list_batches,
    run_batch,
    state_dir_for,
)
from inboxd.config import parse_config
from inboxd.emulator import Emulator
from inboxd.schemas import BATCH_V2, load_schema

KEY = "unit-batch-key-0123"
LINE = '{"custom_id": "r%d", "body": {"model": "%s", "messages": [{"role": "user", "content": "hi %d"}]}}\n'


@pytest.fixture(autouse=True)
def _quiet() -> None:
    structlog.configure(processors=[structlog.processors.JSONRenderer()],
                        logger_factory=structlog.ReturnLoggerFactory())


def write_input(tmp: Path, n: int, unknown: tuple[int, ...] = ()) -> Path:
    src = tmp / "in.jsonl"
    src.write_text("".join(LINE % (i, "unknown-model" if i in unknown else "m", i) for i in range(n)))
    return src


def batch(server: Emulator, tmp: Path, src: Path, *, wait: bool = True, steps: list[Any] | None = None,
          **keys: Any) -> Any:
    cfg = parse_config({"api": {"base_url": server.base_url, "max_retries": 1},
                        "daemon": {"state_dir": str(tmp / "state")}, "inboxes": []})
    options: dict[str, Any] = {"endpoint": "/v1/chat/completions", "model_id": None, "outbox": None, "join": True,
                               "poll_seconds": 0.02, "completion_window": "24h", "priority": None,
                               "max_requests_per_job": 3, **keys}
    return run_batch(cfg, SecretStr(KEY), src, wait=wait, state_dir=tmp / "state",
                     on_step=steps.append if steps is not None else None, **options)


def test_a_split_input_comes_back_as_one_set_of_outbox_files(server: Emulator, tmp_path: Path) -> None:
    src = write_input(tmp_path, 7, unknown=(1, 4))
    steps: list[Any] = []
    out = batch(server, tmp_path, src, steps=steps)
    assert isinstance(out, BatchDelivered) and out.completed and out.record.status == "COMPLETED"
    assert out.sidecar == tmp_path / "outbox" / "in.batch.json"
    data = json.loads(out.sidecar.read_text())
    jsonschema.validate(data, load_schema(BATCH_V2))
    assert data == out.data
    assert [(j["part"], j["requests"]) for j in data["jobs"]] == [(1, 3), (2, 3), (3, 1)]  # 3 per job
    assert data["counts"] == {"succeeded": 5, "failed": 2, "missing": 0}
    assert data["errors_by_code"] == {"400": 2} and data["input"]["requests"] == 7
    results = [json.loads(x) for x in (tmp_path / "outbox" / "in.results.jsonl").read_text().splitlines()]
    assert [r["custom_id"] for r in results] == [f"r{i}" for i in range(7)]
    assert [r["status"] for r in results] == ["failed" if i in (1, 4) else "succeeded" for i in range(7)]
    outputs = [json.loads(x) for x in (tmp_path / "outbox" / "in.output.jsonl").read_text().splitlines()]
    assert sorted(o["custom_id"] for o in outputs) == ["r0", "r2", "r3", "r5", "r6"]  # final answers only
    assert len((tmp_path / "outbox" / "in.errors.jsonl").read_text().splitlines()) == 2
    assert steps[0].stage == "uploading" and steps[-1].stage == "following"
    assert steps[-1].record.batch_id == "7/7 requests final"
    # inboxd batches: the ledger's three jobs, delivered
    where, rows = list_batches(tmp_path / "state")
    assert where == tmp_path / "state" / "ledgers"
    assert sorted(r.batch_id for r in rows) == sorted(j["id"] for j in data["jobs"])
    assert {r.stage for r in rows} == {"delivered"} and sum(r.requests or 0 for r in rows) == 7

    # the same file again after delivery: new jobs, and the outbox's next free stem
    again = batch(server, tmp_path, src, join=False)
    assert isinstance(again, BatchDelivered) and again.sidecar.name == "in.2.batch.json"
    assert not set(again.record.batch_id.split(", ")) & set(out.record.batch_id.split(", "))
    assert not (tmp_path / "outbox" / "in.2.results.jsonl").exists()  # join off
    assert json.loads((tmp_path / "outbox" / "in.batch.json").read_text()) == data  # never overwritten


def test_no_wait_creates_the_jobs_and_the_next_run_follows_the_same_ones(server: Emulator, tmp_path: Path) -> None:
    src = write_input(tmp_path, 5)
    created = batch(server, tmp_path, src, wait=False)
    assert isinstance(created, BatchCreated)
    assert [j["part"] for j in created.jobs] == [1, 2] and created.journal.exists()
    _, rows = list_batches(tmp_path / "state")
    assert {r.batch_id for r in rows} == {j["id"] for j in created.jobs}
    assert all(r.stage != "delivered" for r in rows)
    done = batch(server, tmp_path, src)
    assert isinstance(done, BatchDelivered)
    assert done.record.batch_id.split(", ") == [j["id"] for j in created.jobs]  # followed, not made again
    assert done.data["counts"] == {"succeeded": 5, "failed": 0, "missing": 0}


def test_a_file_that_fails_its_check_sends_nothing(server: Emulator, tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(LINE % (0, "m", 0) + "{not json\n")
    before = len(server.store.files)
    out = batch(server, tmp_path, src)
    assert isinstance(out, BatchFailure) and out.code != 0
    assert out.details["line"] == 2 and out.issues and out.path == src
    assert not (tmp_path / "outbox").exists()
    assert not list((tmp_path / "state" / "ledgers").glob("*.ledger.json"))
    assert len(server.store.files) == before  # not uploaded


def test_a_bad_option_is_a_usage_error(server: Emulator, tmp_path: Path) -> None:
    out = batch(server, tmp_path, write_input(tmp_path, 1), endpoint="not a path")
    assert isinstance(out, BatchFailure) and out.kind == "usage" and out.code == EXIT_USAGE


def test_batches_without_a_journal_or_a_ledger(tmp_path: Path) -> None:
    with pytest.raises(NoJournal):
        list_batches(tmp_path)


def test_the_commands_state_folder_without_a_config() -> None:
    cfg = parse_config({"daemon": {"state_dir": "/srv/state"}, "inboxes": []})
    assert state_dir_for(cfg, True) == Path("/srv/state")
    assert state_dir_for(cfg, False, {"XDG_STATE_HOME": "/x"}) == Path("/x/inboxd")
    assert state_dir_for(cfg, False, {"HOME": "/home/u"}) == Path("/home/u/.local/state/inboxd")
