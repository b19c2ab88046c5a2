"""The daemon as a real process (`python -m inboxd run`) against the emulator subprocess.

Each test drops files into real folders and waits for what the daemon says (its JSON log)
and what it leaves on disk (done/, failed/, sidecars), and checks the server's side through
the emulator. Every sidecar any test produces is validated against the JSON Schemas the
package ships.

The emulator runs with `--no-dedupe` (the `emu` fixture's default, tests/conftest.py): the
checksum 409 is off, so a file uploaded twice is two files on the server, and its creates
are counted per sha256. "Exactly once" is `once_on_server`: one whole file and one create
per sha256, unless a test says why a re-send is legitimate and bounds it.

No test sleeps to let "nothing happen": a claim that something did not happen waits for a
later event that could only come after it (a file found by the same scan, a file dropped
after, the daemons stopped).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from inboxd.schemas import ERROR, MANIFEST, load_schema
from tests.helpers.daemon import REPO, start_daemon, wait_until, write_config
from tests.helpers.files import (
    batch_lines,
    claimed,
    drop,
    error_sidecars,
    extra_creates,
    manifests,
    once_on_server,
    sha,
    whole_files,
)

pytestmark = pytest.mark.emulator(no_dedupe=True)


# --- helpers ----------------------------------------------------------------------------


def assert_sidecars_valid(*inboxes: Path) -> None:
    for inbox in inboxes:
        for m in manifests(inbox).values():
            jsonschema.validate(m, load_schema(MANIFEST))
        for e in error_sidecars(inbox).values():
            jsonschema.validate(e, load_schema(ERROR))


def assert_once(emu, *digests: str) -> None:
    problems = once_on_server(emu.stats(), digests)
    assert not problems, problems


@pytest.fixture
def inbox(tmp_path) -> Path:
    p = tmp_path / "inbox" / "batch-api"
    p.mkdir(parents=True)
    return p


def config(root: Path, emu, inboxes: list[Path], **kw) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    specs = [{"path": str(i), "purpose": "batch-api", "validate": "basic"} for i in inboxes]
    return write_config(root, base_url=emu.base_url, inboxes=specs, **kw)


# --- arrival ----------------------------------------------------------------------------


def test_rename_in_and_slow_writer_in_place(tmp_path, emu, inbox):
    cfg = config(tmp_path, emu, [inbox], daemon={"settle_seconds": 1.0})
    with start_daemon(cfg, key=emu.key) as d:
        renamed = drop(inbox, "renamed.jsonl", batch_lines("r"), tmp_path / "stage")
        # a slow writer: the file grows in place for ~2.5 s with pauses shorter than settle_seconds
        # (the sleeps are the producer's pace, not a wait for the daemon)
        full = batch_lines("slow", 10)
        with open(inbox / "slow.jsonl", "wb") as f:
            for line in full.splitlines(keepends=True):
                f.write(line)
                f.flush()
                time.sleep(0.25)
        d.wait_event("file.archived", name="renamed.jsonl", timeout=15)
        d.wait_event("file.archived", name="slow.jsonl", timeout=15)
        ms = manifests(inbox)
        assert ms["slow.jsonl.manifest.json"]["source"]["sha256"] == sha(full)
        assert ms["renamed.jsonl.manifest.json"]["source"]["sha256"] == renamed
        # the rename-in did not wait for settle_seconds; the slow file was never uploaded half-written
        assert d.events("file.claimed", name="renamed.jsonl")
        uploaded = {e["sha256"] for e in d.events("file.uploaded")}
        assert uploaded == {renamed, sha(full)}
        assert_once(emu, renamed, sha(full))
        assert set(emu.creates_by_sha256()) == {renamed, sha(full)}  # no create for a half-written slow.jsonl
        assert (inbox / "done" / "slow.jsonl").read_bytes() == full
        m = ms["renamed.jsonl.manifest.json"]
        assert m["source"]["path"] == str(inbox / "done" / "renamed.jsonl")
        assert m["file"]["id"] and m["upload"]["method"] == "single"
    assert_sidecars_valid(inbox)


IGNORED = [".hidden.jsonl", "a.jsonl.tmp", "b.jsonl.part", "c.jsonl.partial", "d.jsonl.crdownload",
           "e.jsonl.swp", "f.jsonl~", "notes.txt", ".nfs0000123"]


def test_ignored_names_are_never_touched(tmp_path, emu, inbox):
    def make(names: list[str]) -> dict[str, os.stat_result]:
        for name in names:
            (inbox / name).write_bytes(batch_lines(name))
        return {name: os.stat(inbox / name) for name in names}

    # present at start, beside a valid file: only the start scan can find `first.jsonl`, so
    # once it is archived that scan has looked at every ignored name too
    before = make(IGNORED)
    (inbox / "first.jsonl").write_bytes(batch_lines("first"))
    cfg = config(tmp_path, emu, [inbox], daemon={"settle_seconds": 0.2, "rescan_seconds": 0.5})
    with start_daemon(cfg, key=emu.key) as d:
        d.wait_event("file.archived", name="first.jsonl")
        # written while it runs (events), then a valid file renamed in after them: once that
        # one is archived, the events of the ignored ones came and went
        late = [f"late-{n}" if not n.startswith(".") else f".late{n}" for n in IGNORED]
        before |= make(late)
        drop(inbox, "real.jsonl", batch_lines("real"), tmp_path / "stage")
        d.wait_event("file.archived", name="real.jsonl")
        for name, was in before.items():
            st = os.stat(inbox / name)
            assert (st.st_ino, st.st_mtime_ns, st.st_size) == (was.st_ino, was.st_mtime_ns, was.st_size), name
        named = {e.get("name") for e in d.lines if e.get("event") != "file.ignored"}
        assert not named & set(before)
        # a name that only fails the patterns is said once (issue 15), temp and dot names never
        said = sorted(e["name"] for e in d.events("file.ignored"))
        assert said == ["late-notes.txt", "notes.txt"], said
        assert sorted(e["name"] for e in d.events("file.claimed")) == ["first.jsonl", "real.jsonl"]
    assert set(emu.creates_by_sha256()) == {sha(batch_lines("first")), sha(batch_lines("real"))}
    assert_sidecars_valid(inbox)


def test_fifo_symlink_and_directory_go_to_failed_without_blocking(tmp_path, emu, inbox):
    target = tmp_path / "secret-target.jsonl"
    target.write_bytes(batch_lines("target"))
    os.mkfifo(inbox / "pipe.jsonl")
    os.symlink(target, inbox / "link.jsonl")
    (inbox / "dir.jsonl").mkdir()
    cfg = config(tmp_path, emu, [inbox])
    with start_daemon(cfg, key=emu.key) as d:
        ok = drop(inbox, "ok.jsonl", batch_lines("ok"), tmp_path / "stage")
        d.wait_event("file.archived", name="ok.jsonl")
        d.wait_event("file.failed", count=3)
    errs = error_sidecars(inbox)
    kinds = {e["source"]["name"]: (e["source"]["kind"], e["stage"]) for e in errs.values()}
    assert kinds == {"pipe.jsonl": ("fifo", "inspect"), "link.jsonl": ("symlink", "inspect"),
                     "dir.jsonl": ("directory", "inspect")}
    assert os.path.islink(inbox / "failed" / "link.jsonl")
    assert target.read_bytes() == batch_lines("target")  # never followed
    assert emu.creates_by_sha256() == {ok: 1}  # the link's target was never even created
    assert_once(emu, ok)
    assert_sidecars_valid(inbox)


def test_validation_failure_goes_to_failed_with_report_and_once_exits_1(tmp_path, emu, inbox):
    bad = b'{"custom_id": "a", "body": {}}\nnot json\n'
    (inbox / "bad.jsonl").write_bytes(bad)
    (inbox / "good.jsonl").write_bytes(batch_lines("good"))
    cfg = config(tmp_path, emu, [inbox], daemon={"settle_seconds": 0.1})
    out = subprocess.run([sys.executable, "-m", "inboxd", "run", "--config", str(cfg), "--once"],
                         env={**os.environ, "TOGETHER_API_KEY": emu.key}, capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "good.jsonl.manifest.json" in manifests(inbox)
    (err,) = error_sidecars(inbox).values()
    assert err["stage"] == "validate" and err["error"]["line"] == 2 and err["validation"]
    assert emu.key not in out.stdout + out.stderr
    assert_once(emu, sha(batch_lines("good")))
    assert sha(bad) not in emu.creates_by_sha256()
    assert_sidecars_valid(inbox)
    status = subprocess.run([sys.executable, "-m", "inboxd", "status", "--config", str(cfg), "--json"],
                            capture_output=True, text=True, timeout=30, cwd=REPO)
    assert status.returncode == 0, status.stderr
    (s,) = json.loads(status.stdout)["inboxes"]
    assert (s["done"], s["failed"], s["in_flight"], s["waiting"]) == (1, 1, 0, 0)
    assert s["recent_failures"][0]["name"] == "bad.jsonl"


# --- archive ----------------------------------------------------------------------------


def test_duplicate_name_is_archived_under_a_new_name(tmp_path, emu, inbox):
    cfg = config(tmp_path, emu, [inbox])
    with start_daemon(cfg, key=emu.key) as d:
        first = drop(inbox, "x.jsonl", batch_lines("first"), tmp_path / "stage")
        d.wait_event("file.archived", name="x.jsonl")
        second = drop(inbox, "x.jsonl", batch_lines("second"), tmp_path / "stage")
        d.wait_event("file.archived", name="x.jsonl", count=2)
    ms = manifests(inbox)
    assert set(ms) == {"x.jsonl.manifest.json", "x.2.jsonl.manifest.json"}
    assert ms["x.jsonl.manifest.json"]["source"]["sha256"] == first
    assert ms["x.2.jsonl.manifest.json"]["source"]["sha256"] == second
    assert ms["x.2.jsonl.manifest.json"]["source"]["path"] == str(inbox / "done" / "x.2.jsonl")
    assert sha((inbox / "done" / "x.jsonl").read_bytes()) == first
    assert_once(emu, first, second)
    assert_sidecars_valid(inbox)


def test_same_content_twice_is_uploaded_once(tmp_path, emu, inbox):
    """The daemon's own journal knows the content: the second file reuses the id without
    asking the server (no 409 involved: this emulator never gives one)."""
    cfg = config(tmp_path, emu, [inbox])
    data = batch_lines("same")
    with start_daemon(cfg, key=emu.key) as d:
        drop(inbox, "a.jsonl", data, tmp_path / "stage")
        d.wait_event("file.archived", name="a.jsonl")
        drop(inbox, "b.jsonl", data, tmp_path / "stage")
        d.wait_event("file.archived", name="b.jsonl")
    ms = manifests(inbox)
    a, b = ms["a.jsonl.manifest.json"], ms["b.jsonl.manifest.json"]
    assert a["file"]["id"] == b["file"]["id"]
    assert b["upload"]["method"] == "existing"
    assert_once(emu, sha(data))
    assert_sidecars_valid(inbox)


@pytest.mark.emulator(no_dedupe=False)  # this test is about the server's checksum 409 itself
def test_content_another_daemon_uploaded_reuses_the_file_id_through_the_409(tmp_path, emu, inbox):
    """A second daemon with its own journal (another host) sends the same bytes: the server
    answers the checksum 409 with the existing file's id, which the manifest records."""
    other = tmp_path / "inbox" / "other"
    other.mkdir()
    data = batch_lines("shared")
    with start_daemon(config(tmp_path / "a", emu, [inbox]), key=emu.key) as a:
        drop(inbox, "a.jsonl", data, tmp_path / "stage")
        a.wait_event("file.archived", name="a.jsonl")
    with start_daemon(config(tmp_path / "b", emu, [other]), key=emu.key) as b:
        drop(other, "b.jsonl", data, tmp_path / "stage")
        b.wait_event("file.archived", name="b.jsonl")
    a_m = manifests(inbox)["a.jsonl.manifest.json"]
    b_m = manifests(other)["b.jsonl.manifest.json"]
    assert a_m["file"]["id"] == b_m["file"]["id"]
    assert (a_m["upload"]["method"], b_m["upload"]["method"]) == ("single", "existing")
    assert emu.conflicts() == 1
    assert whole_files(emu.stats()) == {sha(data): 1}
    assert_sidecars_valid(inbox, other)


