"""R4: a hostile server. The emulator answers one request of a route with a hostile reply
(a missing, file:// or foreign Location, an unsafe file id, no ETag, garbage JSON, an answer
that never comes, a 5 GB Content-Length, a redirect loop). The daemon must say what went
wrong, within bounded time, write nothing outside the inbox, never send the key anywhere but
the API host, and, once the server behaves again, finish the file (or fail it with a sidecar)."""

from __future__ import annotations

import json
import time

from tests.helpers.daemon import start_daemon, wait_until, write_config
from tests.helpers.emulator import start_emulator
from tests.helpers.files import batch_lines, big_batch, claimed, drop, error_sidecars, manifests

from .common import Clock, record

KEY = "r4-key-2b4d6f8a0c1e3"

# (route, hostile mode, multipart?, words one of which the daemon's log must carry)
CASES = [
    ("create", "no_location", False, ("upload url", "location")),
    ("create", "file_location", False, ("http(s)", "file")),
    ("create", "bad_file_id", False, ("unsafe file id",)),
    ("create", "garbage_json", False, ("redirect", "http 200")),
    ("create", "redirect_loop", False, ("http(s)", "upload url")),
    ("create", "hang", False, None),  # the client's own retry answers it: the manifest counts the retry
    ("create", "huge_content_length", False, ("redirect", "http 200", "declares")),
    ("create", "other_host_location", False, ("refused", "no content", "400")),
    ("put", "redirect_loop", False, ("redirect",)),
    ("put", "hang", False, None),
    ("preprocess", "garbage_json", False, ("not json",)),
    ("preprocess", "huge_content_length", False, ("declares", "refusing")),
    ("initiate", "bad_file_id", True, ("unsafe file id",)),
    ("initiate", "file_location", True, ("http(s)",)),
    ("initiate", "other_host_location", True, ("etag", "invalidpart", "refused")),
    ("part_put", "no_etag", True, ("etag",)),
    ("complete", "garbage_json", True, ("not json",)),
]


def test_r4_hostile_answers(tmp_path):
    emu = start_emulator(tmp_path / "emu", key=KEY)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(tmp_path, base_url=emu.base_url,
                       inboxes=[{"path": str(inbox), "purpose": "batch-api", "validate": "basic"}],
                       api={"timeout_seconds": 2, "max_retries": 1},
                       upload={"multipart_threshold": "6MiB", "part_size": "5MiB"},
                       daemon={"workers": 1, "settle_seconds": 0.1, "rescan_seconds": 1, "max_attempts": 3})
    clock = Clock()
    before = sorted(str(p) for p in tmp_path.rglob("*") if "inbox" not in p.parts and "emu" not in p.parts)
    problems: list[str] = []
    seconds: dict[str, float] = {}
    try:
        with start_daemon(cfg, key=KEY) as d:
            for i, (route, mode, big, words) in enumerate(CASES):
                name = f"h{i:02d}-{route}-{mode}.jsonl"
                emu.script([{"route": route, "hostile": mode}])
                t0 = time.monotonic()
                data = big_batch(name, 7 * 2**20) if big else batch_lines(name, 20)
                drop(inbox, name, data, tmp_path / "stage")
                def resolved(name: str = name) -> bool:
                    return name in {m["source"]["name"] for m in manifests(inbox).values()} | {
                        e["source"]["name"] for e in error_sidecars(inbox).values()}

                try:
                    wait_until(resolved, 60, interval=0.2, what=f"{name} resolved")
                except AssertionError:
                    problems.append(f"{route}/{mode}: not resolved in 60 s")
                    continue
                seconds[f"{route}/{mode}"] = round(time.monotonic() - t0, 1)
                said = " ".join(json.dumps(e).lower() for e in d.lines if e.get("name") == name
                                and e.get("event") in ("file.retry", "file.failed"))
                if words is None:
                    (m,) = [m for m in manifests(inbox).values() if m["source"]["name"] == name]
                    if m["upload"]["attempts"] < 2 or seconds[f"{route}/{mode}"] > 15:
                        problems.append(f"{route}/{mode}: expected a retry after the idle timeout: {m['upload']}")
                elif not any(w in said for w in words):
                    problems.append(f"{route}/{mode}: the log names none of {words}: {said[:300]}")
                if emu.stats()["script_left"]:
                    problems.append(f"{route}/{mode}: the hostile answer was never asked for")
                    emu.reset()
            assert d.proc.poll() is None
            log_text = "\n".join(json.dumps(e) for e in d.lines) + "\n".join(d.stderr)
        stats = emu.stats()
    finally:
        emu.stop()
    after = sorted(str(p) for p in tmp_path.rglob("*") if "inbox" not in p.parts and "emu" not in p.parts)
    new_outside = [p for p in after if p not in before and "/state" not in p and "/stage" not in p]
    assert not problems, "\n".join(problems)
    assert stats["other_host"]["auth_headers"] == 0, "the key was sent to another host"
    assert stats["storage_auth_headers"] == 0
    assert not new_outside, new_outside
    assert KEY not in log_text
    assert not claimed(inbox)
    assert "Traceback" not in log_text
    record("R4 hostile server", modes=len(CASES), resolved=len(seconds), done=len(manifests(inbox)),
           failed=len(error_sidecars(inbox)), key_sent_elsewhere=0, max_seconds=max(seconds.values()),
           seconds=clock.seconds)
