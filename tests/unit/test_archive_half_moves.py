"""Archiving a file that a dead owner had already linked into done/ (or failed/, or back into
the inbox for `on_success = "keep"`) before it died, on a filesystem without renameat2: the
new owner's journal knows nothing of that link, the name is found by its inode, and the move
is finished there (one name, one sidecar). A real journal and real folders under tmp_path."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from inboxd.config import InboxConfig
from inboxd.pipeline.archive import archive, fail
from inboxd.pipeline.failure import Failure
from inboxd.state.journal import Journal

DATA = b'{"custom_id": "a", "body": {}}\n'


def uploaded(tmp_path: Path, on_success: str = "move") -> tuple[Journal, InboxConfig, Path]:
    inbox = tmp_path / "inbox"
    claim = inbox / ".inboxd" / "host-2-alive" / "7.x.jsonl"
    claim.parent.mkdir(parents=True)
    claim.write_bytes(DATA)
    st = claim.stat()
    journal = Journal(tmp_path / "state")
    journal.claimed(str(claim), str(inbox), "x.jsonl")
    file_object = {"id": "file-1", "object": "file", "purpose": "batch-api", "filename": "x.jsonl", "bytes": len(DATA)}
    journal.uploaded(str(claim), hashlib.sha256(DATA).hexdigest(), "batch-api", file_object,
                     bytes=len(DATA), mtime_ns=st.st_mtime_ns)
    return journal, InboxConfig(path=inbox, purpose="batch-api", on_success=on_success), claim


def names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_archive_finishes_a_link_into_done_instead_of_a_second_name(tmp_path: Path) -> None:
    journal, inbox, claim = uploaded(tmp_path)
    done = inbox.path / "done"
    done.mkdir()
    (done / "x.jsonl").write_bytes(b"an older file of that name\n")
    (done / "x.jsonl.manifest.json").write_text("{}")
    os.link(claim, done / "x.2.jsonl")  # the dead owner's link; its unlink never came
    manifest = archive(journal, inbox, journal.get(str(claim)))  # type: ignore[arg-type]
    assert manifest == done / "x.2.jsonl.manifest.json"
    assert names(done) == ["x.2.jsonl", "x.2.jsonl.manifest.json", "x.jsonl", "x.jsonl.manifest.json"]
    assert not claim.exists() and (done / "x.2.jsonl").stat().st_nlink == 1
    journal.close()


def test_fail_finishes_a_link_into_failed(tmp_path: Path) -> None:
    journal, inbox, claim = uploaded(tmp_path)
    failed = inbox.path / "failed"
    failed.mkdir()
    os.link(claim, failed / "x.jsonl")
    failure = Failure("validate", "batch.custom_id.missing", "line 1: no custom_id")
    sidecar = fail(journal, inbox, journal.get(str(claim)), failure)  # type: ignore[arg-type]
    assert sidecar == failed / "x.jsonl.error.json"
    assert names(failed) == ["x.jsonl", "x.jsonl.error.json"]
    assert not claim.exists()
    journal.close()


def test_keep_finishes_a_give_back_cut_after_its_link(tmp_path: Path) -> None:
    journal, inbox, claim = uploaded(tmp_path, on_success="keep")
    os.link(claim, inbox.path / "x.jsonl")  # given back by a link; the unlink never came
    manifest = archive(journal, inbox, journal.get(str(claim)))  # type: ignore[arg-type]
    done = inbox.path / "done"
    assert manifest == done / "x.jsonl.manifest.json"
    assert names(done) == ["x.jsonl.manifest.json"], "the data stays in the inbox, once"
    assert not claim.exists() and (inbox.path / "x.jsonl").stat().st_nlink == 1
    journal.close()


def test_the_same_upload_archived_by_an_owner_taken_for_dead_is_not_archived_twice(tmp_path: Path) -> None:
    """The old owner was alive: it finished the move (its unlink failed on the taken folder)
    and wrote the manifest; the taker holds the same inode. One name, one manifest."""
    journal, inbox, claim = uploaded(tmp_path)
    journal.update(str(claim), file_id="file-1")
    done = inbox.path / "done"
    done.mkdir()
    os.link(claim, done / "x.jsonl")
    (done / "x.jsonl.manifest.json").write_text(json.dumps({"file": {"id": "file-1"}}))
    manifest = archive(journal, inbox, journal.get(str(claim)))  # type: ignore[arg-type]
    assert manifest == done / "x.jsonl.manifest.json"
    assert names(done) == ["x.jsonl", "x.jsonl.manifest.json"]
    assert not claim.exists()
    journal.close()


def test_another_upload_archived_under_the_name_is_left_alone(tmp_path: Path) -> None:
    journal, inbox, claim = uploaded(tmp_path)
    journal.update(str(claim), file_id="file-1")
    done = inbox.path / "done"
    done.mkdir()
    os.link(claim, done / "x.jsonl")  # the same bytes dropped twice, the other upload's manifest
    (done / "x.jsonl.manifest.json").write_text(json.dumps({"file": {"id": "file-2"}}))
    archive(journal, inbox, journal.get(str(claim)))  # type: ignore[arg-type]
    assert names(done) == ["x.2.jsonl", "x.2.jsonl.manifest.json", "x.jsonl", "x.jsonl.manifest.json"]
    journal.close()
