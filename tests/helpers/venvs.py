"""Venvs with the official `together` clients, built once and cached.

`official_python("1")` is a venv with the 1.x client, `official_python("3")` one with the
3.x client; each returns the path of that venv's python. They are built from the package
index the first time (CI reaches it) under `.cache/venvs/` of the repository, or under
`$INBOXD_TEST_CACHE`, with a file lock so that parallel test processes build each once.

The clients are pinned to exact versions (the newest 1.x and 3.x when pinned), so a new
release cannot change what the tests compare against overnight: moving a pin is a change
to this file, seen in review. A cached venv built for another spec is rebuilt, unless it
already holds the pinned version. (The clients' own dependencies are not pinned.)
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PINS = {"1": "1.6.0", "3": "3.1.1"}
SPECS = {major: f"together=={version}" for major, version in PINS.items()}


def cache_dir() -> Path:
    return Path(os.environ.get("INBOXD_TEST_CACHE", REPO / ".cache"))


def official_python(major: str) -> Path:
    spec = SPECS[major]
    root = cache_dir() / "venvs"
    root.mkdir(parents=True, exist_ok=True)
    venv = root / f"together-{major}x"
    python = venv / "bin" / "python"
    marker = venv / ".ready"
    with open(root / f".together-{major}x.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text().strip() != spec and _installed(python) == PINS[major]:
            marker.write_text(spec + "\n")  # built for an older spec, but it holds the pinned version
        if not marker.exists() or marker.read_text().strip() != spec:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", spec],
                check=True,
            )
            marker.write_text(spec + "\n")
    return python


def _installed(python: Path) -> str | None:
    try:
        return together_version(python)
    except (OSError, subprocess.CalledProcessError):
        return None


def together_version(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('together'))"],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()
