"""Prometheus metrics (prometheus-client, its own registry) and the server of /metrics, /healthz
and the status page."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..log import register_secret
from ._http import BoundedHTTPServer, Request, Response, plain
from .status_page import DATA_CSP, PAGE, PAGE_CSP, StatusSource, authorized, page_access

disable_created_metrics()  # no *_created series: they double every counter for no use here


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.files = Counter("inboxd_files", "Files handled, by inbox and outcome (done, existing, failed)",
                             ["inbox", "outcome"], registry=r)
        self.bytes = Counter("inboxd_uploaded_bytes", "Bytes uploaded", ["inbox"], registry=r)
        self.seconds = Histogram("inboxd_upload_seconds", "Seconds from upload start to the file object", ["inbox"],
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600), registry=r)
        self.queue = Gauge("inboxd_queue_depth", "Files waiting or queued, by inbox", ["inbox"], registry=r)
        self.in_flight = Gauge("inboxd_in_flight", "Files being worked on, by inbox", ["inbox"], registry=r)
        self.api_errors = Counter("inboxd_api_errors", "API answers that were errors, by route and status",
                                  ["route", "status"], registry=r)
        self.retries = Counter("inboxd_retries", "Requests retried, by route", ["route"], registry=r)
        self.last_success = Gauge("inboxd_last_success_timestamp_seconds", "When an inbox last archived a file",
                                  ["inbox"], registry=r)
        self.paused = Gauge("inboxd_paused", "1 while the API rejects the key", registry=r)
        self.watch_alive = Gauge("inboxd_watch_alive", "1 while an inbox is watched", ["inbox"], registry=r)
        self.batch_jobs = Gauge("inboxd_batch_jobs", "Batch jobs known to the journal, by status", ["status"],
                                registry=r)
        self.batch_seconds = Histogram("inboxd_batch_drop_to_results_seconds",
                                       "Seconds from a batch input's drop to its results in the outbox",
                                       buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600,
                                                48 * 3600), registry=r)
        self.batch_downloads = Counter("inboxd_batch_downloads", "Result downloads, by outcome", ["outcome"],
                                       registry=r)

    def file_finished(self, inbox: str, outcome: str, bytes: int = 0, seconds: float | None = None) -> None:
        self.files.labels(inbox, outcome).inc()
        if bytes:
            self.bytes.labels(inbox).inc(bytes)
        if seconds is not None:
            self.seconds.labels(inbox).observe(seconds)

    def set_batch_jobs(self, counts: dict[str, int]) -> None:
        for status in ("VALIDATING", "IN_PROGRESS", "CANCELING", "COMPLETED", "FAILED", "EXPIRED", "CANCELLED"):
            self.batch_jobs.labels(status).set(counts.get(status, 0))

    def batch_delivered(self, seconds: float | None) -> None:
        if seconds is not None:
            self.batch_seconds.observe(seconds)

    def batch_download(self, outcome: str) -> None:
        self.batch_downloads.labels(outcome).inc()

    def api_error(self, route: str, status: int | str) -> None:
        self.api_errors.labels(route, str(status)).inc()

    def retry(self, route: str) -> None:
        self.retries.labels(route).inc()

    def set_queue_depth(self, inbox: str, n: int) -> None:
        self.queue.labels(inbox).set(n)

    def set_in_flight(self, inbox: str, n: int) -> None:
        self.in_flight.labels(inbox).set(n)

    def set_paused(self, paused: bool) -> None:
        self.paused.set(1 if paused else 0)

    def set_last_success(self, inbox: str, ts: float) -> None:
        self.last_success.labels(inbox).set(ts)

    def set_watch_alive(self, inbox: str, alive: bool) -> None:
        self.watch_alive.labels(inbox).set(1 if alive else 0)

    def watch_events(self, figures: Callable[[], dict[str, Any]]) -> None:
        """The event sinks' series, read from `figures()` at each scrape (`EventFigures`)."""
        self.registry.register(EventFigures(figures))

    def text(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """/metrics and /healthz, and the status page (/, /status.json, /sidecar) when a `page`
    source is given, on `BoundedHTTPServer` (a fixed pool of threads, timeouts, a cap on
    connections: slow clients cannot take the daemon's threads). The page's access rule is
    `status_page.page_access`: loopback, or a token."""

    def __init__(self, host: str, port: int, metrics: Metrics,
                 health: Callable[[], tuple[bool, dict[str, Any]]], *, page: StatusSource | None = None,
                 token_file: Path | None = None) -> None:
        self.host, self._port, self.metrics, self.health = host, port, metrics, health
        self.page = page
        self.page_on, self.token, self.page_said = page_access(host, token_file) if page else (False, None, "off")
        if self.token:
            register_secret(self.token)
        self._srv: BoundedHTTPServer | None = None

    def start(self) -> MetricsServer:
        self._srv = BoundedHTTPServer(self.host, self._port, self.route).start()
        return self

    def route(self, request: Request) -> Response:
        if request.path == "/metrics":
            return Response(200, self.metrics.text(), CONTENT_TYPE_LATEST)
        if request.path == "/healthz":
            ok, body = self.health()
            return Response(200 if ok else 503, json.dumps(body).encode(), "application/json")
        if request.path in ("/", "/status.json", "/sidecar") and self.page is not None:
            if not self.page_on:
                return plain(404, f"the status page is {self.page_said}")
            if not authorized(self.token, request.headers, request.query):
                return Response(401, b"the status page asks for its token (daemon.status_token_file): "
                                     b"open /?token=... or send Authorization: Bearer ...\n",
                                headers={"WWW-Authenticate": "Bearer"})
            return self._page(request, self.page)
        return plain(404, "not found")

    def _page(self, request: Request, page: StatusSource) -> Response:
        if request.path == "/":
            return Response(200, PAGE, "text/html; charset=utf-8",
                            {"Content-Security-Policy": PAGE_CSP, "Referrer-Policy": "no-referrer"})
        if request.path == "/status.json":
            return Response(200, json.dumps(page.status()).encode(), "application/json",
                            {"Content-Security-Policy": DATA_CSP})
        content = page.sidecar((request.query.get("path") or [""])[0])
        if content is None:
            return plain(404, "no such error sidecar in a configured inbox's failed folder")
        return Response(200, content, "text/plain; charset=utf-8", {"Content-Security-Policy": DATA_CSP})

    @property
    def port(self) -> int:
        assert self._srv is not None
        return self._srv.port

    def stop(self) -> None:
        if self._srv is not None:
            self._srv.stop()
            self._srv = None


class EventFigures:
    """A collector of the event sinks' series from one snapshot per scrape: `figures()` gives
    ``{"pending": {sink: (n, oldest age or None)}, "delivered": {sink: n},
    "failed": {(sink, reason): n}, "dead": {sink: n}}`` (counters since the daemon started)."""

    def __init__(self, figures: Callable[[], dict[str, Any]]) -> None:
        self.figures = figures

    def describe(self) -> list[Any]:
        return []  # collected at scrape time only (the registry must not call figures() at registration)

    def collect(self) -> Iterator[Any]:
        f = self.figures()
        pending = GaugeMetricFamily("inboxd_events_pending", "Events recorded and not yet delivered, by sink",
                                    labels=["sink"])
        oldest = GaugeMetricFamily("inboxd_events_oldest_pending_seconds",
                                   "Age of the oldest pending event, by sink (0: none pending)", labels=["sink"])
        for sink, (n, age) in sorted(f.get("pending", {}).items()):
            pending.add_metric([sink], n)
            oldest.add_metric([sink], age or 0.0)
        delivered = CounterMetricFamily("inboxd_events_delivered", "Events delivered, by sink", labels=["sink"])
        for sink, n in sorted(f.get("delivered", {}).items()):
            delivered.add_metric([sink], n)
        failed = CounterMetricFamily("inboxd_events_failed", "Failed delivery attempts, by sink and reason",
                                     labels=["sink", "reason"])
        for (sink, reason), n in sorted(f.get("failed", {}).items()):
            failed.add_metric([sink, reason], n)
        dead = CounterMetricFamily("inboxd_events_dead", "Events dead-lettered after max_age_hours, by sink",
                                   labels=["sink"])
        for sink, n in sorted(f.get("dead", {}).items()):
            dead.add_metric([sink], n)
        yield from (pending, oldest, delivered, failed, dead)
