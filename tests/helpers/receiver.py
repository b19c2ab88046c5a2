"""A webhook receiver process on loopback that verifies every delivery with `standardwebhooks`
(the specification's reference library), for the events tests and bench/events.py.

    python -m tests.helpers.receiver --secret whsec_... --log deliveries.jsonl [--fail-first N]
        [--fail-rate R] [--seed S]

It prints its url as the first stdout line. Each request is one JSON line in --log:
``{"t": <time>, "id", "timestamp", "verified", "answer", "body": <parsed or null>, "error"}``,
`answer` a status, "closed" or "cut" (a body shorter than its Content-Length: the sender was
killed mid-request; nothing whole to verify, `verified` null). It answers 500 to the first
--fail-first deliveries and to --fail-rate of the rest, 204 otherwise.
``POST /_control {"down": S}`` makes it close every connection without an answer for S seconds
(a receiver that is down); ``{"fail_first": N}`` / ``{"fail_rate": R}`` change the faults;
``{"status": 4xx, "times": N}`` answers the next N deliveries with that status.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(("127.0.0.1", args.port), _Handler)
        self.webhook = Webhook(args.secret)
        self.lock = threading.Lock()
        self.log = open(args.log, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the server
        self.fail_first = args.fail_first
        self.fail_rate = args.fail_rate
        self.rng = random.Random(args.seed)
        self.down_until = 0.0
        self.forced: list[int] = []
        self.seen = 0


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        srv = self.server
        if len(body) < length:  # the sender died mid-request (kill -9): no request to verify or answer
            with srv.lock:
                srv.log.write(json.dumps({"t": time.time(), "id": self.headers.get("webhook-id"), "verified": None,
                                          "body": None, "error": f"cut: {len(body)} of {length} bytes",
                                          "answer": "cut"}) + "\n")
            self.close_connection = True
            return
        if self.path == "/_control":
            change = json.loads(body)
            with srv.lock:
                if "down" in change:
                    srv.down_until = time.time() + float(change["down"])
                srv.fail_first = int(change.get("fail_first", srv.fail_first))
                srv.fail_rate = float(change.get("fail_rate", srv.fail_rate))
                if "status" in change:
                    srv.forced += [int(change["status"])] * int(change.get("times", 1))
            self._answer(200)
            return
        entry: dict[str, Any] = {"t": time.time(), "id": self.headers.get("webhook-id"),
                                 "timestamp": self.headers.get("webhook-timestamp"), "verified": False,
                                 "body": None, "error": None}
        try:
            entry["body"] = srv.webhook.verify(body, dict(self.headers.items()))
            entry["verified"] = True
        except (WebhookVerificationError, ValueError) as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        with srv.lock:
            if time.time() < srv.down_until:
                answer: int | str = "closed"
            elif srv.forced:
                answer = srv.forced.pop(0)
            else:
                srv.seen += 1
                fail = srv.seen <= srv.fail_first or srv.rng.random() < srv.fail_rate
                answer = 500 if fail else (204 if entry["verified"] else 401)
            entry["answer"] = answer
            srv.log.write(json.dumps(entry) + "\n")
        if answer == "closed":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        assert isinstance(answer, int)
        self._answer(answer)

    def _answer(self, status: int) -> None:
        self.send_response(status)
        if status == 429:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", "0")
        self.end_headers()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--secret", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--fail-first", type=int, default=0)
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    srv = _Server(args)
    print(f"http://127.0.0.1:{srv.server_address[1]}/hooks", flush=True)
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