# --- crashes, peers, signals ------------------------------------------------------------


def test_kill9_during_uploads_then_restart_every_file_exactly_once(tmp_path, emu, inbox):
    emu.set_faults(slow_seconds=0.3)
    cfg = config(tmp_path, emu, [inbox], daemon={"workers": 3})
    digests = {}
    d = start_daemon(cfg, key=emu.key)
    try:
        for i in range(8):
            digests[f"f{i}.jsonl"] = drop(inbox, f"f{i}.jsonl", batch_lines(f"k{i}", 200), tmp_path / "stage")
        # in the middle of uploads: two creates answered (each later request waits 0.3 s), none archived
        wait_until(lambda: emu.stats()["creates"] >= 2, 20, what="two uploads under way")
        d.kill9()
    finally:
        d.stop()
    assert not d.events("file.archived"), "the kill came too late to interrupt anything"
    assert claimed(inbox), "expected files left claimed by the killed daemon"
    emu.set_faults(slow_seconds=0.0)
    with start_daemon(cfg, key=emu.key) as d2:
        d2.wait_for(lambda: len(manifests(inbox)) >= 8, timeout=30, what="8 manifests")
        assert d2.events("file.recovered")
    ms = manifests(inbox)
    assert sorted(m["source"]["name"] for m in ms.values()) == sorted(digests)
    assert {m["source"]["sha256"] for m in ms.values()} == set(digests.values())
    # a legitimate re-send: an upload the kill interrupted before the server had it whole is
    # sent again after its orphan is deleted (file.orphan_removed), so a file may be created
    # twice (1 + one kill), never held twice; at most one per worker busy at the kill
    stats = emu.stats()
    problems = once_on_server(stats, digests.values(), resends=1)
    assert not problems, problems
    assert extra_creates(stats, digests.values()) <= 3
    assert stats["conflicts"] == 0
    assert not claimed(inbox)
    assert sorted(p.name for p in inbox.iterdir() if not p.name.startswith(".")) == ["done", "failed"]
    assert_sidecars_valid(inbox)


