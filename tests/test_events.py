"""Events for schedulers (SPEC §11) against real processes: the daemon, the emulator, and a
webhook receiver (tests/helpers/receiver.py) that verifies every delivery with the
`standardwebhooks` reference library.

The receiver logs every request (its webhook-id, whether the signature verified, what it
answered); the assertions compare that log with the sidecars on disk: every manifest, error
sidecar and batch.json announced, nothing announced that does not exist, one webhook-id per
sidecar whatever the redeliveries, no signature that fails.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from inboxd.config import load_config
from inboxd.pipeline.status import status_data
from tests.helpers.daemon import REPO, start_daemon, wait_until, write_config
from tests.helpers.emulator import start_emulator
from tests.helpers.files import batch_lines, drop

SECRET = "whsec_" + base64.b64encode(b"inboxd-events-test-secret-32byte").decode()
KEY = "test-key-events-0001"


class Receiver:
    """The receiver process: its url, its log of deliveries, and its fault controls."""

    def __init__(self, tmp: Path, **faults: Any) -> None:
        self.log = tmp / f"deliveries-{time.monotonic_ns()}.jsonl"
        args = [sys.executable, "-m", "tests.helpers.receiver", "--secret", SECRET, "--log", str(self.log)]
        for k, v in faults.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        assert self.url.startswith("http"), self.url

    def control(self, **change: Any) -> None:
        requests.post(self.url.rsplit("/", 1)[0] + "/_control", json=change, timeout=5).raise_for_status()

    def deliveries(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def delivered(self) -> list[dict[str, Any]]:
        """Requests answered 2xx."""
        return [d for d in self.deliveries() if isinstance(d["answer"], int) and 200 <= d["answer"] < 300]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(tmp_path)
    yield r
    r.stop()


def sink_toml(url: str | None = None, command: list[str] | None = None, **extra: Any) -> str:
    lines = ["", "[[events]]"]
    if url is not None:
        lines += [f'url = "{url}"', 'secret_env = "HOOK_SECRET"']
    if command is not None:
        lines.append("command = " + json.dumps(command))
    for k, v in {"backoff_seconds": 0.1, "max_backoff_seconds": 0.5, **extra}.items():
        lines.append(f"{k} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


def add_sinks(cfg: Path, *sinks: str) -> Path:
    cfg.write_text(cfg.read_text() + "".join(sinks))
    return cfg


def published(*folders: Path) -> set[str]:
    out: set[str] = set()
    for folder in folders:
        for pattern in ("*.manifest.json", "*.error.json", "*.batch.json"):
            out |= {str(p) for p in folder.glob(pattern)}
    return out


def sidecar_of(body: dict[str, Any]) -> str:
    data = body["data"]
    return data.get("manifest") or data.get("error") or data["batch"]


def check_deliveries(receiver: Receiver, sidecars: set[str]) -> dict[str, str]:
    """Every sidecar announced (2xx) under one webhook-id, nothing else, every signature good."""
    log = [d for d in receiver.deliveries() if d["answer"] != "cut"]  # a request cut by a kill -9 of the sender
    assert [d for d in log if not d["verified"]] == [], "a delivery failed the signature check"
    ids: dict[str, set[str]] = {}
    for d in log:
        ids.setdefault(sidecar_of(d["body"]), set()).add(d["id"])
    assert {s: i for s, i in ids.items() if len(i) > 1} == {}, "a sidecar was announced under two webhook-ids"
    announced = {sidecar_of(d["body"]) for d in receiver.delivered()}
    assert set(ids) - sidecars == set(), "an announcement of a sidecar that does not exist"
    assert sidecars - announced == set(), "a published sidecar was never announced"
    return {s: next(iter(i)) for s, i in ids.items()}


def test_every_sidecar_announced_through_faults_and_two_kills(tmp_path: Path, receiver: Receiver) -> None:
    """Plain files (some refused by the check) and batch inputs; the receiver answers 500 to the
    first deliveries and to 10 % after, is down (closing connections) for 3 s, and the daemon is
    killed with -9 twice: every manifest, error sidecar and batch.json announced, none that does
    not exist, every redelivery under its first webhook-id, zero signature failures."""
    receiver.control(fail_first=10, fail_rate=0.1)
    emu = start_emulator(tmp_path / "emu", key=KEY, no_dedupe=True, batch_seconds=0.3, processing_delay=0.02)
    plain, batch, outbox, staging = (tmp_path / n for n in ("plain", "batch", "outbox", "staging"))
    plain.mkdir()
    batch.mkdir()
    cfg = write_config(tmp_path, base_url=emu.base_url, daemon={"workers": 4, "rescan_seconds": 2},
                       inboxes=[{"path": str(plain), "purpose": "batch-api"},
                                {"path": str(batch), "purpose": "batch-api",
                                 "batch": {"poll_seconds": 0.2, "outbox": str(outbox)}}])
    add_sinks(cfg, sink_toml(receiver.url))
    env = {"HOOK_SECRET": SECRET}
    # the full form (150 files, 10 refused, down 6 s) with INBOXD_EVENTS=full; the suite runs it scaled
    full = os.environ.get("INBOXD_EVENTS") == "full"
    n_plain, n_bad, down = (150, 10, 6) if full else (60, 6, 3)

    def drop_plain(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            data = b"{not json\n" if i % (n_plain // n_bad) == 3 else batch_lines(f"p{i}", 2)
            drop(plain, f"p{i:03d}.jsonl", data, staging)

    try:
        d = start_daemon(cfg, key=KEY, env=env)
        drop_plain(0, n_plain // 3)
        for i in range(3):
            drop(batch, f"b{i}.jsonl", batch_lines(f"b{i}", 5), staging)
        wait_until(lambda: len(receiver.delivered()) >= 3, 30, what="the first deliveries")
        d.kill9()  # 1: with uploads, archives and deliveries under way
        d = start_daemon(cfg, key=KEY, env=env)
        receiver.control(down=down)
        drop_plain(n_plain // 3, 2 * n_plain // 3)
        archived = n_plain // 3 + n_plain // 10  # a few of the second third, while the receiver is down
        wait_until(lambda: len(list((plain / "done").glob("*.manifest.json"))) >= archived, 60, what="more archived")
        d.kill9()  # 2: while the receiver is down, events pending
        d = start_daemon(cfg, key=KEY, env=env)
        drop_plain(2 * n_plain // 3, n_plain)

        def complete() -> bool:
            done = published(plain / "done", plain / "failed", batch / "done", outbox)
            batches = len(list(outbox.glob("*.batch.json")))
            files = len(list((plain / "done").glob("*.manifest.json"))) + len(list((plain / "failed").glob("*.json")))
            announced = {sidecar_of(x["body"]) for x in receiver.delivered()}
            return batches == 3 and files == n_plain and done <= announced

        d.wait_for(complete, timeout=120 if full else 60, what="every sidecar published and announced")
        assert d.stop() == 0
    finally:
        emu.stop()
    sidecars = published(plain / "done", plain / "failed", batch / "done", outbox)
    assert len(sidecars) == n_plain + 3 + 3  # the 3 batch inputs' manifests and their batch.json
    assert len(list((plain / "failed").glob("*.error.json"))) == n_bad
    check_deliveries(receiver, sidecars)
    log = receiver.deliveries()
    assert any(x["answer"] == "closed" for x in log) and sum(x["answer"] == 500 for x in log) >= 10
    redelivered = {x["id"] for x in log if x["answer"] != 204} & {x["id"] for x in receiver.delivered()}
    assert redelivered, "no event needed a redelivery: the faults did not bite"


def test_command_sink_exit_codes_timeout_and_missing(tmp_path: Path) -> None:
    """A command sink: exit 0 delivers, a non-zero exit is retried, a command that hangs past
    timeout_seconds is killed and retried, a missing command keeps its events pending (and
    never holds back the other sink)."""
    emu = start_emulator(tmp_path / "emu", key=KEY, no_dedupe=True, processing_delay=0.02)
    inbox, staging = tmp_path / "inbox", tmp_path / "staging"
    inbox.mkdir()
    seen = tmp_path / "seen.jsonl"
    script = tmp_path / "hook.py"
    # first call for an id: exit 3; second: hang (killed at the timeout); third: read stdin, exit 0
    script.write_text(f"""import json, os, sys, time
