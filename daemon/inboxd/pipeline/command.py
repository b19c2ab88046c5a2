"""The work of `inboxd run` (`run_daemon`) and of `inboxd config check` (`effective_config`),
and the checks of the machine that `run` makes before the daemon starts and `config check`
makes unless `--offline`; the command line (`inboxd.cli`) renders what they return.

A problem names its config key (``inboxes[0].path: /srv/x does not exist; ...``) and is a
configuration error: exit 2, before anything is created on disk.
"""

from __future__ import annotations

import os
import pwd
import socket
import sqlite3
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import SecretStr

from .._constants import EXIT_FAILED
from ..config import CREDENTIAL_NAME, Config, ConfigError, format_size, redacted_dict, resolve_api_key
from ..log import register_secret
from ..state.fs import NETWORK_FILESYSTEMS, filesystem_type
from ..state.fs import nearest_existing as _nearest_existing
from ..state.lock import StateDirBusy, StateLock, lock_state_dir, state_dir_busy

if TYPE_CHECKING:
    from ..emulator import Emulator

__all__ = ["NETWORK_FILESYSTEMS", "Problem", "StartRefused", "effective_config", "filesystem_type",
           "machine_problems", "run_daemon", "start_problems"]


# --- the machine checks -------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"key": self.key, "message": self.message}


def _who() -> str:
    uid = os.getuid()
    try:
        return f"user {pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK | os.X_OK)


def _folder(key: str, path: Path, *, missing: str | None, label: str = "") -> Problem | None:
    """A folder the daemon writes into: it exists and is writable by this user. `missing` is
    the problem text when it does not exist; None: it may be missing if it can be created."""
    what = f"{label}{path}"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if missing is not None:
            return Problem(key, f"{what} does not exist; {missing}")
        parent = _nearest_existing(path)
        if not parent.is_dir():
            return Problem(key, f"{what} cannot be created: {parent} is not a folder")
        if not _writable(parent):
            return Problem(key, f"{what} does not exist and cannot be created: {parent} is not writable by {_who()}")
        return None
    except OSError as exc:
        return Problem(key, f"{what}: {exc.strerror or exc}")
    if not stat.S_ISDIR(st.st_mode):
        return Problem(key, f"{what} is not a folder")
    if not _writable(path):
        return Problem(key, f"{what} is not writable by {_who()}")
    return None


def _state_dir(config: Config, env: Mapping[str, str]) -> Problem | None:
    """state_dir must exist (systemd's StateDirectory= makes it: STATE_DIRECTORY is then set)."""
    state_dir = config.daemon.state_dir
    if not os.path.lexists(state_dir) and env.get("STATE_DIRECTORY"):
        return None
    problem = _folder("daemon.state_dir", state_dir,
                      missing="create it (under systemd, StateDirectory= creates it)")
    if problem is not None:
        return problem
    journal = state_dir / "journal.sqlite3"
    if os.path.lexists(journal) and not os.access(journal, os.R_OK | os.W_OK):
        return Problem("daemon.state_dir", f"the journal {journal} is not readable and writable by {_who()}")
    return None


def _inbox_folder(i: int, config: Config) -> Problem | None:
    inbox = config.inboxes[i]
    if inbox.create:
        return _folder(f"inboxes[{i}].path", inbox.path, missing=None)
    return _folder(f"inboxes[{i}].path", inbox.path, missing="create it or set create = true")


def _metrics_address(config: Config) -> Problem | None:
    """The metrics address is free: bind it now, before anything is created."""
    address = config.daemon.metrics_host_port
    if address is None or address[1] == 0:
        return None
    host, port = address
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        return Problem("daemon.metrics_address", f"cannot resolve {host}: {exc.strerror or exc}")
    family, kind, proto, _, sockaddr = infos[0]
    s = socket.socket(family, kind, proto)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the metrics server binds it
        s.bind(sockaddr)
    except OSError as exc:
        return Problem("daemon.metrics_address",
                       f"cannot listen on {config.daemon.metrics_address}: {exc.strerror or exc}")
    finally:
        s.close()
    return None


def start_problems(config: Config, env: Mapping[str, str] | None = None) -> list[Problem]:
    """What `inboxd run` refuses to start with: a missing inbox folder (unless create = true),
    an unusable state_dir, a metrics address in use."""
    env = os.environ if env is None else env
    problems = [_state_dir(config, env), *(_inbox_folder(i, config) for i in range(len(config.inboxes))),
                _metrics_address(config)]
    return [p for p in problems if p is not None]


def _device(path: Path) -> tuple[int, Path] | None:
    at = _nearest_existing(path)
    try:
        return os.stat(at).st_dev, at
    except OSError:
        return None


