"""R5: secrets. A canary key, handed over as an environment variable, as a key file and as a
systemd credential, is used through faults, a rejected key, a hostile answer and validation
failures; afterwards it appears in no log line, sidecar, journal (or its WAL), status or
config check output, and no byte of any file the run left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from tests.helpers.daemon import REPO, start_daemon, wait_until, write_config
from tests.helpers.emulator import start_emulator
from tests.helpers.files import batch_lines, drop, error_sidecars, manifests, resolved

from .common import Clock, record

CANARY = "sk-canary-R5-9f8e7d6c5b4a39281706"


def _files_with(root, needle: bytes) -> list[str]:
    hits = []
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            if os.path.islink(p) or not os.path.isfile(p):
                continue
            with open(p, "rb") as fh:
                if needle in fh.read():
                    hits.append(p)
    return hits


def test_r5_the_key_appears_nowhere(tmp_path):
    clock = Clock()
    emu = start_emulator(tmp_path / "emu", key=CANARY)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    key_file = tmp_path / "secrets" / "api-key"
    key_file.parent.mkdir()
    key_file.write_text(CANARY + "\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "together-api-key").write_text(CANARY)
    outputs: list[str] = []
    ways = {
        "env": ({}, {"TOGETHER_API_KEY": CANARY}),
        "key file": ({"api_key_file": str(key_file)}, {}),
        "credential": ({}, {"CREDENTIALS_DIRECTORY": str(creds)}),
    }
    n = 0
    try:
        for way, (api, env) in ways.items():
            cfg = write_config(tmp_path, base_url=emu.base_url,
                               inboxes=[{"path": str(inbox), "purpose": "batch-api", "validate": "strict"}],
                               api={"timeout_seconds": 2, "max_retries": 2, **api},
                               daemon={"workers": 2, "settle_seconds": 0.1, "rescan_seconds": 1, "max_attempts": 5})
            emu.set_faults(error_rate=0.2)
            emu.script([{"route": "create", "status": 401}, {"route": "preprocess", "hostile": "garbage_json"}])
            with start_daemon(cfg, env=env) as d:
                for i in range(4):
                    drop(inbox, f"{way}-{i}.jsonl".replace(" ", "_"), batch_lines(f"r5-{way}-{i}", 20), tmp_path / "st")
                drop(inbox, f"{way}-bad.jsonl".replace(" ", "_"), b'{"custom_id": 1}\n', tmp_path / "st")
                n += 5
                d.wait_event("uploads.paused", timeout=30)
                d.signal(signal.SIGHUP)  # the key is fine again: reload probes it at once
                wait_until(lambda n=n: resolved(inbox) >= n, 60, interval=0.2, what=f"{n} files resolved ({way})")
            emu.set_faults(error_rate=0.0)
            outputs.append("\n".join(json.dumps(e) for e in d.lines) + "\n".join(d.stderr))
        for args in (["status", "--config", str(cfg)], ["status", "--config", str(cfg), "--json"],
                     ["config", "check", "--config", str(cfg)], ["config", "check", "--config", str(cfg), "--json"]):
            for env in ({"TOGETHER_API_KEY": CANARY}, {"CREDENTIALS_DIRECTORY": str(creds)}):
                out = subprocess.run([sys.executable, "-m", "inboxd", *args], capture_output=True, text=True,
                                     timeout=60, cwd=REPO, env={**os.environ, **env})
                assert out.returncode == 0, out.stderr
                outputs.append(out.stdout + out.stderr)
    finally:
        emu.stop()
    leaks = [i for i, text in enumerate(outputs) if CANARY in text]
    assert not leaks, f"the key appeared in outputs {leaks}"
    scanned = [inbox, tmp_path / "state"]
    hits = [h for root in scanned for h in _files_with(root, CANARY.encode())]
    assert not hits, hits
    errors = [side["error"] for side in error_sidecars(inbox).values()]
    assert len(manifests(inbox)) == 12 and len(errors) == 3, errors
    record("R5 secrets", ways=len(ways), outputs_scanned=len(outputs),
           files_scanned=sum(len(files) for root in scanned for _d, _s, files in os.walk(root)), leaks=0,
           seconds=clock.seconds)
