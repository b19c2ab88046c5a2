"""`inboxd batch FILE`, `inboxd batches`, `inboxd batch cancel ID` (SPEC §5, issue 12).

`inboxd batch FILE --endpoint E [--model-id M] [--outbox DIR] [--join] [--no-wait] [--json]`:
the round trip for one file, through the same pieces as the daemon: the check (basic),
`FilesClient.upload`, the wait for processing, `create_once`, one `Poller`, the outbox
(default ``<FILE's folder>/outbox``). A live status line (status, progress, elapsed) on a
terminal. The job is journaled (``daemon.state_dir`` with --config, else
``$XDG_STATE_HOME/inboxd`` or ``~/.local/state/inboxd``) under a key made of the file's path
and sha256, so running the command again after Ctrl-C, --no-wait or a crash follows the same
job instead of creating another; once delivered, running it again makes a new job.

Exit codes: 0 delivered and COMPLETED (or created, with --no-wait); 1 the work failed (the
check, the upload, processing, a rejected create, a job that ended FAILED, EXPIRED or
CANCELLED: its outbox is still delivered); 2 usage; 130 interrupted (the job goes on).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from ..api import ApiError, FilesClient
from ..config import BatchConfig, Config
from ..log import configure, register_secret
from ..pipeline.journal import Journal
from .create import create_once
from .manifest import iso
from .poller import Poller
from .store import FINISHED_STAGES, BatchRecord, BatchStore

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def state_dir_for(config: Config, from_file: bool, env: dict[str, str] | None = None) -> Path:
    """The daemon's state_dir with --config; else the user's state folder."""
    if from_file:
        return config.daemon.state_dir
    env = dict(os.environ) if env is None else env
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "state")
    return Path(base) / "inboxd"


class _Out:
    def __init__(self, name: str, as_json: bool) -> None:
        self.name, self.as_json = name, as_json

    def fail(self, kind: str, message: str, code: int = EXIT_FAILED, **extra: Any) -> int:
        print(f"inboxd batch: {self.name}: {message}", file=sys.stderr)
        if self.as_json:
            print(json.dumps({"error": {"kind": kind, "message": message, "name": self.name,
                                        **{k: v for k, v in extra.items() if v is not None}}}, indent=2))
        return code


class _StatusLine:
    """`batch-… IN_PROGRESS  42.0%  1m05s` on stderr, rewritten in place (terminals only)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.width = 0

    def show(self, text: str) -> None:
        if not self.enabled:
            return
        pad = max(0, self.width - len(text))
        sys.stderr.write("\r" + text + " " * pad)
        sys.stderr.flush()
        self.width = len(text)

    def done(self) -> None:
        if self.enabled and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()


