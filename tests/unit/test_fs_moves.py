"""`inboxd.state.fs`: moves that never replace anything. One renameat2(RENAME_NOREPLACE) where
the filesystem has it (ext4 here, tmpfs), a link then an unlink where it refuses the flag, and
how a move cut between that link and that unlink is recognised. Real files under tmp_path; the
only stand-in is a renameat2 that answers EINVAL, as FUSE and NFS do."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from inboxd.state import fs
from inboxd.state.fs import TEST_HOOK, find_moved, move_no_replace, same_data


@pytest.fixture(autouse=True)
def no_hook(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TEST_HOOK, raising=False)


class Spy:
    """Counts the calls of os.link (the fallback's first step)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.links: list[tuple[str, str]] = []
        real = os.link

        def link(src: object, dst: object, **kw: object) -> None:
            self.links.append((str(src), str(dst)))
            real(src, dst, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(fs.os, "link", link)


def refusing_renameat2(calls: list[int]) -> object:
    """renameat2 as FUSE without rename2, or NFS, answers it: -1 with errno EINVAL."""

    def fake(*args: object) -> int:
        calls.append(1)
        ctypes.set_errno(errno.EINVAL)
        return -1

    return fake


def a_file(path: Path, data: bytes = b'{"a": 1}\n') -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting tmpfs needs root")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "none", str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


@pytest.mark.parametrize("where", ["tmp_path", "tmpfs"])
def test_a_move_is_one_renameat2_without_a_link(where: str, request: pytest.FixtureRequest,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    base: Path = request.getfixturevalue(where)
    spy = Spy(monkeypatch)
    src = a_file(base / "claim" / "1.x.jsonl")
    ino = src.stat().st_ino
    dst = base / "done" / "x.jsonl"
    dst.parent.mkdir()
    move_no_replace(src, dst)
    assert not src.exists() and dst.stat().st_ino == ino
    assert spy.links == [], "renameat2 did it: no hard link"


def test_renameat2_never_replaces_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    src = a_file(tmp_path / "src.jsonl", b"mine\n")
    taken = a_file(tmp_path / "taken.jsonl", b"theirs\n")
    with pytest.raises(FileExistsError):
        move_no_replace(src, taken)
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    with pytest.raises(FileExistsError):
        move_no_replace(src, tmp_path / "dangling")
    assert src.read_bytes() == b"mine\n" and taken.read_bytes() == b"theirs\n"
    assert os.readlink(tmp_path / "dangling") == str(tmp_path / "nowhere")
    assert spy.links == []


@pytest.mark.parametrize("how", ["refused", "no symbol", "forced"])
def test_where_renameat2_is_not_there_the_move_is_a_link_then_an_unlink(
        how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    if how == "refused":
        monkeypatch.setattr(fs, "_renameat2", refusing_renameat2(calls))
    elif how == "no symbol":
        monkeypatch.setattr(fs, "_renameat2", None)
    else:
        monkeypatch.setenv(TEST_HOOK, "link")  # read at the move, not at import
    spy = Spy(monkeypatch)
    src = a_file(tmp_path / "src.jsonl")
    dst = tmp_path / "dst.jsonl"
    move_no_replace(src, dst)
    assert not src.exists() and dst.exists()
    assert spy.links == [(str(src), str(dst))]
    assert calls == ([1] if how == "refused" else [])
    src = a_file(tmp_path / "src.jsonl", b"second\n")
    with pytest.raises(FileExistsError):
        move_no_replace(src, dst)
    assert src.read_bytes() == b"second\n"


def test_other_errors_of_renameat2_are_raised(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        move_no_replace(tmp_path / "missing", tmp_path / "dst")


def move_in_a_process(src: Path, dst: Path, hook: str) -> int:
    code = f"from pathlib import Path; from inboxd.state.fs import move_no_replace; " \
           f"move_no_replace(Path({str(src)!r}), Path({str(dst)!r}))"
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, TEST_HOOK: hook}).returncode


def test_the_kill_can_aim_at_one_folder(tmp_path: Path) -> None:
    src = a_file(tmp_path / "claim" / "1.x.jsonl")
    (tmp_path / "failed").mkdir()
    assert move_in_a_process(src, tmp_path / "failed" / "x.jsonl", "link,die-after-link:done") == 0
    assert not src.exists()


def test_killed_between_the_link_and_the_unlink_both_names_stay_and_are_recognised(tmp_path: Path) -> None:
    src = a_file(tmp_path / "claim" / "1.x.jsonl", b"data\n")
    done = tmp_path / "done"
    a_file(done / "x.jsonl", b"someone else's\n")
    a_file(done / ("x.jsonl" + ".manifest.json"))
    dst = done / "x.2.jsonl"
    assert move_in_a_process(src, dst, "link,die-after-link:done") == -9
    assert src.exists() and dst.exists() and src.stat().st_ino == dst.stat().st_ino
    assert find_moved(src, done, "x.jsonl", ".manifest.json") == dst
    assert same_data(src, dst)


def test_find_moved_stops_at_the_first_free_name(tmp_path: Path) -> None:
    src = a_file(tmp_path / "claim" / "1.x.jsonl")
    done = tmp_path / "done"
    done.mkdir()
    assert find_moved(src, done, "x.jsonl", ".manifest.json") is None
    os.link(src, done / "x.3.jsonl")
    assert find_moved(src, done, "x.jsonl", ".manifest.json") is None, "x.jsonl is free: placed there"
    a_file(done / "x.jsonl")
    a_file(done / "x.2.jsonl.manifest.json")  # a manifest whose data moved on: its name is taken
    assert find_moved(src, done, "x.jsonl", ".manifest.json") == done / "x.3.jsonl"
    a_file(done / "x.3.jsonl.manifest.json")
    assert find_moved(src, done, "x.jsonl", ".manifest.json") is None, "a name with its manifest is not ours"


def test_find_moved_by_content_where_names_have_their_own_inode_numbers(tmp_path: Path) -> None:
    data = b'{"custom_id": "a"}\n'
    src = a_file(tmp_path / "claim" / "1.x.jsonl", data)
    copy = a_file(tmp_path / "done" / "x.jsonl", data)  # what sshfs shows of a second link
    st = src.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert find_moved(src, copy.parent, "x.jsonl", ".manifest.json") is None
    assert find_moved(src, copy.parent, "x.jsonl", ".manifest.json", hashlib.sha256(data).hexdigest()) == copy


def test_a_symlink_to_the_claim_is_not_the_claim(tmp_path: Path) -> None:
    src = a_file(tmp_path / "claim" / "1.x.jsonl")
    done = tmp_path / "done"
    done.mkdir()
    os.symlink(src, done / "x.jsonl")
    assert not same_data(src, done / "x.jsonl", hashlib.sha256(src.read_bytes()).hexdigest())
    assert find_moved(src, done, "x.jsonl", ".manifest.json") is None


def test_two_names_of_one_file_without_shared_inode_numbers_match_by_content(tmp_path: Path) -> None:
    """sshfs numbers each name's inode on its own: there, the same size, mtime and sha256."""
    data = b'{"custom_id": "a"}\n'
    digest = hashlib.sha256(data).hexdigest()
    a = a_file(tmp_path / "a", data)
    b = a_file(tmp_path / "b", data)
    st = a.stat()
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert same_data(a, b, digest)
    assert not same_data(a, b), "without the sha256 only the inode counts"
    assert not same_data(a, b, hashlib.sha256(b"other").hexdigest())
    os.utime(b, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert not same_data(a, b, digest), "another mtime: another file"
    assert not same_data(a, tmp_path / "missing", digest)
    empty = a_file(tmp_path / "empty", b"")
    os.mkfifo(tmp_path / "fifo")  # same size (0) and mtime as `empty`: opening it would block
    st = empty.stat()
    os.utime(tmp_path / "fifo", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert not same_data(empty, tmp_path / "fifo", hashlib.sha256(b"").hexdigest()), "only regular files are read"