def _same_filesystem(i: int, config: Config) -> list[Problem]:
    """done/ and failed/ (and the claim folder) on the inbox's filesystem: archiving is a
    rename, and a rename cannot cross filesystems (EXDEV)."""
    inbox = config.inboxes[i]
    home = _device(inbox.path)
    if home is None:
        return []
    out = []
    for key, folder, default in (("done_dir", inbox.done, inbox.done_dir is None),
                                 ("failed_dir", inbox.failed, inbox.failed_dir is None),
                                 ("path", inbox.work, True)):
        dev = _device(folder)
        if dev is None or dev[0] == home[0]:
            continue
        where = "" if dev[1] == folder else f" (its nearest existing folder {dev[1]})"
        label = " (the default)" if default and key != "path" else ""
        out.append(Problem(f"inboxes[{i}].{key}",
                           f"{folder}{label}{where} is on another filesystem than the inbox {inbox.path}: archiving "
                           "is a rename, which cannot cross filesystems; put it on the inbox's filesystem"))
    return out


def _state_dir_local(config: Config, mountinfo: str | None = None) -> Problem | None:
    fstype = filesystem_type(config.daemon.state_dir, mountinfo)
    if fstype in NETWORK_FILESYSTEMS:
        return Problem("daemon.state_dir", f"{config.daemon.state_dir} is on a network filesystem ({fstype}); the "
                                           "journal (SQLite, WAL) needs a local disk")
    return None


def _key_source(config: Config, env: Mapping[str, str]) -> Problem | None:
    """The key source named in the config (or handed over by systemd) can be read. No key at
    all is not a problem here: a check run by hand does not see systemd's credential."""
    api = config.api
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        cred = Path(cred_dir) / CREDENTIAL_NAME
        if os.path.lexists(cred) and not os.access(cred, os.R_OK):
            return Problem("api", f"the credential {cred} is not readable by {_who()}")
    if api.api_key_file is not None:
        f = api.api_key_file
        if not os.path.lexists(f):
            return Problem("api.api_key_file", f"{f} does not exist")
        if not os.path.isfile(f):
            return Problem("api.api_key_file", f"{f} is not a file")
        if not os.access(f, os.R_OK):
            return Problem("api.api_key_file", f"{f} is not readable by {_who()}")
    try:
        resolve_api_key(api, env)
    except ConfigError as exc:
        text = str(exc)
        if api.api_key_file is not None or not text.startswith("no API key"):
            return Problem("api.api_key_file" if api.api_key_file is not None else "api", text)
    return None


def _settings_agree(i: int, config: Config) -> Problem | None:
    """A shared inbox: this configuration's settings for it match those its live daemons run
    with (`fingerprint.py`); else a daemon with it would not claim there."""
    from .claim import Liveness
    from .fingerprint import assess

    inbox = config.inboxes[i]
    if not inbox.work.is_dir():
        return None
    verdict = assess(inbox, Liveness(config.daemon.claim_liveness, config.daemon.claim_timeout_seconds))
    if verdict.agreed:
        return None
    return Problem(f"inboxes[{i}]", f"{inbox.path}: {verdict.reason()} (see docs/shared-inboxes.md)")


def machine_problems(config: Config, env: Mapping[str, str] | None = None) -> list[Problem]:
    """`inboxd config check`: every folder exists (or may be created) and is writable by this
    user, done/ and failed/ share the inbox's filesystem, state_dir is local, the key source is
    readable, a shared inbox's live daemons run with this configuration's settings for it.
    The metrics address is not tried: a running daemon holds it."""
    env = os.environ if env is None else env
    problems: list[Problem | None] = [_state_dir(config, env), _state_dir_local(config)]
    for i, inbox in enumerate(config.inboxes):
        problems.append(_inbox_folder(i, config))
        for key, folder in (("done_dir", inbox.done), ("failed_dir", inbox.failed)):
            problems.append(_folder(f"inboxes[{i}].{key}", folder, missing=None))
        problems.extend(_same_filesystem(i, config))
        problems.append(_settings_agree(i, config))
    problems.append(_key_source(config, env))
    return [p for p in problems if p is not None]


