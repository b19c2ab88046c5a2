"""The status page at `/` of the metrics address: one HTML document with its style and script
inline (no CDN, no font, no image: data hosts often have no internet), which fetches
/status.json every few seconds and builds the page from it with DOM nodes and textContent,
never markup from data (a file name is a producer's, and is shown as text). The error
sidecars of failed files open at /sidecar?path=..., read-only, served as text.

The responses carry a Content-Security-Policy that allows this page's own script and style
(by their hashes) and connections to its own origin only: an image, a frame, a form or a
script from anywhere else is refused by the browser even if markup ever slipped through.

Access: the page is on loopback by default. Bound to another address it requires the token
in `daemon.status_token_file` (``Authorization: Bearer``, or ``?token=`` in the address,
which the page passes on); without a token file it is off there, and /metrics and /healthz
stay open as before (`page_access`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from pathlib import Path
from typing import Any, Protocol

REFRESH_SECONDS = 3

STYLE = """
:root { color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700; --muted: #6e7781;
  --line: #d0d7de; --bg2: rgba(127,127,127,.08); }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; padding: 12px;
  max-width: 1200px; margin-inline: auto; }
h1 { font-size: 1.3em; margin: .2em 0 .6em; } h2 { font-size: 1.1em; margin: 1.4em 0 .5em; }
h3 { font-size: 1em; margin: 1em 0 .3em; }
.banner { padding: .6em .8em; border-radius: 6px; margin-bottom: .8em; border: 1px solid var(--line); }
.banner.ok { border-color: var(--ok); } .banner.bad { border-color: var(--bad); }
.banner ul { margin: .3em 0 0; padding-left: 1.2em; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 330px), 1fr)); gap: 10px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: .6em .8em; background: var(--bg2);
  min-width: 0; }
.card .path { font-family: ui-monospace, monospace; word-break: break-all; font-weight: 600; }
.state { display: inline-block; padding: 0 .5em; border-radius: 1em; font-size: .85em; border: 1px solid; }
.state.watching { color: var(--ok); } .state.paused, .state.missing, .state.not-claiming,
.state.watch-lost { color: var(--bad); } .state.unknown { color: var(--muted); }
dl.counts { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 2px 10px; margin: .5em 0; }
dl.counts div { min-width: 0; } dt { color: var(--muted); font-size: .8em; } dd { margin: 0; font-weight: 600; }
.tablewrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; min-width: 720px; font-size: .9em; }
th, td { text-align: left; padding: .25em .5em; border-bottom: 1px solid var(--line); vertical-align: top; }
td.name, td.mono { font-family: ui-monospace, monospace; word-break: break-all; }
td.rule { word-break: normal; white-space: nowrap; }
.failed { color: var(--bad); } .done { color: var(--ok); } .muted { color: var(--muted); }
footer { margin-top: 2em; color: var(--muted); font-size: .85em; }
pre { white-space: pre-wrap; word-break: break-all; background: var(--bg2); padding: .5em; border-radius: 6px; }
@media (max-width: 600px) { body { padding: 8px; font-size: 14px; } th, td { padding: .2em .3em; } }
"""

SCRIPT = """
"use strict";
const REFRESH = __REFRESH__ * 1000;
const token = new URLSearchParams(location.search).get("token");
const root = document.getElementById("root");
const foot = document.getElementById("foot");

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
  }
  return node;
}
function text(v) { return v === null || v === undefined || v === "" ? "-" : String(v); }
function table(headers, rows) {
  const head = el("tr", {}, ...headers.map(h => el("th", {}, h)));
  return el("div", {class: "tablewrap"}, el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows)));
}
function sidecarLink(path) {
  let href = "/sidecar?path=" + encodeURIComponent(path);
  if (token) href += "&token=" + encodeURIComponent(token);
  return el("a", {href: href, target: "_blank", rel: "noopener noreferrer"}, "error sidecar");
}
function stateBadge(i) {
  const s = i.state || "unknown";
  return el("span", {class: "state " + s.replace(/[^a-z]+/g, "-"), "data-state": s}, s);
}
function counts(pairs) {
  return el("dl", {class: "counts"}, ...pairs.map(([k, v]) => el("div", {}, el("dt", {}, k), el("dd", {}, text(v)))));
}
function names(list) { return Array.isArray(list) ? list.length : (list || 0); }

