"""Proxies and bandwidth caps (issue 13), over real sockets: the emulator is a subprocess and
the proxy is a real forwarding HTTP proxy process (proxy.py, from PyPI) on loopback. A small
plugin loaded into it writes one JSON line per request it forwards (proxy.py's own access log
has one line per connection, so it misses requests on a kept-alive connection): method, host,
path, and whether the request carried an Authorization header.

TLS (HTTPS to the API through CONNECT, api.ca_bundle against a private CA) is not tested
here yet: the emulator speaks plain HTTP on loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from inboxd.api import Cancelled, FilesClient, RejectedError
from inboxd.api._bandwidth import Bandwidth
from inboxd.config import parse_config
from tests.helpers.emulator import REPO

KEY = "network-test-key-5e4d3c2b1a"
pytestmark = pytest.mark.emulator(key=KEY, no_dedupe=False)
MIB = 2**20
PROXY_USER = "inboxd"
PROXY_PASSWORD = "pr0xy-pw-d41d8cd98f"
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")

PLUGIN = """
import json, os
from proxy.http.proxy import HttpProxyBasePlugin

class RequestLog(HttpProxyBasePlugin):
    def handle_client_request(self, request):
        path = (request.path or b"").decode("latin-1").split("?")[0]
        host = request.host.decode("latin-1") if request.host else ""
        with open(os.environ["INBOXD_TEST_PROXY_LOG"], "a") as f:
            f.write(json.dumps({"method": request.method.decode(), "host": host, "path": path,
                                "authorization": request.has_header(b"authorization")}) + "\\n")
        return request
"""


@dataclass
class Seen:
    method: str
    host: str
    path: str
    authorization: bool


class ProxyProc:
    """`python -m proxy` (proxy.py) as a subprocess on 127.0.0.1, optionally with Basic auth."""

    def __init__(self, tmp: Path, auth: str | None = None) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.log = tmp / "requests.jsonl"
        (tmp / "inboxd_test_request_log.py").write_text(PLUGIN)
        port_file = tmp / "port"
        args = [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", "0", "--port-file",
                str(port_file), "--num-workers", "1", "--num-acceptors", "1", "--log-level", "WARNING",
                "--log-file", str(tmp / "proxy.log"), "--timeout", "30",
                "--plugins", "inboxd_test_request_log.RequestLog"]
        if auth:
            args += ["--basic-auth", auth]
        env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARS}
        env.update(PYTHONPATH=str(tmp), INBOXD_TEST_PROXY_LOG=str(self.log))
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                                     start_new_session=True)  # its own group: its workers end with it
        deadline = time.monotonic() + 20
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"proxy.py did not start: {self.proc.stderr.read() if self.proc.stderr else ''}")
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        while True:  # listening once a connection is accepted
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)

    def url(self, user: str | None = None, password: str | None = None) -> str:
        cred = f"{user}:{password}@" if user else ""
        return f"http://{cred}127.0.0.1:{self.port}"

    def seen(self) -> list[Seen]:
        """The requests the proxy forwarded (control calls to the emulator left out)."""
        if not self.log.exists():
            return []
        out = [Seen(**json.loads(line)) for line in self.log.read_text().splitlines()]
        return [s for s in out if not s.path.startswith("/v1/_emulator/")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()


@pytest.fixture
def proxy(tmp_path):
    p = ProxyProc(tmp_path / "proxy")
    yield p
    p.stop()


@pytest.fixture
def auth_proxy(tmp_path):
    p = ProxyProc(tmp_path / "auth-proxy", auth=f"{PROXY_USER}:{PROXY_PASSWORD}")
    yield p
    p.stop()


@pytest.fixture(autouse=True)
def no_ambient_proxy(monkeypatch):
    """The tests decide the proxy environment; none is inherited."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)


@contextlib.contextmanager
def environment(**values: str) -> Iterator[None]:
    """Set these variables for the block only (the emulator's control calls come after it)."""
    with pytest.MonkeyPatch.context() as mp:
        for k, v in values.items():
            mp.setenv(k, v)
        yield


