"""R3: bad input, at least 40 kinds, each with its expected outcome.

One daemon serves a strict batch-api inbox into which every kind of trouble is dropped at
once. The daemon must not hang or restart, and each entry ends as expected: `done` (a
manifest), `failed` (an error sidecar whose stage and rule are asserted), or `ignored`
(untouched where it was, as SPEC §2 says). The cases that need timing (a file that grows,
is truncated or is replaced while in flight) and an inbox removed at run time follow.

"Exactly once on the server" is counted with the emulator's `--no-dedupe`: a second upload
would be a second file, and creates are counted per sha256."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
from pathlib import Path

import pytest

from tests.helpers.daemon import start_daemon, wait_until, write_config
from tests.helpers.emulator import start_emulator
from tests.helpers.files import (
    batch_line,
    batch_lines,
    claimed,
    error_sidecars,
    manifests,
    once_on_server,
    resolved,
    sha,
)

from .common import Clock, record

KEY = "r3-key-3e2d1c0b9a8f7"


# name -> (how to make it, expected outcome, stage or None, substrings one of which the rule or message has)
# outcomes: "done", "failed", "ignored"
FAILED_VALIDATE = ("failed", "validate")
CASES: dict[str, tuple] = {}


def case(name: str, outcome: str, stage: str | None = None, *words: str):
    def register(make):
        CASES[name] = (make, outcome, stage, words)
        return make
    return register


def regular(name: str, data: bytes, outcome: str, stage: str | None = None, *words: str) -> None:
    CASES[name] = (lambda p, data=data: p.write_bytes(data), outcome, stage, words)


# -- never opened: inspect ---------------------------------------------------------------------
case("fifo.jsonl", "failed", "inspect", "fifo")(lambda p: os.mkfifo(p))


@case("socket.jsonl", "failed", "inspect", "socket")
def _socket(p: Path) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(p))
    s.close()


case("link-to-file.jsonl", "failed", "inspect", "symlink")(lambda p: os.symlink(p.parent.parent / "outside.jsonl", p))
case("link-to-dir.jsonl", "failed", "inspect", "symlink")(lambda p: os.symlink(p.parent.parent, p))
case("link-loop.jsonl", "failed", "inspect", "symlink")(lambda p: os.symlink(p.name, p))
case("link-dangling.jsonl", "failed", "inspect", "symlink")(lambda p: os.symlink("/nonexistent/x", p))
case("dir.jsonl", "failed", "inspect", "directory")(lambda p: p.mkdir())

# -- content: validate -------------------------------------------------------------------------
regular("empty.jsonl", b"", *FAILED_VALIDATE, "empty")
regular("only-blank-lines.jsonl", b"\n\n  \n", *FAILED_VALIDATE, "empty", "record")
regular("binary.jsonl", bytes(random.Random(1).getrandbits(8) for _ in range(4096)), *FAILED_VALIDATE,
        "utf", "json", "binary")
regular("bad-utf8.jsonl", batch_line("a") + b'{"custom_id": "b\xff\xfe", "body": {}}\n', *FAILED_VALIDATE, "utf")
regular("trailing-garbage.jsonl", batch_line("a") + b'{"custom_id": "b", "body": {}} garbage\n', *FAILED_VALIDATE,
        "json")
regular("json-array.jsonl", b'[{"custom_id": "a", "body": {}}]\n', *FAILED_VALIDATE, "object")
regular("json-null.jsonl", b"null\n", *FAILED_VALIDATE, "object")
regular("json-string.jsonl", b'"hello"\n', *FAILED_VALIDATE, "object")
regular("truncated-json.jsonl", batch_line("a") + b'{"custom_id": "b", "bo', *FAILED_VALIDATE, "json")
regular("deep-nesting.jsonl", b'{"custom_id": "a", "body": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n",
        *FAILED_VALIDATE, "json", "deep", "nest", "body")
regular("duplicate-custom-id.jsonl", batch_line("same") + batch_line("other") + batch_line("same"), *FAILED_VALIDATE,
        "duplicate")
regular("custom-id-65.jsonl", batch_line("x" * 65), *FAILED_VALIDATE, "custom_id")
regular("custom-id-empty.jsonl", batch_line(""), *FAILED_VALIDATE, "custom_id")
regular("custom-id-number.jsonl", b'{"custom_id": 7, "body": {"model": "m", "messages": []}}\n', *FAILED_VALIDATE,
        "custom_id")
regular("missing-custom-id.jsonl", b'{"body": {"model": "m"}}\n', *FAILED_VALIDATE, "custom_id")
regular("missing-body.jsonl", b'{"custom_id": "a"}\n', *FAILED_VALIDATE, "body")
regular("body-not-object.jsonl", b'{"custom_id": "a", "body": "text"}\n', *FAILED_VALIDATE, "body")
regular("strict-no-model.jsonl", batch_line("a", {"messages": [{"role": "user", "content": "hi"}]}), *FAILED_VALIDATE,
        "model")
regular("strict-empty-messages.jsonl", batch_line("a", {"model": "m", "messages": []}), *FAILED_VALIDATE, "messages")
regular("strict-bad-message.jsonl", batch_line("a", {"model": "m", "messages": ["hi"]}), *FAILED_VALIDATE, "messages",
        "role")
regular("lines-50001.jsonl", batch_lines("c", 50_001), *FAILED_VALIDATE, "lines", "50")
regular("all-lines-bad.jsonl", b"not json\n" * 500, *FAILED_VALIDATE, "json")


@case("two-gb-single-line.jsonl", *FAILED_VALIDATE, "line", "long")
def _huge_line(p: Path) -> None:
    with open(p, "wb") as f:
        f.write(b'{"custom_id": "a", "body": "')
        f.seek(2 * 2**30)
        f.write(b'"}\n')


# -- content that is fine ------------------------------------------------------------------------
regular("crlf.jsonl", batch_lines("c", 5).replace(b"\n", b"\r\n"), "done")
regular("no-final-newline.jsonl", batch_lines("c", 3).rstrip(b"\n"), "done")
regular("blank-line-between.jsonl", batch_line("a") + b"\n" + batch_line("b"), "done")
regular("with spaces.jsonl", batch_lines("sp", 2), "done")
regular("new\nline.jsonl", batch_lines("nl", 2), "done")
regular("données-日本語.jsonl", batch_lines("uni", 2), "done")
regular("-rf --leading-dash.jsonl", batch_lines("dash", 2), "done")
regular("x" * 249 + ".jsonl", batch_lines("long", 2), "done")  # a name of 255 bytes


@case("hard-link.jsonl", "done")
def _hard_link(p: Path) -> None:
    other = p.parent.parent / "hard-link-original.jsonl"
    other.write_bytes(batch_lines("hl", 2))
    os.link(other, p)


@case("unreadable.jsonl", "done" if os.geteuid() == 0 else "failed", None if os.geteuid() == 0 else "inspect")
def _unreadable(p: Path) -> None:
    p.write_bytes(batch_lines("ur", 2))
    os.chmod(p, 0)  # root reads it anyway: then it is simply uploaded


# -- ignored (SPEC §2) ---------------------------------------------------------------------------
for _n in (".hidden.jsonl", "a.jsonl.tmp", "b.jsonl.part", "c.jsonl.partial", "d.jsonl.crdownload", "e.jsonl.swp",
           "f.jsonl~", "notes.txt", "UPPER.JSONL", ".nfs000000000001", "g.json"):
    regular(_n, batch_lines("ig", 1), "ignored")


def _by_hand(sub: str):
    def make(p: Path) -> None:
        (p.parent / sub).mkdir(exist_ok=True)
        (p.parent / sub / p.name).write_bytes(batch_lines(sub, 1))
    return make


CASES["in-done-by-hand.jsonl"] = (_by_hand("done"), "ignored-in-done", None, ())
CASES["in-failed-by-hand.jsonl"] = (_by_hand("failed"), "ignored-in-failed", None, ())
CANARY = "zz-canary.jsonl"  # a valid file, not a case: its archive proves a scan ran


def test_r3_bad_input_kinds(tmp_path):
    assert len(CASES) >= 40
    emu = start_emulator(tmp_path / "emu", key=KEY, no_dedupe=True)
    root = tmp_path / "srv"
    inbox = root / "inbox"
    inbox.mkdir(parents=True)
    (root / "outside.jsonl").write_bytes(batch_lines("outside", 1))
    cfg = write_config(tmp_path, base_url=emu.base_url,
                       inboxes=[{"path": str(inbox), "purpose": "batch-api", "validate": "strict"}],
                       daemon={"workers": 3, "settle_seconds": 0.3, "rescan_seconds": 1})
    clock = Clock()
    before: dict[str, os.stat_result] = {}
    try:
        with start_daemon(cfg, key=KEY) as d:
            for name, (make, outcome, _stage, _words) in CASES.items():
                make(inbox / name)
                if outcome.startswith("ignored"):
                    sub = {"ignored": "", "ignored-in-done": "done", "ignored-in-failed": "failed"}[outcome]
                    before[name] = os.lstat(inbox / sub / name)
            expected_resolved = sum(1 for c in CASES.values() if c[1] in ("done", "failed"))
            wait_until(lambda: resolved(inbox) >= expected_resolved, 90, interval=0.3,
                       what="every bad input resolved")
            assert d.proc.poll() is None, "the daemon exited"
            restarts = len(d.events("daemon.started")) - 1
            crashed = [e for e in d.lines if e.get("level") in ("critical",) or "Traceback" in json.dumps(e)]
        # a scan more: nothing else may happen. A restarted daemon scans the inbox at once, and
        # the canary, put there before the restart, can only be found by that scan: once it is
        # archived, the scan has looked at every ignored file too (and the first daemon's stop
        # finished whatever it still had)
        (inbox / CANARY).write_bytes(batch_lines("canary", 2))
        with start_daemon(cfg, key=KEY) as d2:
            d2.wait_event("file.archived", name=CANARY)
        handled_again = sorted({e["name"] for e in d2.events("file.claimed")} - {CANARY})
        stats = emu.stats()
    finally:
        emu.stop()

    done = {m["source"]["name"]: m for m in manifests(inbox).values() if m["source"]["name"] != CANARY}
    failed = {e["source"]["name"]: e for e in error_sidecars(inbox).values()}
    problems = [f"{n!r}: handled again by the scan after a restart" for n in handled_again]
    for name, (_make, outcome, stage, words) in CASES.items():
        if outcome == "done":
            if name not in done:
                problems.append(f"{name!r}: expected done, got {failed.get(name, {}).get('error')}")
            elif not_once := once_on_server(stats, [done[name]["source"]["sha256"]]):
                problems.append(f"{name!r}: not exactly once on the server: {not_once}")
        elif outcome == "failed":
            if name not in failed:
                problems.append(f"{name!r}: expected failed/, got {'done' if name in done else 'nothing'}")
                continue
            err = failed[name]
            text = json.dumps(err["error"]).lower() + json.dumps(err.get("source", {})).lower()
            if stage and err["stage"] != stage:
                problems.append(f"{name!r}: stage {err['stage']} != {stage}: {err['error']}")
            if words and not any(w.lower() in text for w in words):
                problems.append(f"{name!r}: the error names none of {words}: {err['error']}")
            if err["stage"] == "validate" and "line" not in err["error"] and name not in ("empty.jsonl",):
                problems.append(f"{name!r}: a validation error without a line: {err['error']}")
        else:
            sub = {"ignored": "", "ignored-in-done": "done", "ignored-in-failed": "failed"}[outcome]
            p = inbox / sub / name
            st = os.lstat(p) if os.path.lexists(p) else None
            b = before[name]
            if st is None or (st.st_ino, st.st_size, st.st_mtime_ns) != (b.st_ino, b.st_size, b.st_mtime_ns):
                problems.append(f"{name!r}: expected untouched")
            if name in done or name in failed:
                problems.append(f"{name!r}: expected ignored, was handled")
    assert not problems, "\n".join(problems)
    assert not claimed(inbox)
    assert (root / "outside.jsonl").read_bytes() == batch_lines("outside", 1)
    assert restarts == 0 and not crashed
    record("R3 bad input", kinds=len(CASES), done=len(done), failed=len(failed),
           ignored=sum(1 for c in CASES.values() if c[1].startswith("ignored")), hangs=0, restarts=restarts,
           lost=0, seconds=clock.seconds)


def test_r3_files_that_change_in_flight_and_an_inbox_removed(tmp_path):
    """A file that grows and one truncated after their check, one replaced after claim, an
    inbox removed at run time. Whatever the daemon decides, no manifest may lie: a manifest's
    sha256 is the archived bytes' and the server's copy's; nothing is lost.

    The files arrive closed and change in their claim folder: a file still open for writing
    is not claimed at all (issue 10, tests/test_intake.py), so a writer that kept it open
    would only be waited for."""
    emu = start_emulator(tmp_path / "emu", key=KEY, no_dedupe=True)
    emu.set_faults(slow_seconds=0.6)
    inbox = tmp_path / "inbox"
    other = tmp_path / "other"
    inbox.mkdir()
    other.mkdir()
    cfg = write_config(tmp_path, base_url=emu.base_url,
                       inboxes=[{"path": str(inbox), "purpose": "batch-api", "validate": "basic"},
                                {"path": str(other), "purpose": "batch-api", "validate": "basic"}],
                       daemon={"workers": 3, "settle_seconds": 0.3, "rescan_seconds": 1})
    stage = tmp_path / "stage"
    stage.mkdir()
    try:
        with start_daemon(cfg, key=KEY) as d:
            for name in ("grows.jsonl", "truncated.jsonl"):
                (stage / name).write_bytes(batch_lines(name[:3], 300))
                os.rename(stage / name, inbox / name)
            (stage / "replaced.jsonl").write_bytes(batch_lines("first", 50))
            os.rename(stage / "replaced.jsonl", inbox / "replaced.jsonl")
            d.wait_event("file.claimed", name="replaced.jsonl")
            (stage / "replaced.jsonl").write_bytes(batch_lines("second", 50))
            os.rename(stage / "replaced.jsonl", inbox / "replaced.jsonl")
            d.wait_event("file.checked", name="grows.jsonl")  # hashed; the slow upload is under way
            with open(Path(d.events("file.claimed", name="grows.jsonl")[0]["claim"]), "r+b") as f:
                f.seek(0, os.SEEK_END)
                f.write(batch_lines("more", 100))
            d.wait_event("file.checked", name="truncated.jsonl")
            os.truncate(d.events("file.claimed", name="truncated.jsonl")[0]["claim"], 1000)
            shutil.rmtree(other)
            d.wait_event("inbox.missing")
            other.mkdir()
            (stage / "after.jsonl").write_bytes(batch_lines("after", 3))
            os.rename(stage / "after.jsonl", other / "after.jsonl")
            emu.set_faults(slow_seconds=0.0)
            wait_until(lambda: resolved(inbox) >= 4 and manifests(other),
                       60, interval=0.3, what="all four resolved and the recreated inbox served")
            assert d.proc.poll() is None
        stats = emu.stats()
    finally:
        emu.stop()
    ms = [*manifests(inbox).values(), *manifests(other).values()]
    for m in ms:
        archived = Path(m["source"]["path"])
        assert sha(archived.read_bytes()) == m["source"]["sha256"], m["source"]["name"]
    problems = once_on_server(stats, [m["source"]["sha256"] for m in ms])
    assert not problems, problems
    names = [m["source"]["name"] for m in manifests(inbox).values()]
    names += [e["source"]["name"] for e in error_sidecars(inbox).values()]
    assert sorted(names) == sorted(["grows.jsonl", "truncated.jsonl", "replaced.jsonl", "replaced.jsonl"])
    replaced = {m["source"]["sha256"] for m in manifests(inbox).values() if m["source"]["name"] == "replaced.jsonl"}
    assert replaced == {sha(batch_lines("first", 50)), sha(batch_lines("second", 50))}
    assert not claimed(inbox)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to run as nobody")
def test_r3_unreadable_file_fails_instead_of_retrying_forever():
    """As an ordinary user (nobody), a file it may not read goes to failed/ at once."""
    import subprocess
    import sys
    import tempfile

    from tests.helpers.daemon import REPO

    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable]
    probe = subprocess.run([*nobody, "-c", "import inboxd"], capture_output=True, cwd=REPO, timeout=30)
    if probe.returncode != 0:
        pytest.skip("this checkout is not readable by nobody")
    tmp_path = Path(tempfile.mkdtemp(prefix="inboxd-r3-nobody-"))  # pytest's tmp root is root-only
    os.chmod(tmp_path, 0o777)
    emu = start_emulator(tmp_path / "emu", key=KEY)
    inbox = tmp_path / "inbox"
    inbox.mkdir(mode=0o777)
    os.chmod(inbox, 0o777)
    (tmp_path / "state").mkdir(mode=0o777)
    os.chmod(tmp_path / "state", 0o777)
    cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{"path": str(inbox), "purpose": "batch-api"}],
                       daemon={"settle_seconds": 0.1})
    secret = inbox / "secret.jsonl"
    secret.write_bytes(batch_lines("secret", 2))
    os.chmod(secret, 0)
    try:
        out = subprocess.run([*nobody, "-m", "inboxd", "run", "--config", str(cfg), "--once"], capture_output=True,
                             text=True, timeout=60, cwd=REPO,
                             env={**os.environ, "TOGETHER_API_KEY": KEY, "HOME": str(tmp_path)})
        assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
        (err,) = error_sidecars(inbox).values()
        assert (err["stage"], err["error"]["kind"]) == ("inspect", "unreadable")
        assert (inbox / "failed" / "secret.jsonl").exists()
    finally:
        emu.stop()
        shutil.rmtree(tmp_path, ignore_errors=True)
