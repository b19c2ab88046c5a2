"""Turn the figures a reliability run recorded into the table in docs/reliability.md.

    INBOXD_RELIABILITY=full INBOXD_RELIABILITY_REPORT=bench/results/reliability.jsonl \\
        .venv/bin/python -m pytest -q tests/reliability
    .venv/bin/python -m tests.reliability.report bench/results/reliability.jsonl
"""

from __future__ import annotations

import json
import sys

COLUMNS = ["files", "faults_injected", "restarts", "lost", "duplicated", "failed", "peak_rss_mib", "seconds"]


def main(path: str) -> int:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| test | form | " + " | ".join(COLUMNS) + " | other figures |")
    print("|---|---|" + "---|" * len(COLUMNS) + "---|")
    for r in rows:
        cells = [str(r.get(c, "")) for c in COLUMNS]
        other = {k: v for k, v in r.items() if k not in COLUMNS and k not in ("test", "form", "pid", "faults")}
        print(f"| {r['test']} | {r['form']} | " + " | ".join(cells) + " | "
              + ", ".join(f"{k}={v}" for k, v in other.items()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
