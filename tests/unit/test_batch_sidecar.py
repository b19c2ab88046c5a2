"""inboxd.batch/v2: the shipped JSON Schema is the one the model generates, and v1's stays."""

from __future__ import annotations

import json

from inboxd.batch.sidecar import json_schema, schema_text
from inboxd.schemas import BATCH, BATCH_V2, load_schema


def test_the_shipped_v2_schema_is_the_models():
    assert load_schema(BATCH_V2) == json_schema()
    assert json.loads(schema_text()) == json_schema()
    assert json_schema()["properties"]["schema"]["pattern"] == r"^inboxd\.batch/v2$"


def test_v1s_schema_is_still_shipped():
    assert load_schema(BATCH)["properties"]["schema"]
