"""`inboxd upload FILE --purpose P [--config PATH] [--json] [--wait]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import SecretStr

from ..config import Config
from ..log import register_secret
from ._client import FilesClient
from ._errors import ApiError


def upload_command(config: Config, key: SecretStr, path: Path, purpose: str, *, as_json: bool, wait: bool) -> int:
    """Exit 0 uploaded, 1 the upload failed (one line on stderr), 2 is the caller's (usage)."""
    register_secret(key.get_secret_value())
    try:
        size = path.stat().st_size
    except OSError as exc:
        print(f"inboxd: {path}: {exc.strerror}", file=sys.stderr)
        return 1
    client = FilesClient(config.api, config.upload, key)
    bar = _progress_bar(path.name, size) if sys.stderr.isatty() else None
    try:
        result = client.upload(path, purpose, progress=bar.advance if bar else None)
        file_obj = result.file
        if wait:
            file_obj = client.wait_for_processing(file_obj.id)
    except ApiError as exc:
        print(f"inboxd: {path.name}: upload failed ({exc.kind}): {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"inboxd: {path.name}: cannot read it: {exc.strerror}", file=sys.stderr)
        return 1
    finally:
        if bar:
            bar.close()
        client.close()
    if as_json:
        print(json.dumps({**file_obj.model_dump(mode="json"), "inboxd": {
            "method": result.method, "parts": result.parts, "attempts": result.attempts,
            "sha256": result.sha256, "seconds": round(result.seconds, 3)}}, indent=2))
    else:
        status = f", {file_obj.processing_status}" if file_obj.processing_status else ""
        print(f"{file_obj.id}  {path.name}  {result.bytes} bytes  {result.method}{status}  "
              f"{result.seconds:.2f} s")
    return 0


class _Bar:
    """tqdm over the bytes sent; retried bytes never push it past the total."""

    def __init__(self, name: str, total: int) -> None:
        from tqdm import tqdm

        self.total = total
        self.sent = 0
        self.tqdm = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr,
                         dynamic_ncols=True)

    def advance(self, n: int) -> None:
        n = min(n, self.total - self.sent)
        if n > 0:
            self.sent += n
            self.tqdm.update(n)

    def close(self) -> None:
        self.tqdm.close()


def _progress_bar(name: str, total: int) -> _Bar:
    return _Bar(name, total)
