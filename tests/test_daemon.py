"""The daemon as a real process (`python -m inboxd run`) against the emulator subprocess.

Each test drops files into real folders and waits for what the daemon says (its JSON log)
and what it leaves on disk (done/, failed/, sidecars), and checks the server's side through
the emulator (`files_by_sha256`). Every sidecar any test produces is validated against the
JSON Schemas the package ships.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest

from inboxd.schemas import ERROR, MANIFEST, load_schema
from tests.helpers.daemon import REPO, start_daemon, wait_until, write_config
from tests.helpers.emulator import start_emulator


# --- helpers ----------------------------------------------------------------------------


def batch_lines(tag: str, n: int = 50) -> bytes:
    out = []
    for i in range(n):
        body = {"model": "m", "messages": [{"role": "user", "content": f"{tag} #{i}"}]}
        out.append(json.dumps({"custom_id": f"{tag}-{i}", "body": body}))
    return ("\n".join(out) + "\n").encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def drop(inbox: Path, name: str, data: bytes, staging: Path) -> str:
    """Write elsewhere, then rename in (the Maildir habit); return the sha256."""
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / name
    tmp.write_bytes(data)
    os.rename(tmp, inbox / name)
    return sha(data)


def manifests(inbox: Path) -> dict[str, dict]:
    done = inbox / "done"
    if not done.exists():
        return {}
    return {p.name: json.loads(p.read_text()) for p in sorted(done.glob("*.manifest.json"))}


def error_sidecars(inbox: Path) -> dict[str, dict]:
    failed = inbox / "failed"
    if not failed.exists():
        return {}
    return {p.name: json.loads(p.read_text()) for p in sorted(failed.glob("*.error.json"))}


def assert_sidecars_valid(*inboxes: Path) -> None:
    for inbox in inboxes:
        for m in manifests(inbox).values():
            jsonschema.validate(m, load_schema(MANIFEST))
        for e in error_sidecars(inbox).values():
            jsonschema.validate(e, load_schema(ERROR))


def server_copies(emu, digest: str) -> int:
    return len(emu.files_by_sha256().get(digest, []))


def claimed_files(inbox: Path) -> list[Path]:
    work = inbox / ".inboxd"
    return [f for d in work.iterdir() if d.is_dir() for f in d.iterdir()] if work.exists() else []


@pytest.fixture
def emu(tmp_path):
    e = start_emulator(tmp_path / "emu", key="test-key-0123456789")
    yield e
    e.stop()


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
        assert server_copies(emu, sha(full)) == 1
        assert (inbox / "done" / "slow.jsonl").read_bytes() == full
        m = ms["renamed.jsonl.manifest.json"]
        assert m["source"]["path"] == str(inbox / "done" / "renamed.jsonl")
        assert m["file"]["id"] and m["upload"]["method"] == "single"
    assert_sidecars_valid(inbox)


def test_ignored_names_are_never_touched(tmp_path, emu, inbox):
    ignored = [".hidden.jsonl", "a.jsonl.tmp", "b.jsonl.part", "c.jsonl.partial", "d.jsonl.crdownload",
               "e.jsonl.swp", "f.jsonl~", "notes.txt", ".nfs0000123"]
    before = {}
    for name in ignored:
        (inbox / name).write_bytes(batch_lines(name))
        before[name] = os.stat(inbox / name)
    cfg = config(tmp_path, emu, [inbox], daemon={"settle_seconds": 0.2, "rescan_seconds": 0.5})
    with start_daemon(cfg, key=emu.key) as d:
        drop(inbox, "real.jsonl", batch_lines("real"), tmp_path / "stage")
        d.wait_event("file.archived", name="real.jsonl")
        time.sleep(1.2)  # two rescans more
        for name in ignored:
            st = os.stat(inbox / name)
            assert (st.st_ino, st.st_mtime_ns, st.st_size) == (before[name].st_ino, before[name].st_mtime_ns,
                                                               before[name].st_size), name
        named = {e.get("name") for e in d.lines}
        assert not named & set(ignored)
    assert_sidecars_valid(inbox)


def test_fifo_symlink_and_directory_go_to_failed_without_blocking(tmp_path, emu, inbox):
    target = tmp_path / "secret-target.jsonl"
    target.write_bytes(batch_lines("target"))
    os.mkfifo(inbox / "pipe.jsonl")
    os.symlink(target, inbox / "link.jsonl")
    (inbox / "dir.jsonl").mkdir()
    cfg = config(tmp_path, emu, [inbox])
    with start_daemon(cfg, key=emu.key) as d:
        drop(inbox, "ok.jsonl", batch_lines("ok"), tmp_path / "stage")
        d.wait_event("file.archived", name="ok.jsonl")
        d.wait_event("file.failed", count=3)
    errs = error_sidecars(inbox)
    kinds = {e["source"]["name"]: (e["source"]["kind"], e["stage"]) for e in errs.values()}
    assert kinds == {"pipe.jsonl": ("fifo", "inspect"), "link.jsonl": ("symlink", "inspect"),
                     "dir.jsonl": ("directory", "inspect")}
    assert os.path.islink(inbox / "failed" / "link.jsonl")
    assert target.read_bytes() == batch_lines("target")  # never followed
    assert server_copies(emu, sha(batch_lines("target"))) == 0
    assert_sidecars_valid(inbox)


def test_validation_failure_goes_to_failed_with_report_and_once_exits_1(tmp_path, emu, inbox):
    (inbox / "bad.jsonl").write_bytes(b'{"custom_id": "a", "body": {}}\nnot json\n')
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
    assert_sidecars_valid(inbox)


def test_same_content_twice_reuses_the_file_id(tmp_path, emu, inbox):
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
    assert server_copies(emu, sha(data)) == 1
    assert_sidecars_valid(inbox)


# --- crashes, peers, signals ------------------------------------------------------------


def test_kill9_during_uploads_then_restart_every_file_exactly_once(tmp_path, emu, inbox):
    emu.set_faults(slow_seconds=0.3)
    cfg = config(tmp_path, emu, [inbox], daemon={"workers": 3})
    digests = {}
    d = start_daemon(cfg, key=emu.key)
    try:
        for i in range(8):
            digests[f"f{i}.jsonl"] = drop(inbox, f"f{i}.jsonl", batch_lines(f"k{i}", 200), tmp_path / "stage")
        d.wait_event("file.checked", count=3)
        time.sleep(0.4)  # in the middle of uploads
        d.kill9()
    finally:
        d.stop()
    assert claimed_files(inbox), "expected files left claimed by the killed daemon"
    emu.set_faults(slow_seconds=0.0)
    with start_daemon(cfg, key=emu.key) as d2:
        d2.wait_for(lambda: len(manifests(inbox)) >= 8, timeout=30, what="8 manifests")
        assert d2.events("file.recovered")
    ms = manifests(inbox)
    assert sorted(m["source"]["name"] for m in ms.values()) == sorted(digests)
    assert {m["source"]["sha256"] for m in ms.values()} == set(digests.values())
    for digest in digests.values():
        assert server_copies(emu, digest) == 1
    assert not claimed_files(inbox)
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
        time.sleep(0.5)
        uploaded = [e["name"] for e in a.events("file.uploaded") + b.events("file.uploaded")]
        archived = [e["name"] for e in a.events("file.archived") + b.events("file.archived")]
    assert sorted(uploaded) == sorted(digests)
    assert sorted(archived) == sorted(digests)
    assert sorted(m["source"]["name"] for m in manifests(inbox).values()) == sorted(digests)
    assert sorted(manifests(inbox)) == sorted(f"{n}.manifest.json" for n in digests)
    for digest in digests.values():
        assert server_copies(emu, digest) == 1
    assert_sidecars_valid(inbox)


def test_rejected_key_pauses_and_sighup_with_good_key_resumes(tmp_path, emu, inbox):
    key_file = tmp_path / "key"
    key_file.write_text("wrong-key-abcdef\n")
    cfg = config(tmp_path, emu, [inbox], api={"api_key_file": str(key_file)})
    with start_daemon(cfg) as d:
        digest = drop(inbox, "p.jsonl", batch_lines("paused"), tmp_path / "stage")
        d.wait_event("uploads.paused")
        drop(inbox, "q.jsonl", batch_lines("paused-2"), tmp_path / "stage")
        time.sleep(1.0)
        assert not error_sidecars(inbox) and not manifests(inbox)
        assert not d.events("file.failed")
        # a bad configuration is refused and the running one kept
        good = cfg.read_text()
        cfg.write_text(good + "\n[bogus]\nx = 1\n")
        d.signal(signal.SIGHUP)
        d.wait_event("config.rejected")
        cfg.write_text(good)
        key_file.write_text(emu.key + "\n")
        d.signal(signal.SIGHUP)
        d.wait_event("uploads.resumed")
        d.wait_event("file.archived", name="p.jsonl")
        d.wait_event("file.archived", name="q.jsonl")
        assert not d.events("file.failed")
        text = "\n".join(json.dumps(e) for e in d.lines) + "\n".join(d.stderr)
        assert "wrong-key-abcdef" not in text and emu.key not in text
    assert server_copies(emu, digest) == 1
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
    assert not claimed_files(inbox)
    assert d.events("daemon.stopped")
    assert_sidecars_valid(inbox)


def test_deleted_and_recreated_inbox_is_watched_again(tmp_path, emu, inbox):
    import shutil

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
        time.sleep(1.5)  # rescans: the kept file is remembered, not uploaded again
        assert len(d.events("file.claimed")) == 3
    assert (ins["keep"] / "keep.jsonl").read_bytes() == data["keep"]
    assert sorted(os.listdir(ins["keep"] / "done")) == ["keep.jsonl.manifest.json"]
    assert manifests(ins["keep"])["keep.jsonl.manifest.json"]["source"]["path"] == str(ins["keep"] / "keep.jsonl")
    assert sorted(os.listdir(ins["delete"] / "done")) == ["delete.jsonl.manifest.json"]
    assert manifests(ins["delete"])["delete.jsonl.manifest.json"]["source"]["path"] is None
    assert sorted(os.listdir(ins["poll"] / "done")) == ["poll.jsonl", "poll.jsonl.manifest.json"]
    for m in ins:
        assert server_copies(emu, sha(data[m])) == 1
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
        drop(second, "two.jsonl", batch_lines("two"), tmp_path / "stage")
        drop(inbox, "left.jsonl", batch_lines("left"), tmp_path / "stage")
        d.wait_event("file.archived", name="two.jsonl")
        time.sleep(1.0)
        assert (inbox / "left.jsonl").exists() and not d.events("file.claimed", name="left.jsonl")
    assert "two.jsonl.manifest.json" in manifests(second)
    assert_sidecars_valid(inbox, second)
