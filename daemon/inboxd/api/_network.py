"""Where requests go: proxies and CAs (`Network`, from `resolve_network`).

``api.proxy`` wins over the environment, ``api.ca_bundle`` over ``REQUESTS_CA_BUNDLE`` /
``SSL_CERT_FILE``, else certifi. The sessions keep ``trust_env = False`` (so ~/.netrc never
lends credentials to any host); the environment's proxies are resolved here per request url
with requests' own `get_environ_proxies` (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY, lower
case first as curl does), and the CA goes into ``session.verify``. A proxy's password is
handed to the log redaction at once and only ever shown as ``user:***``.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import requests
import requests.adapters
import requests.utils

from ..config import ApiConfig
from ..log import register_secret

PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
CA_ENV = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")


def redact_proxy(url: str | None) -> str | None:
    """A proxy url fit to show: the password replaced by ``***`` (``http://user:***@proxy:3128``)."""
    if not url:
        return url
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.password is None and parts.username is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    shown = f"{user}:***@{host}" if parts.password is not None else f"{user}@{host}"
    return url.replace(parts.netloc, shown, 1) if "://" in url else shown


def protect_proxy(url: str | None) -> None:
    """Hand a proxy's password (as written, decoded, and as the Basic header carries it) to the
    log redaction, so that no log line can ever show it."""
    if not url:
        return
    try:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        password = parts.password
    except ValueError:
        return
    if password is None:
        return
    user = unquote(parts.username or "")
    for value in {password, unquote(password)}:
        register_secret(value)
    register_secret(base64.b64encode(f"{user}:{unquote(password)}".encode()).decode())


def _env_proxy_var(scheme: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """(variable name, value) of the environment's proxy for a url scheme, lower case first."""
    for name in (f"{scheme}_proxy", "all_proxy"):
        for var in (name, name.upper()):
            if env.get(var):
                return var, env[var]
    return None


@dataclass(frozen=True)
class Network:
    """The route to the API and storage hosts: which proxy, which CAs, and where each came from."""

    proxy: str | None  # api.proxy: a url, "" (direct, the environment ignored), or None (the environment)
    verify: str | bool  # a CA bundle path, or True (certifi)
    ca_source: str

    @property
    def proxy_source(self) -> str:
        if self.proxy is None:
            return "environment"
        return "api.proxy" if self.proxy else "api.proxy (\"\": direct, the environment ignored)"

    def proxies_for(self, url: str) -> dict[str, str]:
        """The `proxies` argument of one request to `url`."""
        if self.proxy is not None:
            return {"all": self.proxy} if self.proxy else {}
        # the live environment, as requests reads it with trust_env (NO_PROXY included), minus netrc
        return _environ_proxies(url)

    def proxy_for(self, url: str) -> str | None:
        return requests.utils.select_proxy(url, self.proxies_for(url))

    def describe(self, url: str) -> dict[str, Any]:
        """What `inboxd config check` shows: the effective proxy for `url` (redacted), and where it
        came from; the CA bundle, and where it came from. Reads the live environment, as requests do."""
        env = os.environ
        chosen = self.proxy_for(url)
        if self.proxy is not None:
            source = self.proxy_source if chosen else "api.proxy = \"\" (direct; the environment is ignored)"
        else:
            scheme = urlsplit(url).scheme
            var = _env_proxy_var(scheme, env)
            no_proxy = env.get("no_proxy") or env.get("NO_PROXY")
            if var is None:
                source = f"none (no api.proxy; no {scheme}_proxy or all_proxy in the environment)"
            elif not chosen:
                source = f"none ({var[0]} is set but NO_PROXY={no_proxy} excludes the host)"
            else:
                source = f"environment variable {var[0]}"
        out: dict[str, Any] = {"proxy": redact_proxy(chosen) or None, "proxy_source": source}
        if self.proxy is None:
            out["no_proxy"] = env.get("no_proxy") or env.get("NO_PROXY") or None
        out["ca_bundle"] = self.verify if isinstance(self.verify, str) else _certifi_where()
        out["ca_bundle_source"] = self.ca_source
        return out


# The variables that decide the proxy of an http(s) url (urllib's getproxies_environment and
# proxy_bypass_environment, as requests calls them); REQUEST_METHOD makes urllib ignore HTTP_PROXY.
_PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy",
               "NO_PROXY", "REQUEST_METHOD")
_environ_cache: dict[tuple[Any, ...], dict[str, str]] = {}


def _environ_proxies(url: str) -> dict[str, str]:
    """`requests.utils.get_environ_proxies(url)`, remembered per origin and per value of the
    variables that decide it: still the live environment (a changed variable is a new key), but
    without walking and decoding all of os.environ for every request (a tenth of a worker's
    CPU in a burst of small files). Only http(s) urls come here; for them the other *_proxy
    variables (ftp_proxy ...) never matter."""
    parts = urlsplit(url)
    env = os.environ
    key = (parts.scheme, parts.netloc, *(env.get(v) for v in _PROXY_VARS))
    found = _environ_cache.get(key)
    if found is None:
        if len(_environ_cache) >= 256:
            _environ_cache.clear()
        found = _environ_cache[key] = requests.utils.get_environ_proxies(url)
    return dict(found)


def _certifi_where() -> str | None:
    try:
        import certifi

        return str(certifi.where())
    except ImportError:  # pragma: no cover - requests depends on certifi
        return None


def resolve_network(api: ApiConfig, env: Mapping[str, str] | None = None) -> Network:
    """The proxy and CA of `api` (the configuration wins) else of the environment.

    A CA variable naming a file that does not exist is skipped (and said so in the source):
    the environment is ambient, the configuration deliberate (``api.ca_bundle`` must exist)."""
    env = os.environ if env is None else env
    proxy = api.proxy.get_secret_value() if api.proxy is not None else None
    verify: str | bool = True
    ca_source = "certifi (the default)"
    skipped: list[str] = []
    if api.ca_bundle is not None:
        verify, ca_source = str(api.ca_bundle), "api.ca_bundle"
    else:
        for var in CA_ENV:
            value = env.get(var)
            if not value:
                continue
            if Path(value).exists():
                verify, ca_source = value, f"environment variable {var}"
                break
            skipped.append(f"{var}={value} does not exist")
        if skipped:
            ca_source += f" ({'; '.join(skipped)}: ignored)"
    return Network(proxy=proxy, verify=verify, ca_source=ca_source)
