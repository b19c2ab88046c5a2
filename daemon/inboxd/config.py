"""The configuration file (SPEC §4): pydantic models of every key, read with tomllib.

`load_config(path)` returns a validated `Config` or raises `ConfigError`, whose message
names the key path and what was expected (``inboxes[1].purpose: expected one of ...``).
The API key is never part of the file: `resolve_api_key` finds it, in this order:

1. ``$CREDENTIALS_DIRECTORY/together-api-key`` (systemd ``LoadCredential=``),
2. ``api.api_key_file``,
3. the environment variable named by ``api.api_key_env`` (default ``TOGETHER_API_KEY``).

The most deliberate source wins: a credential handed over by systemd beats a file named in
the config, which beats whatever happens to be in the environment.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ._constants import Purpose

ValidateMode = Literal["off", "basic", "strict"]
CREDENTIAL_NAME = "together-api-key"
DEFAULT_BASE_URL = "https://api.together.xyz/v1"


class ConfigError(Exception):
    """A configuration that cannot be used; the message names the key and what was expected."""


# --- sizes ------------------------------------------------------------------------------

_SIZE_EXPECTED = "expected a size: integer bytes or a string with a unit (B, KB, MB, GB, KiB, MiB, GiB, TiB)"
_SIZE_FORM = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")


def _size_form(value: Any) -> Any:
    """The forms a size key accepts; pydantic's `ByteSize` then does the arithmetic.

    `ByteSize` alone would also take what configs never did, silently: ``True``, ``2.0``,
    ``".5GiB"``, ``"5,000"`` (as 5) and ``"5 GiB extra"`` (as 5 GiB); the whole string must be
    one number and one unit here. A lone ``K``/``M``/``G``/``T`` has always meant KiB/MiB/GiB/TiB
    in inboxd (`ByteSize` reads them as decimal), so it is passed on as that.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError('expected a size: integer bytes or a string like "250MiB"')
    if isinstance(value, int):
        if value < 0:
            raise ValueError("expected a size >= 0")
        return value
    m = _SIZE_FORM.fullmatch(value)
    if m is None:
        raise ValueError(_SIZE_EXPECTED)
    number, unit = m.group(1), m.group(2).lower()
    if len(unit) == 1 and unit in "kmgtpe":
        return f"{number}{unit}ib"
    if unit and unit not in ByteSize.byte_sizes:
        raise ValueError(_SIZE_EXPECTED)
    return value


Size = Annotated[ByteSize, BeforeValidator(_size_form)]
_SIZE = TypeAdapter(Size)


def parse_size(value: Any) -> int:
    """An integer number of bytes, or a string such as ``"250MiB"``, ``"5GiB"``, ``"100MB"``
    (a `pydantic.ValidationError`, which is a ValueError, when it is neither)."""
    return int(_SIZE.validate_python(value))


def format_size(n: int) -> str:
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return str(n)


