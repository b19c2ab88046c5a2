"""Intake integrity (issue 10): a file still being written is never uploaded, a file that
changes after its check is uploaded again as new content, recovery asks the server instead
of re-sending, and a bug is not retried forever.

Every test runs the daemon as a real process against an emulator started with
`--no-dedupe`: the checksum 409 is off, so a second upload of the same bytes shows up as a
second file, and the emulator's create counter per sha256 is the evidence.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.helpers.daemon import REPO, start_daemon, wait_until, write_config
from tests.helpers.emulator import start_emulator
from tests.helpers.files import drop, holding_state

SETTLE = 0.5


def lines(tag: str, n: int) -> list[bytes]:
    out = []
    for i in range(n):
        body = {"model": "m", "messages": [{"role": "user", "content": f"{tag} #{i}"}]}
        out.append((json.dumps({"custom_id": f"{tag}-{i}", "body": body}) + "\n").encode())
    return out


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifests(inbox: Path) -> dict[str, dict]:
    done = inbox / "done"
    return {p.name: json.loads(p.read_text()) for p in sorted(done.glob("*.manifest.json"))} if done.exists() else {}


def live_files(emu) -> dict[str, int]:
    """sha256 -> number of files the server holds whole (deleted and pending ones not counted)."""
    out: dict[str, int] = {}
    for f in emu.stats()["files"]:
        if f.get("state", "uploaded") == "uploaded" and f.get("sha256"):
            out[f["sha256"]] = out.get(f["sha256"], 0) + 1
    return out


# A producer that writes a file in place and pauses with it open (a separate process, as a
# pipeline job would be): argv = path, pause seconds, pauses, then the chunks as hex.
WRITER = textwrap.dedent("""
    import sys, time
    path, pause, chunks = sys.argv[1], float(sys.argv[2]), [bytes.fromhex(c) for c in sys.argv[3:]]
    with open(path, "wb") as f:
        for i, chunk in enumerate(chunks):
            f.write(chunk)
            f.flush()
            if i < len(chunks) - 1:
                time.sleep(pause)
    print("closed", flush=True)
""")


def run_writer(path: Path, chunks: list[bytes], pause: float, user: str | None = None) -> subprocess.Popen[str]:
    prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if user == "nobody" else []
    return subprocess.Popen([*prefix, sys.executable, "-c", WRITER, str(path), str(pause), *(c.hex() for c in chunks)],
                            stdout=subprocess.PIPE, text=True)


def _slow_writer_case(tmp_path: Path, emu, producer: str | None) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    if producer == "nobody":
        os.chown(inbox, 65534, 65534)
    cfg = write_config(tmp_path, base_url=emu.base_url, daemon={"settle_seconds": SETTLE, "held_open_warn_seconds": 1},
                       inboxes=[{"path": str(inbox), "purpose": "batch-api"}])
    all_lines = lines("slow", 300)
    # 151 lines, a pause of 3 x settle with the file open, 100 more, another pause, the rest
    chunks = [b"".join(all_lines[:151]), b"".join(all_lines[151:251]), b"".join(all_lines[251:])]
    full = b"".join(chunks)
    with start_daemon(cfg, key=emu.key) as d:
        d.wait_event("inbox.watching")
        w = run_writer(inbox / "slow0.jsonl", chunks, pause=3 * SETTLE, user=producer)
        assert w.wait(30) == 0
        d.wait_event("file.archived", name="slow0.jsonl", timeout=30)
        held = d.events("file.held_open", name="slow0.jsonl")
    ms = manifests(inbox)
    assert list(ms) == ["slow0.jsonl.manifest.json"]
    m = ms["slow0.jsonl.manifest.json"]
    assert m["source"]["sha256"] == sha(full) == sha((inbox / "done" / "slow0.jsonl").read_bytes())
    assert m["validation"]["records"] == 300
    creates = emu.creates_by_sha256()
    assert creates == {sha(full): 1}, "exactly one upload, of the whole file"
    assert held, "the producer held the file open past held_open_warn_seconds: warned"


def test_writer_pausing_longer_than_settle_is_uploaded_whole_once(tmp_path, emu):
    _slow_writer_case(tmp_path, emu, producer=None)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_slow_writer_as_another_user(emu):
    """The producer is nobody, the daemon root: the lease (CAP_LEASE) works on others' files."""
    base = Path(tempfile.mkdtemp(prefix="inboxd-writer-"))  # pytest's tmp root is root-only
    try:
        os.chmod(base, 0o755)
        _slow_writer_case(base, emu, producer="nobody")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_renamed_in_while_still_open_then_appended(tmp_path, emu):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    staging = tmp_path / "staging"
    staging.mkdir()
    cfg = write_config(tmp_path, base_url=emu.base_url, daemon={"settle_seconds": SETTLE},
                       inboxes=[{"path": str(inbox), "purpose": "batch-api"}])
    first, rest = lines("mv", 120), lines("mv2", 80)
    with start_daemon(cfg, key=emu.key) as d:
        d.wait_event("inbox.watching")
        with open(staging / "r.jsonl", "wb") as f:
            f.write(b"".join(first))
            f.flush()
            os.rename(staging / "r.jsonl", inbox / "r.jsonl")  # renamed in, still open
            time.sleep(2.0)
            assert not (inbox / "done").exists() or not list((inbox / "done").iterdir()), "claimed while open"
            f.write(b"".join(rest))
        d.wait_event("file.archived", name="r.jsonl", timeout=30)
    full = b"".join(first + rest)
    ms = manifests(inbox)
    assert list(ms) == ["r.jsonl.manifest.json"]
    assert ms["r.jsonl.manifest.json"]["source"]["sha256"] == sha(full)
    assert emu.creates_by_sha256() == {sha(full): 1}