def test_two_daemons_on_one_inbox_never_upload_a_file_twice(tmp_path, emu, inbox):
    cfg_a = config(tmp_path / "a", emu, [inbox])
    cfg_b = config(tmp_path / "b", emu, [inbox])
    digests = {}
    with start_daemon(cfg_a, key=emu.key) as a, start_daemon(cfg_b, key=emu.key) as b:
        for i in range(30):
            digests[f"p{i:02d}.jsonl"] = drop(inbox, f"p{i:02d}.jsonl", batch_lines(f"p{i}"), tmp_path / "stage")
        wait_until(lambda: len(manifests(inbox)) >= 30, 30, what="30 manifests")
    # both daemons have stopped (SIGTERM finishes uploads in flight): a late second upload
    # of any file would be in their logs and on the server by now
    uploaded = [e["name"] for e in a.events("file.uploaded") + b.events("file.uploaded")]
    archived = [e["name"] for e in a.events("file.archived") + b.events("file.archived")]
    assert sorted(uploaded) == sorted(digests)
    assert sorted(archived) == sorted(digests)
    assert sorted(m["source"]["name"] for m in manifests(inbox).values()) == sorted(digests)
    assert sorted(manifests(inbox)) == sorted(f"{n}.manifest.json" for n in digests)
    assert_once(emu, *digests.values())
    assert_sidecars_valid(inbox)


