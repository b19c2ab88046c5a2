"""What every command needs: the usage error (exit 2), the configuration, the key."""

from __future__ import annotations

import argparse
from typing import NoReturn, TypeAlias

from pydantic import SecretStr

from ..config import Config, ConfigError, config_from_env, load_config, resolve_api_key

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class UsageError(Exception):
    """Bad arguments or configuration: exit 2 with the message."""


def fail_usage(message: str) -> NoReturn:
    raise UsageError(message)


def config_of(args: argparse.Namespace) -> Config:
    """--config PATH, or the defaults and the environment without one."""
    try:
        if getattr(args, "config", None):
            return load_config(args.config)
        return config_from_env()
    except ConfigError as exc:
        fail_usage(str(exc))


def config_and_key(args: argparse.Namespace) -> tuple[Config, SecretStr]:
    config = config_of(args)
    try:
        key, _ = resolve_api_key(config.api)
    except ConfigError as exc:
        fail_usage(str(exc))
    return config, key
