"""One claimed file through the steps (`pipeline.steps`, `pipeline.process`), in process:
a real journal and real files under tmp_path, an in-memory server behind the client Protocol."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import structlog

from inboxd.api import AuthError, RejectedError
from inboxd.batch import BatchStore
from inboxd.config import parse_config
from inboxd.pipeline import steps
from inboxd.pipeline.archive import manifest_from_row
from inboxd.pipeline.context import Context, Outcome
from inboxd.pipeline.process import MAX_BUGS, handle
from inboxd.pipeline.work import Heartbeat, Job, WorkQueue
from inboxd.schemas import load_schema
from inboxd.state.journal import Journal, Stage
from tests.unit.fakes import FakeClient, transient

GOOD = b'{"custom_id": "a", "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}}\n'

@pytest.fixture(autouse=True)
def _plain_log() -> None:
    """Log lines rendered plainly and dropped: the console renderer's pretty tracebacks cost a
    second a line (put back by the conftest after the test)."""
    structlog.configure(processors=[structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
                        logger_factory=structlog.ReturnLoggerFactory())



class Env:
    def __init__(self, tmp: Path, daemon: dict[str, Any] | None = None, **inbox: Any) -> None:
        self.inbox_path = tmp / "inbox"
        (self.inbox_path / ".inboxd" / "c1").mkdir(parents=True)
        self.config = parse_config({
            "api": {"base_url": "http://127.0.0.1:9/v1"},
            "daemon": {"state_dir": str(tmp / "state"), "metrics_address": "", **(daemon or {})},
            "inboxes": [{"path": str(self.inbox_path), "purpose": "batch-api", **inbox}],
        })
        self.client = FakeClient()
        self.journal = Journal(self.config.daemon.state_dir)
        self.queue = WorkQueue()
        self.rejected: list[BaseException] = []
        self.observed: list[str] = []
        self.ctx = Context(config=self.config, client=self.client, journal=self.journal, queue=self.queue,
                           cancel=threading.Event(), on_auth_rejected=self.rejected.append,
                           observe=lambda what, job: self.observed.append(what))
        self.ctx.batches = BatchStore(self.journal)

    def claim(self, name: str = "x.jsonl", data: bytes = GOOD) -> Job:
        path = self.inbox_path / ".inboxd" / "c1" / f"1.{name}"
        path.write_bytes(data)
        self.journal.claimed(str(path), str(self.inbox_path), name)
        return Job(inbox=self.config.inboxes[0], claim=path, name=name)

    def run(self, job: Job) -> Outcome:
        return handle(self.ctx, job, Heartbeat())

    def row(self, job: Job):
        return self.journal.get(str(job.claim))

    def through(self, job: Job) -> Outcome:
        """Upload lane, then (if handed over) the archive lane, as the workers do."""
        outcome = self.run(job)
        if outcome is Outcome.UPLOADED:
            archived = self.queue.get_archive(timeout=1)
            assert archived is job and job.archive
            outcome = self.run(archived)
        return outcome


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def test_a_good_file_is_uploaded_handed_to_the_archive_lane_and_archived(env: Env) -> None:
    job = env.claim()
    assert env.run(job) is Outcome.UPLOADED
    assert env.row(job).stage == Stage.UPLOADED and env.client.count("upload") == 1
    again = env.queue.get_archive(timeout=1)
    assert again is job
    assert env.run(again) is Outcome.ARCHIVED
    manifest = env.inbox_path / "done" / "x.jsonl.manifest.json"
    data = json.loads(manifest.read_text())
    jsonschema.validate(data, load_schema("inboxd.manifest/v1"))
    assert data["file"]["id"] == "file-1" and data["upload"]["method"] == "single"
    assert (env.inbox_path / "done" / "x.jsonl").read_bytes() == GOOD and not job.claim.exists()
    assert env.ctx.counters["archived"] == 1 and env.observed == ["archived"]
    assert env.client.count("wait_for_processing") == 0  # no batch table: processing is not waited for


def test_a_file_that_fails_its_check_goes_to_failed_with_the_rule_and_the_line(env: Env) -> None:
    job = env.claim(data=GOOD + b"{not json\n")
    assert env.run(job) is Outcome.FAILED
    sidecar = json.loads((env.inbox_path / "failed" / "x.jsonl.error.json").read_text())
    jsonschema.validate(sidecar, load_schema("inboxd.error/v1"))
    assert sidecar["stage"] == "validate" and sidecar["error"]["line"] == 2
    assert env.client.count("upload") == 0 and env.row(job).stage == Stage.FAILED
    assert env.ctx.counters["failed"] == 1 and env.observed == ["failed"]


def test_a_symlink_is_never_followed(env: Env, tmp_path: Path) -> None:
    job = env.claim()
    job.claim.unlink()
    job.claim.symlink_to(tmp_path / "elsewhere")
    assert env.run(job) is Outcome.FAILED
    sidecar = json.loads((env.inbox_path / "failed" / "x.jsonl.error.json").read_text())
    assert sidecar["source"]["kind"] == "symlink" and sidecar["error"]["kind"] == "not_a_regular_file"


def test_a_transient_error_is_retried_with_backoff_and_gives_up_at_max_attempts(tmp_path: Path) -> None:
    env = Env(tmp_path, daemon={"max_attempts": 2})
    env.client.fail["upload"] = [transient(), transient()]
    job = env.claim()
    assert env.run(job) is Outcome.RETRY
    assert job.attempts == 1 and len(env.queue._delayed) == 1 and env.row(job).stage == Stage.CHECKED
    assert env.run(job) is Outcome.FAILED
    assert json.loads((env.inbox_path / "failed" / "x.jsonl.error.json").read_text())["stage"] == "upload"
    assert env.ctx.counters["retried"] == 1


def test_a_retry_does_not_hash_the_file_again(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    env.client.fail["upload"] = [transient()]
    job = env.claim()
    assert env.run(job) is Outcome.RETRY
    checks: list[str] = []
    real = steps.upload.check
    monkeypatch.setattr(steps.upload, "check", lambda *a: checks.append("check") or real(*a))
    assert env.through(job) is Outcome.ARCHIVED
    assert checks == []


def test_a_rejected_key_pauses_without_an_attempt(env: Env) -> None:
    env.client.fail["upload"] = [AuthError("401", route="upload", status=401)]
    job = env.claim()
    assert env.run(job) is Outcome.PAUSED
    assert job.attempts == 0 and len(env.rejected) == 1 and env.queue.get(timeout=1) is job


def test_a_refusal_by_the_server_fails_the_file(env: Env) -> None:
    env.client.fail["upload"] = [RejectedError("400 bad file", route="upload", status=400)]
    job = env.claim()
    assert env.run(job) is Outcome.FAILED
    sidecar = json.loads((env.inbox_path / "failed" / "x.jsonl.error.json").read_text())
    assert sidecar["error"]["status"] == 400


def test_an_upload_cut_after_the_server_named_it_is_adopted_not_sent_again(env: Env) -> None:
    job = env.claim()
    env.client.during_upload = lambda: (_ for _ in ()).throw(KeyboardInterrupt())  # the process dies mid-upload
    with pytest.raises(KeyboardInterrupt):
        env.run(job)
    row = env.row(job)
    assert row.stage == Stage.UPLOADING and row.file_id == "file-1"
    env.client.during_upload = None
    env.client.files["file-1"] = env.client.files.get("file-1") or _whole(env, job, "file-1")
    job.recovered = True
    assert env.through(job) is Outcome.ARCHIVED
    assert env.client.count("upload") == 1 and env.client.count("lookup") == 1


def test_an_upload_the_server_does_not_hold_whole_is_deleted_and_sent_again(env: Env) -> None:
    job = env.claim()
    env.client.during_upload = lambda: (_ for _ in ()).throw(KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        env.run(job)
    env.client.during_upload = None
    from inboxd.api import FileObject
    env.client.files["file-1"] = FileObject(id="file-1", purpose="batch-api", bytes=1, processed=False,
                                            processing_status="PENDING")  # a part: not the whole file
    assert env.through(job) is Outcome.ARCHIVED
    assert env.client.count("delete") == 1 and env.client.count("upload") == 2
    manifest = json.loads((env.inbox_path / "done" / "x.jsonl.manifest.json").read_text())
    assert manifest["file"]["id"] == "file-2"


def _whole(env: Env, job: Job, file_id: str):
    from inboxd.api import FileObject
    return FileObject(id=file_id, purpose="batch-api", bytes=len(GOOD), processed=True, processing_status="COMPLETED")


def test_a_file_changed_during_its_upload_is_checked_and_sent_again(env: Env) -> None:
    job = env.claim()
    env.client.during_upload = lambda: job.claim.write_bytes(GOOD + GOOD.replace(b'"a"', b'"b"'))
    assert env.run(job) is Outcome.RETRY
    assert env.row(job).stage == Stage.CLAIMED and env.client.count("delete") == 1  # the stale upload
    env.client.during_upload = None
    assert env.through(job) is Outcome.ARCHIVED
    assert json.loads((env.inbox_path / "done" / "x.jsonl.manifest.json").read_text())["source"]["bytes"] == \
        2 * len(GOOD)


def test_the_same_content_twice_reuses_the_file_id(env: Env) -> None:
    assert env.through(env.claim("a.jsonl")) is Outcome.ARCHIVED
    assert env.through(env.claim("b.jsonl")) is Outcome.ARCHIVED
    manifest = json.loads((env.inbox_path / "done" / "b.jsonl.manifest.json").read_text())
    assert manifest["upload"]["method"] == "existing" and manifest["file"]["id"] == "file-1"
    assert env.client.count("upload") == 1


def test_a_vanished_file_is_lost_and_one_moved_already_is_finished(env: Env) -> None:
    job = env.claim()
    job.claim.unlink()
    assert env.run(job) is Outcome.LOST and env.row(job) is None
    job2 = env.claim("y.jsonl")
    assert env.run(job2) is Outcome.UPLOADED
    # the archiver reserved done/y.jsonl and moved the file there, then died before the manifest
    row = env.row(job2)
    target = env.inbox_path / "done" / "y.jsonl"
    target.parent.mkdir()
    env.journal.update(row.claim, target=str(target), sidecar=json.dumps(manifest_from_row(row, job2.inbox, target)))
    job2.claim.rename(target)
    assert env.run(env.queue.get_archive(timeout=1)) is Outcome.ARCHIVED
    data = json.loads((env.inbox_path / "done" / "y.jsonl.manifest.json").read_text())
    assert data["source"]["path"] == str(target) and env.row(job2).stage == Stage.ARCHIVED


def test_a_bug_is_retried_then_fails_the_file_as_internal_error(env: Env) -> None:
    env.ctx.inject_bug = "check"
    job = env.claim()
    outcomes = [env.run(job) for _ in range(MAX_BUGS)]
    assert outcomes == [Outcome.RETRY] * (MAX_BUGS - 1) + [Outcome.FAILED]
    sidecar = json.loads((env.inbox_path / "failed" / "x.jsonl.error.json").read_text())
    assert sidecar["stage"] == "internal" and sidecar["error"]["kind"] == "internal_error"


def test_shutdown_during_a_transient_failure_leaves_the_file_claimed(env: Env) -> None:
    env.client.fail["upload"] = [transient()]
    env.ctx.cancel.set()
    job = env.claim()
    assert env.run(job) is Outcome.CANCELLED
    assert job.claim.exists() and not env.queue._delayed


def test_a_batch_inbox_waits_for_processing_and_hands_the_archived_input_to_its_ledger(tmp_path: Path) -> None:
    """No job is created before the input is archived: its manifest names its ledger, and the
    journal's row (the poller's index) points at both."""
    env = Env(tmp_path, batch={"endpoint": "/v1/chat/completions", "outbox": str(tmp_path / "outbox")})
    env.client.processing = "PENDING"
    job = env.claim()
    assert env.through(job) is Outcome.ARCHIVED
    assert env.client.count("wait_for_processing") == 1 and env.client.count("create_batch") == 0
    assert env.ctx.batches is not None
    rec = env.ctx.batches.get(str(job.claim))
    done = env.inbox_path / "done"
    assert rec is not None and rec.batch_id is None and rec.stage == "following"
    assert rec.manifest == str(done / "x.jsonl.manifest.json") and rec.ledger == str(done / "x.jsonl.ledger.json")
    manifest = json.loads((done / "x.jsonl.manifest.json").read_text())
    assert manifest["batch"]["ledger"] == rec.ledger and manifest["batch"]["jobs"] == []
    assert manifest["file"]["id"] and manifest["upload"]["method"] == "single"


def test_a_batch_input_over_the_per_job_limit_is_archived_unsent_for_its_ledger_to_split(tmp_path: Path) -> None:
    """Above max_requests_per_job the input is checked part by part and not uploaded whole:
    its manifest's file is null and upload.method says split (the ledger uploads the parts)."""
    env = Env(tmp_path, batch={"endpoint": "/v1/chat/completions", "outbox": str(tmp_path / "outbox"),
                               "max_requests_per_job": 2})
    job = env.claim(data=b"".join(GOOD.replace(b'"a"', f'"r{i}"'.encode()) for i in range(5)))
    assert env.through(job) is Outcome.ARCHIVED
    assert env.client.count("upload") == 0
    manifest = json.loads((env.inbox_path / "done" / "x.jsonl.manifest.json").read_text())
    assert manifest["file"] is None and manifest["upload"]["method"] == "split" and manifest["upload"]["parts"] >= 2
    assert manifest["validation"]["passed"] is True


def test_every_step_is_in_the_table() -> None:
    assert set(steps.STEPS) == set(steps.Step)


def test_a_claim_taken_over_after_its_target_was_reserved_is_not_archived_here(env: Env) -> None:
    """A host taken for dead while its archiver had reserved done/x.jsonl: the survivor took the
    claim folder and archives the file under a name of its own. The first host's worker finds
    its claimed file gone and must not write a manifest for data that is not at its target."""
    job = env.claim()
    assert env.run(job) is Outcome.UPLOADED
    row = env.row(job)
    target = env.inbox_path / "done" / "x.jsonl"
    target.parent.mkdir()
    env.journal.update(row.claim, target=str(target), sidecar=json.dumps(manifest_from_row(row, job.inbox, target)))
    job.claim.rename(env.inbox_path / "done" / "x.2.jsonl")  # the survivor's name for it
    assert env.run(env.queue.get_archive(timeout=1)) is Outcome.LOST
    assert not (env.inbox_path / "done" / "x.jsonl.manifest.json").exists()
    assert env.row(job) is None
