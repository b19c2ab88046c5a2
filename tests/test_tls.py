"""TLS (issue 13): the emulator runs with `--tls` (a throwaway CA and a certificate for
127.0.0.1 and localhost, made at start; its CA file is the second stdout line, `emu.ca_path`),
and the daemon and `inboxd upload` run as real processes against it over HTTPS:

- with `api.ca_bundle` naming the emulator's CA, the daemon uploads and leaves a manifest;
- without the CA (and with REQUESTS_CA_BUNDLE / SSL_CERT_FILE unset), nothing reaches the
  server and the upload is refused;
- with REQUESTS_CA_BUNDLE (or SSL_CERT_FILE) in the environment instead of the key, it works;
- through a real CONNECT proxy on loopback (proxy.py, as in tests/test_network.py) with
  `api.proxy`: the proxy saw a CONNECT for the API's host and one for the storage host, and
  the key never reached the storage host.

The API is addressed as https://localhost:PORT/v1 in the proxy test while the emulator hands
out presigned urls on its own origin, https://127.0.0.1:PORT: two host names, so the proxy's
CONNECT lines show the API and the storage host apart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.helpers.daemon import REPO, start_daemon, write_config
from tests.test_network import ProxyProc

pytestmark = pytest.mark.emulator(tls=True, no_dedupe=True)

MIB = 2**20
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
CA_VARS = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """The tests decide which proxy and which CA the processes they start see: none inherited."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
        monkeypatch.delenv(var.upper(), raising=False)
    for var in CA_VARS:
        monkeypatch.delenv(var, raising=False)


