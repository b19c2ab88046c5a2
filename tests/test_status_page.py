"""The status page, in a real browser: headless Chromium (Debian's chromium and
chromium-driver, installed by .ci/run) through Selenium, against a running daemon with two
inboxes, a failed file, a batch job and files whose names are markup. The page shows the
inboxes, the failed file with its rule and line, the batch job with its counts; the hostile
names appear as text and run nothing; no request leaves loopback (the browser's own log of
every request, and a proxy that refuses, for anything not on loopback). Screenshots (laptop
and phone widths) are kept in the test's tmp_path and their paths printed.

Without a browser here the browser test is skipped, saying so; the access rules and
/status.json are tested without one.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.helpers.daemon import REPO, start_daemon, wait_until, write_config
from tests.helpers.emulator import start_emulator

HOSTILE_DONE = "<img src=x onerror=window.pwned=1>.jsonl"
HOSTILE_FAILED = "<img src=x onerror=document.title='pwned'><svg onload=window.pwned=2>.jsonl"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def batch_lines(prefix: str, n: int) -> bytes:
    return b"".join(json.dumps({"custom_id": f"{prefix}-{i}", "body": {
        "model": "m", "messages": [{"role": "user", "content": f"q{i}"}]}}).encode() + b"\n" for i in range(n))


def drop(folder: Path, name: str, data: bytes) -> None:
    tmp = folder.parent / (".drop-" + str(abs(hash(name))))
    tmp.write_bytes(data)
    os.rename(tmp, folder / name)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    """A daemon with two inboxes: `jobs` (batch-api with a batch outbox: one job, 3 requests)
    and `uploads` (batch-api, upload only: a good file, a failed file, two hostile names);
    one for the module's tests, which only read."""
    tmp_path = tmp_path_factory.mktemp("world")
    emu = start_emulator(tmp_path / "emu", no_dedupe=True, batch_seconds=0.3, processing_delay=0.05)
    jobs, uploads, outbox = tmp_path / "jobs", tmp_path / "uploads", tmp_path / "outbox"
    jobs.mkdir()
    uploads.mkdir()
    cfg = write_config(tmp_path, base_url=emu.base_url, inboxes=[
        {"path": str(jobs), "purpose": "batch-api", "batch": {"poll_seconds": 0.2, "outbox": str(outbox)}},
        {"path": str(uploads), "purpose": "batch-api"}],
        daemon={"metrics_address": "127.0.0.1:0", "settle_seconds": 0.1, "log_level": "info"})
    d = start_daemon(cfg, key=emu.key)
    try:
        (listening,) = d.wait_event("metrics.listening")
        drop(jobs, "job.jsonl", batch_lines("j", 3))
        drop(uploads, "good.jsonl", batch_lines("g", 2))
        drop(uploads, HOSTILE_DONE, batch_lines("h", 1))
        drop(uploads, "bad.jsonl", batch_lines("b", 1) + b"{not json\n")
        drop(uploads, HOSTILE_FAILED, b"{not json either\n")
        wait_until(lambda: (outbox / "job.batch.json").exists(), 60, what="the batch job's results")
        d.wait_event("batch.delivered")  # journaled once the merge is over and the poller looks again
        d.wait_event("file.failed", count=2)
        d.wait_event("file.archived", count=3)
        yield {"base": f"http://{listening['address']}", "cfg": cfg, "daemon": d, "tmp": tmp_path,
               "listening": listening, "uploads": uploads}
    finally:
        d.stop()
        emu.stop()


def status_json(base: str, **kw: Any) -> dict[str, Any]:
    r = requests.get(f"{base}/status.json", timeout=10, **kw)
    assert r.status_code == 200, r.text
    return r.json()


