"""The journal: schema versions and migration, the column whitelist, retention."""

from __future__ import annotations

import sqlite3
import time

import pytest

from inboxd.batch.store import BatchStore
from inboxd.state.db import OWNERS_VERSION, Database
from inboxd.state.journal import _V1, MIGRATIONS, Journal


def test_a_new_journal_has_the_current_version(tmp_path):
    j = Journal(tmp_path)
    assert j.db.version("journal") == len(MIGRATIONS)
    assert j.db.query("PRAGMA user_version")[0][0] == OWNERS_VERSION  # older inboxd refuses it
    j.close()


def test_a_version_0_journal_is_migrated_and_keeps_its_rows(tmp_path):
    db = sqlite3.connect(tmp_path / "journal.sqlite3")
    db.executescript(_V1)
    db.execute("INSERT INTO files (claim, inbox, name, stage, claimed_at, updated_at) VALUES "
               "('/i/.inboxd/c/1.x', '/i', 'x', 'archived', 1, 1)")
    db.commit()
    db.close()
    j = Journal(tmp_path)
    row = j.get("/i/.inboxd/c/1.x")
    assert row is not None and row.stage == "archived" and row.ino is None
    j.update(row.claim, ino=42)
    assert j.get(row.claim).ino == 42
    assert j.db.version("journal") == len(MIGRATIONS)
    j.close()


def test_a_newer_journal_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / "journal.sqlite3")
    db.execute("PRAGMA user_version = 4")
    db.close()
    with pytest.raises(sqlite3.DatabaseError, match="newer"):
        Journal(tmp_path)


def test_update_refuses_unknown_columns(tmp_path):
    j = Journal(tmp_path)
    j.claimed("/c", "/i", "x")
    with pytest.raises(ValueError, match="inbox"):
        j.update("/c", inbox="/elsewhere")
    with pytest.raises(ValueError):
        j.update("/c", **{"stage = 'archived' --": 1})
    j.close()


def test_prune_keeps_counts_last_success_and_dedupe(tmp_path):
    j = Journal(tmp_path)
    old = time.time() - 40 * 86400
    for i, stage in enumerate(["archived", "archived", "failed", "uploading"]):
        j.claimed(f"/c{i}", "/i", f"f{i}")
        j.update(f"/c{i}", stage=stage)
    j.uploaded("/c0", "a" * 64, "batch-api", {"id": "file-1"}, file_id="file-1")
    j.update("/c0", stage="archived")
    j.db.execute("UPDATE files SET updated_at = ? WHERE claim IN ('/c0', '/c2', '/c3')", (old,))
    before = j.counts()
    removed = j.prune(30)
    assert removed == 2  # /c0 (archived) and /c2 (failed); /c3 is in flight and stays
    assert j.get("/c0") is None and j.get("/c3") is not None
    assert j.counts() == before
    assert j.known_upload("a" * 64, "batch-api") == {"id": "file-1"}
    assert j.last_success("/i") is not None
    assert j.prune(30) == 0 and j.counts() == before
    j.close()


def test_a_claim_name_leaves_room_for_the_dot_files_that_travel_with_it(tmp_path):
    """A 255-byte name: its claim name, and the temp name of its manifest in the claim folder,
    still fit under NAME_MAX (the first wave retried such a file forever, uploading each time)."""
    from inboxd.pipeline.claim import ClaimArea, manifest_path, write_state
    from inboxd.state.fs import write_atomic

    area = ClaimArea(tmp_path / ".inboxd", "me", None)
    area.ensure()
    src = tmp_path / ("x" * 249 + ".jsonl")
    src.write_text("{}\n")
    claim = area.claim(src)
    assert claim is not None and len(claim.name.encode()) <= 255
    write_atomic(manifest_path(claim), b"{}")  # its temp name is the longest
    write_state(claim, {"file_id": "file-1"})
    assert manifest_path(claim).exists()