def client(emu, api: dict | None = None, upload: dict | None = None) -> FilesClient:
    cfg = parse_config({"api": {"base_url": emu.base_url, "timeout_seconds": 10, "max_retries": 2, **(api or {})},
                        "upload": {"multipart_threshold": "6MiB", "part_size": "5MiB", "part_concurrency": 3,
                                   **(upload or {})}})
    return FilesClient(cfg.api, cfg.upload, KEY)


def data_file(path: Path, size: int) -> Path:
    """Exactly `size` bytes of valid JSONL (fine-tune "text" records), unique per path (no 409)."""
    line = json.dumps({"text": path.name + "-" + "x" * 200}).encode() + b"\n"
    full = size // len(line) - 1
    rest = size - full * len(line)  # >= len(line): room for one more record, padded to fit
    with open(path, "wb") as f:
        f.write(line * full + b'{"text": "' + b"y" * (rest - 13) + b'"}\n')
    assert path.stat().st_size == size
    return path


def content(emu, file_id: str) -> bytes:
    return requests.get(f"{emu.base_url}/files/{file_id}/content", headers={"Authorization": f"Bearer {KEY}"},
                        timeout=30, proxies={"http": "", "https": ""}).content


def dead_port() -> int:
    """A loopback port nothing listens on (a proxy that would refuse every connection)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --- proxies --------------------------------------------------------------------------------


def test_api_proxy_carries_api_and_storage_requests_and_storage_never_sees_the_key(tmp_path, emu, auth_proxy):
    c = client(emu, api={"proxy": auth_proxy.url(PROXY_USER, PROXY_PASSWORD)})
    small = data_file(tmp_path / "small.jsonl", 200_000)
    big = data_file(tmp_path / "big.jsonl", 13 * MIB)  # 3 parts of 5 MiB
    r1 = c.upload(small, "batch-api")
    r2 = c.upload(big, "fine-tune")
    assert (r1.method, r2.method, r2.parts) == ("single", "multipart", 3)
    seen = auth_proxy.seen()
    routes = [(s.method, s.path.split("/file-")[0].split("/mp-")[0]) for s in seen]
    assert ("POST", "/v1/files") in routes
    assert ("PUT", "/_storage/s") in routes  # the presigned PUT went through the proxy too
    assert ("POST", "/v1/files/multipart/initiate") in routes
    assert sum(1 for s in seen if s.method == "PUT" and s.path.startswith("/_storage/p/")) == 3
    # as the proxy saw them: the key on every API call, on no storage PUT
    assert all(s.authorization for s in seen if s.path.startswith("/v1/")), seen
    assert not any(s.authorization for s in seen if s.path.startswith("/_storage/")), seen
    stats = emu.stats()
    assert stats["storage_auth_headers"] == 0
    assert content(emu, r2.file.id) == big.read_bytes()
    assert content(emu, r1.file.id) == small.read_bytes()


def test_a_storage_host_elsewhere_goes_through_the_proxy_without_the_key(tmp_path, emu, proxy):
    """The presigned url names another host (127.0.0.2): it is proxied like the API, keyless."""
    emu.script([{"route": "create", "hostile": "other_host_location"}])
    with pytest.raises(RejectedError):  # the other host took the bytes; the API has none: preprocess refuses
        client(emu, api={"proxy": proxy.url()}).upload(data_file(tmp_path / "a.jsonl", 5000), "batch-api")
    seen = proxy.seen()
    assert [(s.method, s.host) for s in seen if s.method == "PUT"] == [("PUT", "127.0.0.2")], seen
    assert ("POST", "/v1/files") in [(s.method, s.path) for s in seen]
    assert emu.stats()["other_host"] == {"requests": 1, "auth_headers": 0}


def test_environment_proxy_is_used_when_the_config_names_none(tmp_path, emu, proxy):
    f = data_file(tmp_path / "env.jsonl", 100_000)
    with environment(HTTP_PROXY=proxy.url(), HTTPS_PROXY=f"http://127.0.0.1:{dead_port()}"):
        r = client(emu).upload(f, "batch-api")
    paths = [(s.method, s.path.split("/file-")[0]) for s in proxy.seen()]
    assert ("POST", "/v1/files") in paths and ("PUT", "/_storage/s") in paths
    assert content(emu, r.file.id) == f.read_bytes()


def test_the_config_proxy_wins_over_the_environment(tmp_path, emu, proxy):
    f = data_file(tmp_path / "win.jsonl", 100_000)
    g = data_file(tmp_path / "direct.jsonl", 100_000)
    dead = f"http://127.0.0.1:{dead_port()}"
    with environment(HTTP_PROXY=dead, http_proxy=dead, ALL_PROXY=dead):
        client(emu, api={"proxy": proxy.url()}).upload(f, "batch-api")  # not the dead one
        n = len(proxy.seen())
        client(emu, api={"proxy": ""}).upload(g, "batch-api")  # "": direct, the environment ignored
    assert n >= 3 and len(proxy.seen()) == n


def test_no_proxy_is_respected_per_host(tmp_path, emu, proxy):
    """NO_PROXY names the API's host: the API calls go direct, while a presigned url on another
    host (127.0.0.2) still goes through HTTP_PROXY. Decided per request url, not once."""
    f = data_file(tmp_path / "np.jsonl", 100_000)
    with environment(HTTP_PROXY=proxy.url(), NO_PROXY="localhost,127.0.0.1"):
        r = client(emu).upload(f, "batch-api")
    assert proxy.seen() == []
    assert content(emu, r.file.id) == f.read_bytes()
    emu.script([{"route": "create", "hostile": "other_host_location"}])
    with environment(HTTP_PROXY=proxy.url(), NO_PROXY="localhost,127.0.0.1"), pytest.raises(RejectedError):
        client(emu).upload(data_file(tmp_path / "other.jsonl", 5000), "batch-api")
    seen = proxy.seen()
    assert [(s.method, s.host) for s in seen] == [("PUT", "127.0.0.2")], seen
    assert emu.stats()["other_host"] == {"requests": 1, "auth_headers": 0}


def run_inboxd(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("TOGETHER_") and k.lower() not in PROXY_VARS and k != "CREDENTIALS_DIRECTORY"}
    return subprocess.run([sys.executable, "-m", "inboxd", *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env={**base, **(env or {})})


def test_config_check_shows_the_proxy_with_its_password_redacted(tmp_path):
    secret = "hunter2-pr0xy-s3cret"
    path = tmp_path / "c.toml"
    daemon = f'[daemon]\nstate_dir = "{tmp_path}"\n'
    path.write_text('[api]\nbase_url = "http://127.0.0.1:9/v1"\n'
                    f'proxy = "http://user:{secret}@proxy:3128"\n'
                    '[upload]\nmax_bytes_per_second = "10MiB"\n' + daemon)
    text = run_inboxd(["config", "check", "--config", str(path)], env={"TOGETHER_API_KEY": KEY})
    assert text.returncode == 0, text.stderr
    assert secret not in text.stdout + text.stderr
    assert 'proxy = "http://user:***@proxy:3128"' in text.stdout
    assert '# proxy_source = "api.proxy"' in text.stdout
    assert 'max_bytes_per_second = "10MiB"' in text.stdout
    as_json = run_inboxd(["config", "check", "--config", str(path), "--json"])
    data = json.loads(as_json.stdout)
    assert secret not in as_json.stdout + as_json.stderr
    assert data["api"]["proxy"] == data["resolved"]["proxy"] == "http://user:***@proxy:3128"

    # from the environment: the variable is named, the password redacted, NO_PROXY shown
    path.write_text('[api]\nbase_url = "http://127.0.0.1:9/v1"\n' + daemon)
    env = run_inboxd(["config", "check", "--config", str(path), "--json"],
                     env={"HTTP_PROXY": f"http://envuser:{secret}@corp-proxy:8080", "NO_PROXY": "example.org"})
    resolved = json.loads(env.stdout)["resolved"]
    assert secret not in env.stdout + env.stderr
    assert resolved["proxy"] == "http://envuser:***@corp-proxy:8080"
    assert resolved["proxy_source"] == "environment variable HTTP_PROXY"
    assert resolved["no_proxy"] == "example.org"
    excluded = run_inboxd(["config", "check", "--config", str(path), "--json"],
                          env={"HTTP_PROXY": f"http://envuser:{secret}@corp-proxy:8080", "NO_PROXY": "127.0.0.1"})
    resolved = json.loads(excluded.stdout)["resolved"]
    assert resolved["proxy"] is None and "NO_PROXY" in resolved["proxy_source"]

    # a bad proxy url is an error that names the key and never echoes the password
    path.write_text(f'[api]\nproxy = "socks9://user:{secret}@proxy:1080"\n')
    bad = run_inboxd(["config", "check", "--config", str(path)])
    assert bad.returncode == 2 and "api.proxy" in bad.stderr and secret not in bad.stdout + bad.stderr

    # the CA bundle: the config wins over the environment, and must exist
    ca = tmp_path / "corp-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    path.write_text(f'[api]\nca_bundle = "{ca}"\n' + daemon)
    got = json.loads(run_inboxd(["config", "check", "--config", str(path), "--json"],
                                env={"REQUESTS_CA_BUNDLE": str(tmp_path / "env-ca.pem")}).stdout)["resolved"]
    assert (got["ca_bundle"], got["ca_bundle_source"]) == (str(ca), "api.ca_bundle")
    path.write_text("[api]\n" + daemon)
    got = json.loads(run_inboxd(["config", "check", "--config", str(path), "--json"],
                                env={"REQUESTS_CA_BUNDLE": str(ca), "SSL_CERT_FILE": "/nonexistent"}).stdout)
    assert (got["resolved"]["ca_bundle"], got["resolved"]["ca_bundle_source"]) == (
        str(ca), "environment variable REQUESTS_CA_BUNDLE")
    path.write_text(f'[api]\nca_bundle = "{tmp_path / "missing.pem"}"\n')
    missing = run_inboxd(["config", "check", "--config", str(path)])
    assert missing.returncode == 2 and "api.ca_bundle" in missing.stderr


def test_a_refusing_proxy_is_a_configuration_error_and_its_password_is_never_printed(tmp_path, emu, auth_proxy):
    f = data_file(tmp_path / "cli.jsonl", 50_000)
    cfg = tmp_path / "c.toml"
    wrong = PROXY_PASSWORD + "-wrong"
    for password, code in ((wrong, 1), (PROXY_PASSWORD, 0)):
        cfg.write_text(f'[api]\nbase_url = "{emu.base_url}"\nmax_retries = 1\n'
                       f'proxy = "{auth_proxy.url(PROXY_USER, password)}"\n')
        out = run_inboxd(["upload", str(f), "--purpose", "fine-tune", "--config", str(cfg)],
                         env={"TOGETHER_API_KEY": KEY})
        assert out.returncode == code, out.stderr
        assert PROXY_PASSWORD not in out.stdout + out.stderr and KEY not in out.stdout + out.stderr
        if code:
            assert "407" in out.stderr and "(auth)" in out.stderr and "Traceback" not in out.stderr


def test_proxy_passwords_are_handed_to_the_log_redaction(emu, monkeypatch):
    """Whatever a log line holds (the url, the decoded password, the Basic header), never the password."""
    import base64

    from inboxd.log import redact_text

    config_pw, env_pw = "c0nfig-pr0xy-p@ss", "env-pr0xy-pw-77"
    monkeypatch.setenv("HTTPS_PROXY", f"http://envuser:{env_pw}@corp-proxy:8080")
    client(emu, api={"proxy": "http://cfguser:c0nfig-pr0xy-p%40ss@127.0.0.1:3128"}).close()
    basic = base64.b64encode(f"cfguser:{config_pw}".encode()).decode()
    line = (f"proxy http://cfguser:c0nfig-pr0xy-p%40ss@127.0.0.1:3128 pw={config_pw} "
            f"Proxy-Authorization: Basic {basic} env={env_pw}")
    out = redact_text(line)
    for secret in (config_pw, "c0nfig-pr0xy-p%40ss", basic, env_pw):
        assert secret not in out, out


# --- bandwidth ------------------------------------------------------------------------------


def timed_upload(c: FilesClient, path: Path, **kw) -> float:
    t0 = time.monotonic()
    c.upload(path, "batch-api", **kw)
    return time.monotonic() - t0


def test_a_3_mb_upload_at_1_mb_per_second_takes_3_seconds(tmp_path, emu):
    f = data_file(tmp_path / "capped.jsonl", 3_000_000)
    seconds = timed_upload(client(emu, upload={"max_bytes_per_second": 1_000_000}), f)
    assert 2.7 <= seconds <= 3.6, seconds
    fast = timed_upload(client(emu), data_file(tmp_path / "free.jsonl", 3_000_000))
    assert fast < 1.5, fast  # the same upload without the cap: the cap is what took the time


def test_the_per_upload_limiter_is_charged_under_the_clients_cap(tmp_path, emu):
    """An inbox's own bucket (passed per call) binds when it is the slower of the two."""
    c = client(emu, upload={"max_bytes_per_second": "8MB"})
    seconds = timed_upload(c, data_file(tmp_path / "inbox.jsonl", 3_000_000), limiter=Bandwidth(1_000_000))
    assert 2.7 <= seconds <= 3.6, seconds


