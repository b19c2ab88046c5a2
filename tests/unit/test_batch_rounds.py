"""Following a ledger (`batch/rounds.py`) against an in-memory server behind the BatchClient
Protocol: exactly-once creates (a lost answer is adopted, another drop's job never), admission
by max_jobs_in_flight, resend rounds, a refused create, an operator's cancel."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from inboxd.api import RejectedError, TransientError
from inboxd.api._batches import BatchJob, BatchRejected
from inboxd.batch.answers import ERRORS, OUTPUT
from inboxd.batch.ledger import Ledger, Limits, ledger_path
from inboxd.batch.rounds import Rounds, cancel_marker
from inboxd.batch.split import lines, plan_parts
from inboxd.config import BatchConfig


class Server:
    """Files and jobs in memory. `finish(job_id, answered=...)` ends a job and writes its answer
    files where `Rounds` looks for them (no download)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.jobs: dict[str, BatchJob] = {}
        self.creates: list[str] = []
        self.lose_next_answer = False
        self.refuse_next = False
        self.refuse_upload: int | None = None  # the upload (1, 2, ...) the server answers 400
        self.processing = "COMPLETED"
        self._ids = itertools.count(1)
        self._uploads = 0

    def upload(self, path: Path, purpose: str, *, sha256: str | None = None, expected_size: int | None = None) -> Any:
        self._uploads += 1
        if self._uploads == self.refuse_upload:
            raise RejectedError("the file is refused", route="upload", status=400)
        fid = f"file-{next(self._ids)}"
        self.files[fid] = path.read_bytes()
        return SimpleNamespace(file=SimpleNamespace(id=fid))

    def wait_for_processing(self, file_id: str) -> Any:
        return SimpleNamespace(id=file_id, processing_status=self.processing)

    def create_batch(self, input_file_id: str, endpoint: str, *, completion_window: str | None = "24h",
                     priority: int | None = None, model_id: str | None = None,
                     cancel: threading.Event | None = None) -> tuple[BatchJob, str | None]:
        if self.refuse_next:
            raise BatchRejected("bad endpoint", route="batch_create", status=400)
        job = self.add_job(input_file_id)
        self.creates.append(job.id)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise TransientError("connection reset after the job was made", route="batch_create")
        return job, None

    def add_job(self, input_file_id: str) -> BatchJob:
        job = BatchJob(id=f"batch-{next(self._ids)}", input_file_id=input_file_id, status="VALIDATING",
                       created_at=f"2026-12-06T21:00:{len(self.jobs):02d}Z")
        self.jobs[job.id] = job
        return job

    def get_batch(self, batch_id: str, *, retries: bool = True, cancel: threading.Event | None = None) -> BatchJob:
        return self.jobs[batch_id]

    def list_batches(self, *, retries: bool = True, cancel: threading.Event | None = None) -> list[BatchJob]:
        return list(self.jobs.values())

    def file_content(self, file_id: str, *, offset: int = 0, cancel: threading.Event | None = None) -> Any:
        raise AssertionError("answers are placed, not downloaded")

    def finish(self, rounds: Rounds, job_id: str, *, status: str = "COMPLETED", answered: float = 1.0,
               codes: dict[str, int] | None = None) -> None:
        """End the job: the first `answered` share of its requests answered (with `codes` for some)."""
        job = self.jobs[job_id]
        requests = [json.loads(x) for x in self.files[job.input_file_id or ""].splitlines() if x.strip()]
        done = requests[:int(len(requests) * answered)]
        out = [r for r in done if (codes or {}).get(r["custom_id"]) is None]
        err = [r for r in done if (codes or {}).get(r["custom_id"]) is not None]
        job.status, job.output_file_id, job.error_file_id = status, f"out-{job_id}", f"err-{job_id}"
        entry = next(j for j in rounds.ledger.jobs if j.id == job_id)
        rounds.work.mkdir(parents=True, exist_ok=True)
        rounds.answer_path(entry, OUTPUT).write_text("".join(json.dumps(
            {"custom_id": r["custom_id"], "response": {"status_code": 200, "body": {}}}) + "\n" for r in out))
        rounds.answer_path(entry, ERRORS).write_text("".join(json.dumps(
            {"custom_id": r["custom_id"], "error": {"status_code": (codes or {})[r["custom_id"]]}}) + "\n"
            for r in err))


def make_rounds(tmp_path: Path, n: int, *, per_job: int = 100, **cfg: Any) -> tuple[Server, Rounds]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"custom_id": f"r{i}", "body": {"model": "m"}}) + "\n" for i in range(n)))
    bcfg = BatchConfig(max_requests_per_job=per_job, **cfg)
    limits = Limits(max_requests_per_job=per_job, max_bytes_per_job=10**6, resubmit_rounds=bcfg.resubmit_rounds,
                    resubmit_codes=bcfg.resubmit_codes)
    ledger = Ledger.plan(src, plan_parts(src, per_job, 10**6), limits, sha256=None)
    lfile = ledger_path(tmp_path / "state" / "in")
    lfile.parent.mkdir()
    server = Server()
    return server, Rounds(server, ledger, lfile, tmp_path / "work", bcfg)


