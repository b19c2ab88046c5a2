"""The events' pure pieces: the shipped schema is the model's, the signature is the one the
Standard Webhooks reference library verifies, Retry-After, the secret's parsing, and the store's
order (a refused event parks, an outage holds the sink) and re-queue."""

from __future__ import annotations

import base64
import json
import time
from importlib import resources
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
from standardwebhooks.webhooks import Webhook

from inboxd.config import Config, ConfigError, parse_config
from inboxd.events import Events, payload
from inboxd.events.signing import parse_secret
from inboxd.events.sinks import retry_after
from inboxd.events.store import MIGRATIONS, EventStore, NewEvent
from inboxd.log import redact_text
from inboxd.state.db import Database
from inboxd.state.journal import Journal

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_the_shipped_schema_is_generated_from_the_model() -> None:
    shipped = resources.files("inboxd.schemas").joinpath("event.schema.json").read_text(encoding="utf-8")
    assert shipped == payload.schema_text(), "regenerate: python -m inboxd.events.payload > .../event.schema.json"


def test_every_body_the_builders_make_is_valid_against_the_schema() -> None:
    schema = payload.json_schema()
    manifest = {"file": {"id": "file-1", "purpose": "batch-api"}, "upload": {"host": "h", "method": "single"},
                "source": {"sha256": "ab" * 32, "bytes": 10, "path": "/in/done/x.jsonl"}}
    error = {"stage": "validate", "error": {"kind": "json.invalid", "message": "not JSON"}, "host": "h",
             "source": {"sha256": None, "path": "/in/failed/y.jsonl"}}
    batch = {"batch": {"id": "b-1", "status": "COMPLETED", "input_file_id": "file-1"},
             "input": {"path": "/in/done/x.jsonl"}, "counts": {"succeeded": 3, "failed": 0, "missing": 0}}
    for body in (payload.file_archived("/in/done/x.jsonl.manifest.json", manifest, inbox="/in", name="x\n.jsonl",
                                       when=1.0),
                 payload.file_failed("/in/failed/y.jsonl.error.json", error, inbox="/in", name="y", when=1.0),
                 payload.batch_delivered("/out/x.batch.json", batch, inbox="/in", when=1.0),
                 payload.ping("sched", 1.0)):
        jsonschema.validate(json.loads(payload.encode(body)), schema)
        payload.EventBody.model_validate_json(payload.encode(body))


def test_the_signature_verifies_with_the_reference_library() -> None:
    secret = parse_secret(SECRET, "test")
    body = payload.encode(payload.ping("sched", time.time())).encode()
    ts = int(time.time())
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts), "webhook-signature": secret.sign("msg_1", ts, body)}
    assert Webhook(SECRET).verify(body, headers)["type"] == "ping"
    assert SECRET not in repr(secret)
    assert SECRET not in redact_text(f"secret {SECRET}") and SECRET[6:] not in redact_text(SECRET[6:])