class StartRefused(Exception):
    """`inboxd run` will not start: a configuration error (exit 2). Each reason is one line,
    naming its config key where there is one; nothing was created on disk."""

    def __init__(self, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.reasons = reasons


# --- inboxd run ---------------------------------------------------------------------------


def run_daemon(config: Config, config_path: Path, *, emulator: bool, once: bool) -> int:
    """Run the daemon in the foreground until it stops: EXIT_OK, or EXIT_FAILED (a file failed
    with --once, or the daemon could not go on). StartRefused before anything is created."""
    log = structlog.get_logger("inboxd.daemon")
    # before anything is created (a claim folder, the journal, the emulator): exit 2, naming the key
    problems = start_problems(config)
    busy = state_dir_busy(config.daemon.state_dir)  # first: a running daemon also holds the metrics port
    if busy is not None:
        problems.insert(0, Problem("daemon.state_dir", str(busy)))
    if problems:
        raise StartRefused([str(p) for p in problems])
    state_lock = _lock_state_dir(config)  # one daemon per state_dir, held until we exit
    if not state_lock.held:
        log.warning("state_dir.unlocked", state_dir=str(config.daemon.state_dir),
                    reason="the filesystem refuses flock; nothing stops a second daemon on this state_dir")
    target = _ApiTarget(emulator)
    try:
        config = target.adjust(config)
        key, source = target.resolve(config)
        from ..events import read_secret

        for sink in config.events:  # each webhook's secret, like the key: unreadable = refused at start
            if sink.url is not None:
                read_secret(sink)
    except ConfigError as exc:
        target.stop()
        state_lock.release()
        raise StartRefused([str(exc)]) from None
    register_secret(key.get_secret_value())
    log.info("api.key", source=source)

    from .daemon import Daemon
    from .hooks import make_service

    service = make_service(config)

    def make_client(c: Config, k: SecretStr) -> Any:
        from ..api import FilesClient

        return FilesClient(c.api, c.upload, k, observer=service.api_event)

    try:
        try:
            daemon = Daemon(config, config_path, key, once=once, make_client=make_client,
                            resolve_key=target.resolve, adjust_config=target.adjust, service=service)
        except (OSError, sqlite3.Error) as exc:
            # the journal is opened first: what fails here is state_dir (a bad journal file, a full disk)
            why = getattr(exc, "strerror", None) or exc
            problem = Problem("daemon.state_dir", f"cannot open the journal in {config.daemon.state_dir}: {why}")
            raise StartRefused([str(problem)]) from None
        daemon.install_signals()
        return daemon.run()
    except OSError as exc:
        log.critical("daemon.unusable", error=str(exc))
        return EXIT_FAILED
    finally:
        service.close()
        target.stop()
        state_lock.release()


def _lock_state_dir(config: Config) -> StateLock:
    """The state_dir's lock (`state.lock`), or StartRefused naming who holds it (exit 2)."""
    try:
        return lock_state_dir(config.daemon.state_dir)
    except StateDirBusy as exc:
        raise StartRefused([str(Problem("daemon.state_dir", str(exc)))]) from None
    except OSError as exc:
        problem = Problem("daemon.state_dir", f"cannot lock {config.daemon.state_dir}: {exc.strerror or exc}")
        raise StartRefused([str(problem)]) from None


class _ApiTarget:
    """The API the daemon talks to: the configured one with its key, or (--emulator) an
    embedded emulator, started here, whose url and key replace the configuration's, also
    after a SIGHUP reload."""

    def __init__(self, emulator: bool) -> None:
        self.emu: Emulator | None = None
        if emulator:
            from ..emulator import Emulator, EmulatorSettings

            emu = Emulator(EmulatorSettings(host="127.0.0.1", port=0))
            emu.start()
            self.emu = emu
            structlog.get_logger("inboxd.daemon").info("emulator.started", base_url=emu.base_url)

    def adjust(self, c: Config) -> Config:
        if self.emu is None:
            return c
        return c.model_copy(update={"api": c.api.model_copy(update={"base_url": self.emu.base_url})})

    def resolve(self, c: Config) -> tuple[SecretStr, str]:
        if self.emu is None:
            return resolve_api_key(c.api)
        return SecretStr(self.emu.key), "the embedded emulator"

    def stop(self) -> None:
        if self.emu is not None:
            self.emu.stop()


# --- inboxd config check ------------------------------------------------------------------


def effective_config(config: Config) -> dict[str, Any]:
    """What `inboxd config check` shows: the configuration as plain data, secrets redacted
    (the key never; the proxy's password as ***), sizes as text, and under "resolved" where
    the key comes from and the route and CA bundle the API calls will take."""
    from ..api import redact_proxy, resolve_network

    try:
        _, key_source = resolve_api_key(config.api)
        key: dict[str, str | None] = {"api_key": "<redacted>", "api_key_source": key_source}
    except ConfigError as exc:
        key = {"api_key": None, "api_key_problem": str(exc)}
    data = redacted_dict(config)
    proxy = config.api.proxy.get_secret_value() if config.api.proxy is not None else None
    data["api"]["proxy"] = redact_proxy(proxy)
    for section in (data["upload"], *data["inboxes"]):
        section["max_bytes_per_second"] = format_size(section["max_bytes_per_second"])
    # storage hosts are only known per upload (same rules)
    network = resolve_network(config.api).describe(config.api.base_url)
    data["resolved"] = {**key, **network}
    return data
