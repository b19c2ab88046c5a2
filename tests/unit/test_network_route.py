"""Where requests go (`api._network`): the proxy (api.proxy over the environment, NO_PROXY
honoured, "" meaning direct), the CA bundle (api.ca_bundle over REQUESTS_CA_BUNDLE /
SSL_CERT_FILE, a missing file skipped and said), what `config check` shows of them, and a
proxy's password never shown (``user:***``) and handed to the log redaction in every form it
can take on a line."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from inboxd.api import redact_proxy, resolve_network
from inboxd.api._network import protect_proxy
from inboxd.config import parse_config
from inboxd.log import REDACTED, redact_text

URL = "https://api.together.xyz/v1/files"


def api(**keys: object):  # type: ignore[no-untyped-def]
    return parse_config({"api": keys, "inboxes": []}).api


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy",
                "NO_PROXY", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "REQUEST_METHOD"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_a_proxy_url_is_shown_without_its_password() -> None:
    assert redact_proxy("http://bob:pa55@proxy:3128") == "http://bob:***@proxy:3128"
    assert redact_proxy("bob:pa55@proxy:3128") == "bob:***@proxy:3128"
    assert redact_proxy("http://bob@proxy:3128") == "http://bob@proxy:3128"
    assert redact_proxy("http://proxy:3128") == "http://proxy:3128"
    assert redact_proxy("") == "" and redact_proxy(None) is None


def test_a_proxy_password_is_redacted_as_written_decoded_and_in_a_basic_header() -> None:
    protect_proxy("http://carol:s%40fe-Pw0rd@proxy:3128")
    assert redact_text("pw s%40fe-Pw0rd") == f"pw {REDACTED}"
    assert redact_text("pw s@fe-Pw0rd") == f"pw {REDACTED}"
    header = base64.b64encode(b"carol:s@fe-Pw0rd").decode()
    assert header not in redact_text(f"sent {header} upstream")
    protect_proxy(None)
    protect_proxy("http://proxy-without-user:3128")
    protect_proxy("http://[bad")  # not a url: nothing to protect, nothing raised


def test_the_configured_proxy_wins_over_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("HTTPS_PROXY", "http://env-proxy:8080")
    net = resolve_network(api(proxy="http://dave:pw123456@conf-proxy:3128"))
    assert net.proxies_for(URL) == {"all": "http://dave:pw123456@conf-proxy:3128"}
    assert net.proxy_source == "api.proxy"
    shown = net.describe(URL)
    assert shown["proxy"] == "http://dave:***@conf-proxy:3128" and shown["proxy_source"] == "api.proxy"
    assert "no_proxy" not in shown
    direct = resolve_network(api(proxy=""))
    assert direct.proxies_for(URL) == {} and direct.proxy_for(URL) is None
    assert direct.describe(URL)["proxy_source"].startswith('api.proxy = "" (direct')


def test_the_environments_proxy_and_no_proxy(clean_env: pytest.MonkeyPatch) -> None:
    net = resolve_network(api())
    assert net.proxy_source == "environment" and net.proxy_for(URL) is None
    assert net.describe(URL)["proxy_source"] == "none (no api.proxy; no https_proxy or all_proxy in the environment)"
    clean_env.setenv("HTTPS_PROXY", "http://erin:topsecret1@env-proxy:8080")
    assert net.proxy_for(URL) == "http://erin:topsecret1@env-proxy:8080"
    shown = net.describe(URL)
    assert shown["proxy"] == "http://erin:***@env-proxy:8080"
    assert shown["proxy_source"] == "environment variable HTTPS_PROXY" and shown["no_proxy"] is None
    clean_env.setenv("https_proxy", "http://lower:8080")  # lower case first, as curl
    assert net.proxy_for(URL) == "http://lower:8080"
    assert net.describe(URL)["proxy_source"] == "environment variable https_proxy"
    clean_env.setenv("NO_PROXY", ".together.xyz")
    assert net.proxy_for(URL) is None
    shown = net.describe(URL)
    assert shown["proxy_source"] == "none (https_proxy is set but NO_PROXY=.together.xyz excludes the host)"
    assert shown["no_proxy"] == ".together.xyz"


def test_the_ca_bundle_from_the_config_the_environment_or_certifi(clean_env: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    assert resolve_network(api(ca_bundle=str(bundle))).verify == str(bundle)
    net = resolve_network(api(), {"REQUESTS_CA_BUNDLE": str(tmp_path / "gone.pem"), "SSL_CERT_FILE": str(bundle)})
    assert net.verify == str(bundle)
    assert net.ca_source == (f"environment variable SSL_CERT_FILE (REQUESTS_CA_BUNDLE={tmp_path / 'gone.pem'} "
                             "does not exist: ignored)")
    default = resolve_network(api(), {})
    assert default.verify is True and default.ca_source == "certifi (the default)"
    assert default.describe(URL)["ca_bundle"].endswith(".pem")  # certifi's file
    skipped = resolve_network(api(), {"SSL_CERT_FILE": "/nonexistent.pem"})
    assert skipped.verify is True and "SSL_CERT_FILE=/nonexistent.pem does not exist: ignored" in skipped.ca_source