def test_appended_after_claim_gets_no_manifest_for_the_old_bytes(tmp_path, emu):
    """The file is complete and closed when claimed; a writer then appends to the claimed file
    (in .inboxd/) while the upload is slow: the old bytes are never archived as done."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(tmp_path, base_url=emu.base_url, daemon={"settle_seconds": SETTLE},
                       inboxes=[{"path": str(inbox), "purpose": "batch-api"}])
    old = b"".join(lines("ap", 50))
    extra = b"".join(lines("ap2", 25))
    emu.set_faults(slow_seconds=1.0)
    with start_daemon(cfg, key=emu.key) as d:
        d.wait_event("inbox.watching")
        (tmp_path / "a.jsonl").write_bytes(old)
        os.rename(tmp_path / "a.jsonl", inbox / "a.jsonl")
        claim = Path(d.wait_event("file.claimed", name="a.jsonl")[0]["claim"])
        d.wait_event("file.checked", name="a.jsonl")  # hashed; the slow upload is under way
        with open(claim, "ab") as f:
            f.write(extra)
        emu.set_faults(slow_seconds=0.0)
        d.wait_event("file.archived", name="a.jsonl", timeout=40)
        changed = d.events("file.source_changed", name="a.jsonl")
    ms = manifests(inbox)
    assert list(ms) == ["a.jsonl.manifest.json"]
    assert ms["a.jsonl.manifest.json"]["source"]["sha256"] == sha(old + extra)
    assert (inbox / "done" / "a.jsonl").read_bytes() == old + extra
    assert changed, "the change was noticed and named in the log"
    live = live_files(emu)
    assert live.get(sha(old + extra)) == 1
    assert sha(old) not in live, "the stale upload of the old bytes was deleted on the server"


def test_a_bug_fails_the_file_with_internal_error_after_3_attempts(tmp_path, emu):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{"path": str(inbox), "purpose": "batch-api"}])
    with start_daemon(cfg, key=emu.key, env={"INBOXD_INJECT_BUG": "check"}) as d:
        d.wait_event("inbox.watching")
        (tmp_path / "b.jsonl").write_bytes(b"".join(lines("bug", 5)))
        os.rename(tmp_path / "b.jsonl", inbox / "b.jsonl")
        d.wait_event("file.failed", name="b.jsonl", timeout=30)
        bugs = d.events("file.internal_error", name="b.jsonl")
    sidecar = json.loads((inbox / "failed" / "b.jsonl.error.json").read_text())
    assert sidecar["error"]["kind"] == "internal_error"
    assert len(bugs) == 3
    assert bugs[0].get("exception"), "the log carries the traceback"
    assert '"locals"' not in json.dumps(bugs), "tracebacks never carry frame locals"


def _inbox_waiting_for_processing(tmp_path: Path, emu) -> tuple[Path, Path]:
    """A batch inbox whose uploads wait for the server's processing, and a 1 s stop grace."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(tmp_path, base_url=emu.base_url, upload={"wait_for_processing": True},
                       daemon={"stop_grace_seconds": 1}, inboxes=[{"path": str(inbox), "purpose": "batch-api"}])
    return inbox, cfg


