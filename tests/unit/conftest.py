"""Fixtures of the unit tests that need a server: the emulator started in this process (a real
HTTP server on loopback, no subprocess), one per module, with the module's `KEY`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from inboxd.emulator import Emulator, EmulatorSettings


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    key = getattr(request.module, "KEY", "unit-key")
    e = Emulator(EmulatorSettings(key=key, data_dir=tmp_path_factory.mktemp("emu"), dedupe=False,
                                  processing_delay_seconds=0.0, batch_seconds=0.0)).start()
    yield e
    e.stop()
