"""The join (`<stem>.results.jsonl`): input order whatever the answers' order, first answer wins,
blank and malformed lines, missing answers; and memory that does not grow with the files
(the index is on disk): a child process joins a 30 MB input against a 30 MB shuffled output
and its peak RSS is measured."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

from inboxd.batch.join import ERRORS, OUTPUT, join_results
from tests.helpers.daemon import REPO


def _write(path: Path, lines: list[object]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_results_follow_the_input_order(tmp_path: Path) -> None:
    inp = _write(tmp_path / "in.jsonl", [
        {"custom_id": "a", "body": {}}, {"custom_id": "b", "body": {}}, "", {"custom_id": "c", "body": {}},
        {"custom_id": "d", "body": {}}, {"body": {}}, {"custom_id": "e", "body": {}},
    ])
    out = _write(tmp_path / "out.jsonl", [
        {"custom_id": "d", "response": {"status_code": 200, "body": "D"}, "error": None},
        {"custom_id": "a", "response": {"status_code": 200, "body": "A"}, "error": None},
        {"custom_id": "a", "response": {"status_code": 200, "body": "A2"}, "error": None},  # first wins
        {"custom_id": "e", "response": {"status_code": 500, "body": "E"}, "error": None},
        "not json",
    ])
    err = _write(tmp_path / "err.jsonl", [{"custom_id": "b", "error": {"message": "no", "code": "x"}},
                                           {"custom_id": "a", "error": {"message": "ignored"}}])
    dest = tmp_path / "res.jsonl"
    counts = join_results(inp, {OUTPUT: out, ERRORS: err}, dest, work_dir=tmp_path)
    rows = [json.loads(x) for x in dest.read_text().splitlines()]
    assert [(r["custom_id"], r["line"], r["status"]) for r in rows] == [
        ("a", 1, "succeeded"), ("b", 2, "failed"), ("c", 4, "missing"), ("d", 5, "succeeded"),
        (None, 6, "missing"), ("e", 7, "failed")]
    assert rows[0]["response"] == {"status_code": 200, "body": "A"} and rows[0]["error"] is None
    assert rows[1]["error"] == {"message": "no", "code": "x"} and rows[1]["response"] is None
    assert rows[5]["error"] == {"status_code": 500}
    assert counts.to_json() == {"succeeded": 2, "failed": 2, "missing": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["err.jsonl", "in.jsonl", "out.jsonl", "res.jsonl"]


_CHILD = """
import resource, sys
from pathlib import Path
from inboxd.batch.join import ERRORS, OUTPUT, join_results
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
d = Path(sys.argv[1])
c = join_results(d / "in.jsonl", {OUTPUT: d / "out.jsonl", ERRORS: None}, d / "res.jsonl", work_dir=d)
print(before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, c.succeeded, c.missing)
"""


def test_join_memory_does_not_grow_with_the_files(tmp_path: Path) -> None:
    n, pad = 25_000, "x" * 1150
    order = list(range(n))
    with open(tmp_path / "in.jsonl", "w") as f:
        for i in order:
            f.write(json.dumps({"custom_id": f"req-{i}", "body": {"messages": [{"role": "user", "content": pad}]}})
                    + "\n")
    random.Random(3).shuffle(order)
    with open(tmp_path / "out.jsonl", "w") as f:
        for i in order[: n - 10]:
            f.write(json.dumps({"custom_id": f"req-{i}", "response": {"status_code": 200, "body": pad[::-1]},
                                "error": None}) + "\n")
    size = (tmp_path / "in.jsonl").stat().st_size + (tmp_path / "out.jsonl").stat().st_size
    assert size > 55_000_000
    r = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    before, peak, ok, missing = (int(x) for x in r.stdout.split())
    assert (ok, missing) == (n - 10, 10)
    grew_mb = (peak - before) / 1024
    print(f"join: RSS {before / 1024:.1f} MB -> {peak / 1024:.1f} MB")
    assert grew_mb < 10, f"the join grew the RSS by {grew_mb:.1f} MB for {size / 1e6:.0f} MB of files"
    with open(tmp_path / "res.jsonl") as f:
        ids = [json.loads(line)["custom_id"] for line in f]
    assert ids == [f"req-{i}" for i in range(n)]