def test_rejected_key_pauses_and_sighup_with_good_key_resumes(tmp_path, emu, inbox):
    key_file = tmp_path / "key"
    key_file.write_text("wrong-key-abcdef\n")
    cfg = config(tmp_path, emu, [inbox], api={"api_key_file": str(key_file)})
    with start_daemon(cfg) as d:
        p = drop(inbox, "p.jsonl", batch_lines("paused"), tmp_path / "stage")
        d.wait_event("uploads.paused")
        q = drop(inbox, "q.jsonl", batch_lines("paused-2"), tmp_path / "stage")
        # a bad configuration is refused and the running one kept
        good = cfg.read_text()
        cfg.write_text(good + "\n[bogus]\nx = 1\n")
        d.signal(signal.SIGHUP)
        d.wait_event("config.rejected")
        # paused, not failed: nothing archived either way (and no file.failed until the end)
        assert not error_sidecars(inbox) and not manifests(inbox)
        assert not d.events("file.failed")
        assert not emu.creates_by_sha256()
        cfg.write_text(good)
        key_file.write_text(emu.key + "\n")
        d.signal(signal.SIGHUP)
        d.wait_event("uploads.resumed")
        d.wait_event("file.archived", name="p.jsonl")
        d.wait_event("file.archived", name="q.jsonl")
        assert not d.events("file.failed")
        text = "\n".join(json.dumps(e) for e in d.lines) + "\n".join(d.stderr)
        assert "wrong-key-abcdef" not in text and emu.key not in text
    assert_once(emu, p, q)
    assert not error_sidecars(inbox)
    assert_sidecars_valid(inbox)