def data_file(path: Path, size: int) -> Path:
    """About `size` bytes of fine-tune JSONL, unique per path."""
    line = json.dumps({"text": path.name + "-" + "x" * 200}).encode() + b"\n"
    path.write_bytes(line * max(1, size // len(line)))
    return path


def manifests(inbox: Path) -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted((inbox / "done").glob("*.manifest.json"))}


def inboxd(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("TOGETHER_") and k not in ("CREDENTIALS_DIRECTORY", "STATE_DIRECTORY", "NOTIFY_SOCKET")}
    return subprocess.run([sys.executable, "-m", "inboxd", *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env={**base, **env})


def json_answer(out: subprocess.CompletedProcess[str]) -> dict:
    """The JSON object `inboxd upload --json` printed. It starts at the first line that opens
    one: today a retry prints an `api.retry` log line on stdout before it (see the report)."""
    lines = out.stdout.splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith("{"))
    return json.loads("".join(lines[start:]))


def daemon_config(tmp_path: Path, emu, inbox: Path, base_url: str | None = None, **api: object) -> Path:
    return write_config(tmp_path, base_url=base_url or emu.base_url, api=api,
                        upload={"multipart_threshold": "6MiB", "part_size": "5MiB"},
                        inboxes=[{"path": str(inbox), "purpose": "fine-tune", "validate": "basic"}])


@pytest.fixture
def inbox(tmp_path) -> Path:
    p = tmp_path / "inbox" / "fine-tune"
    p.mkdir(parents=True)
    return p


def server_files(emu) -> dict[str, dict]:
    return {f["id"]: f for f in emu.stats()["files"]}


# --- api.ca_bundle --------------------------------------------------------------------------


def test_the_daemon_uploads_over_https_with_api_ca_bundle(tmp_path, emu, inbox):
    assert emu.base_url.startswith("https://127.0.0.1:") and emu.ca_path.is_file()
    f = data_file(inbox / "tls.jsonl", 100_000)
    body = f.read_bytes()
    with start_daemon(daemon_config(tmp_path, emu, inbox, ca_bundle=str(emu.ca_path)), key=emu.key) as d:
        d.wait_event("file.archived", name="tls.jsonl", timeout=30)
    m = manifests(inbox)["tls.jsonl.manifest.json"]
    assert m["upload"]["method"] == "single"
    assert emu.content(m["file"]["id"]) == body  # the server has the bytes, over HTTPS
    stats = emu.stats()
    assert stats["requests"].get("put") == 1 and stats["storage_auth_headers"] == 0


# --- no CA ----------------------------------------------------------------------------------


def test_without_the_ca_the_upload_is_refused_and_nothing_reaches_the_server(tmp_path, emu, inbox):
    """certifi does not know the emulator's CA: the TLS handshake fails before any request.
    `inboxd upload` exits 1 with a message; the daemon keeps the file (claimed, not failed) and
    pauses uploads, as for a refused key: a wrong CA does not heal by retrying."""
    f = data_file(tmp_path / "no-ca.jsonl", 5_000)
    out = inboxd(["upload", str(f), "--purpose", "fine-tune", "--json"],
                 env={"TOGETHER_API_KEY": emu.key, "TOGETHER_BASE_URL": emu.base_url})
    assert out.returncode == 1, (out.stdout, out.stderr)
    err = json_answer(out)["error"]
    assert "could not be verified" in err["message"] and "api.ca_bundle" in err["message"], err
    assert "Traceback" not in out.stderr and emu.key not in out.stdout + out.stderr

    data_file(inbox / "held.jsonl", 5_000)
    with start_daemon(daemon_config(tmp_path, emu, inbox), key=emu.key) as d:
        paused = d.wait_event("uploads.paused", timeout=30)[0]
        assert "could not be verified" in paused["reason"], paused
        assert not d.events("file.retry")
        assert d.events("file.archived") == []
    assert manifests(inbox) == {} and list((inbox / "failed").iterdir()) == []
    assert [p.name for p in inbox.rglob("*held.jsonl")], "the file is kept (claimed) for a later try"
    stats = emu.stats()
    assert stats["files"] == [] and stats["requests"] == {}, stats  # not one request got through


def test_without_the_ca_the_error_says_the_certificate_could_not_be_verified(tmp_path, emu):
    f = data_file(tmp_path / "no-ca.jsonl", 5_000)
    out = inboxd(["upload", str(f), "--purpose", "fine-tune", "--json", "--config",
                  str(write_config(tmp_path, base_url=emu.base_url, inboxes=[], api={"max_retries": 5}))],
                 env={"TOGETHER_API_KEY": emu.key})
    err = json_answer(out)["error"]
    assert out.returncode == 1
    assert "certificate" in err["message"].lower() and "verif" in err["message"].lower(), err
    assert err["kind"] != "transient", err  # a wrong CA does not heal by retrying


# --- the environment's CA -------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
def test_the_environments_ca_bundle_is_used_when_the_config_names_none(tmp_path, emu, variable):
    f = data_file(tmp_path / f"{variable}.jsonl", 50_000)
    out = inboxd(["upload", str(f), "--purpose", "fine-tune", "--json"],
                 env={"TOGETHER_API_KEY": emu.key, "TOGETHER_BASE_URL": emu.base_url, variable: str(emu.ca_path)})
    assert out.returncode == 0, (out.stdout, out.stderr)
    file_id = json_answer(out)["id"]
    assert emu.content(file_id) == f.read_bytes()


# --- through a CONNECT proxy ----------------------------------------------------------------


@pytest.fixture
def proxy(tmp_path):
    p = ProxyProc(tmp_path / "proxy")
    yield p
    p.stop()


def test_the_daemon_uploads_through_a_connect_proxy_and_the_key_never_reaches_storage(tmp_path, emu, inbox,
                                                                                       proxy):
    port = urlsplit(emu.base_url).port
    api_url = f"https://localhost:{port}/v1"  # the API by name; the storage urls say 127.0.0.1
    small = data_file(inbox / "small.jsonl", 100_000)
    big = data_file(inbox / "big.jsonl", 11 * MIB)  # 3 parts of 5 MiB at most
    bodies = {"small.jsonl": small.read_bytes(), "big.jsonl": big.read_bytes()}
    cfg = daemon_config(tmp_path, emu, inbox, base_url=api_url, ca_bundle=str(emu.ca_path), proxy=proxy.url())
    with start_daemon(cfg, key=emu.key) as d:
        d.wait_event("file.archived", name="small.jsonl", timeout=60)
        d.wait_event("file.archived", name="big.jsonl", timeout=60)
    ms = manifests(inbox)
    assert ms["big.jsonl.manifest.json"]["upload"]["method"] == "multipart"
    for name, body in bodies.items():
        assert emu.content(ms[f"{name}.manifest.json"]["file"]["id"]) == body

    seen = proxy.seen()
    connects = {s.host for s in seen if s.method == "CONNECT"}
    assert connects == {"localhost", "127.0.0.1"}, seen  # the API's host and the storage host
    assert all(s.method == "CONNECT" for s in seen), seen  # HTTPS: the proxy only ever saw tunnels
    assert not any(s.authorization for s in seen), seen  # the key is inside the tunnel, not on CONNECT
    stats = emu.stats()
    assert stats["requests"].get("put") == 1 and stats["requests"].get("part_put") == 3, stats["requests"]
    assert stats["storage_auth_headers"] == 0  # storage PUTs, through the proxy, never carried the key
