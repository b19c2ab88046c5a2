from __future__ import annotations

import pytest

from tests.helpers.emulator import EmulatorProc, start_emulator


@pytest.fixture
def emulator(tmp_path) -> EmulatorProc:
    """A real `inboxd emulator` subprocess on loopback, stopped after the test."""
    emu = start_emulator(tmp_path / "emulator")
    yield emu
    emu.stop()