def test_status_json_is_the_status_commands_object_with_the_daemons_view(world):
    data = status_json(world["base"])
    cli = json.loads(subprocess.run([sys.executable, "-m", "inboxd", "status", "--config", str(world["cfg"]),
                                     "--json"], capture_output=True, text=True, cwd=REPO, timeout=60).stdout)
    assert set(data) == set(cli) and [i["inbox"] for i in data["inboxes"]] == [i["inbox"] for i in cli["inboxes"]]
    assert set(data["inboxes"][0]) <= set(cli["inboxes"][0]) | {"queued"}
    assert data["daemon"]["running"] and data["health"] is not None and cli["daemon"] is None
    jobs, uploads = data["inboxes"]
    assert jobs["state"] == "watching" and uploads["state"] == "watching"
    failed = {f["name"]: f for f in uploads["recent_failures"]}
    assert failed["bad.jsonl"]["rule"] == "json.invalid" and failed["bad.jsonl"]["line"] == 2
    assert failed["bad.jsonl"]["stage"] and failed["bad.jsonl"]["sidecar"].endswith("bad.jsonl.error.json")
    assert {f["name"] for f in uploads["recent"] if f["outcome"] == "done"} >= {"good.jsonl", HOSTILE_DONE}
    assert all(f["file_id"] for f in uploads["recent"] if f["outcome"] == "done")
    (job,) = data["batches"]
    # the poller's lines name the input where it is now (done/), not its claim folder
    statuses = world["daemon"].events("batch.status")
    assert statuses and all(e["input"] == str(world["tmp"] / "jobs" / "done" / "job.jsonl") for e in statuses)
    assert job["status"] == "COMPLETED"
    assert job["counts"] == {"requests": 3, "succeeded": 3, "failed": 0, "missing": 0}


def test_sidecars_are_served_only_from_a_failed_folder(world):
    base, uploads = world["base"], world["uploads"]
    sidecar = uploads / "failed" / "bad.jsonl.error.json"
    r = requests.get(f"{base}/sidecar", params={"path": str(sidecar)}, timeout=10)
    assert r.status_code == 200 and json.loads(r.text)["error"]["kind"] == "json.invalid"
    assert r.headers["Content-Type"].startswith("text/plain") and r.headers["X-Content-Type-Options"] == "nosniff"
    (uploads / "failed" / "x.error.json").symlink_to(world["cfg"])  # a symlink out of failed/
    for path in (str(world["cfg"]), str(uploads / "failed" / ".." / ".." / "inboxd.toml"),
                 str(uploads / "failed" / "bad.jsonl"), str(uploads / "failed" / "x.error.json"),
                 str(uploads / "done" / "good.jsonl.manifest.json"), "/etc/passwd", "relative.error.json"):
        r = requests.get(f"{base}/sidecar", params={"path": path}, timeout=10)
        assert r.status_code == 404, (path, r.status_code)