function health(data) {
  const h = data.health;
  if (!h) return el("div", {class: "banner"},
                    "Health: not reported (this object comes from the journal, not a running daemon)");
  if (h.healthy) return el("div", {class: "banner ok", id: "health"}, "Healthy: no problem reported by /healthz");
  return el("div", {class: "banner bad", id: "health"}, "Unhealthy: what /healthz reports",
            el("ul", {}, ...h.problems.map(p => el("li", {}, p))));
}

function inboxCard(i) {
  const card = el("section", {class: "card inbox", "data-inbox": i.inbox},
    el("div", {class: "path"}, i.inbox), el("div", {}, "purpose ", el("b", {}, i.purpose), " · ", stateBadge(i)));
  if (i.state_why) card.appendChild(el("div", {class: "failed why"}, i.state_why));
  card.appendChild(counts([["waiting", i.waiting], ["queued", i.queued], ["in flight", i.in_flight],
    ["held open", names(i.held_open)], ["stuck", names(i.stuck)], ["ignored", names(i.ignored)],
    ["done", i.done], ["failed", i.failed], ["last success", i.last_success]]));
  if (Array.isArray(i.stuck) && i.stuck.length)
    card.appendChild(el("div", {class: "muted"}, "stuck: ", i.stuck.slice(0, 5).join(", ")));
  if (Array.isArray(i.held_open) && i.held_open.length)
    card.appendChild(el("div", {class: "muted"}, "held open: ", i.held_open.slice(0, 5).join(", ")));
  return card;
}

function recentTable(inboxes) {
  const rows = [];
  for (const i of inboxes) for (const f of i.recent || [])
    rows.push(el("tr", {class: "recent"}, el("td", {class: "name"}, f.name), el("td", {class: f.outcome}, f.outcome),
      el("td", {}, text(f.at)), el("td", {class: "mono"}, text(f.file_id)), el("td", {class: "mono"}, i.inbox)));
  return rows.length ? table(["file", "outcome", "time", "file id", "inbox"], rows)
                     : el("p", {class: "muted"}, "none yet");
}

function failedTable(inboxes) {
  const rows = [];
  for (const i of inboxes) for (const f of i.recent_failures || []) {
    const e = f.error || {};
    rows.push(el("tr", {class: "failure"}, el("td", {class: "name"}, f.name), el("td", {}, text(f.at)),
      el("td", {}, text(f.stage)), el("td", {class: "mono rule"}, text(f.rule)), el("td", {}, text(f.line)),
      el("td", {}, text(e.message)), el("td", {}, f.sidecar ? sidecarLink(f.sidecar) : "-")));
  }
  return rows.length ? table(["file", "time", "stage", "rule", "line", "message", ""], rows)
                     : el("p", {class: "muted"}, "none");
}

function batchCounts(b) {
  const parts = [];
  for (const [k, v] of Object.entries(b.counts || {})) if (v !== null && v !== undefined) parts.push(k + " " + v);
  return parts.length ? parts.join(" · ") : "-";
}

function batchTable(data) {
  const rows = (data.batches || []).map(b => el("tr", {class: "batch"},
    el("td", {class: "mono"}, text(b.batch_id)), el("td", {}, text(b.status)), el("td", {}, text(b.stage)),
    el("td", {}, b.progress === null || b.progress === undefined ? "-" : b.progress.toFixed(1) + "%"),
    el("td", {class: "counts"}, batchCounts(b)), el("td", {class: "name"}, text(b.input_path || b.claim)),
    el("td", {}, text(b.error))));
  const out = el("div", {});
  if (data.batches_error)
    out.appendChild(el("p", {class: "failed"}, "cannot read the batch jobs: " + data.batches_error));
  out.appendChild(rows.length ? table(["batch", "status", "stage", "progress", "counts", "input", "error"], rows)
                              : el("p", {class: "muted"}, "no batch jobs"));
  return out;
}

