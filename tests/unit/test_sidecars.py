"""Sidecars: one module, one byte format, shipped schemas generated from the models."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from inboxd.schemas import load_schema
from inboxd.state import sidecars

SHA = "a" * 64


def _manifest() -> dict:
    return sidecars.manifest(
        file_object={"id": "file-1", "object": "file", "purpose": "batch-api", "bytes": 3, "extra_field": [1]},
        inbox=Path("/srv/in"), name="x\x1b[2J.jsonl", path=Path("/srv/in/done/x.jsonl"), size=3, sha256=SHA,
        mtime_ns=1_700_000_000_000_000_000, validation={"mode": "basic", "passed": True, "records": 1},
        timing=(1_700_000_000.0, 1_700_000_001.5), method="single", parts=1, attempts=1)


def _error() -> dict:
    return sidecars.error_sidecar(inbox=Path("/srv/in"), name="y.jsonl", path=Path("/srv/in/failed/y.jsonl"),
                                  stage="validate", kind="regular", validation=None, when=1_700_000_000.0,
                                  error={"kind": "json.invalid", "message": "line 2: not JSON", "line": 2,
                                         "status": None})


@pytest.mark.parametrize("kind", sorted(sidecars.SCHEMA_FILES))
def test_the_shipped_schema_is_the_models(kind: str) -> None:
    shipped = (Path(sidecars.__file__).parent.parent / "schemas" / sidecars.SCHEMA_FILES[kind]).read_text()
    assert shipped == sidecars.schema_text(kind), "run: python -m inboxd.state.sidecars"


@pytest.mark.parametrize("build", [_manifest, _error])
def test_one_byte_format_whichever_path_wrote_it(build, tmp_path: Path) -> None:
    data = build()
    # the normal path keeps the sidecar compact in the journal; a recovery reads it back from there
    via_journal = json.loads(json.dumps(data))
    sidecars.write(tmp_path / "a.json", data)
    sidecars.write(tmp_path / "b.json", via_journal)
    a = (tmp_path / "a.json").read_bytes()
    assert a == (tmp_path / "b.json").read_bytes() == sidecars.encode(data)
    assert a.endswith(b"\n") and b"\x1b" not in a  # a hostile name is data: escaped in the JSON
    jsonschema.validate(json.loads(a), load_schema(data["schema"]))


def test_a_manifest_keeps_the_servers_unknown_fields_and_its_batch_section(tmp_path: Path) -> None:
    data = _manifest()
    data["batch"] = {"id": "b-1", "status": "IN_PROGRESS", "progress": 10.0, "updated_at": "2026-01-01T00:00:00Z",
                     "error": None}
    out = json.loads(sidecars.encode(data))
    assert out["file"]["extra_field"] == [1] and out["batch"]["id"] == "b-1"
    jsonschema.validate(out, load_schema(sidecars.MANIFEST))


def test_a_sidecar_that_breaks_its_model_is_never_written(tmp_path: Path) -> None:
    data = _manifest()
    data["source"]["sha256"] = "not-a-hash"
    with pytest.raises(ValueError):
        sidecars.write(tmp_path / "m.json", data)
    assert not list(tmp_path.iterdir())


def test_the_shipped_batch_schemas_are_their_models() -> None:
    from inboxd.batch import sidecar as batch_sidecar

    folder = Path(sidecars.__file__).parent.parent / "schemas"
    assert (folder / batch_sidecar.SCHEMA_FILE_V1).read_text() == sidecars.schema_text(batch_sidecar.SCHEMA_V1), \
        "run: python -m inboxd.batch.sidecar"
    assert (folder / batch_sidecar.SCHEMA_FILE).read_text() == batch_sidecar.schema_text()


def test_a_batch_json_is_written_through_its_model(tmp_path: Path) -> None:
    from inboxd.batch import sidecar as batch_sidecar

    data = {"schema": "inboxd.batch/v1", "host": "h", "inboxd_version": "0",
            "batch": {"id": "b-1", "status": "COMPLETED", "endpoint": "/v1/chat/completions", "input_file_id": "f-1",
                      "output_file_id": "f-2", "error_file_id": None, "progress": 100.0, "error": None},
            "input": {"manifest": None, "sha256": None, "requests": 1},
            "outputs": {"output": {"path": "/o/x.output.jsonl", "bytes": 3, "sha256": SHA, "lines": 1},
                        "errors": None, "results": None},
            "counts": {"succeeded": 1, "failed": 0, "missing": 0},
            "timing": {k: None for k in ("dropped_at", "uploaded_at", "created_at", "finished_at", "delivered_at")}}
    heard: list[Path] = []
    batch_sidecar.publish(tmp_path / "x.batch.json", data, lambda p, d: heard.append(p))
    written = (tmp_path / "x.batch.json").read_bytes()
    assert written == sidecars.encode(json.loads(written)) and heard == [tmp_path / "x.batch.json"]
    jsonschema.validate(json.loads(written), load_schema("inboxd.batch/v1"))
    data["counts"]["failed"] = -1
    with pytest.raises(ValueError):
        batch_sidecar.publish(tmp_path / "y.batch.json", data)
