"""Venvs with the official `together` clients, built once and cached.

`official_python("1")` is a venv with `together<2`, `official_python("3")` one with
`together>=3`; each returns the path of that venv's python. They are built from the package
index the first time (CI reaches it) under `.cache/venvs/` of the repository, or under
`$INBOXD_TEST_CACHE`, with a file lock so that parallel test processes build each once.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SPECS = {"1": "together<2", "3": "together>=3"}


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
        if not marker.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", spec],
                check=True,
            )
            marker.write_text(spec + "\n")
    return python


def together_version(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('together'))"],
        check=True, capture_output=True, text=True,
    )
    return out.stdout.strip()
