"""Taking over a dead claim folder whose owner died between the link and the unlink of a move
into done/ (a filesystem without renameat2): the file is in both places; the survivor
finishes that move (one name, one manifest) instead of archiving the file a second time.
Real folders under tmp_path, the real ClaimArea."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from inboxd.pipeline.claim import STATE_XATTR, ClaimArea, manifest_path, write_state

DATA = b'{"custom_id": "a", "body": {}}\n'


def dead_owner_linked(inbox: Path, *, same_inode: bool = True, target_name: str = "x.jsonl",
                      their_inbox: Path | None = None) -> Path:
    """A dead claimer's folder holding `1.x.jsonl`, already linked (or copied, as sshfs shows a
    link) to done/`target_name`, with its manifest waiting in the claim folder; the manifest
    names the inbox as `their_inbox` (the dead owner's mount of it) if given."""
    dead = inbox / ".inboxd" / "host-1-dead"
    dead.mkdir(parents=True)
    claim = dead / "1.x.jsonl"
    claim.write_bytes(DATA)
    write_state(claim, {"file_id": "file-1"}, durable=False)
    target = inbox / "done" / target_name
    target.parent.mkdir(exist_ok=True)
    if same_inode:
        os.link(claim, target)
    else:
        target.write_bytes(DATA)
        st = claim.stat()
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    theirs = their_inbox or inbox
    source = {"inbox": str(theirs), "path": str(theirs / "done" / target_name),
              "sha256": hashlib.sha256(DATA).hexdigest()}
    sidecar = {"file": {"id": "file-1"}, "source": source}
    manifest_path(claim).write_text(json.dumps(sidecar))
    return claim


def survivor(inbox: Path) -> ClaimArea:
    area = ClaimArea(inbox / ".inboxd", "host-2-alive")
    area.ensure()
    return area


def test_a_move_cut_after_the_link_is_finished_by_the_survivor(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    dead_owner_linked(inbox)
    area = survivor(inbox)
    try:
        taken = area.take_over_stale()
    finally:
        area.release()
    done = inbox / "done"
    assert [(t.kind, t.new, t.name) for t in taken] == [("moved", done / "x.jsonl.manifest.json", "x.jsonl")]
    assert sorted(p.name for p in done.iterdir()) == ["x.jsonl", "x.jsonl.manifest.json"]
    assert json.loads((done / "x.jsonl.manifest.json").read_text())["file"]["id"] == "file-1"
    assert (done / "x.jsonl").stat().st_nlink == 1, "one name left"
    assert area.mine() == [], "nothing to archive again"
    assert not (inbox / ".inboxd" / "host-1-dead").exists()
    assert STATE_XATTR not in os.listxattr(done / "x.jsonl")


def test_where_inode_numbers_are_per_name_the_content_decides(tmp_path: Path) -> None:
    """sshfs: each name its own inode number; and the dead host mounted the inbox elsewhere."""
    inbox = tmp_path / "inbox"
    dead_owner_linked(inbox, same_inode=False, their_inbox=Path("/mnt/host-a/inbox"))
    area = survivor(inbox)
    try:
        taken = area.take_over_stale()
    finally:
        area.release()
    assert [t.kind for t in taken] == ["moved"]
    assert sorted(p.name for p in (inbox / "done").iterdir()) == ["x.jsonl", "x.jsonl.manifest.json"]


def test_a_waiting_manifest_whose_target_is_another_file_is_a_file_to_archive(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    claim = dead_owner_linked(inbox)
    target = inbox / "done" / "x.jsonl"
    target.unlink()
    target.write_bytes(b"someone else's file of that name\n")
    area = survivor(inbox)
    try:
        taken = area.take_over_stale()
    finally:
        area.release()
    assert [(t.kind, t.name, t.old) for t in taken] == [("file", "x.jsonl", claim)]
    assert taken[0].state == {"file_id": "file-1"}
    assert [p.read_bytes() for p in area.mine()] == [DATA]
    assert target.read_bytes() == b"someone else's file of that name\n"


def test_a_give_back_cut_after_its_link_leaves_the_file_to_the_inbox(tmp_path: Path) -> None:
    """Given back at shutdown (not started) by a link into the inbox, killed before the unlink:
    the survivor drops the claimed name; the file in the inbox is claimed as any other."""
    inbox = tmp_path / "inbox"
    dead = inbox / ".inboxd" / "host-1-dead"
    dead.mkdir(parents=True)
    (dead / "1.x.jsonl").write_bytes(DATA)
    os.link(dead / "1.x.jsonl", inbox / "x.jsonl")
    area = survivor(inbox)
    try:
        taken = area.take_over_stale()
    finally:
        area.release()
    assert taken == [] and area.mine() == []
    assert (inbox / "x.jsonl").read_bytes() == DATA and (inbox / "x.jsonl").stat().st_nlink == 1


def test_our_own_takeover_cut_short_is_finished_at_the_next_pass(tmp_path: Path) -> None:
    """A pass that an error stopped halfway leaves `.takeover.<us>.<dead>/`: the next pass
    takes its files in (before, they stayed there for good: no one else may touch it)."""
    inbox = tmp_path / "inbox"
    area = survivor(inbox)
    left = inbox / ".inboxd" / f".takeover.{area.claimer}.host-1-dead"
    left.mkdir()
    (left / "3.y.jsonl").write_bytes(DATA)
    try:
        taken = area.take_over_stale()
    finally:
        area.release()
    old = inbox / ".inboxd" / "host-1-dead" / "3.y.jsonl"
    assert [(t.kind, t.name, t.old) for t in taken] == [("file", "y.jsonl", old)]
    assert [p.read_bytes() for p in area.mine()] == [DATA]
    assert not left.exists()
