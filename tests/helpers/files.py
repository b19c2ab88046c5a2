"""Files in, sidecars out, and what the server holds: the pieces every daemon test uses.

    data = batch_lines("tag", 50)                 # a valid batch file (SPEC §1), 50 records
    digest = drop(inbox, "x.jsonl", data, tmp_path / "stage")   # write elsewhere, rename in
    manifests(inbox), error_sidecars(inbox)       # {sidecar name: parsed JSON}
    claimed(inbox), waiting(inbox)                # left in .inboxd/, left in the inbox
    problems = once_on_server(emu.stats(), [digest])   # [] when each digest is one whole file

`once_on_server` is the exactly-once check that can fail: with the emulator started with
`no_dedupe=True` a second upload of the same bytes is a second file, and the server's
creates are counted per sha256, so a re-send shows even when the second copy never
arrived whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from inboxd.pipeline.claim import read_state


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- batch files ---------------------------------------------------------------------------------


def batch_line(custom_id: str, body: object | None = None) -> bytes:
    """One batch line: {"custom_id": ..., "body": ...}, with a minimal chat body by default."""
    body = body if body is not None else {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return (json.dumps({"custom_id": custom_id, "body": body}) + "\n").encode()


def batch_lines(tag: str, n: int = 50, pad: int = 0) -> bytes:
    """A valid batch file of `n` records with custom_ids `tag-0`, `tag-1`, ...; `pad` bytes of
    filler per record make it bigger."""
    filler = " " + "x" * pad if pad else ""
    return b"".join(
        batch_line(f"{tag}-{i}", {"model": "m", "messages": [{"role": "user", "content": f"{tag} #{i}{filler}"}]})
        for i in range(n)
    )


def big_batch(tag: str, size: int) -> bytes:
    """A valid batch file of about `size` bytes (for multipart)."""
    line_pad = 4000
    return batch_lines(tag, max(1, size // (line_pad + 120)), pad=line_pad)


# --- the inbox -----------------------------------------------------------------------------------


def drop(inbox: Path, name: str, data: bytes, staging: Path) -> str:
    """Write elsewhere on the same filesystem, then rename in (the Maildir habit); the sha256."""
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / f"{name}.{random.getrandbits(32):08x}"
    tmp.write_bytes(data)
    os.rename(tmp, inbox / name)
    return sha(data)


def _sidecars(folder: Path, pattern: str) -> dict[str, dict[str, Any]]:
    if not folder.exists():
        return {}
    return {p.name: json.loads(p.read_text()) for p in sorted(folder.glob(pattern))}


def manifests(inbox: Path) -> dict[str, dict[str, Any]]:
    """done/*.manifest.json by file name, parsed."""
    return _sidecars(inbox / "done", "*.manifest.json")


def error_sidecars(inbox: Path) -> dict[str, dict[str, Any]]:
    """failed/*.error.json by file name, parsed."""
    return _sidecars(inbox / "failed", "*.error.json")


def resolved(inbox: Path) -> int:
    """Files the daemon has finished with: manifests plus error sidecars."""
    return len(manifests(inbox)) + len(error_sidecars(inbox))


def claimed(inbox: Path) -> list[Path]:
    """Files left claimed in the claim folders (.inboxd/): their dot-files (a running
    claimer's `.owner` heartbeat, its `.<claim>.state.json` ...) are bookkeeping, not files."""
    work = inbox / ".inboxd"
    if not work.exists():
        return []
    return [p for p in work.rglob("*") if not p.name.startswith(".") and not p.is_dir()]


def waiting(inbox: Path) -> list[str]:
    """Names still in the inbox itself."""
    return sorted(p.name for p in inbox.iterdir() if p.name not in ("done", "failed", ".inboxd"))


# --- the server's side ---------------------------------------------------------------------------


def whole_files(stats: Mapping[str, Any]) -> dict[str, int]:
    """sha256 -> files the server holds whole. `stats` is `emu.stats()`, whose "files" lists
    only files whose content arrived and that were not deleted."""
    out: dict[str, int] = {}
    for f in stats["files"]:
        if f.get("sha256"):
            out[f["sha256"]] = out.get(f["sha256"], 0) + 1
    return out


def once_on_server(stats: Mapping[str, Any], digests: Iterable[str],
                   resends: Mapping[str, int] | int = 0) -> list[str]:
    """What is wrong with "each of these was uploaded exactly once" (empty: nothing).

    Each digest must be exactly one whole file on the server, and created (POST /files or a
    multipart initiate, counted per sha256 by an emulator with `no_dedupe=True`) at least once
    and at most 1 + its allowed re-sends: `resends` per digest, or one number for all. A
    caller that allows re-sends says why (an upload interrupted by kill -9 is sent again
    after its orphan is deleted: two creates, one whole file)."""
    whole = whole_files(stats)
    creates = stats["creates_by_sha256"]
    problems = []
    for d in digests:
        allowed = resends if isinstance(resends, int) else resends.get(d, 0)
        if whole.get(d, 0) != 1:
            problems.append(f"{d[:12]}: {whole.get(d, 0)} whole files on the server")
        if not 1 <= creates.get(d, 0) <= 1 + allowed:
            problems.append(f"{d[:12]}: created {creates.get(d, 0)} times (allowed 1..{1 + allowed})")
    return problems


def extra_creates(stats: Mapping[str, Any], digests: Iterable[str]) -> int:
    """Creates beyond the first, over these digests: the re-sends."""
    creates = stats["creates_by_sha256"]
    return sum(max(0, creates.get(d, 0) - 1) for d in digests)



def holding_state(folder: Path) -> list[Path]:
    """Claimed files in a claim folder whose state (the file id) is written, wherever the
    daemon keeps it (`inboxd.pipeline.claim.read_state`: the attribute, or the dot-file)."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    return [p for p in entries if not p.name.startswith(".") and read_state(p) is not None]


def check_split_results(results_file: Path, answer: dict[str, Any], n: int = 10_000, every: int = 500,
                        tag: str = "s") -> tuple[list[dict[str, Any]], set[str]]:
    """The results of the 10,000-request split input (every `every`-th request refused with
    400, 5 % transient 429s): every request in input order, the refused ones failed with 400,
    batch.json's counts those of results.jsonl, and no more than a handful failed with a 429
    in every round (0.05^4; 0.05^3 for an expired half). (The results, the refused ids.)"""
    results = [json.loads(x) for x in results_file.read_bytes().splitlines()]
    assert [x["custom_id"] for x in results] == [f"{tag}-{i}" for i in range(n)]
    refused = {f"{tag}-{i}" for i in range(0, n, every)}
    assert {x["custom_id"] for x in results if x["status"] == "failed" and x["error"].get("status_code") == 400} \
        == refused
    c = answer["counts"]
    assert c == {"succeeded": sum(x["status"] == "succeeded" for x in results),
                 "failed": sum(x["status"] == "failed" for x in results), "missing": 0}
    assert c["failed"] - len(refused) == answer["errors_by_code"].get("429", 0) <= 10, answer["errors_by_code"]
    return results, refused