body = json.load(sys.stdin)
mid = os.environ["INBOXD_EVENT_ID"]
n = sum(1 for line in open({str(seen)!r}) if json.loads(line)["id"] == mid) if os.path.exists({str(seen)!r}) else 0
with open({str(seen)!r}, "a") as f:
    f.write(json.dumps({{"id": mid, "n": n, "body": body}}) + "\\n")
if n == 0:
    sys.exit(3)
if n == 1:
    time.sleep(60)
""")
    # and beside them, the documentation's queue receiver (docs/examples/receiver_queue.py) as a webhook
    example = subprocess.Popen([sys.executable, str(REPO / "docs" / "examples" / "receiver_queue.py"), "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "INBOXD_WEBHOOK_SECRET": SECRET})
    assert example.stderr is not None and example.stdout is not None
    example_url = example.stderr.readline().split()[-1]
    cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{"path": str(inbox), "purpose": "batch-api"}])
    add_sinks(cfg, sink_toml(command=[sys.executable, str(script)], timeout_seconds=0.5, name="hook"),
              sink_toml(command=[str(tmp_path / "no-such-program")], name="missing", types=["file.archived"]),
              sink_toml(example_url, name="queue"))
    try:
        with start_daemon(cfg, key=KEY, env={"HOOK_SECRET": SECRET}) as d:
            for i in range(3):
                drop(inbox, f"c{i}.jsonl", batch_lines(f"c{i}", 2), staging)
            d.wait_event("event.delivered", count=3, sink="hook", timeout=30)
            retries = d.events("event.retry", sink="hook")
            assert {r["reason"] for r in retries} == {"exit_status", "timeout"}
            assert any("exit status 3" in r["error"] for r in retries)
            d.wait_event("event.retry", sink="missing", reason="missing")
            out = subprocess.run([sys.executable, "-m", "inboxd", "events", "--config", str(cfg), "--json"],
                                 capture_output=True, text=True, cwd=REPO, check=True)
            listing = json.loads(out.stdout)
            assert listing["sinks"]["hook"]["pending"] == 0 and listing["sinks"]["hook"]["delivered"] == 3
            assert listing["sinks"]["missing"]["pending"] == 3
            assert {e["sink"] for e in listing["events"]} == {"missing"}
            # a sink that fails for itself holds its order: the oldest event is the one retried
            assert "command not found" in listing["events"][0]["last_error"]
            d.wait_event("event.delivered", count=3, sink="queue")
            assert d.stop() == 0
    finally:
        emu.stop()
        example.terminate()
    printed = example.stdout.read().splitlines()
    assert sorted(printed) == sorted(f"file.archived {p}" for p in published(inbox / "done"))
    calls = [json.loads(line) for line in seen.read_text().splitlines()]
    by_id: dict[str, list[int]] = {}
    for c in calls:
        by_id.setdefault(c["id"], []).append(c["n"])
    assert len(by_id) == 3 and all(ns == [0, 1, 2] for ns in by_id.values())
    assert {c["body"]["type"] for c in calls} == {"file.archived"}


def test_dead_letter_retry_health_and_metrics(tmp_path: Path, receiver: Receiver) -> None:
    """A receiver that keeps failing: the events are dead-lettered after max_age_hours,
    /healthz says the sink is behind while they wait, `inboxd events --dead` lists them, and
    `inboxd events retry --all` sends them again under their first webhook-id."""
    receiver.control(fail_rate=1.0)
    emu = start_emulator(tmp_path / "emu", key=KEY, no_dedupe=True, processing_delay=0.02)
    inbox, staging = tmp_path / "inbox", tmp_path / "staging"
    inbox.mkdir()
    cfg = write_config(tmp_path, base_url=emu.base_url, daemon={"metrics_address": "127.0.0.1:0"},
                       inboxes=[{"path": str(inbox), "purpose": "batch-api"}])
    add_sinks(cfg, sink_toml(receiver.url, name="sched", max_age_hours=2 / 3600, unhealthy_after_seconds=1))
    events_cmd = [sys.executable, "-m", "inboxd", "events", "--config", str(cfg)]
    try:
        with start_daemon(cfg, key=KEY, env={"HOOK_SECRET": SECRET}) as d:
            port = int(d.wait_event("metrics.listening")[0]["address"].rsplit(":", 1)[1])
            base = f"http://127.0.0.1:{port}"
            for i in range(2):
                drop(inbox, f"d{i}.jsonl", batch_lines(f"d{i}", 2), staging)
            health = d.wait_for(lambda: (r := requests.get(base + "/healthz", timeout=5)).status_code == 503
                                and "event sink sched" in r.text and r.json(), timeout=20, what="503 from /healthz")
            assert any("sched" in p for p in health["problems"])
            d.wait_event("event.dead", count=2, timeout=20)
            metrics = requests.get(base + "/metrics", timeout=5).text
            assert 'inboxd_events_dead_total{sink="sched"} 2.0' in metrics
            assert 'inboxd_events_failed_total{reason="http_500",sink="sched"}' in metrics
            assert 'inboxd_events_pending{sink="sched"} 0.0' in metrics
            dead = json.loads(subprocess.run([*events_cmd, "--dead", "--json"], capture_output=True, text=True,
                                             cwd=REPO, check=True).stdout)
            assert dead["sinks"]["sched"]["dead"] == 2 and len(dead["events"]) == 2
            assert SECRET not in json.dumps(dead)
            first_ids = {e["id"] for e in dead["events"]}
            receiver.control(fail_rate=0.0)
            retried = subprocess.run([*events_cmd, "retry", "--all"], capture_output=True, text=True, cwd=REPO)
            assert retried.returncode == 0, retried.stderr
            d.wait_event("event.delivered", count=2, timeout=20)
            assert requests.get(base + "/healthz", timeout=5).status_code == 200
            assert 'inboxd_events_delivered_total{sink="sched"} 2.0' in requests.get(base + "/metrics").text
            status = status_data(load_config(cfg))  # what `inboxd status` prints its sink lines from
            assert status["events"]["sched"] == {"pending": 0, "delivered": 2, "dead": 0,
                                                 "oldest_pending_seconds": None}
            assert d.stop() == 0
            assert SECRET not in json.dumps(d.lines)
    finally:
        emu.stop()
    assert {x["id"] for x in receiver.delivered()} == first_ids
    again = subprocess.run([*events_cmd, "retry", "--all"], capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 0 and "no dead-lettered event" in again.stderr


def test_fleet_survivor_sends_the_dead_hosts_pending_events(tmp_path: Path, receiver: Receiver) -> None:
    """Two daemons (own journals) on one inbox; the receiver refuses everything, so each holds
    pending events; one is killed -9. The survivor takes over the dead one's event files and
    sends them under their first ids: every sidecar delivered exactly once in the fleet."""
    receiver.control(fail_rate=1.0)
    emu = start_emulator(tmp_path / "emu", key=KEY, no_dedupe=True, processing_delay=0.02)
    inbox, staging = tmp_path / "inbox", tmp_path / "staging"
    inbox.mkdir()
    cfgs = []
    for host in ("a", "b"):
        cfg = write_config(tmp_path, base_url=emu.base_url, name=f"{host}.toml",
                           daemon={"state_dir": str(tmp_path / f"state-{host}"), "rescan_seconds": 1},
                           inboxes=[{"path": str(inbox), "purpose": "batch-api"}])
        cfgs.append(add_sinks(cfg, sink_toml(receiver.url, name="sched")))
    env = {"HOOK_SECRET": SECRET}
    try:
        a = start_daemon(cfgs[0], key=KEY, env=env)
        b = start_daemon(cfgs[1], key=KEY, env=env)
        for i in range(24):
            drop(inbox, f"f{i:02d}.jsonl", batch_lines(f"f{i}", 2), staging)
        wait_until(lambda: len(list((inbox / "done").glob("*.manifest.json"))) == 24, 30, what="24 archived")
        a.wait_event("event.retry")  # a holds pending events of its own
        by_a = {x["id"] for x in a.events("event.retry")}
        a.kill9()
        b.wait_event("event.taken_over", timeout=20)
        receiver.control(fail_rate=0.0)
        b.wait_for(lambda: {sidecar_of(x["body"]) for x in receiver.delivered()} >= published(inbox / "done"),
                   timeout=30, what="every manifest delivered")
        assert b.stop() == 0
    finally:
        emu.stop()
    ids = check_deliveries(receiver, published(inbox / "done"))
    ok = receiver.delivered()
    assert len(ok) == 24 == len({x["id"] for x in ok}), "a sidecar delivered twice in the fleet"
    assert by_a <= set(ids.values()), "the dead host's events were not sent under their first ids"
    assert not list((inbox / ".inboxd" / ".events").glob("*/*.json")), "event files left behind"


def test_an_unreadable_or_bad_secret_refuses_the_start_without_showing_it(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(tmp_path, base_url="http://127.0.0.1:9/v1",
                       inboxes=[{"path": str(inbox), "purpose": "batch-api"}])
    add_sinks(cfg, sink_toml("http://127.0.0.1:9/hooks", name="sched"))
    run = [sys.executable, "-m", "inboxd", "run", "--config", str(cfg)]
    env = {**os.environ, "TOGETHER_API_KEY": KEY}
    env.pop("HOOK_SECRET", None)
    missing = subprocess.run(run, capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert missing.returncode == 2 and "secret_env HOOK_SECRET: the variable is not set" in missing.stderr
    bad = "whsec_" + "!" * 40
    refused = subprocess.run(run, capture_output=True, text=True, cwd=REPO, env={**env, "HOOK_SECRET": bad}, timeout=60)
    assert refused.returncode == 2 and "not base64" in refused.stderr
    assert bad not in refused.stdout + refused.stderr and not list((tmp_path / "state").glob("journal*"))


def test_events_command_without_a_journal_answers_one_json_object(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(tmp_path, base_url="http://127.0.0.1:9/v1",
                       inboxes=[{"path": str(inbox), "purpose": "batch-api"}])
    for args in (["events"], ["events", "retry", "--all"]):
        r = subprocess.run([sys.executable, "-m", "inboxd", *args, "--config", str(cfg), "--json"],
                           capture_output=True, text=True, cwd=REPO, timeout=60)
        assert r.returncode == 2
        assert json.loads(r.stdout)["error"]["kind"] == "no_journal"  # one object: json.loads refuses two
