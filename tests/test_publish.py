"""How a file reaches done/: one name at every moment, one manifest in the end.

On a filesystem with renameat2 (ext4 here) the move is one renameat2(RENAME_NOREPLACE),
checked under strace: no link() of a data file into done/. Where the filesystem refuses it
(sshfs, NFS) the move is a link then an unlink; a daemon killed between the two (the test hook
INBOXD_TEST_FS=link,die-after-link:done, read by the move itself) leaves the file both claimed and
in done/, and the next owner (itself after a restart, or another daemon taking its claims
over) finishes that move: no second copy under a free name, no name without its manifest.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.helpers.daemon import DaemonProc, start_daemon, wait_until, write_config
from tests.helpers.files import batch_lines, claimed, drop, manifests, once_on_server

DIE_AFTER_LINK = {"INBOXD_TEST_FS": "link,die-after-link:done"}
LINK_ONLY = {"INBOXD_TEST_FS": "link"}


def config(tmp_path: Path, emu, inbox: Path, host: str) -> Path:
    (tmp_path / host).mkdir(exist_ok=True)
    return write_config(tmp_path / host, base_url=emu.base_url,
                        inboxes=[{"path": str(inbox), "purpose": "batch-api"}],
                        daemon={"settle_seconds": 0.2, "rescan_seconds": 1, "workers": 1})


def without_manifest(done: Path) -> list[str]:
    return sorted(p.name for p in done.iterdir()
                  if not p.name.endswith(".json") and not (done / (p.name + ".manifest.json")).exists())


def dies_after_the_link(tmp_path: Path, emu, inbox: Path) -> tuple[dict[str, str], dict[str, int]]:
    """One daemon forced onto link + unlink, SIGKILLed by the hook after its first link into
    done/: that file is in done/ and still in the claim folder, one inode under two names.
    Returns the digests and the re-sends allowed: none for that file (it was uploaded whole),
    one for the others (an upload cut by the kill is sent again after its orphan is deleted)."""
    digests = {drop(inbox, f"f{i}.jsonl", batch_lines(f"f{i}", 5), tmp_path / "stage"): f"f{i}.jsonl"
               for i in range(3)}
    d = DaemonProc(config(tmp_path, emu, inbox, "host-a"), key=emu.key, env=DIE_AFTER_LINK)
    assert d.wait_exit(60) == -9, d.tail()
    done = inbox / "done"
    linked = [p for p in done.iterdir() if not p.name.endswith(".json")]
    assert len(linked) == 1 and linked[0].stat().st_nlink == 2, sorted(done.iterdir())
    assert any(c.stat().st_ino == linked[0].stat().st_ino for c in claimed(inbox))
    return digests, {d: 0 if name == linked[0].name else 1 for d, name in digests.items()}


def check_one_name_one_manifest(inbox: Path, emu, digests: dict[str, str], resends: dict[str, int] | int = 0) -> None:
    done = inbox / "done"
    wait_until(lambda: len(manifests(inbox)) >= len(digests) and not claimed(inbox), 60, what="every manifest")
    assert without_manifest(done) == []
    data = sorted(p.name for p in done.iterdir() if not p.name.endswith(".json"))
    assert data == sorted(digests.values()), "no second name for the file cut mid-move"
    assert all((done / n).stat().st_nlink == 1 for n in data)
    assert sorted(m["source"]["sha256"] for m in manifests(inbox).values()) == sorted(digests)
    assert once_on_server(emu.stats(), digests, resends) == []


def test_a_move_cut_after_the_link_is_finished_after_a_restart(tmp_path, emu):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    digests, resends = dies_after_the_link(tmp_path, emu, inbox)
    with start_daemon(config(tmp_path, emu, inbox, "host-a"), key=emu.key, env=LINK_ONLY):
        check_one_name_one_manifest(inbox, emu, digests, resends)


def test_a_move_cut_after_the_link_is_finished_by_the_daemon_taking_over(tmp_path, emu):
    """Another daemon (its own state dir: it has none of the dead one's journal) takes the
    dead claim folder over; it reads only what the folder holds."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    digests, resends = dies_after_the_link(tmp_path, emu, inbox)
    with start_daemon(config(tmp_path, emu, inbox, "host-b"), key=emu.key, env=LINK_ONLY) as b:
        check_one_name_one_manifest(inbox, emu, digests, resends)
        assert b.events("file.recovered", stage="archived"), b.tail()


@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace (.ci/run installs it)")
def test_on_ext4_every_file_reaches_done_by_one_renameat2_noreplace(tmp_path, emu):
    fstype = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True, text=True).stdout.strip()
    if fstype not in ("ext2/ext3", "xfs", "btrfs", "tmpfs"):
        pytest.skip(f"tmp_path is on {fstype}, not a filesystem with renameat2")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    log = tmp_path / "strace.log"
    n = 20
    digests = {drop(inbox, f"f{i}.jsonl", batch_lines(f"f{i}", 5), tmp_path / "stage"): f"f{i}.jsonl"
               for i in range(n)}
    prefix = ["strace", "-f", "-qq", "--seccomp-bpf", "-o", str(log),
              "-e", "trace=link,linkat,rename,renameat,renameat2"]
    with start_daemon(config(tmp_path, emu, inbox, "host-a"), key=emu.key, prefix=prefix, timeout=60) as d:
        check_one_name_one_manifest(inbox, emu, digests)
        # stop the daemon itself (strace's child): strace then exits with it, its log whole
        os.kill(int(d.events("daemon.started")[0]["claimer"].split("-")[-2]), signal.SIGTERM)
        assert d.wait_exit(30) == 0, d.tail()
    done = inbox / "done"
    into_done = [line for line in log.read_text().splitlines()
                 if re.search(rf'"{re.escape(str(done))}/[^"]+"', line.split("(", 1)[-1].split(",", 2)[-1])]
    data = [line for line in into_done if ".manifest.json" not in line and ".tmp" not in line]
    assert not [line for line in data if re.search(r"\blink(at)?\(", line)], data
    moves = [line for line in data if "renameat2(" in line and "RENAME_NOREPLACE" in line and "= 0" in line]
    assert len(moves) == n, data
    assert sorted(re.findall(r'"[^"]*/done/([^"/]+)"', "\n".join(moves))) == sorted(digests.values())
    assert len(data) == n, "nothing else moved a data file into done/"