def test_one_bucket_is_shared_by_concurrent_uploads_and_parts(tmp_path, emu):
    """Two uploads at once, one of them multipart with 3 parts in flight: 12 MB through one
    bucket of 4 MB/s takes 3 s (a bucket per upload or per part would take about 1.5 s)."""
    c = client(emu, upload={"max_bytes_per_second": "4MB", "multipart_threshold": "6MiB", "part_size": "5MiB"})
    files = [data_file(tmp_path / "multi.jsonl", 9_000_000), data_file(tmp_path / "single.jsonl", 3_000_000)]
    results: list[object] = []
    t0 = time.monotonic()
    threads = [threading.Thread(target=lambda p=p: results.append(c.upload(p, "batch-api"))) for p in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    seconds = time.monotonic() - t0
    assert len(results) == 2 and sorted(r.method for r in results) == ["multipart", "single"]
    assert 2.7 <= seconds <= 3.6, seconds
    assert content(emu, results[0].file.id) in (files[0].read_bytes(), files[1].read_bytes())


def test_the_bucket_holds_its_rate_across_threads():
    """Eight threads charging 64 KiB at a time for 2 s: within 5 % of the rate."""
    rate = 2_000_000
    bucket = Bandwidth(rate)
    stop = time.monotonic() + 2.0
    sent = [0] * 8

    def worker(i: int) -> None:
        while time.monotonic() < stop:
            bucket.take(65536)
            sent[i] += 65536

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    achieved = sum(sent) / (time.monotonic() - t0)
    assert abs(achieved - rate) / rate < 0.05, achieved
    assert min(sent) > 0  # every thread got a share


def test_cancel_ends_a_wait_for_bandwidth(tmp_path, emu):
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    c = client(emu, upload={"max_bytes_per_second": "100KB"})
    t0 = time.monotonic()
    with pytest.raises(Cancelled):
        c.upload(data_file(tmp_path / "slow.jsonl", 3_000_000), "batch-api", cancel=cancel)
    assert time.monotonic() - t0 < 3
    c.close()