# --- sections ---------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiConfig(_Section):
    base_url: str = DEFAULT_BASE_URL
    api_key_env: str = Field("TOGETHER_API_KEY", min_length=1)
    api_key_file: Path | None = None
    timeout_seconds: float = Field(600, gt=0)
    max_retries: int = Field(5, ge=0, le=100)
    # a proxy for the API and storage hosts alike (wins over HTTPS_PROXY / HTTP_PROXY /
    # NO_PROXY; "" = direct, the environment ignored). A secret: it may hold a password.
    proxy: SecretStr | None = None
    # the CA bundle (a file, or a folder of hashed certs) for verify; wins over
    # REQUESTS_CA_BUNDLE / SSL_CERT_FILE; else certifi
    ca_bundle: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _hide_proxy(cls, data: Any) -> Any:
        """Wrap api.proxy before it is validated, so no error message can echo its password."""
        if isinstance(data, dict) and isinstance(data.get("proxy"), str):
            data = {**data, "proxy": SecretStr(data["proxy"])}
        return data

    @field_validator("proxy")
    @classmethod
    def _check_proxy(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None or v.get_secret_value() == "":
            return v
        text = v.get_secret_value()
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError("expected a proxy url such as http://proxy.example:3128 (bad host or port)") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected a proxy url such as http://proxy.example:3128 (http:// or https://)")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError("expected a proxy url without a path, query or fragment")
        return v

    @field_validator("ca_bundle")
    @classmethod
    def _check_ca_bundle(cls, v: Path | None) -> Path | None:
        if v is not None and not v.exists():
            raise ValueError("expected an existing CA bundle (a PEM file, or a folder of certificates); not found")
        return v

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http(s) url such as https://api.together.xyz/v1")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ValueError("http:// is refused unless the host is loopback; use https://")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ValueError("expected a url without query, fragment or credentials")
        return v.rstrip("/")


class UploadConfig(_Section):
    multipart_threshold: Size = ByteSize(5 * 2**30)
    part_size: Size = ByteSize(250 * 2**20)
    max_parts: int = Field(250, ge=1, le=10_000)
    part_concurrency: int = Field(4, ge=1, le=64)
    wait_for_processing: bool = False
    processing_timeout_seconds: float = Field(900, gt=0)
    dedupe: bool = True
    # one token bucket for the whole daemon (every worker, every part); 0 = no cap
    max_bytes_per_second: Size = ByteSize(0)

    @field_validator("part_size")
    @classmethod
    def _check_part_size(cls, v: int) -> int:
        if v < 5 * 2**20:
            raise ValueError("expected at least 5MiB (the storage's minimum part size)")
        return v


class CheckConfig(_Section):
    """Limits of the validation pass (not in SPEC §4: both settable)."""

    max_line_bytes: Size = ByteSize(64 * 2**20)
    max_errors: int = Field(20, ge=1, le=10_000)


class DaemonConfig(_Section):
    state_dir: Path = Path("/var/lib/inboxd")
    workers: int = Field(4, ge=1, le=256)
    settle_seconds: float = Field(1.0, ge=0)
    rescan_seconds: float = Field(60, gt=0)
    max_attempts: int = Field(0, ge=0)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics_address: str = "127.0.0.1:9464"
    # not in SPEC §4: how long SIGTERM waits for in-flight uploads before leaving them claimed
    stop_grace_seconds: float = Field(30, ge=0)
    # not in SPEC §4: /healthz turns 503 when work waits and nothing succeeded for this long
    health_stale_seconds: float = Field(900, gt=0)
    # not in SPEC §4: a file a producer keeps open this long gets a file.held_open
    # warning (then every 10 minutes); it is never claimed while open
    held_open_warn_seconds: float = Field(300, ge=0)
    # not in SPEC §4: a file that changes under its upload this many times goes to
    # failed/ with source_changed instead of being uploaded again
    max_source_changes: int = Field(3, ge=1)
    # not in SPEC §4: journal rows of finished files older than this are deleted
    journal_retention_days: float = Field(30, gt=0)
    # how a claim folder's owner is known to be alive: auto = flock where the filesystem
    # is local, plus the heartbeat; heartbeat = never flock (network filesystems, FUSE)
    claim_liveness: Literal["auto", "heartbeat"] = "auto"
    claim_timeout_seconds: float = Field(60, gt=0)
    # not in SPEC §4: a file holding the token the status page (/, /status.json, the error
    # sidecars) asks for; required when metrics_address is not a loopback address
    status_token_file: Path | None = None
    # not in SPEC §4: files of one inbox held in memory at a time (settling or ready); the rest
    # of a backlog waits in the folder and is taken in by later scans (docs/limits.md)
    candidate_window: int = Field(2000, ge=1)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v

    @field_validator("metrics_address")
    @classmethod
    def _check_address(cls, v: str) -> str:
        if v == "":
            return v
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not (0 <= int(port) <= 65535) or not host:
            raise ValueError('expected "host:port" (for example "127.0.0.1:9464") or "" for off')
        return v

    @property
    def metrics_host_port(self) -> tuple[str, int] | None:
        if not self.metrics_address:
            return None
        host, _, port = self.metrics_address.rpartition(":")
        return host.strip("[]"), int(port)


def resolved_absolute(v: Path | None) -> Path | None:
    """An absolute path with its symlinks resolved (None stays None); ValueError otherwise."""
    if v is None:
        return None
    if not v.is_absolute():
        raise ValueError("expected an absolute path")
    try:
        return Path(os.path.normpath(v)).resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise ValueError(f"cannot resolve {v}: {getattr(exc, 'strerror', None) or exc}") from None


class BatchConfig(_Section):
    """`[inboxes.batch]` (SPEC §4, §10): the batch round trip of a batch-api inbox.
    Absent: the inbox behaves as before (upload and manifest only)."""

    endpoint: str = "/v1/chat/completions"
    completion_window: str = Field("24h", min_length=1)
    model_id: str | None = Field(None, min_length=1)
    priority: int | None = None
    poll_seconds: float = Field(30, gt=0)
    # default <inbox path>/outbox (resolved when the inbox is loaded)
    outbox: Path | None = None
    join: bool = False
    # the ledger (SPEC §10): an input above either limit is cut into parts, one job each
    max_requests_per_job: int = Field(50_000, ge=1)
    max_bytes_per_job: Size = ByteSize(100 * 10**6)
    resubmit_rounds: int = Field(3, ge=0)  # rounds that resend transient errors and unanswered requests
    resubmit_codes: list[int] = Field(default_factory=lambda: [429, 500, 502, 503, 504])
    max_jobs_in_flight: int = Field(0, ge=0)  # per inbox; 0 = no limit

    @field_validator("resubmit_codes")
    @classmethod
    def _check_codes(cls, v: list[int]) -> list[int]:
        if any(not 100 <= c <= 599 for c in v):
            raise ValueError("expected HTTP status codes (100..599)")
        return sorted(set(v))

    @field_validator("max_bytes_per_job")
    @classmethod
    def _positive_job_bytes(cls, v: int) -> int:
        if v < 1:
            raise ValueError("expected a size of at least 1 byte")
        return v

    @field_validator("endpoint")
    @classmethod
    def _check_endpoint(cls, v: str) -> str:
        if not re.fullmatch(r"/[A-Za-z0-9._~/-]*", v) or "//" in v:
            raise ValueError('expected an API path such as "/v1/chat/completions"')
        return v

    @field_validator("outbox")
    @classmethod
    def _absolute_outbox(cls, v: Path | None) -> Path | None:
        return resolved_absolute(v)


class InboxConfig(_Section):
    path: Path
    purpose: Purpose
    validate_mode: ValidateMode = Field("basic", alias="validate")
    on_success: Literal["move", "delete", "keep"] = "move"
    patterns: list[str] = Field(default_factory=lambda: ["*.jsonl"], min_length=1)
    observer: Literal["inotify", "polling"] = "inotify"
    done_dir: Path | None = None
    failed_dir: Path | None = None
    # this inbox's own cap, under upload.max_bytes_per_second; 0 = only the global one
    max_bytes_per_second: Size = ByteSize(0)
    # create the folder when it is missing (else a missing folder is an error: a typo
    # must not become a new, empty inbox)
    create: bool = False
    # the batch round trip (batch-api inboxes only); None = upload and manifest only
    batch: BatchConfig | None = None

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("batch")
    @classmethod
    def _batch_purpose(cls, v: BatchConfig | None, info: ValidationInfo) -> BatchConfig | None:
        """`batch` belongs to batch-api inboxes only."""
        purpose = info.data.get("purpose")
        if v is not None and purpose is not None and purpose != "batch-api":
            raise ValueError(f'the batch round trip is for purpose = "batch-api" inboxes, not {purpose!r}')
        return v

    @model_validator(mode="after")
    def _batch_outbox(self) -> InboxConfig:
        """The batch outbox defaults to <path>/outbox (resolved like a configured one: a symlink
        named outbox is compared by where it leads)."""
        if self.batch is not None and self.on_success == "delete":
            # the ledger reads the input until its results are delivered: the parts, the
            # requests it sends again, and the join all copy its lines
            raise ValueError('on_success = "delete" cannot go with [inboxes.batch]: the batch ledger reads the '
                             'input until its results are delivered (use "move" or "keep")')
        if self.batch is not None and self.batch.outbox is None:
            outbox = resolved_absolute(self.path / "outbox")
            object.__setattr__(self, "batch", self.batch.model_copy(update={"outbox": outbox}))
        return self

    @field_validator("path", "done_dir", "failed_dir")
    @classmethod
    def _absolute(cls, v: Path | None) -> Path | None:
        """Absolute, and resolved when the config is loaded: a symlinked inbox is
        watched at its real folder (inotify sees nothing through the link), and two names of one
        folder compare equal."""
        return resolved_absolute(v)

    @field_validator("patterns")
    @classmethod
    def _check_patterns(cls, v: list[str]) -> list[str]:
        for p in v:
            if not p or "/" in p:
                raise ValueError(f"expected file name patterns without '/'; got {p!r}")
        return v

    @property
    def work(self) -> Path:
        return self.path / ".inboxd"

    @property
    def done(self) -> Path:
        return self.done_dir or self.path / "done"

    @property
    def failed(self) -> Path:
        return self.failed_dir or self.path / "failed"


# --- [[events]] (SPEC §11) -------------------------------------------------------------

EventType = Literal["file.archived", "file.failed", "batch.delivered"]
EVENT_TYPES: tuple[EventType, ...] = ("file.archived", "file.failed", "batch.delivered")


class EventSinkConfig(_Section):
    """One `[[events]]` sink: a webhook (`url`, signed with a Standard Webhooks secret) or a
    `command` (the event JSON on stdin, exit 0 = delivered). The secret is never part of the
    file: `secret_file` or `secret_env` names where it is (`inboxd.events.read_secret`)."""

    url: str | None = None
    command: list[str] | None = Field(None, min_length=1)
    secret_file: Path | None = None
    secret_env: str | None = Field(None, min_length=1)
    types: list[EventType] = Field(default_factory=lambda: list(EVENT_TYPES), min_length=1)
    timeout_seconds: float = Field(10, gt=0)
    max_age_hours: float = Field(72, gt=0)
    # not in SPEC §4: the sink's label in metrics, status and `inboxd events` (default: the url
    # without its query, or the command's program); the first retry's delay (doubled per
    # attempt up to max_backoff_seconds); /healthz turns 503 while the oldest pending event
    # is older than unhealthy_after_seconds
    name: str | None = Field(None, min_length=1, max_length=100)
    backoff_seconds: float = Field(1.0, gt=0)
    max_backoff_seconds: float = Field(300, gt=0)
    unhealthy_after_seconds: float = Field(900, gt=0)

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http(s) url such as https://scheduler.example/hooks/inboxd")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ValueError("http:// is refused unless the host is loopback; use https://")
        if parts.username or parts.password or parts.fragment:
            raise ValueError("expected a url without credentials or fragment (the secret signs the events)")
        return v

    @model_validator(mode="after")
    def _one_kind(self) -> EventSinkConfig:
        if (self.url is None) == (self.command is None):
            raise ValueError("expected exactly one of url (a webhook) or command")
        if self.url is not None and (self.secret_file is None) == (self.secret_env is None):
            raise ValueError("a webhook needs exactly one of secret_file or secret_env (a whsec_ secret)")
        if self.command is not None and (self.secret_file is not None or self.secret_env is not None):
            raise ValueError("a command sink takes no secret (secret_file / secret_env are for webhooks)")
        if len(set(self.types)) != len(self.types):
            raise ValueError("types: each event type once")
        return self

    @property
    def label(self) -> str:
        """The sink's name: `name`, else the url without query (it may hold a token) or the program."""
        if self.name:
            return self.name
        if self.url is not None:
            parts = urlsplit(self.url)
            return f"{parts.scheme}://{parts.netloc}{parts.path}"
        return Path((self.command or ["?"])[0]).name


class Config(_Section):
    api: ApiConfig = Field(default_factory=ApiConfig)
    upload: UploadConfig = Field(default_factory=UploadConfig)
    check: CheckConfig = Field(default_factory=CheckConfig)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    inboxes: list[InboxConfig] = Field(default_factory=list)
    events: list[EventSinkConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _sinks_apart(self) -> Config:
        """Each sink's label (its `name`, or the one made from its url or command) is unique: it
        keys the sink's events in the journal."""
        seen: dict[str, int] = {}
        for i, sink in enumerate(self.events):
            if sink.label in seen:
                raise _KeyError(f"events[{i}]", f"has the same name as events[{seen[sink.label]}] "
                                                f"({sink.label!r}); give one of them a distinct name")
            seen[sink.label] = i
        return self

    @model_validator(mode="after")
    def _inboxes_apart(self) -> Config:
        """Inbox paths (resolved at load, so a symlink is no second name) are neither equal nor
        nested, and no inbox archives into an inbox (its files would be uploaded again)."""
        seen: list[tuple[int, Path]] = []
        for i, inbox in enumerate(self.inboxes):
            for j, other in seen:
                if inbox.path == other:
                    raise _KeyError(f"inboxes[{i}].path", f"duplicate of inboxes[{j}].path: both are {other} "
                                                          "once symlinks are resolved")
                if inbox.path.is_relative_to(other) or other.is_relative_to(inbox.path):
                    raise _KeyError(
                        f"inboxes[{i}].path",
                        f"an inbox may not lie inside another (inboxes[{j}].path is {other})",
                    )
            seen.append((i, inbox.path))
        for i, inbox in enumerate(self.inboxes):
            for key, folder in (("done_dir", inbox.done_dir), ("failed_dir", inbox.failed_dir)):
                for j, other in seen:
                    if folder is not None and folder == other:
                        raise _KeyError(f"inboxes[{i}].{key}", f"is inboxes[{j}].path ({other}) once symlinks are "
                                                               "resolved; its files would be uploaded again")
        for i, inbox in enumerate(self.inboxes):
            if inbox.batch is not None and inbox.batch.outbox is not None:
                problem = _outbox_problem(inbox.batch.outbox, i, self.inboxes)
                if problem is not None:
                    raise _KeyError(f"inboxes[{i}].batch.outbox", problem)
        return self


def _outbox_problem(outbox: Path, i: int, inboxes: list[InboxConfig]) -> str | None:
    """Why a batch outbox (resolved, like every inbox folder) cannot be used, or None.

    The outbox receives `<stem>.output.jsonl`, `<stem>.results.jsonl`...: in a folder an inbox
    watches they would be taken as new inputs, and `batch.json` would point at files that
    moved. So an outbox is never an inbox, never holds one, and never lies inside another
    inbox's folder. Inside its own inbox it may lie (the default is `<path>/outbox`: inboxes
    are not watched recursively, and the scan skips it), but not in that inbox's own folders:
    `.inboxd/` (the claim area), `done/` and `failed/` (archives whose names inboxd chooses;
    an outbox there would mix results with archived inputs). The same holds for another
    inbox's done/failed folders wherever they are configured.
    """
    why = "; the daemon would take the batch results as new inputs"
    for j, other in enumerate(inboxes):
        name = "its own inbox" if j == i else f"inboxes[{j}].path"
        if outbox == other.path:
            return f"{outbox} is {name} once symlinks are resolved{why}"
        if other.path.is_relative_to(outbox):
            return (f"{outbox} holds {name} ({other.path}); results and an inbox's inputs, claims and archives "
                    "would share one tree")
        for label, folder in ((".inboxd/ (the claim area)", other.work), ("done_dir", other.done),
                              ("failed_dir", other.failed)):
            if outbox.is_relative_to(folder):
                whose = "its own inbox's" if j == i else f"inboxes[{j}]'s"
                return (f"{outbox} lies in {whose} {label} {folder}; an outbox is a folder of its own, "
                        "apart from an inbox's claim area and archives")
        if j != i and outbox.is_relative_to(other.path):
            return f"{outbox} lies inside {name} ({other.path}); an inbox's folder is that inbox's alone"
    return None


class _KeyError(ValueError):
    """A model-level error that knows which key it belongs to."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")


# --- loading ----------------------------------------------------------------------------

# values under these keys are never echoed back in an error message
_SECRET_ISH = re.compile(r"key|secret|token|password|credential", re.I)


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _describe(err: Mapping[str, Any]) -> str:
    loc = _format_loc(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    value = err.get("input")
    echo = not _SECRET_ISH.search(loc) or loc.endswith("api_key_env")
    got = f"; got {value!r}" if echo and isinstance(value, (str, int, float, bool)) and len(repr(value)) <= 80 else ""
    if kind == "extra_forbidden":
        return f"{loc}: unknown key"
    if kind == "missing":
        return f"{loc}: required key is missing"
    if kind == "literal_error":
        expected = err.get("ctx", {}).get("expected", "")
        expected = expected.replace("'", "").replace(" or ", ", ")
        return f"{loc}: expected one of {expected}{got}"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    if msg.startswith(tuple(f"{k}" for k in ("inboxes[",))):
        return msg
    return f"{loc}: {msg[0].lower() + msg[1:] if msg else msg}{got}"


def parse_config(data: Mapping[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors(include_url=False)]
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | os.PathLike[str]) -> Config:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def config_from_env(env: Mapping[str, str] | None = None) -> Config:
    """The configuration with no file: defaults, and ``TOGETHER_BASE_URL`` if set (like the clients)."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    if env.get("TOGETHER_BASE_URL"):
        data["api"] = {"base_url": env["TOGETHER_BASE_URL"]}
    return parse_config(data)


def resolve_api_key(
    api: ApiConfig, env: Mapping[str, str] | None = None
) -> tuple[SecretStr, str]:
    """The API key and a description of where it came from (never the key itself)."""
    env = os.environ if env is None else env
    sources: list[tuple[str, Path | None, str | None]] = []
    cred_dir = env.get("CREDENTIALS_DIRECTORY")
    if cred_dir:
        sources.append((f"credential {CREDENTIAL_NAME}", Path(cred_dir) / CREDENTIAL_NAME, None))
    if api.api_key_file is not None:
        sources.append((f"file {api.api_key_file}", api.api_key_file, None))
    sources.append((f"environment variable {api.api_key_env}", None, env.get(api.api_key_env)))
    for where, file, value in sources:
        if file is not None:
            try:
                value = file.read_text(encoding="utf-8")
            except FileNotFoundError:
                if file == api.api_key_file:
                    raise ConfigError(f"api.api_key_file: file not found: {file}") from None
                continue
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"api key {where}: cannot read it: {getattr(exc, 'strerror', exc)}") from None
        value = (value or "").strip()
        if value:
            if any(c.isspace() or not c.isprintable() for c in value):
                raise ConfigError(f"api key from {where}: contains whitespace or control characters")
            return SecretStr(value), where
    raise ConfigError(
        f"no API key: set {api.api_key_env}, api.api_key_file, or a systemd credential {CREDENTIAL_NAME}"
    )


def redacted_dict(config: Config) -> dict[str, Any]:
    """The effective configuration as plain data, for `inboxd config check`."""
    data = config.model_dump(mode="json", by_alias=True)
    for key in ("multipart_threshold", "part_size"):
        data["upload"][key] = format_size(data["upload"][key])
    data["check"]["max_line_bytes"] = format_size(data["check"]["max_line_bytes"])
    for sink in data.get("events", []):  # a webhook url's query may carry a token: never shown
        parts = urlsplit(sink.get("url") or "")
        if parts.query:
            sink["url"] = f"{parts.scheme}://{parts.netloc}{parts.path}?<redacted>"
    return data