@pytest.mark.parametrize("text", ["whsec_not*base64", "whsec_" + base64.b64encode(b"short").decode()])
def test_a_bad_secret_is_a_config_error_without_the_secret(text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_secret(text, "events (sched).secret_env HOOK")
    assert text not in str(exc.value)


def test_retry_after_seconds_and_dates_clamped() -> None:
    assert retry_after("3") == 3.0
    assert retry_after("999999") == 3600.0
    assert retry_after(None) is None and retry_after("soon") is None
    assert 9 <= (retry_after("Wed, 21 Oct 2099 07:28:00 GMT", now=4096250870.0) or 0) <= 11


def _event(i: int, when: float) -> NewEvent:
    return NewEvent(id=f"msg_{i}", type="file.archived", source=f"/s/{i}", key=f"/s/{i}@1", inbox="/in", body="{}",
                    created_at=when)


def test_the_store_keeps_order_through_an_outage_and_parks_a_refused_event(tmp_path: Path) -> None:
    store = EventStore(Database(tmp_path))
    now = time.time()
    for i in range(3):
        store.record(_event(i, now), ["a", "b"])
    store.record(_event(0, now), ["a"])  # the same sidecar again: no second event
    head = store.head("a", now)
    assert head is not None and head.id == "msg_0"
    store.failed(head, next_at=now + 60, error="connection refused", parked=False)
    held = store.head("a", now)
    assert held is not None and held.id == "msg_0" and held.next_at > now  # the sink waits for it: order kept
    store.failed(held, next_at=now + 60, error="HTTP 400", parked=True)
    nxt = store.head("a", now)
    assert nxt is not None and nxt.id == "msg_1"  # refused for itself: the sink goes on
    assert store.delivered(nxt, now) is False  # sink b still has it pending
    b = store.head("b", now)
    assert b is not None and b.id == "msg_0"  # one sink's trouble is not another's
    assert store.pending(now)["a"][0] == 2 and store.pending(now)["b"][0] == 3
    assert store.dead(store.head("a", now + 61) or nxt, "gone") is False
    assert [r.id for r in store.list(state="dead")] == ["msg_0"]
    assert store.retry(["msg_0"]) == 1 and store.list(state="dead") == []


def _config(tmp_path: Path, inbox: Path) -> Config:
    return parse_config({"daemon": {"state_dir": str(tmp_path / "state")},
                         "inboxes": [{"path": str(inbox), "purpose": "batch-api"}],
                         "events": [{"command": ["/bin/true"], "name": "hook"}]})


def test_a_finished_stage_commits_with_its_event_and_its_fleet_file(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = _config(tmp_path, inbox)
    journal = Journal(config.daemon.state_dir)
    events = Events(config, journal.db, "host-1-abcd")
    journal.on_finished(events.on_file_finished)
    sidecar = {"file": {"id": "file-1", "purpose": "batch-api"}, "source": {"sha256": "ab", "path": "x"},
               "upload": {"host": "h"}}
    for claim, text in (("/c/1.good.jsonl", json.dumps(sidecar)), ("/c/2.bad.jsonl", "{not json")):
        journal.claimed(claim, str(inbox), claim.rsplit(".", 2)[0][-1])
        journal.update(claim, target=str(inbox / "done" / claim[3:]), sidecar=text)
        journal.update(claim, stage="archived")  # the bad sidecar's event cannot be made: the stage still commits
    rows = events.store.list()
    assert [r.source for r in rows] == [str(inbox / "done" / "1.good.jsonl") + ".manifest.json"]
    assert journal.get("/c/2.bad.jsonl").stage == "archived"  # type: ignore[union-attr]
    file = Path(rows[0].file or "")
    assert file.parent == inbox / ".inboxd" / ".events" / "host-1-abcd"
    assert json.loads(file.read_text())["id"] == rows[0].id
    taken = Events(config, journal.db, "host-2-ef01").take_over(str(inbox), inbox / ".inboxd", lambda _: True)
    assert taken == 1 and not file.exists()  # a survivor renamed it into its own folder
    journal.close()


def test_a_stage_written_again_makes_no_second_event_nor_file(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    config = _config(tmp_path, inbox)
    config = config.model_copy(update={"events": [config.events[0].model_copy(update={"types": ["batch.delivered"]})]})
    events = Events(config, Database(config.daemon.state_dir), "host-1-abcd")

    rec = SimpleNamespace(inbox=str(inbox), outbox=str(tmp_path / "out"), stem="x", batch_id="b-1",
                          status="COMPLETED", input_file_id="file-1", input_path=str(inbox / "done" / "x.jsonl"))
    for _ in range(2):  # the poller delivers the job again after a crash: `delivered` is written twice
        with events.store.db.transaction() as tx:
            events.on_batch_delivered(tx, rec)
    assert len(events.store.list()) == 1
    assert len(list((inbox / ".inboxd" / ".events" / "host-1-abcd").glob("*.json"))) == 1
    rec.batch_id = "b-2"  # done/ and the outbox emptied, the same name again: a new publication, a new event
    with events.store.db.transaction() as tx:
        events.on_batch_delivered(tx, rec)
    assert len(events.store.list()) == 2


def test_a_sidecar_published_and_not_recorded_is_announced_by_the_survivor(tmp_path: Path) -> None:
    """The publishing hook leaves an intent before the sidecar is put in place; the commit that
    records the event removes it; a survivor of a host that died in between announces it."""
    inbox = tmp_path / "inbox"
    (inbox / "done").mkdir(parents=True)
    config = _config(tmp_path, inbox)
    journal = Journal(config.daemon.state_dir)
    Events.attach(config, journal, SimpleNamespace(on_delivered=lambda hook: None), "host-1-abcd")
    sidecar = {"file": {"id": "file-1"}, "source": {"path": "x"}, "upload": {"started_at": "2026-12-06T21:00:00Z"}}
    rows = []
    for name in ("kept.jsonl", "cut.jsonl", "unpublished.jsonl"):
        claim = f"/c/{name}"
        journal.claimed(claim, str(inbox), name)
        journal.update(claim, target=str(inbox / "done" / name), sidecar=json.dumps(sidecar))
        rows.append(journal.get(claim))
    intents = inbox / ".inboxd" / ".events" / "host-1-abcd"
    for row in rows:
        journal.publishing(row, inbox / "done" / f"{row.name}.manifest.json")  # type: ignore[union-attr]
    assert len(list(intents.glob("*.intent"))) == 3
    (inbox / "done" / "kept.jsonl.manifest.json").write_text(json.dumps(sidecar))
    journal.update("/c/kept.jsonl", stage="archived")  # recorded: its intent goes
    (inbox / "done" / "cut.jsonl.manifest.json").write_text(json.dumps(sidecar))  # published; then the host died
    assert len(list(intents.glob("*.intent"))) == 2
    kept_id = EventStore(journal.db).list()[0].id
    survivor = Events(config, Database(tmp_path / "state-2"), "host-2-ef01")
    survivor.take_over(str(inbox), inbox / ".inboxd", lambda _: True)
    got = {Path(r.source).name: r.id for r in survivor.store.list()}
    assert set(got) == {"kept.jsonl.manifest.json", "cut.jsonl.manifest.json"}  # the pending one, the cut one
    assert got["kept.jsonl.manifest.json"] == kept_id
    assert not intents.exists()  # the unpublished one is the survivor's to finish (and announce) itself
    journal.close()


def test_a_version_1_events_table_is_migrated_with_its_rows(tmp_path: Path) -> None:
    db = Database(tmp_path)
    db.register("events", MIGRATIONS[:1])  # a journal written by the first version
    db.execute("INSERT INTO events (id, sink, type, source, inbox, body, created_at, since, next_at) "
               "VALUES ('msg_1', 'a', 'file.archived', '/in/done/x.manifest.json', '/in', '{}', 1, 1, 1)")
    store = EventStore(db)
    assert db.version("events") == len(MIGRATIONS)
    row = store.head("a", time.time())
    assert row is not None and row.id == "msg_1" and row.key == "/in/done/x.manifest.json"
    assert {r[1] for r in db.query("PRAGMA index_list(events)")} >= {"events_by_sink_state", "events_by_id"}


def test_batch_delivered_of_a_ledger_names_its_last_job_and_completes_when_nothing_is_missing() -> None:
    """An inboxd.batch/v2 batch.json (many jobs): the event names the last job, the first part's
    input file, and says COMPLETED only when no request is missing."""
    jobs = [{"id": "batch-1", "part": 1, "round": 1, "status": "EXPIRED", "input_file_id": "file-1"},
            {"id": "batch-2", "part": 1, "round": 2, "status": "COMPLETED", "input_file_id": "file-2"}]
    v2 = {"schema": "inboxd.batch/v2", "jobs": jobs, "input": {"path": "/in/done/x.jsonl"},
          "counts": {"succeeded": 9, "failed": 1, "missing": 0}, "host": "h"}
    body = payload.batch_delivered("/out/x.batch.json", v2, inbox="/in", when=time.time())
    jsonschema.validate(body, payload.json_schema())
    data = body["data"]
    assert (data["batch_id"], data["input_file_id"], data["status"], data["name"]) == \
        ("batch-2", "file-1", "COMPLETED", "x.jsonl")
    v2["counts"]["missing"] = 3
    v2["jobs"][-1]["status"] = "EXPIRED"
    assert payload.batch_delivered("/out/x.batch.json", v2, inbox="/in", when=time.time())["data"]["status"] \
        == "EXPIRED"
