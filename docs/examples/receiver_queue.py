"""A webhook receiver for inboxd's events that hands each one to a plain queue: here, it prints
the path of the published sidecar (one line per event) for a consumer reading stdout.

    INBOXD_WEBHOOK_SECRET=whsec_... python receiver_queue.py [PORT]   (0: any free port, said on stderr)

Every request is verified with the Standard Webhooks reference library (pip install
standardwebhooks); a request that does not verify gets 401 and is not printed. A redelivery
carries the webhook-id it had the first time, so the ids already seen are skipped (a real
queue keeps them as long as inboxd may retry: max_age_hours).
"""

from __future__ import annotations

import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

WEBHOOK = Webhook(os.environ["INBOXD_WEBHOOK_SECRET"])
SEEN: set[str] = set()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            event = WEBHOOK.verify(body, dict(self.headers.items()))
        except WebhookVerificationError:
            self.send_response(401)
            self.end_headers()
            return
        msg_id = self.headers["webhook-id"]
        if msg_id not in SEEN:  # at least once: the same id may come again
            SEEN.add(msg_id)
            data = event["data"]
            path = data.get("manifest") or data.get("error") or data.get("batch")
            if path is not None:  # a ping has none
                print(f"{event['type']} {path}", flush=True)
        self.send_response(204)  # any 2xx: delivered
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8080), Handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/", file=sys.stderr, flush=True)
    server.serve_forever()