def test_the_archived_stage_rides_on_the_next_commit_or_a_flush(tmp_path):
    j = Journal(tmp_path)
    for c in ("/c/a", "/c/b"):
        j.claimed(c, "/i", c[-1])
        j.update(c, stage="uploaded")
    j.archived_later("/c/a")
    other = Journal(tmp_path)  # another process (inboxd status) reads the table
    assert other.get("/c/a").stage == "uploaded"  # not yet written
    assert j.get("/c/a").stage == "uploaded"  # and the cache says what the table says
    j.update("/c/b", attempts=2)  # any write carries it
    assert _stage(tmp_path, "/c/a") == "archived"
    assert j.get("/c/a").stage == "archived"
    j.archived_later("/c/b")
    j.flush()
    assert _stage(tmp_path, "/c/b") == "archived"


def test_an_archived_stage_whose_commit_failed_waits_for_the_next(tmp_path):
    j = Journal(tmp_path)
    j.claimed("/c/a", "/i", "a")
    j.archived_later("/c/a")
    with pytest.raises(ValueError):
        j.update("/c/a", nonsense=1)  # refused before any SQL: nothing taken
    with pytest.raises(sqlite3.Error):
        j._write(lambda db: db.execute("UPDATE no_such_table SET x = 1"))
    assert _stage(tmp_path, "/c/a") == "claimed"
    j.close()  # close flushes
    assert _stage(tmp_path, "/c/a") == "archived"


def _stage(state_dir, claim: str) -> str:
    db = sqlite3.connect(state_dir / "journal.sqlite3")
    try:
        return db.execute("SELECT stage FROM files WHERE claim = ?", (claim,)).fetchone()[0]
    finally:
        db.close()


def test_owners_migrate_on_their_own_and_a_newer_owner_is_refused(tmp_path):
    j = Journal(tmp_path)
    BatchStore(j)
    assert j.db.version("batches") == 2
    j.db.register("events", ["CREATE TABLE t (x INTEGER);", "ALTER TABLE t ADD COLUMN y INTEGER;"])
    assert j.db.version("events") == 2
    j.db.execute("INSERT INTO t (x, y) VALUES (1, 2)")
    j.close()
    db = Database(tmp_path)
    with pytest.raises(sqlite3.DatabaseError, match="newer"):
        db.register("events", ["CREATE TABLE t (x INTEGER);"])
    db.close()


def test_a_version_3_journal_keeps_its_batches(tmp_path):
    db = sqlite3.connect(tmp_path / "journal.sqlite3")
    db.executescript(_V1 + MIGRATIONS[1])
    from inboxd.batch.store import MIGRATIONS as BATCHES
    db.executescript(BATCHES[0])
    db.execute("INSERT INTO batches (claim, inbox, input_file_id, endpoint, poll_seconds, stage, updated_at) "
               "VALUES ('/c', '/i', 'file-1', '/v1/chat/completions', 1, 'following', 1)")
    db.execute("PRAGMA user_version = 3")
    db.commit()
    db.close()
    store = BatchStore(Journal(tmp_path))
    rec = store.get("/c")
    assert rec is not None and rec.stage == "following"


def test_finished_hooks_run_in_the_commit_of_the_stage(tmp_path):
    j = Journal(tmp_path)
    j.db.register("seen", ["CREATE TABLE seen (claim TEXT, stage TEXT);"])
    j.on_finished(lambda conn, row: conn.execute("INSERT INTO seen VALUES (?, ?)", (row.claim, row.stage)))
    j.claimed_many([("/a", "/i", "a"), ("/b", "/i", "b")])
    j.update("/a", stage="failed", error="x")
    j.archived_later("/b")
    assert [tuple(r) for r in j.db.query("SELECT * FROM seen")] == [("/a", "failed")]
    j.flush()
    assert sorted(tuple(r) for r in j.db.query("SELECT * FROM seen")) == [("/a", "failed"), ("/b", "archived")]

    def boom(conn, row):
        raise RuntimeError("hook failed")

    j.on_finished(boom)
    j.claimed("/c", "/i", "c")
    with pytest.raises(RuntimeError):
        j.update("/c", stage="failed")
    assert j.db.query("SELECT stage FROM files WHERE claim = '/c'")[0][0] == "claimed"  # rolled back together
    j.close()
