"""`make run`: the daemon on a demo inbox against the embedded emulator.

Makes ./demo/ (an inbox, a state dir, a config), drops a sample batch file into the inbox
the way producers should (write elsewhere, then rename), runs `inboxd run --emulator --once`,
and prints the manifest that appears in done/ and the results that arrive in the outbox
(the inbox asks for the batch round trip: the daemon creates the job, follows it, and
delivers the emulator's fake-model answers).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "demo"
INBOX = ROOT / "inbox" / "batch-api"
CONFIG = ROOT / "inboxd.toml"
OUTBOX = ROOT / "outbox"


def main() -> int:
    INBOX.mkdir(parents=True, exist_ok=True)
    (ROOT / "state").mkdir(exist_ok=True)
    CONFIG.write_text(
        f"""[upload]
wait_for_processing = true   # the manifest then carries the server's verdict (COMPLETED)

[daemon]
state_dir = "{ROOT / 'state'}"
metrics_address = ""
log_format = "console"

[[inboxes]]
path = "{INBOX}"
purpose = "batch-api"
validate = "strict"

[inboxes.batch]               # the round trip: create the batch job, follow it, fetch the results
poll_seconds = 1
outbox = "{OUTBOX}"
join = true                   # also <stem>.results.jsonl, one line per input line, in input order
"""
    )
    n = len(list((INBOX / "done").glob("*.manifest.json"))) if (INBOX / "done").exists() else 0
    staging = ROOT / f"batch_input_{n + 1}.jsonl.tmp"
    with staging.open("w") as f:
        for i in range(1000):
            body = {"model": "demo-model", "messages": [{"role": "user", "content": f"Say hello #{i}"}]}
            f.write(json.dumps({"custom_id": f"req-{n + 1}-{i}", "body": body}) + "\n")
    os.rename(staging, INBOX / f"batch_input_{n + 1}.jsonl")
    print(f"dropped {INBOX / f'batch_input_{n + 1}.jsonl'}; running the daemon once against the emulator", flush=True)
    rc = subprocess.call(
        [sys.executable, "-m", "inboxd", "run", "--config", str(CONFIG), "--emulator", "--once"]
    )
    manifests = sorted((INBOX / "done").glob("*.manifest.json"), key=lambda p: p.stat().st_mtime)
    if rc != 0 or not manifests:
        print(f"inboxd run exited {rc}; no manifest", file=sys.stderr)
        return rc or 1
    print(f"\n{manifests[-1]}:")
    print(json.dumps(json.loads(manifests[-1].read_text()), indent=2))
    stem = manifests[-1].name[: -len(".jsonl.manifest.json")]
    results = OUTBOX / f"{stem}.results.jsonl"
    sidecar = OUTBOX / f"{stem}.batch.json"
    if not sidecar.exists():
        print(f"no {sidecar}", file=sys.stderr)
        return 1
    print(f"\n{OUTBOX}:")
    for p in sorted(OUTBOX.glob(f"{stem}.*")):
        print(f"  {p.name}  ({p.stat().st_size} bytes)")
    print(f"\nthe first result of {results.name}:")
    print(json.dumps(json.loads(results.read_text().splitlines()[0]), indent=2))
    print(f"\n{sidecar.name}: counts {json.loads(sidecar.read_text())['counts']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
