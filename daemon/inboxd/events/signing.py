"""Standard Webhooks signing: ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``
keyed with the base64-decoded part of a ``whsec_`` secret.

The secret is handled like the API key: read from `secret_file` or `secret_env` at start (and
at a reload), handed to `inboxd.log.register_secret` (the whole ``whsec_`` text and its base64
part) so no log line can carry it, and kept in memory only, never in the journal, a sidecar,
`status` or an exception's message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from collections.abc import Mapping

from ..config import ConfigError, EventSinkConfig
from ..log import register_secret

PREFIX = "whsec_"


class Secret:
    """The decoded key of one sink; its repr never shows it."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return "Secret('**********')"

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> str:
        digest = hmac.new(self._key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
        return "v1," + base64.b64encode(digest).decode("ascii")


def parse_secret(text: str, where: str) -> Secret:
    """A ``whsec_<base64>`` secret (the prefix may be left out, as the reference libraries allow)."""
    text = text.strip()
    register_secret(text)
    raw = text[len(PREFIX):] if text.startswith(PREFIX) else text
    register_secret(raw)
    try:
        key = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{where}: expected a Standard Webhooks secret (whsec_ and base64); "
                          "it is not base64") from None
    if len(key) < 16:
        raise ConfigError(f"{where}: the secret is too short (expected at least 16 bytes once decoded; "
                          "the specification recommends 24 to 64)")
    return Secret(key)


def read_secret(sink: EventSinkConfig, env: Mapping[str, str] | None = None) -> Secret:
    """The secret of a webhook sink, from its `secret_file` or `secret_env`; ConfigError naming
    the key (never the value) when it cannot be read."""
    env = os.environ if env is None else env
    if sink.secret_file is not None:
        where = f"events ({sink.label}).secret_file {sink.secret_file}"
        try:
            text = sink.secret_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: cannot read it: {getattr(exc, 'strerror', None) or 'not UTF-8'}") from None
    elif sink.secret_env is not None:
        where = f"events ({sink.label}).secret_env {sink.secret_env}"
        text = env.get(sink.secret_env, "")
        if not text.strip():
            raise ConfigError(f"{where}: the variable is not set or empty")
    else:
        raise ConfigError(f"events ({sink.label}): a webhook needs secret_file or secret_env")
    return parse_secret(text, where)