def test_the_page_in_a_browser(world, tmp_path):
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("no chromium and chromedriver here (.ci/run installs Debian's chromium and chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    with socket.socket() as s:  # a proxy port nobody listens on: anything not on loopback is refused
        s.bind(("127.0.0.1", 0))
        dead_proxy = s.getsockname()[1]
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
                 f"--proxy-server=http://127.0.0.1:{dead_proxy}", "--window-size=1280,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    base = world["base"]
    try:
        driver.get(f"{base}/")
        wait_until(lambda: driver.execute_script("return document.body.dataset.loaded === '1'"), 20,
                   what="the page's first render")
        inboxes = driver.find_elements(By.CSS_SELECTOR, "section.inbox")
        assert [e.get_attribute("data-inbox") for e in inboxes] == [
            str(world["tmp"] / "jobs"), str(world["tmp"] / "uploads")]
        assert all(e.find_element(By.CSS_SELECTOR, ".state").text == "watching" for e in inboxes)

        failures = {r.find_element(By.CSS_SELECTOR, "td.name").text: r
                    for r in driver.find_elements(By.CSS_SELECTOR, "tr.failure")}
        assert set(failures) == {"bad.jsonl", HOSTILE_FAILED}  # the markup is the text of the cell
        cells = [c.text for c in failures["bad.jsonl"].find_elements(By.TAG_NAME, "td")]
        assert "json.invalid" in cells and "2" in cells, cells
        link = failures["bad.jsonl"].find_element(By.LINK_TEXT, "error sidecar").get_attribute("href")

        (batch,) = driver.find_elements(By.CSS_SELECTOR, "tr.batch")
        assert "COMPLETED" in batch.text and "requests 3 · succeeded 3 · failed 0 · missing 0" in batch.text, batch.text
        recent = [r.find_element(By.CSS_SELECTOR, "td.name").text
                  for r in driver.find_elements(By.CSS_SELECTOR, "tr.recent")]
        assert HOSTILE_DONE in recent and "good.jsonl" in recent

        # the hostile names ran nothing and made no element
        assert driver.find_elements(By.TAG_NAME, "img") == [] and driver.find_elements(By.TAG_NAME, "svg") == []
        assert len(driver.find_elements(By.TAG_NAME, "script")) == 1  # the page's own
        assert driver.execute_script("return window.pwned === undefined && document.title") == "inboxd status"

        laptop = tmp_path / "status-page-laptop.png"
        driver.save_screenshot(str(laptop))
        driver.set_window_size(390, 844)  # a phone: nothing wider than the screen but the tables' own scroll
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1")
        phone = tmp_path / "status-page-phone.png"
        driver.save_screenshot(str(phone))
        print(f"\nscreenshots: {laptop} {phone}")

        driver.get(link)
        assert '"inboxd.error/v1"' in driver.find_element(By.TAG_NAME, "body").text

        urls = [json.loads(e["message"])["message"].get("params", {}).get("request", {}).get("url")
                for e in driver.get_log("performance")]
        # every request that goes over a network (the browser's own chrome:// pages do not)
        urls = [u for u in urls if u and u.split(":", 1)[0] in ("http", "https", "ws", "wss", "ftp")]
        assert urls and all(u.startswith(base + "/") for u in urls), urls  # nothing left loopback
        assert {u.split("?")[0] for u in urls} >= {f"{base}/", f"{base}/status.json", f"{base}/sidecar"}
    finally:
        driver.quit()
    assert laptop.stat().st_size > 10_000 and phone.stat().st_size > 5_000


def test_the_page_asks_for_the_token_when_one_is_set(tmp_path):
    token = "status-token-0123456789abcdef"
    (tmp_path / "token").write_text(token + "\n")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    cfg = write_config(tmp_path, base_url="http://127.0.0.1:9/v1", inboxes=[{"path": inbox, "purpose": "batch-api"}],
                       daemon={"metrics_address": "127.0.0.1:0", "status_token_file": str(tmp_path / "token")})
    with start_daemon(cfg, key="test-key-0123456789") as d:
        (listening,) = d.wait_event("metrics.listening")
        assert "token" in listening["status_page"]
        base = f"http://{listening['address']}"
        for path in ("/", "/status.json", "/sidecar"):
            assert requests.get(base + path, timeout=10).status_code == 401
            assert requests.get(base + path, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
        assert requests.get(base + "/", params={"token": token}, timeout=10).status_code == 200
        assert status_json(base, headers={"Authorization": f"Bearer {token}"})["inboxes"]
        assert requests.get(base + "/healthz", timeout=10).status_code in (200, 503)  # open, as before
        assert requests.get(base + "/metrics", timeout=10).status_code == 200
    assert token not in json.dumps(d.lines) + "".join(d.stderr)


def test_page_access_rules(tmp_path):
    from inboxd.service.status_page import authorized, page_access

    assert page_access("127.0.0.1", None)[:2] == (True, None)
    assert page_access("::1", None)[:2] == (True, None)
    on, token, said = page_access("0.0.0.0", None)
    assert not on and "not a loopback address" in said and "status_token_file" in said
    (tmp_path / "t").write_text("abc\n")
    assert page_access("10.1.2.3", tmp_path / "t")[:2] == (True, "abc")
    assert page_access("10.1.2.3", tmp_path / "missing")[0] is False
    assert authorized("abc", {"authorization": "Bearer abc"}, {}) and authorized("abc", {}, {"token": ["abc"]})
    assert not authorized("abc", {}, {}) and not authorized("abc", {"authorization": "Bearer abd"}, {})