def test_sigterm_drains_in_flight_uploads_and_exits_0(tmp_path, emu, inbox):
    emu.set_faults(slow_seconds=0.4)
    cfg = config(tmp_path, emu, [inbox], daemon={"workers": 2, "stop_grace_seconds": 20})
    d = start_daemon(cfg, key=emu.key)
    names = [f"t{i}.jsonl" for i in range(6)]
    for n in names:
        drop(inbox, n, batch_lines(n), tmp_path / "stage")
    d.wait_event("file.checked", count=2)
    d.signal(signal.SIGTERM)
    assert d.wait_exit(30) == 0
    d.stop()
    started = {e["name"] for e in d.events("file.checked")}
    archived = {e["name"] for e in d.events("file.archived")}
    assert started <= archived, "an upload in flight at SIGTERM was not finished"
    # the rest went back to the inbox, untouched; nothing is lost, nothing left claimed
    back = {p.name for p in inbox.glob("*.jsonl")}
    assert back | archived == set(names) and not back & archived
    assert not claimed(inbox)
    assert d.events("daemon.stopped")
    # what was archived is on the server once; what went back was never sent
    assert_once(emu, *(sha(batch_lines(n)) for n in archived))
    assert not set(emu.creates_by_sha256()) & {sha(batch_lines(n)) for n in back}
    assert_sidecars_valid(inbox)


def test_deleted_and_recreated_inbox_is_watched_again(tmp_path, emu, inbox):
    cfg = config(tmp_path, emu, [inbox])
    with start_daemon(cfg, key=emu.key) as d:
        drop(inbox, "before.jsonl", batch_lines("before"), tmp_path / "stage")
        d.wait_event("file.archived", name="before.jsonl")
        shutil.rmtree(inbox)
        d.wait_event("inbox.missing")
        inbox.mkdir()
        d.wait_event("inbox.restored", timeout=10)
        drop(inbox, "after.jsonl", batch_lines("after"), tmp_path / "stage")
        d.wait_event("file.archived", name="after.jsonl")
        assert d.proc.poll() is None
    assert "after.jsonl.manifest.json" in manifests(inbox)
    assert_once(emu, sha(batch_lines("before")), sha(batch_lines("after")))
    assert_sidecars_valid(inbox)


