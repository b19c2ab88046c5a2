"""A shared inbox on a real network filesystem (issue 16): sshd on loopback exports a folder,
and each `sshfs` mount of it is one host's view. flock through one mount is not seen through
another, and listings and attributes are cached for seconds, as on NFS.

The test starts its own sshd on a free loopback port with throwaway keys in a temp folder,
mounts one sshfs per simulated host, and unmounts and stops sshd however it ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inboxd.state.fs import NoRenameat2, rename_no_replace
from tests.helpers.daemon import DaemonProc, start_daemon, wait_until, write_config
from tests.helpers.emulator import start_emulator
from tests.helpers.files import claimed, manifests, once_on_server
from tests.reliability.common import record
from tests.test_fleet import batch_file, can_unshare, fleet_files, run_fleet, sha, without_manifest

NEEDS = [shutil.which(x) for x in ("sshd", "sshfs", "ssh-keygen", "fusermount", "fusermount3")]
AVAILABLE = os.geteuid() == 0 and all(NEEDS[:3]) and any(NEEDS[3:]) and os.path.exists("/dev/fuse")
pytestmark = pytest.mark.skipif(not AVAILABLE, reason="needs root, /dev/fuse, sshd and sshfs (.ci/run installs them)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Export:
    """sshd on 127.0.0.1 serving `root` over SFTP, and the sshfs mounts made of it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "export"
        self.root.mkdir()
        self.port = _free_port()
        keys = base / "keys"
        keys.mkdir(mode=0o700)
        self.host_key = keys / "host"
        self.client_key = keys / "client"
        for k in (self.host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(k)], check=True)
        (keys / "authorized").write_text((keys / "client.pub").read_text())
        os.chmod(keys / "authorized", 0o600)
        config = base / "sshd_config"
        config.write_text("\n".join([
            "ListenAddress 127.0.0.1", f"Port {self.port}", f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {keys / 'authorized'}", "PermitRootLogin prohibit-password",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            f"PidFile {base / 'sshd.pid'}", "Subsystem sftp internal-sftp", "LogLevel ERROR", "",
        ]))
        Path("/run/sshd").mkdir(exist_ok=True)
        self.sshd = subprocess.Popen([shutil.which("sshd") or "sshd", "-D", "-e", "-f", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(self._listening, 10, what="sshd listening")
        self.mounts: list[Path] = []

    def _listening(self) -> bool:
        if self.sshd.poll() is not None:
            raise RuntimeError(f"sshd exited: {self.sshd.stderr.read().decode() if self.sshd.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def mount(self, name: str) -> Path:
        """One host's view of the export (sshfs with its default caches)."""
        where = self.base / "mnt" / name
        where.mkdir(parents=True)
        subprocess.run([
            "sshfs", f"root@127.0.0.1:{self.root}", str(where), "-p", str(self.port),
            "-o", f"IdentityFile={self.client_key},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes,reconnect,ServerAliveInterval=5",
        ], check=True, timeout=30)
        self.mounts.append(where)
        return where

    def close(self) -> None:
        for m in reversed(self.mounts):
            for tool in ("fusermount3", "fusermount"):
                if shutil.which(tool):
                    subprocess.run([tool, "-u", "-z", str(m)], capture_output=True)
                    break
        self.sshd.terminate()
        try:
            self.sshd.wait(10)
        except subprocess.TimeoutExpired:
            self.sshd.kill()


@pytest.fixture
def export() -> Iterator[Export]:
    base = Path(tempfile.mkdtemp(prefix="inboxd-sshfs-"))
    e = Export(base)
    try:
        yield e
    finally:
        e.close()
        shutil.rmtree(base, ignore_errors=True)


def test_one_daemon_on_a_freshly_created_inbox_on_sshfs(tmp_path, export):
    """The inbox folder is made through the mount just before the daemon starts: its own
    .inboxd/ folders may not be visible at once through the mount's cache; that is retried,
    never fatal. Files renamed in on the server side are archived with their manifests."""
    view = export.mount("solo")
    emu = start_emulator(tmp_path / "emu", no_dedupe=True)
    try:
        (view / "inbox").mkdir()
        cfg = write_config(tmp_path, base_url=emu.base_url,
                           inboxes=[{"path": str(view / "inbox"), "purpose": "batch-api", "observer": "polling"}],
                           daemon={"settle_seconds": 0.2, "rescan_seconds": 1})
        server_inbox = export.root / "inbox"
        expected = {}
        with start_daemon(cfg, key=emu.key, timeout=30) as d:
            for i in range(10):
                data = batch_file(f"solo-{i}")
                (export.root / f"s{i}.tmp").write_bytes(data)
                os.rename(export.root / f"s{i}.tmp", server_inbox / f"s{i}.jsonl")
                expected[sha(data)] = f"s{i}.jsonl"
            t0 = time.monotonic()
            wait_until(lambda: len(list((server_inbox / "done").glob("*.manifest.json"))) >= 10
                       if (server_inbox / "done").exists() else False, 90, interval=0.5, what="10 manifests")
            seconds = time.monotonic() - t0
            assert not d.events("daemon.unusable")
        assert {f["sha256"] for f in emu.stats()["files"]} == set(expected)
        record("sshfs solo", files=10, seconds_to_all_manifests=round(seconds, 1))
    finally:
        emu.stop()


@pytest.mark.skipif(not can_unshare(), reason="needs unshare --uts (this project's CI has it)")
def test_three_hosts_on_three_sshfs_mounts_and_one_dies_for_good(tmp_path, export):
    views = [export.mount(f"host-{c}") for c in "abc"]
    (export.root / "inbox").mkdir()
    staging = export.root / "staging"
    staging.mkdir()
    emu = start_emulator(tmp_path / "emu", no_dedupe=True, processing_delay=0.1)
    try:
        emu.set_faults(slow_seconds=0.02)

        def drop(name: str, data: bytes) -> None:  # on the server side, the Maildir way
            (staging / name).write_bytes(data)
            os.rename(staging / name, export.root / "inbox" / name)

        figures = run_fleet(tmp_path, emu, [v / "inbox" for v in views], export.root / "inbox",
                            n_files=fleet_files(300, 1500), drop=drop, label="sshfs", settle_wait=300.0)
        assert figures["killed_holding"] > 0 and figures["takeovers"] >= 1
        record("fleet (sshfs mounts, UTS hosts)", **figures)
        print("\n", figures)
    finally:
        emu.stop()


def test_a_move_cut_after_the_link_on_sshfs_is_finished_by_the_daemon_taking_over(tmp_path, export):
    """sshfs refuses renameat2(RENAME_NOREPLACE) (EINVAL), so a move into done/ is a link then an
    unlink. One daemon dies between the two (the test hook); another, on another mount with its
    own state dir, takes its folder over. sshfs shows the two names of one file with two inode
    numbers, so the takeover knows them by size, mtime and sha256: one name, one manifest."""
    views = [export.mount("host-a"), export.mount("host-b")]
    server_inbox = export.root / "inbox"
    server_inbox.mkdir()
    emu = start_emulator(tmp_path / "emu", no_dedupe=True)
    try:
        digests = {}
        for i in range(3):
            data = batch_file(f"cut-{i}", 5)
            (export.root / f"s{i}.tmp").write_bytes(data)
            os.rename(export.root / f"s{i}.tmp", server_inbox / f"f{i}.jsonl")
            digests[sha(data)] = f"f{i}.jsonl"

        def config(host: str, view: Path) -> Path:
            (tmp_path / host).mkdir()
            return write_config(tmp_path / host, base_url=emu.base_url,
                                inboxes=[{"path": str(view / "inbox"), "purpose": "batch-api", "observer": "polling"}],
                                daemon={"settle_seconds": 0.2, "rescan_seconds": 1, "workers": 1,
                                        "claim_liveness": "heartbeat", "claim_timeout_seconds": 4})

        (views[0] / "probe").write_bytes(b"x")
        with pytest.raises(NoRenameat2):  # sshfs answers EINVAL: the move falls back to link + unlink
            rename_no_replace(views[0] / "probe", views[0] / "probed")
        (views[0] / "probe").unlink()
        a = DaemonProc(config("a", views[0]), key=emu.key, env={"INBOXD_TEST_FS": "die-after-link:done"})
        assert a.wait_exit(90) == -9, a.tail()
        done = server_inbox / "done"
        linked = [p for p in done.iterdir() if not p.name.endswith(".json")]
        assert len(linked) == 1 and linked[0].stat().st_nlink == 2, sorted(done.iterdir())
        with start_daemon(config("b", views[1]), key=emu.key, timeout=30) as b:
            wait_until(lambda: len(manifests(server_inbox)) >= 3 and not claimed(server_inbox), 90,
                       interval=0.5, what="every manifest")
            assert b.events("file.recovered", stage="archived"), b.tail()
        assert without_manifest(done) == []
        assert sorted(p.name for p in done.iterdir() if not p.name.endswith(".json")) == sorted(digests.values())
        assert all((done / n).stat().st_nlink == 1 for n in digests.values())
        resends = {d: 0 if name == linked[0].name else 1 for d, name in digests.items()}
        assert once_on_server(emu.stats(), digests, resends) == []
    finally:
        emu.stop()


@pytest.mark.skipif(not can_unshare(), reason="needs unshare --uts (this project's CI has it)")
def test_two_hosts_follow_batch_ledgers_on_sshfs_and_one_dies_for_good(tmp_path, export):
    """Two hosts, each through its own sshfs mount of one batch inbox, where neither sees the
    other's follow locks. While both live, a ledger is followed by the host its `follower`
    names (the other sees a fresh heartbeat and keeps off: no job is made twice); once that host
    is killed -9 for good, the other takes its ledgers over when its heartbeat is stale, and
    every input is delivered once, each job created once."""
    import json

    from tests.test_fleet import TIMEOUT, as_host

    views = {h: export.mount(f"batch-{h}") for h in "ab"}
    inbox, outbox = export.root / "inbox", export.root / "outbox"
    inbox.mkdir()
    staging = export.root / "staging"
    staging.mkdir()
    emu = start_emulator(tmp_path / "emu", no_dedupe=True, batch_seconds=20.0, processing_delay=0.05)
    daemons: dict[str, DaemonProc] = {}

    def start(h: str) -> DaemonProc:
        (tmp_path / h).mkdir()
        cfg = write_config(tmp_path / h, base_url=emu.base_url, inboxes=[{
            "path": str(views[h] / "inbox"), "purpose": "batch-api", "observer": "polling",
            "batch": {"poll_seconds": 0.3, "outbox": str(views[h] / "outbox"), "join": True}}],
            daemon={"settle_seconds": 0.2, "rescan_seconds": 1, "claim_liveness": "heartbeat",
                    "claim_timeout_seconds": TIMEOUT})
        daemons[h] = DaemonProc(cfg, key=emu.key, prefix=as_host(f"batch-host-{h}"))
        daemons[h].wait_event("daemon.started", timeout=30)
        return daemons[h]

    try:
        start("a")  # a archives every input; b joins while their jobs run
        inputs = {f"b{i:02d}.jsonl": batch_file(f"ssh-b{i}", 6) for i in range(5)}
        for name, data in inputs.items():  # on the server side, the Maildir way
            (staging / name).write_bytes(data)
            os.rename(staging / name, inbox / name)

        def named() -> int:
            found = 0
            for p in (inbox / "done").glob("*.manifest.json") if (inbox / "done").exists() else []:
                try:
                    found += bool(json.loads(p.read_text())["batch"]["jobs"])
                except (ValueError, KeyError, TypeError):
                    pass
            return found

        wait_until(lambda: named() == len(inputs) and emu.batch_creates() >= len(inputs), 90, interval=0.3,
                   what="every input's job created and named")
        start("b").wait_event("batch.taken_over", timeout=30)  # b's scan found a's ledgers ...
        time.sleep(2.0)
        assert not daemons["b"].events("batch.follower_gone"), "... and kept off while a lives"
        assert emu.batch_creates() == len(inputs) and not list(outbox.glob("*.batch.json"))
        daemons["a"].kill9()
        wait_until(lambda: len(list(outbox.glob("*.batch.json"))) >= len(inputs), 120, interval=0.5,
                   what="every input delivered by the survivor")
        gone = sorted(Path(e["input"]).name for e in daemons["b"].events("batch.follower_gone"))
        assert gone == sorted(inputs), (gone, daemons["b"].tail(400))
        by_input = emu.batch_creates_by_input()
        assert sorted(by_input.values()) == [1] * len(inputs), by_input
        for name in inputs:
            stem = name[: -len(".jsonl")]
            side = json.loads((outbox / f"{stem}.batch.json").read_text())
            assert side["counts"] == {"succeeded": 6, "failed": 0, "missing": 0}, side
        assert sorted(p.name for p in outbox.glob("*.batch.json")) == sorted(f"{n[:-6]}.batch.json" for n in inputs)
    finally:
        for d in daemons.values():
            d.stop()
        emu.stop()
