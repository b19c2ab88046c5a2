"""JSON Schemas of the sidecars inboxd writes (SPEC §3, §10): shipped with the package."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

MANIFEST = "inboxd.manifest/v1"
ERROR = "inboxd.error/v1"
BATCH = "inboxd.batch/v1"  # <outbox>/<stem>.batch.json
BATCH_V2 = "inboxd.batch/v2"  # one input, many jobs (the ledger; generated from inboxd.batch.sidecar.BatchV2)
_FILES = {MANIFEST: "manifest.schema.json", ERROR: "error.schema.json", BATCH: "batch.schema.json",
          BATCH_V2: "batch-v2.schema.json"}


@cache
def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema of `inboxd.manifest/v1`, `inboxd.error/v1` or `inboxd.batch/v1`."""
    text = resources.files(__package__).joinpath(_FILES[name]).read_text(encoding="utf-8")
    return json.loads(text)