def _drop_and_see_it_uploaded(d, emu, tmp_path: Path, inbox: Path, name: str, data: bytes) -> None:
    d.wait_event("inbox.watching")
    drop(inbox, name, data, tmp_path / "stage")
    wait_until(lambda: emu.creates_by_sha256().get(sha(data)), 20, what="the upload")


@pytest.mark.emulator(processing_delay=8)
def test_sigterm_while_waiting_for_processing_exits_in_grace_and_restart_adopts(tmp_path, emu):
    """A worker waiting for the server's processing stops on SIGTERM within the grace period;
    the next start asks the server and adopts the upload: nothing is sent twice."""
    inbox, cfg = _inbox_waiting_for_processing(tmp_path, emu)
    data = b"".join(lines("wait", 10))
    with start_daemon(cfg, key=emu.key) as d:
        _drop_and_see_it_uploaded(d, emu, tmp_path, inbox, "w.jsonl", data)
        time.sleep(0.5)
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        assert d.wait_exit(20) == 0
        took = time.monotonic() - t0
    assert took < 1 + 5.5, f"exit took {took:.1f}s"
    assert not manifests(inbox)
    with start_daemon(cfg, key=emu.key) as d:
        d.wait_event("file.archived", name="w.jsonl", timeout=30)
        assert d.events("file.adopted", name="w.jsonl"), d.tail(40)
    assert emu.creates_by_sha256() == {sha(data): 1}
    assert emu.conflicts() == 0
    m = manifests(inbox)["w.jsonl.manifest.json"]
    assert m["file"]["processing_status"] == "COMPLETED"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to run as nobody")