def test_a_lost_create_answer_is_adopted_and_another_drops_job_never(tmp_path):
    server, rounds = make_rounds(tmp_path, 5)
    rounds.step()  # uploads
    [job] = rounds.ledger.jobs
    fid = job.input_file_id
    assert fid is not None and job.stage == "created" and len(server.creates) == 1
    # again, from scratch: another drop of the same bytes had a job already, and our answer is lost
    server2, rounds2 = make_rounds(tmp_path / "2", 5)
    server2.files[fid] = server.files[fid]
    other = server2.add_job(fid)  # the first drop's job, made before this one's create
    rounds2.ledger.jobs[0].input_file_id, rounds2.ledger.jobs[0].stage = fid, "uploaded"
    server2.lose_next_answer = True
    rounds2.step()
    entry = rounds2.ledger.jobs[0]
    assert entry.stage == "creating" and entry.id is None and entry.listed_before == [other.id]
    assert Ledger.load(rounds2.path).jobs[0].listed_before == [other.id]  # saved before the POST
    rounds2.step()  # the next look: the job our lost POST made, not the other drop's
    assert entry.id == server2.creates[0] != other.id and len(server2.creates) == 1


def test_jobs_wait_for_a_slot_of_max_jobs_in_flight(tmp_path):
    server, rounds = make_rounds(tmp_path, 25, per_job=10, max_jobs_in_flight=1)
    rounds.step()
    assert [j.stage for j in rounds.ledger.jobs] == ["created", "planned", "planned"]
    server.finish(rounds, server.creates[0])
    rounds.step()
    assert [j.stage for j in rounds.ledger.jobs] == ["settled", "created", "planned"]
    for _ in range(2):
        server.finish(rounds, server.creates[-1])
        rounds.step()
    assert rounds.ledger.done and len(server.creates) == 3


def test_an_expired_job_and_transient_errors_are_resent_byte_for_byte(tmp_path):
    server, rounds = make_rounds(tmp_path, 10)
    rounds.step()
    server.finish(rounds, server.creates[0], status="EXPIRED", answered=0.5, codes={"r1": 429, "r2": 400})
    rounds.step()
    first, second = rounds.ledger.jobs
    assert (first.stage, first.final, first.resend) == ("settled", 4, 6)  # r0, r2 (400), r3, r4 final
    assert second.round == 2 and second.stage == "created"
    src = Path(rounds.ledger.input.path).read_bytes().splitlines(keepends=True)
    sent = server.files[second.input_file_id or ""]
    assert sent == src[1] + b"".join(src[5:])  # r1 (429) and the unanswered half, as they were
    server.finish(rounds, server.creates[-1])
    assert rounds.step() and rounds.ledger.final_requests() == 10


def test_a_refused_create_is_final_and_an_operators_cancel_is_not_resent(tmp_path):
    server, rounds = make_rounds(tmp_path, 4)
    server.refuse_next = True
    assert rounds.step()
    [job] = rounds.ledger.jobs
    assert job.rejected and job.create_status == 400 and not server.creates
    server, rounds = make_rounds(tmp_path / "c", 4)
    rounds.step()
    batch_id = server.creates[0]
    cancel_marker(rounds.path, batch_id).touch()
    server.finish(rounds, batch_id, status="CANCELLED", answered=0.25)
    assert rounds.step() and len(rounds.ledger.jobs) == 1 and rounds.ledger.jobs[0].cancelled_by_operator


def test_lines_of_a_range(tmp_path):
    p = tmp_path / "x"
    p.write_bytes(b"a\nbb\nccc\n")
    assert list(lines(p, [(2, 9)])) == [(2, b"bb\n"), (5, b"ccc\n")]


def test_a_budget_bounds_the_slow_actions_of_one_step(tmp_path):
    """The daemon steps every input it follows on one thread: a step with a budget does at most
    that many uploads, creates and settles, says it was cut, and the next step goes on."""
    server, rounds = make_rounds(tmp_path, 25, per_job=5)  # 5 parts
    assert not rounds.step(budget=2) and rounds.cut
    assert [j.stage for j in rounds.ledger.jobs] == ["created"] + ["planned"] * 4  # an upload and a create
    assert len(server.creates) == 1
    steps = 1
    while rounds.cut or not all(j.stage == "created" for j in rounds.ledger.jobs):
        rounds.step(budget=2)
        steps += 1
    assert steps == 5 and len(server.creates) == 5 and not rounds.cut
    rounds.step()  # no budget: everything it can
    assert len(server.creates) == 5


def test_a_part_whose_file_the_server_refuses_is_final_and_the_others_go_on(tmp_path):
    """A 4xx on a part's upload (or its processing ending FAILED) is not retried forever: that
    job ends FAILED with the reason, its requests are final (missing), the other parts go on."""
    server, rounds = make_rounds(tmp_path, 15, per_job=5)  # 3 parts
    server.refuse_upload = 2
    rounds.step()
    first, second, third = rounds.ledger.jobs
    assert second.rejected and second.stage == "settled" and second.create_status == 400
    assert "refused the job's input file" in (second.error or "") and second.id is None
    assert first.stage == third.stage == "created" and len(server.creates) == 2
    server2, rounds2 = make_rounds(tmp_path / "p", 5)
    server2.processing = "INVALID_FORMAT"
    assert rounds2.step()
    [job] = rounds2.ledger.jobs
    assert job.rejected and "INVALID_FORMAT" in (job.error or "") and not server2.creates