def test_on_success_keep_and_delete_and_the_polling_observer(tmp_path, emu):
    ins = {m: tmp_path / m for m in ("keep", "delete", "poll")}
    for p in ins.values():
        p.mkdir()
    cfg = write_config(tmp_path, base_url=emu.base_url, daemon={"rescan_seconds": 0.5}, inboxes=[
        {"path": str(ins["keep"]), "purpose": "batch-api", "on_success": "keep"},
        {"path": str(ins["delete"]), "purpose": "batch-api", "on_success": "delete"},
        {"path": str(ins["poll"]), "purpose": "batch-api", "observer": "polling"},
    ])
    data = {m: batch_lines(m) for m in ins}
    with start_daemon(cfg, key=emu.key) as d:
        for m, p in ins.items():
            drop(p, f"{m}.jsonl", data[m], tmp_path / "stage")
        for m in ins:
            d.wait_event("file.archived", name=f"{m}.jsonl")
    # the kept file stays in the inbox, and every scan must remember it rather than upload it
    # again. A restart scans at once: `canary.jsonl`, there before the restart, can only be
    # found by that scan, so once it is archived the scan has looked at keep.jsonl too
    canary = batch_lines("canary")
    (ins["keep"] / "canary.jsonl").write_bytes(canary)
    with start_daemon(cfg, key=emu.key) as d2:
        d2.wait_event("file.archived", name="canary.jsonl")
        assert [e["name"] for e in d2.events("file.claimed")] == ["canary.jsonl"]
    assert len(d.events("file.claimed")) == 3
    assert (ins["keep"] / "keep.jsonl").read_bytes() == data["keep"]
    assert sorted(os.listdir(ins["keep"] / "done")) == ["canary.jsonl.manifest.json", "keep.jsonl.manifest.json"]
    assert manifests(ins["keep"])["keep.jsonl.manifest.json"]["source"]["path"] == str(ins["keep"] / "keep.jsonl")
    assert sorted(os.listdir(ins["delete"] / "done")) == ["delete.jsonl.manifest.json"]
    assert manifests(ins["delete"])["delete.jsonl.manifest.json"]["source"]["path"] is None
    assert sorted(os.listdir(ins["poll"] / "done")) == ["poll.jsonl", "poll.jsonl.manifest.json"]
    assert_once(emu, *(sha(v) for v in data.values()), sha(canary))
    assert_sidecars_valid(*ins.values())


def test_sighup_adds_and_removes_inboxes(tmp_path, emu, inbox):
    second = tmp_path / "inbox" / "second"
    second.mkdir()
    cfg = config(tmp_path, emu, [inbox])
    with start_daemon(cfg, key=emu.key) as d:
        drop(inbox, "one.jsonl", batch_lines("one"), tmp_path / "stage")
        d.wait_event("file.archived", name="one.jsonl")
        config(tmp_path, emu, [second])  # the same file, now naming only the second inbox
        d.signal(signal.SIGHUP)
        d.wait_event("config.reloaded")
        d.wait_event("inbox.watching", inbox=str(second))
        assert d.events("inbox.removed", inbox=str(inbox))
        # left.jsonl first, two.jsonl after: had the removed inbox still been served, left.jsonl
        # would have been claimed by the time two.jsonl is archived
        drop(inbox, "left.jsonl", batch_lines("left"), tmp_path / "stage")
        drop(second, "two.jsonl", batch_lines("two"), tmp_path / "stage")
        d.wait_event("file.archived", name="two.jsonl")
        assert (inbox / "left.jsonl").exists() and not d.events("file.claimed", name="left.jsonl")
    assert "two.jsonl.manifest.json" in manifests(second)
    assert sha(batch_lines("left")) not in emu.creates_by_sha256()
    assert_sidecars_valid(inbox, second)
