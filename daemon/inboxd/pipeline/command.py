"""`inboxd run` and `inboxd status` (called by `cli.py`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import structlog
from pydantic import SecretStr

from ..config import Config, ConfigError, resolve_api_key
from ..log import configure, register_secret

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def run_command(config: Config, config_path: Path, *, emulator: bool, once: bool) -> int:
    configure(config.daemon.log_level, config.daemon.log_format)
    log = structlog.get_logger("inboxd.daemon")
    if not config.inboxes:
        print("inboxd run: the configuration has no [[inboxes]]", file=sys.stderr)
        return EXIT_USAGE
    emu = None
    if emulator:
        from ..emulator import Emulator, EmulatorSettings

        emu = Emulator(EmulatorSettings(host="127.0.0.1", port=0))
        emu.start()
        base_url, emu_key = emu.base_url, SecretStr(emu.key)

        def adjust(c: Config) -> Config:
            return c.model_copy(update={"api": c.api.model_copy(update={"base_url": base_url})})

        def resolve(_c: Config) -> tuple[SecretStr, str]:
            return emu_key, "the embedded emulator"

        log.info("emulator.started", base_url=base_url)
    else:
        def adjust(c: Config) -> Config:
            return c

        def resolve(c: Config) -> tuple[SecretStr, str]:
            return resolve_api_key(c.api)

    try:
        config = adjust(config)
        key, source = resolve(config)
    except ConfigError as exc:
        print(f"inboxd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    register_secret(key.get_secret_value())
    log.info("api.key", source=source)

    from .daemon import Daemon
    from .hooks import make_service

    service = make_service(config)

    def make_client(c: Config, k: SecretStr) -> Any:
        from ..api import FilesClient

        return FilesClient(c.api, c.upload, k, observer=service.api_event)

    try:
        daemon = Daemon(config, config_path, key, once=once, make_client=make_client,
                        resolve_key=resolve, adjust_config=adjust, service=service)
        daemon.install_signals()
        return daemon.run()
    except OSError as exc:
        log.critical("daemon.unusable", error=str(exc))
        return EXIT_FAILED
    finally:
        service.close()
        if emu is not None:
            emu.stop()


def status_command(config: Config, *, as_json: bool) -> int:
    from .status import print_status, status_data

    data = status_data(config)
    print_status(data, as_json=as_json)
    return EXIT_OK
