"""A webhook receiver for inboxd's events that tells Airflow (3.x) an asset was updated: each
verified `file.archived` event becomes an asset event through Airflow's REST API
(POST /api/v2/assets/events), with the manifest's path and file id as the event's `extra`, so a
DAG scheduled on that asset runs and reads them from its triggering asset events.

    INBOXD_WEBHOOK_SECRET=whsec_... AIRFLOW_URL=https://airflow.example AIRFLOW_TOKEN=... \\
    AIRFLOW_ASSET_ID=7 python receiver_airflow.py [PORT]

AIRFLOW_TOKEN is a JWT from Airflow's /auth/token; AIRFLOW_ASSET_ID is the id of the asset
(GET /api/v2/assets?name_pattern=...). Airflow answering an error answers inboxd 503, so inboxd
retries the event later under the same webhook-id.
"""

from __future__ import annotations

import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

WEBHOOK = Webhook(os.environ["INBOXD_WEBHOOK_SECRET"])
AIRFLOW = os.environ["AIRFLOW_URL"].rstrip("/")
TOKEN = os.environ["AIRFLOW_TOKEN"]
ASSET_ID = int(os.environ["AIRFLOW_ASSET_ID"])


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            event = WEBHOOK.verify(body, dict(self.headers.items()))
        except WebhookVerificationError:
            self._answer(401)
            return
        if event["type"] != "file.archived":
            self._answer(204)  # this receiver acts on uploads only
            return
        data = event["data"]
        extra = {"inboxd_event_id": self.headers["webhook-id"], "manifest": data["manifest"],
                 "file_id": data["file_id"], "sha256": data["sha256"], "purpose": data["purpose"]}
        r = requests.post(f"{AIRFLOW}/api/v2/assets/events", json={"asset_id": ASSET_ID, "extra": extra},
                          headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        self._answer(204 if r.ok else 503)

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8080
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