def _elapsed(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _key(path: Path, sha256: str, store: BatchStore) -> tuple[str, BatchRecord | None]:
    """The journal key of this file's job: the one not yet delivered, else a fresh one."""
    base = f"cli:{path}:{sha256}"
    n = 1
    while True:
        key = base if n == 1 else f"{base}#{n}"
        rec = store.get(key)
        if rec is None or rec.stage not in FINISHED_STAGES:
            return key, rec
        n += 1


def batch_command(config: Config, key: SecretStr, path: Path, *, endpoint: str, model_id: str | None,
                  outbox: Path | None, wait: bool, as_json: bool, join: bool, poll_seconds: float,
                  completion_window: str, priority: int | None, state_dir: Path) -> int:
    register_secret(key.get_secret_value())
    configure("warning", "console", stream=sys.stderr)  # stdout is the answer's; warnings (retries, cuts) only
    out = _Out(str(path), as_json)
    path = Path(os.path.abspath(path))
    try:
        bcfg = BatchConfig(endpoint=endpoint, model_id=model_id, outbox=Path(os.path.abspath(outbox)) if outbox
                           else path.parent / "outbox", join=join, poll_seconds=poll_seconds,
                           completion_window=completion_window, priority=priority)
    except ValueError as exc:
        return out.fail("usage", str(exc).splitlines()[-1] if str(exc) else "bad option", EXIT_USAGE)
    from ..check import check_file

    t0 = time.time()
    try:
        report = check_file(path, "batch-api", "basic", name=path.name, max_line_bytes=config.check.max_line_bytes,
                            max_errors=config.check.max_errors)
    except OSError as exc:
        return out.fail("unreadable", f"cannot read it: {exc.strerror}")
    if not report.passed:
        if not as_json:
            for issue in report.errors:
                where = f"{path}:{issue.line}" if issue.line is not None else str(path)
                print(f"{where}: {issue.rule}: {issue.message}", file=sys.stderr)
        first = report.errors[0]
        return out.fail(first.rule, f"not sent: the basic check failed ({len(report.errors)} error(s))",
                        line=first.line)
    try:
        journal = Journal(state_dir)
    except OSError as exc:
        return out.fail("usage", f"cannot open the journal in {state_dir}: {exc.strerror}", EXIT_USAGE)
    store = BatchStore(journal)
    client = FilesClient(config.api, config.upload, key)
    line = _StatusLine(sys.stderr.isatty() and not as_json)
    poller: Poller | None = None
    try:
        claim, rec = _key(path, report.sha256, store)
        if rec is None:
            line.show(f"{path.name}: uploading {report.bytes} bytes")
            result = client.upload(path, "batch-api", sha256=report.sha256, expected_size=report.bytes)
            line.show(f"{path.name}: {result.file.id} waiting for processing")
            obj = client.wait_for_processing(result.file.id)
            file_id = obj.id
            uploaded_at: float | None = time.time()
        else:
            file_id, uploaded_at = rec.input_file_id, rec.uploaded_at
        line.show(f"{path.name}: creating the batch")
        job = create_once(client, store, claim, file_id, bcfg, inbox=path.parent, outbox=bcfg.outbox,
                          input_sha256=report.sha256, dropped_at=t0, uploaded_at=uploaded_at,
                          requests=report.records, input_path=path)
        rec = store.attach(claim, manifest=None, input_path=path, requests=report.records)
        if rec.stage == "following":  # this run's choices for a job an earlier run created (--no-wait, Ctrl-C)
            rec = store.update(claim, poll_seconds=bcfg.poll_seconds, join=bcfg.join)
        if not wait:
            line.done()
            if as_json:
                print(json.dumps({"batch": job, "outbox": rec.outbox, "journal": str(journal.path)}, indent=2))
            else:
                print(f"{job['id']}  {job.get('status')}  {path.name}  (not waiting: `inboxd batch {path}` again "
                      f"follows it to {rec.outbox})")
            return EXIT_OK
        poller = Poller(lambda: client, store)
        poller.start()
        poller.follow(claim)
        while True:
            rec = store.get(claim)
            assert rec is not None
            if rec.stage in FINISHED_STAGES:
                break
            progress = f"{rec.progress:5.1f}%" if rec.progress is not None else "    -"
            what = "downloading" if rec.stage == "downloading" else (rec.status or "")
            line.show(f"{rec.batch_id}  {what:<11} {progress}  {_elapsed(time.time() - t0)}")
            time.sleep(0.2 if line.enabled else 0.1)
    except KeyboardInterrupt:
        line.done()
        print("inboxd batch: interrupted; the job goes on on the server: run the same command again to follow "
              "it, or `inboxd batch cancel ID`", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ApiError as exc:
        line.done()
        return out.fail(exc.kind, f"{type(exc).__name__}: {exc}", status=exc.status,
                        validation_report=getattr(exc, "report", None))
    except OSError as exc:
        line.done()
        return out.fail("os", f"{exc.strerror or exc}: {getattr(exc, 'filename', '')}")
    finally:
        if poller is not None:
            poller.stop()
        client.close()
        journal.close()
    line.done()
    return _report(rec, as_json, time.time() - t0)


def _report(rec: BatchRecord, as_json: bool, seconds: float) -> int:
    if rec.stage == "failed":
        msg = rec.error or "the job could not be followed"
        if as_json:
            print(json.dumps({"error": {"kind": "batch_lost", "message": msg, "batch_id": rec.batch_id}}, indent=2))
        print(f"inboxd batch: {rec.batch_id}: {msg}", file=sys.stderr)
        return EXIT_FAILED
    sidecar = rec.path("batch.json")
    data = json.loads(sidecar.read_text())
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        c = data["counts"]
        missing = f", {c['missing']} missing" if c.get("missing") else ""
        print(f"{rec.batch_id}  {rec.status}  {c['succeeded']} succeeded, {c['failed']} failed{missing}  "
              f"{seconds:.1f} s")
        for entry in data["outputs"].values():
            if entry:
                print(f"  {entry['path']}  ({entry['lines']} lines, {entry['bytes']} bytes)")
        print(f"  {sidecar}")
        if rec.status != "COMPLETED" and data["batch"].get("error"):
            print(f"inboxd batch: {rec.batch_id} ended {rec.status}: {data['batch']['error']}", file=sys.stderr)
    return EXIT_OK if rec.status == "COMPLETED" else EXIT_FAILED


def batches_command(state_dir: Path, *, as_json: bool) -> int:
    path = state_dir / "journal.sqlite3"
    if not path.exists():
        message = f"no journal at {path}: no batch job has been made with this state_dir"
        if as_json:
            print(json.dumps({"error": {"kind": "no_journal", "message": message}}))
        print(f"inboxd batches: {message}", file=sys.stderr)
        return EXIT_USAGE
    journal = Journal(state_dir)
    try:
        records = BatchStore(journal).all()
    finally:
        journal.close()
    if as_json:
        rows = []
        for r in records:
            row = r.to_json()
            for k in ("dropped_at", "uploaded_at", "creating_at", "created_at", "finished_at", "delivered_at",
                      "updated_at"):
                row[k] = iso(row[k])
            rows.append(row)
        print(json.dumps({"journal": str(path), "batches": rows}, indent=2))
        return EXIT_OK
    if not records:
        print(f"no batch jobs in {path}")
        return EXIT_OK
    print(f"{'BATCH':<32} {'STATUS':<11} {'PROGRESS':>8}  {'STAGE':<11} {'UPDATED':<20}  INPUT -> OUTBOX")
    for r in records:
        progress = f"{r.progress:.1f}%" if r.progress is not None else "-"
        where = r.input_path or r.manifest or r.claim
        target = r.path("batch.json") if (r.outbox and r.stem) else r.outbox
        print(f"{r.batch_id or '-':<32} {r.status or '-':<11} {progress:>8}  {r.stage:<11} "
              f"{iso(r.updated_at) or '-':<20}  {where} -> {target}")
        if r.error and r.status not in ("COMPLETED",):
            print(f"{'':<32} {r.error}")
    return EXIT_OK


def cancel_command(config: Config, key: SecretStr, batch_id: str, *, as_json: bool) -> int:
    register_secret(key.get_secret_value())
    client = FilesClient(config.api, config.upload, key)
    try:
        job = client.cancel_batch(batch_id)
    except ApiError as exc:
        if as_json:
            print(json.dumps({"error": {"kind": exc.kind, "message": str(exc), "status": exc.status}}, indent=2))
        print(f"inboxd batch cancel: {batch_id}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        client.close()
    if as_json:
        print(json.dumps(job.model_dump(mode="json"), indent=2))
    else:
        print(f"{job.id}  {job.status}")
    return EXIT_OK
