"""The Grafana dashboard and the Prometheus alert rules in contrib/ ask only for what the daemon exports.

A real daemon (a batch inbox, against the emulator, one scripted 500 for a retry; two event
sinks, one that takes every event and one that refuses them until they are dead-lettered)
handles a file through the whole batch round trip; then every metric name that a dashboard query, a dashboard
variable or an alert rule names must be in its /metrics (a counter as `<name>_total`, a
histogram as `_bucket`, `_sum` and `_count`), and every label a query groups by must be on the
exported samples of a metric that query reads (`instance` is Prometheus' own, `le` the buckets').
The dashboard is also checked for what provisioning needs: one uid, a Prometheus data source
variable that every panel uses, unique panel ids, and a panel for each thing the operator view
asks for.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.daemon import REPO, start_daemon, wait_until, write_config
from tests.helpers.files import batch_lines, drop

DASHBOARD = REPO / "contrib" / "grafana" / "inboxd.json"
PROVISIONING = REPO / "contrib" / "grafana" / "provisioning" / "inboxd-dashboards.yaml"
ALERTS = REPO / "contrib" / "prometheus" / "inboxd-alerts.yml"

NAME = re.compile(r"\binboxd_[a-zA-Z0-9_]+")
BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
# labels Prometheus adds (instance, job) or that a histogram's buckets carry (le)
NOT_EXPORTED_LABELS = {"instance", "job", "le"}
# what the operator view asks the dashboard to show, as the metric each panel reads
WANTED = {
    "throughput": "inboxd_files_total",
    "bytes": "inboxd_uploaded_bytes_total",
    "queue": "inboxd_queue_depth",
    "in flight": "inboxd_in_flight",
    "upload latency": "inboxd_upload_seconds_bucket",
    "retries": "inboxd_retries_total",
    "retry reasons": "inboxd_api_errors_total",
    "batch jobs by status": "inboxd_batch_jobs",
    "drop to results": "inboxd_batch_drop_to_results_seconds_bucket",
    "event backlog": "inboxd_events_pending",
}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels(board: dict) -> list[dict]:
    out = []
    for p in board["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # a collapsed row keeps its panels inside
    return out


def queries(board: dict) -> list[str]:
    """Every PromQL expression the dashboard sends: panel targets and query variables."""
    exprs = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            q = var["query"]
            exprs.append(q["query"] if isinstance(q, dict) else q)
    return exprs


def alert_exprs() -> list[str]:
    """The alert rules' `expr:` values (a folded block: the lines indented below it)."""
    out: list[str] = []
    lines = ALERTS.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if not m:
            continue
        indent, parts = len(m.group(1)), [m.group(2)]
        for more in lines[i + 1:]:
            if len(more) - len(more.lstrip()) <= indent or re.match(r"^\s*\w+:", more):
                break
            parts.append(more.strip())
        out.append(" ".join(parts))
    return out


def exported(text: str) -> tuple[set[str], dict[str, set[str]]]:
    """The series names /metrics offers, and the label names seen on each one's samples."""
    names: set[str] = set()
    labels: dict[str, set[str]] = {}
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "summary": ["_sum", "_count", ""]}
    for fam in text_string_to_metric_families(text):
        names.update(fam.name + s for s in suffixes.get(fam.type, [""]))
        for sample in fam.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return names, labels


def test_the_dashboard_is_provisionable_and_shows_what_the_operator_view_asks_for() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    ids = [p["id"] for p in panels(board)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    (ds,) = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert ds["query"] == "prometheus"
    for p in panels(board):
        if p["type"] == "row":
            continue
        assert p["targets"], f"panel {p['title']!r} has a query"
        for where in [p, *p["targets"]]:
            assert where["datasource"] == {"type": "prometheus", "uid": "${" + ds["name"] + "}"}, p["title"]
    used = {name for expr in queries(board) for name in NAME.findall(expr)}
    missing = {what: name for what, name in WANTED.items() if name not in used}
    assert not missing, f"no panel reads {missing}"
    provider = PROVISIONING.read_text(encoding="utf-8")
    assert "apiVersion: 1" in provider and "type: file" in provider and "path:" in provider


@pytest.mark.emulator(batch_seconds=0.2, processing_delay=0.05)
def test_every_metric_the_dashboard_and_the_alerts_query_is_exported_by_a_running_daemon(tmp_path: Path, emu) -> None:
    inbox, outbox = tmp_path / "inbox", tmp_path / "outbox"
    inbox.mkdir()
    cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[{
        "path": str(inbox), "purpose": "batch-api", "batch": {"poll_seconds": 0.2, "outbox": str(outbox)}}],
        daemon={"metrics_address": "127.0.0.1:0", "settle_seconds": 0.1, "rescan_seconds": 1})
    # two command sinks: `true` delivers every event; `false` refuses them, and after
    # max_age_hours (about a second) they are dead-lettered, so every event series has samples
    with cfg.open("a", encoding="utf-8") as f:
        f.write('\n[[events]]\nname = "taker"\ncommand = ["true"]\n'
                '\n[[events]]\nname = "refuser"\ncommand = ["false"]\nmax_age_hours = 0.0003\n'
                'backoff_seconds = 0.1\nmax_backoff_seconds = 0.2\n')
    emu.script([{"route": "create", "status": 500, "times": 1}])  # one retry, one API error
    with start_daemon(cfg, key=emu.key) as d:
        (listening,) = d.wait_event("metrics.listening")
        port = int(listening["address"].rsplit(":", 1)[1])
        drop(inbox, "q.jsonl", batch_lines("q", 5), tmp_path / "stage")
        d.wait_event("batch.delivered", timeout=60)

        def scraped() -> str | None:
            text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            # the poller observes drop-to-results as it delivers; wait for that sample, for an
            # event delivered and for one dead-lettered
            done = [r"^inboxd_batch_drop_to_results_seconds_count 1\.0$",
                    r'^inboxd_events_delivered_total\{sink="taker"\} [1-9]',
                    r'^inboxd_events_dead_total\{sink="refuser"\} [1-9]']
            return text if all(re.search(p, text, re.M) for p in done) else None

        text = wait_until(scraped, 20, interval=0.2, what="the delivery and the events in /metrics")
    names, labels = exported(text)

    exprs = queries(dashboard()) + alert_exprs()
    assert len(alert_exprs()) == 2
    problems = []
    for expr in exprs:
        used = set(NAME.findall(expr))
        for name in sorted(used - names):
            problems.append(f"{name} (in {expr!r}) is not exported")
        grouped = {g.strip() for clause in BY.findall(expr) for g in clause.split(",") if g.strip()}
        have = set().union(*(labels.get(n, set()) for n in used))
        for label in sorted(grouped - NOT_EXPORTED_LABELS - have):
            problems.append(f"label {label!r} (in {expr!r}) is on no exported sample of {sorted(used)}")
    assert not problems, "\n".join(problems)
