"""A finished job's output and error files: the fake model run over the first lines of the
input, written in blocks reversed (input 1..8 -> 4 3 2 1 8 7 6 5) so the output comes in
another order than the input, deterministically; each file kept as an emulator File (purpose
batch-output) only when it has a line. Memory is bounded by one block of lines."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import IO

from ._batch_model import Asked, answer_line
from ._store import Store

BLOCK = 4  # output order: input lines reversed in blocks of this many


class _Sink:
    """One output file being written: bytes, sha256, lines; kept as an emulator File or dropped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file: IO[bytes] | None = None
        self.sha = hashlib.sha256()
        self.size = self.lines = 0

    def write(self, line: bytes) -> None:
        if self.file is None:
            self.file = open(self.path, "wb")  # noqa: SIM115 - closed in keep/discard
        self.file.write(line)
        self.sha.update(line)
        self.size += len(line)
        self.lines += 1

    def keep(self, store: Store, filename: str) -> str | None:
        if self.file is None:
            return None
        self.file.close()
        self.file = None
        return store.add_generated("batch-output", filename, self.path, self.size, self.sha.hexdigest(),
                                   self.lines).id

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.path.unlink(missing_ok=True)


def _answer_lines(job: Asked, src: Path, limit: int, outs: dict[str, _Sink]) -> None:
    block: list[tuple[str, bytes]] = []
    number = answered = 0
    with open(src, "rb") as f:
        for raw in f:
            number += 1
            if not raw.strip():
                continue
            if answered >= limit:
                break
            answered += 1
            block.append(answer_line(job, number, raw))
            if len(block) == BLOCK:
                for kind, line in reversed(block):
                    outs[kind].write(line)
                block.clear()
    for kind, line in reversed(block):
        outs[kind].write(line)


def run_model(store: Store, job: Asked, src: Path, limit: int) -> tuple[str | None, str | None]:
    """(output file id, error file id) of the answers to the first `limit` requests of `src`."""
    outs = {"output": _Sink(store.data_dir / "files" / f".{job.job_id}.output.part"),
            "errors": _Sink(store.data_dir / "files" / f".{job.job_id}.errors.part")}
    try:
        _answer_lines(job, src, limit, outs)
        return (outs["output"].keep(store, f"{job.job_id}_output.jsonl"),
                outs["errors"].keep(store, f"{job.job_id}_errors.jsonl"))
    finally:
        for sink in outs.values():
            sink.discard()