def test_without_a_lease_a_file_written_in_place_waits_for_its_close(tmp_path):
    """The daemon runs as nobody (no CAP_LEASE) and the producer as root: no lease can be
    taken, so the evidence is the close-write event after the last change."""
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable]
    probe = subprocess.run([*nobody, "-c", "import inboxd"], capture_output=True, cwd=REPO, timeout=30)
    if probe.returncode != 0:
        pytest.skip("this checkout is not readable by nobody")
    base = Path(tempfile.mkdtemp(prefix="inboxd-lease-"))  # pytest's tmp root is root-only
    emu = None
    try:
        os.chmod(base, 0o777)
        emu = start_emulator(base / "emu", no_dedupe=True)
        inbox = base / "inbox"
        inbox.mkdir()
        for p in (inbox, base):
            os.chown(p, 65534, 65534)
        cfg = write_config(base, base_url=emu.base_url, daemon={"settle_seconds": SETTLE},
                           inboxes=[{"path": str(inbox), "purpose": "batch-api"}])
        os.chmod(cfg, 0o644)
        os.chown(base / "state", 65534, 65534)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOGETHER_")}
        env.update(TOGETHER_API_KEY=emu.key, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen([*nobody, "-m", "inboxd", "run", "--config", str(cfg)], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen: list[str] = []
        reader = threading.Thread(target=lambda: seen.extend(iter(proc.stdout.readline, "")), daemon=True)
        reader.start()
        try:
            # A file already there when the daemon starts has no close-write to wait for, so the
            # writer starts only once the inbox is watched (a loaded machine takes seconds).
            wait_until(lambda: any('"inbox.watching"' in line for line in seen) or proc.poll() is not None,
                       60, what="inbox.watching")
            all_lines = lines("nolease", 200)
            chunks = [b"".join(all_lines[:100]), b"".join(all_lines[100:])]
            w = run_writer(inbox / "n.jsonl", chunks, pause=3 * SETTLE)
            assert w.wait(30) == 0
            ok = wait_until(lambda: (inbox / "done" / "n.jsonl.manifest.json").exists() or proc.poll() is not None,
                            30, what="the manifest")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            reader.join(timeout=10)
            out = "".join(seen)
        assert ok and (inbox / "done" / "n.jsonl.manifest.json").exists(), out[-3000:]
        m = json.loads((inbox / "done" / "n.jsonl.manifest.json").read_text())
        full = b"".join(chunks)
        assert m["source"]["sha256"] == sha(full), out[-2000:]
        assert emu.creates_by_sha256() == {sha(full): 1}
    finally:
        if emu is not None:
            emu.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.emulator(no_dedupe=False)
def test_kill9_at_10_random_moments_resends_nothing_whole(tmp_path, emu):
    """100 files flowing, the daemon SIGKILLed at 10 random moments and restarted each time.
    With the checksum 409 on, a 409 would mean a file the server already held whole was sent
    again: the count must be 0. Every file ends in done/ once, and the server holds one whole
    copy of each. Creates beyond one per file are the legitimate re-sends of uploads a kill
    interrupted (their orphans deleted first); they are counted and bounded by the kills."""
    import random

    rng = random.Random(10)
    emu.set_faults(slow_seconds=0.05)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{"path": str(inbox), "purpose": "batch-api"}],
                       daemon={"workers": 3, "settle_seconds": 0.2, "rescan_seconds": 2})
    staging = tmp_path / "staging"
    staging.mkdir()
    expected: dict[str, str] = {}
    kills = 10
    for k in range(kills):
        for i in range(10):
            name = f"k{k}-{i}.jsonl"
            data = b"".join(lines(f"kill-{k}-{i}", 30))
            (staging / name).write_bytes(data)
            os.rename(staging / name, inbox / name)
            expected[sha(data)] = name
        d = start_daemon(cfg, key=emu.key, timeout=30)
        time.sleep(rng.uniform(0.2, 1.2))
        d.kill9()
        d.stop()
    with start_daemon(cfg, key=emu.key, timeout=30):
        wait_until(lambda: len(manifests(inbox)) >= len(expected), 120, interval=0.5, what="every manifest")
    ms = manifests(inbox)
    by_sha: dict[str, int] = {}
    for m in ms.values():
        by_sha[m["source"]["sha256"]] = by_sha.get(m["source"]["sha256"], 0) + 1
    assert set(by_sha) == set(expected) and set(by_sha.values()) == {1}
    assert not (inbox / "failed").exists() or not list((inbox / "failed").iterdir())
    assert emu.conflicts() == 0, "a file the server held whole was sent again"
    live = live_files(emu)
    assert all(live.get(s) == 1 for s in expected), {expected[s]: live.get(s) for s in expected if live.get(s) != 1}
    resent = sum(n - 1 for s, n in emu.creates_by_sha256().items() if s in expected)
    assert resent <= kills * 3, resent  # at most the uploads in flight (3 workers) at each kill
    print(f"\nkill -9 x{kills}: {len(expected)} files, 409s 0, interrupted uploads re-sent {resent}")


