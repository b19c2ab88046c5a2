"""The status page's ledger section: each ledger of `inboxd batch FILE` with its parts,
rounds, jobs and how many requests have their final answer."""

from __future__ import annotations

from pathlib import Path

from inboxd.batch.command import BatchCreated, BatchDelivered
from inboxd.config import parse_config
from inboxd.emulator import Emulator
from inboxd.pipeline.overview import overview
from tests.unit.test_batch_file import KEY, _quiet, batch, write_input  # noqa: F401 - KEY: the server's, _quiet: a fixture


def test_the_overview_shows_each_ledger_with_parts_rounds_and_final_requests(server: Emulator,
                                                                             tmp_path: Path) -> None:
    cfg = parse_config({"daemon": {"state_dir": str(tmp_path / "state")}, "inboxes": []})
    created = batch(server, tmp_path, write_input(tmp_path, 7), wait=False)
    assert isinstance(created, BatchCreated)
    [pending] = overview(cfg)["ledger"]
    assert (pending["parts"], pending["rounds"], pending["jobs"], pending["requests"]) == (3, 1, 3, 7)
    assert not pending["delivered"]
    assert isinstance(batch(server, tmp_path, write_input(tmp_path, 7)), BatchDelivered)
    [done] = overview(cfg)["ledger"]
    assert done["final"] == 7 and done["delivered"] and done["input"].endswith("in.jsonl")
