"""What every command needs: the usage error (exit 2), the configuration, the key."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn, TypeAlias

from pydantic import SecretStr

from ..config import Config, ConfigError, config_from_env, load_config, resolve_api_key

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class UsageError(Exception):
    """Bad arguments or configuration: exit 2 with the message (and with --json, `main`
    prints ``{"error": {"kind": "usage", "message": ..., **fields}}`` unless `answered`)."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.fields = fields
        self.answered = False


def fail_usage(message: str, **fields: Any) -> NoReturn:
    raise UsageError(message, **fields)


def add_verbosity(p: argparse.ArgumentParser) -> None:
    """-v / -q of a one-shot command: its log lines on stderr (default: warnings and each retry)."""
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="more on stderr: -v every info line, -vv debug")
    p.add_argument("-q", "--quiet", action="count", default=0, help="less on stderr: -q errors only, no retry lines")


def config_of(args: argparse.Namespace) -> Config:
    """--config PATH, or the defaults and the environment without one."""
    try:
        if getattr(args, "config", None):
            return load_config(args.config)
        return config_from_env()
    except ConfigError as exc:
        fail_usage(str(exc), stage="config")


def config_and_key(args: argparse.Namespace) -> tuple[Config, SecretStr]:
    config = config_of(args)
    try:
        key, _ = resolve_api_key(config.api)
    except ConfigError as exc:
        fail_usage(str(exc), stage="config")
    return config, key