@pytest.mark.emulator(processing_delay=8)
def test_a_journal_rolled_back_past_the_file_id_asks_the_server_from_the_claim_folder(tmp_path, emu):
    """A power cut can roll the journal back (synchronous=NORMAL) past the commit that held the
    file id; the claim folder's state file still has it. The next start asks the server about
    that id and adopts the upload: nothing is sent twice. (The rollback is made by hand: the
    row is put back to `claimed` without its id, as SQLite would leave it.)"""
    inbox, cfg = _inbox_waiting_for_processing(tmp_path, emu)
    data = b"".join(lines("rolled", 10))
    with start_daemon(cfg, key=emu.key) as d:
        _drop_and_see_it_uploaded(d, emu, tmp_path, inbox, "r.jsonl", data)
        wait_until(lambda: [f for d in (inbox / ".inboxd").iterdir() for f in holding_state(d)], 10,
                   what="the claimed file's state")
        d.signal(signal.SIGTERM)
        assert d.wait_exit(20) == 0
    import sqlite3
    db = sqlite3.connect(tmp_path / "state" / "journal.sqlite3")
    with db:
        n = db.execute("UPDATE files SET stage = 'claimed', file_id = NULL, upload_id = NULL, sha256 = NULL, "
                       "validation = NULL, bytes = NULL WHERE name = 'r.jsonl'").rowcount
    db.close()
    assert n == 1
    with start_daemon(cfg, key=emu.key) as d:
        d.wait_event("file.archived", name="r.jsonl", timeout=30)
        assert d.events("file.adopted", name="r.jsonl"), d.tail(40)
    assert emu.creates_by_sha256() == {sha(data): 1}
    assert manifests(inbox)["r.jsonl.manifest.json"]["file"]["id"]
    with pytest.raises(OSError):  # the claim's state leaves with the claim: not on the archived data
        os.getxattr(inbox / "done" / "r.jsonl", "user.inboxd.state")
    assert not list((inbox / "done").glob(".*"))


def test_a_file_refused_after_its_upload_was_created_leaves_no_state_behind(tmp_path, emu):
    """The claim's state (the file id) is bookkeeping of the claim: a file that goes to failed/
    after its upload was created carries no `user.inboxd.state`, and no dot-file is left."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    emu.script([{"route": "preprocess", "status": 400, "times": 1}])
    cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{"path": str(inbox), "purpose": "batch-api"}])
    with start_daemon(cfg, key=emu.key) as d:
        d.wait_event("inbox.watching")
        drop(inbox, "x.jsonl", b"".join(lines("refused", 5)), tmp_path / "stage")
        d.wait_event("file.failed", name="x.jsonl", timeout=30)
        assert d.events("file.orphan_deleted", name="x.jsonl"), d.tail(20)
        # besides the claims: each claimer's .owner, and the settings records (.settings.json) of
        # the inbox and of each claimer
        claims = [p for f in (inbox / ".inboxd").iterdir() if f.is_dir()
                  for p in f.iterdir() if p.name not in (".owner", ".settings.json")]
    assert (inbox / "failed" / "x.jsonl.error.json").exists()
    with pytest.raises(OSError):
        os.getxattr(inbox / "failed" / "x.jsonl", "user.inboxd.state")
    assert claims == []


def test_a_file_refused_or_retried_before_its_upload_was_created_keeps_its_check(tmp_path, emu):
    """The check's fields ride on the upload's first journal write, at the creation. A create
    the server refuses (400) or fails (503 until the retries run out) made nothing: the check's
    sha256 and size still reach the error sidecar, and the retry does not hash the file again."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    refused, retried = b"".join(lines("refused-at-create", 5)), b"".join(lines("retried-at-create", 5))
    cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{"path": str(inbox), "purpose": "batch-api"}],
                       api={"max_retries": 0})
    with start_daemon(cfg, key=emu.key) as d:
        d.wait_event("inbox.watching")
        emu.script([{"route": "create", "status": 400, "times": 1}])
        drop(inbox, "refused.jsonl", refused, tmp_path / "stage")
        d.wait_event("file.failed", name="refused.jsonl", timeout=30)
        emu.script([{"route": "create", "status": 503, "times": 1}])
        drop(inbox, "retried.jsonl", retried, tmp_path / "stage")
        d.wait_event("file.retry", name="retried.jsonl", timeout=30)
        d.wait_event("file.archived", name="retried.jsonl", timeout=30)
        assert len(d.events("file.checked", name="retried.jsonl")) == 1, d.tail(20)
    sidecar = json.loads((inbox / "failed" / "refused.jsonl.error.json").read_text())
    assert (sidecar["source"]["sha256"], sidecar["source"]["bytes"]) == (sha(refused), len(refused)), sidecar
    assert manifests(inbox)["retried.jsonl.manifest.json"]["source"]["sha256"] == sha(retried)