function section(value, what) {
  if (value === null || value === undefined)
    return el("p", {class: "muted"}, "not reported by this daemon (" + what + ")");
  return el("pre", {}, JSON.stringify(value, null, 2));
}

function render(data) {
  const inboxes = data.inboxes || [];
  const page = el("div", {},
    health(data),
    el("h2", {}, "Inboxes (" + inboxes.length + ")"), el("div", {class: "cards"}, ...inboxes.map(inboxCard)),
    el("h2", {}, "Failed files"), failedTable(inboxes),
    el("h2", {}, "Last files"), recentTable(inboxes),
    el("h2", {}, "Batch jobs"), batchTable(data),
    el("h2", {}, "Batch ledger"), section(data.ledger, "rounds and parts of batch inputs"),
    el("h2", {}, "Event sinks"), section(data.events, "the sinks' backlog"));
  root.replaceChildren(page);
  foot.textContent = "generated " + text(data.generated_at) + " · refreshes every " + REFRESH / 1000 + " s · read-only";
}

async function refresh() {
  try {
    const r = await fetch("/status.json", {headers: token ? {"Authorization": "Bearer " + token} : {},
                                           cache: "no-store", credentials: "omit"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    render(await r.json());
    document.body.dataset.loaded = "1";
  } catch (e) {
    foot.textContent = "refresh failed (" + e.message + "); trying again in " + REFRESH / 1000 + " s";
  }
}
refresh();
setInterval(refresh, REFRESH);
""".replace("__REFRESH__", str(REFRESH_SECONDS))

PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>inboxd status</title>
<style>{STYLE}</style></head>
<body><h1>inboxd status</h1>
<div id="root"><p class="muted">loading /status.json ...</p></div>
<footer id="foot"></footer>
<script>{SCRIPT}</script>
</body></html>
""".encode()


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# the page's own script and style by their hashes; nothing else may load, connect or run
PAGE_CSP = (f"default-src 'none'; script-src {_sha256(SCRIPT)}; style-src {_sha256(STYLE)}; connect-src 'self'; "
            "img-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
DATA_CSP = "default-src 'none'; sandbox; frame-ancestors 'none'"  # /status.json and the sidecars


class StatusSource(Protocol):
    """What the daemon gives the page: the status object, and a sidecar's bytes when the path
    names an error sidecar of a configured inbox (None otherwise)."""

    def status(self) -> dict[str, Any]: ...

    def sidecar(self, path: str) -> bytes | None: ...


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def page_access(host: str, token_file: Path | None) -> tuple[bool, str | None, str]:
    """(serve the page, the token it asks for, what to say at start)."""
    token = None
    if token_file is not None:
        try:
            token = token_file.read_text().strip() or None
        except OSError as exc:
            return False, None, f"off: cannot read daemon.status_token_file {token_file}: {exc.strerror or exc}"
        if token is None:
            return False, None, f"off: daemon.status_token_file {token_file} is empty"
    if token is not None:
        return True, token, "on, asks for the token of daemon.status_token_file"
    if is_loopback(host):
        return True, None, "on, loopback only, no token"
    return False, None, (f"off: {host} is not a loopback address and daemon.status_token_file is not set "
                         "(/metrics and /healthz answer as before)")


def authorized(token: str | None, headers: dict[str, str], query: dict[str, list[str]]) -> bool:
    if token is None:
        return True
    given = headers.get("authorization", "")
    given = given[7:].strip() if given.lower().startswith("bearer ") else (query.get("token") or [""])[0]
    return hmac.compare_digest(given.encode(), token.encode())
