from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from tests.helpers.emulator import EmulatorProc, start_emulator

EMU_KEY = "test-key-0123456789"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "emulator(**flags): options for the `emu` fixture's emulator (start_emulator's keywords), "
        "e.g. emulator(no_dedupe=False) for a test that needs the checksum 409",
    )


@pytest.fixture(autouse=True)
def _structlog_put_back() -> Iterator[None]:
    """A test that configures logging (a command run in process) puts the configuration back:
    its stream is pytest's capture, closed after the test, and a later test's log line would
    fail writing to it."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture
def emu(request: pytest.FixtureRequest, tmp_path) -> Iterator[EmulatorProc]:
    """A real `inboxd emulator` subprocess on loopback, stopped after the test.

    It runs with `--no-dedupe` unless told otherwise: the checksum 409 is off, so a second
    upload of the same bytes becomes a second file and an exactly-once assertion can fail.
    A test (or a class, or a module through `pytestmark`) changes the flags with
    `@pytest.mark.emulator(key=..., no_dedupe=False, processing_delay=0.3, ...)`. Markers
    add up, the closest winning flag by flag: a module's `pytestmark` sets its key and a test
    adds `url_ttl=1`; a flag set to None is left out (the command's own default)."""
    flags: dict[str, Any] = {"key": EMU_KEY, "no_dedupe": True}
    for marker in reversed(list(request.node.iter_markers("emulator"))):  # module, class, test
        flags.update(marker.kwargs)
    e = start_emulator(tmp_path / "emu", **{k: v for k, v in flags.items() if v is not None})
    yield e
    e.stop()
