"""The emulator's state: files, pending uploads, multipart sessions, signed urls, counters.

Content lives on disk under the data dir; only metadata is in memory. Everything is guarded
by one lock, held only for bookkeeping, never while bytes move, and taken only by the store's
own methods: a route asks the store to make a change, it does not lock the store itself. The
counters are `counts` (`_counts.Counts`, with a lock of its own).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._counts import Counts

MIN_PART = 5 * 2**20
BATCH_MAX_LINES = 50_000
BATCH_MAX_BYTES = 100 * 10**6
BATCH_MAX_ID = 64


@dataclass
class FileRecord:
    id: str
    purpose: str
    filename: str
    file_type: str
    checksum: str | None  # what the client said at create
    created_at: int
    method: str  # single | multipart | generated (a batch job's output)
    state: str = "pending"  # pending (no content yet) | uploaded | deleted
    bytes: int = 0
    sha256: str | None = None  # of the bytes received
    line_count: int | None = None
    processing_started: float | None = None
    processing_status: str | None = None
    validation_report: dict[str, Any] | None = None
    seq: int = 0  # the order of creation (the store's answer to a checksum is the first created)

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "object": "file",
            "created_at": self.created_at,
            "type": self.file_type,
            "FileType": self.file_type,
            "purpose": self.purpose,
            "filename": self.filename,
            "bytes": self.bytes,
            "LineCount": self.line_count or 0,
            "Processed": self.processing_status == "COMPLETED",
        }
        if self.processing_status:
            out["processing_status"] = self.processing_status
        if self.validation_report is not None:
            out["validation_report"] = self.validation_report
        return out


@dataclass
class Multipart:
    upload_id: str
    file_id: str
    file_size: int
    num_parts: int
    parts: dict[int, tuple[str, int]] = field(default_factory=dict)  # number -> (md5 hex, size)
    state: str = "open"  # open | completed | aborted


class Store:
    def __init__(self, data_dir: Path, processing_delay: float) -> None:
        self.data_dir = data_dir
        (data_dir / "files").mkdir(parents=True, exist_ok=True)
        (data_dir / "parts").mkdir(parents=True, exist_ok=True)
        self.processing_delay = processing_delay
        self.lock = threading.Lock()
        self.files: dict[str, FileRecord] = {}
        # (sha256, purpose) -> the records whose content has those bytes: a create's checksum
        # is answered without a walk over every file (which made each create slower than the
        # last: a benchmark's second thousand files met a slower server than its first)
        self.by_content: dict[tuple[str, str], list[FileRecord]] = {}
        self._seq = itertools.count(1)
        self.multipart: dict[str, Multipart] = {}
        self.counts = Counts()
        self.secret = secrets.token_bytes(32)

    # -- ids and paths -----------------------------------------------------------------------

    @staticmethod
    def new_id(prefix: str) -> str:
        return f"{prefix}-{secrets.token_hex(12)}"

    def content_path(self, file_id: str) -> Path:
        return self.data_dir / "files" / file_id

    def part_path(self, upload_id: str, number: int) -> Path:
        return self.data_dir / "parts" / upload_id / f"{number:05d}"

    # -- signed urls ---------------------------------------------------------------------------

    def sign(self, path: str, expires: int) -> str:
        return hmac.new(self.secret, f"PUT\n{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def presign(self, base: str, path: str, ttl: float) -> str:
        expires = int(time.time() + ttl) if ttl >= 1 else int(time.time()) + (1 if ttl > 0 else 0)
        # sub-second TTLs round to the next whole second, as S3's X-Amz-Expires does
        return f"{base}{path}?expires={expires}&signature={self.sign(path, expires)}"

    def verify(self, path: str, query: dict[str, str]) -> str | None:
        """None if the url is valid; otherwise why not."""
        try:
            expires = int(query.get("expires", ""))
        except ValueError:
            return "missing expiry"
        if not hmac.compare_digest(self.sign(path, expires), query.get("signature", "")):
            return "SignatureDoesNotMatch"
        if time.time() > expires:
            return "Request has expired"
        return None

    # -- files ---------------------------------------------------------------------------------

    def existing(self, checksum: str | None, purpose: str) -> FileRecord | None:
        if not checksum:
            return None
        with self.lock:
            found = [r for r in self.by_content.get((checksum, purpose), ()) if r.state == "uploaded"
                     and r.sha256 == checksum]
        return min(found, key=lambda r: r.seq, default=None)

    def create(self, purpose: str, filename: str, file_type: str, checksum: str | None, method: str) -> FileRecord:
        rec = FileRecord(id=self.new_id("file"), purpose=purpose, filename=filename, file_type=file_type,
                         checksum=checksum, created_at=int(time.time()), method=method, seq=next(self._seq))
        with self.lock:
            self.files[rec.id] = rec
        return rec

    def _by_content(self, rec: FileRecord) -> None:
        """Index `rec` by its content (called with the lock held)."""
        assert rec.sha256 is not None
        same = self.by_content.setdefault((rec.sha256, rec.purpose), [])
        if not any(r is rec for r in same):  # content sent again to the same file id
            same.append(rec)

    def set_processing_delay(self, seconds: float) -> None:
        with self.lock:
            self.processing_delay = seconds

    def record(self, file_id: str) -> FileRecord | None:
        """The file's record in any state (pending, uploaded, deleted), as it is."""
        with self.lock:
            return self.files.get(file_id)

    def get(self, file_id: str) -> FileRecord | None:
        with self.lock:
            rec = self.files.get(file_id)
        if rec is not None and rec.state == "uploaded":
            self._advance(rec)
        return rec if rec is not None and rec.state != "deleted" else None

    def content_arrived(self, rec: FileRecord, size: int, sha256: str) -> bool:
        """The content is in place; False if the file was deleted meanwhile (the content goes)."""
        with self.lock:
            if rec.state == "deleted":
                gone = True
            else:
                gone = False
                if not rec.checksum and rec.sha256 is None:
                    self.counts.content_of_create(sha256)
                rec.bytes, rec.sha256, rec.state = size, sha256, "uploaded"
                self._by_content(rec)
        if gone:
            self.content_path(rec.id).unlink(missing_ok=True)
        return not gone

    def start_processing(self, rec: FileRecord) -> None:
        with self.lock:
            if rec.processing_started is None:
                rec.processing_started = time.monotonic()
                rec.processing_status = "PENDING"

    def _advance(self, rec: FileRecord) -> None:
        """processing_status moves with time: PENDING, RUNNING, then a verdict."""
        with self.lock:
            started, status = rec.processing_started, rec.processing_status
        if started is None or status in ("COMPLETED", "INVALID_FORMAT", "FAILED"):
            return
        elapsed = time.monotonic() - started
        if elapsed < self.processing_delay / 2:
            return
        if elapsed < self.processing_delay:
            with self.lock:
                rec.processing_status = "RUNNING"
            return
        report = check_content(self.content_path(rec.id), rec.purpose)
        with self.lock:
            rec.line_count = report["nlines"]
            rec.validation_report = {**report, "file_id": rec.id}
            rec.processing_status = "COMPLETED" if report["valid"] else "INVALID_FORMAT"

    def add_generated(self, purpose: str, filename: str, tmp: Path, size: int, sha256: str, lines: int) -> FileRecord:
        """A file the service wrote itself (a batch job's output): `tmp` becomes its content, and
        it is processed already."""
        rec = FileRecord(id=self.new_id("file"), purpose=purpose, filename=filename, file_type="jsonl",
                         checksum=None, created_at=int(time.time()), method="generated", state="uploaded",
                         bytes=size, sha256=sha256, line_count=lines, processing_started=time.monotonic(),
                         processing_status="COMPLETED", seq=next(self._seq))
        rec.validation_report = {"valid": True, "nlines": lines, "file_id": rec.id}
        tmp.replace(self.content_path(rec.id))
        with self.lock:
            self.files[rec.id] = rec
            self._by_content(rec)
        return rec

    def delete(self, file_id: str) -> bool:
        with self.lock:
            rec = self.files.get(file_id)
            if rec is None or rec.state == "deleted":
                return False
            rec.state = "deleted"
            # a file deleted while its multipart upload is open takes the upload with it
            uploads = [m for m in self.multipart.values() if m.file_id == file_id and m.state == "open"]
            for mp in uploads:
                mp.state = "aborted"
        for mp in uploads:
            self.discard_parts(mp)
        self.content_path(file_id).unlink(missing_ok=True)
        return True

    def listing(self) -> list[FileRecord]:
        with self.lock:
            recs = [r for r in self.files.values() if r.state == "uploaded"]
        for r in recs:
            self._advance(r)
        return recs

    # -- multipart -----------------------------------------------------------------------------

    def open_multipart(self, rec: FileRecord, file_size: int, num_parts: int) -> Multipart:
        mp = Multipart(upload_id=self.new_id("upload"), file_id=rec.id, file_size=file_size, num_parts=num_parts)
        (self.data_dir / "parts" / mp.upload_id).mkdir()
        with self.lock:
            self.multipart[mp.upload_id] = mp
        return mp

    def upload(self, upload_id: str) -> Multipart | None:
        with self.lock:
            return self.multipart.get(upload_id)

    def part_received(self, mp: Multipart, number: int, md5: str, size: int) -> None:
        with self.lock:
            mp.parts[number] = (md5, size)

    def end_upload(self, mp: Multipart, state: str) -> None:
        """The upload is completed or aborted (by a complete whose content fails its checksum)."""
        with self.lock:
            mp.state = state

    def abort_upload(self, mp: Multipart) -> bool:
        """Abort the upload if it is open (its parts go); False if it was not."""
        with self.lock:
            if mp.state != "open":
                return False
            mp.state = "aborted"
        self.discard_parts(mp)
        return True

    def assemble(self, mp: Multipart) -> tuple[int, str]:
        """Concatenate the parts into the file's content; return (size, sha256)."""
        h = hashlib.sha256()
        size = 0
        with open(self.content_path(mp.file_id), "wb") as out:
            for n in range(1, mp.num_parts + 1):
                with open(self.part_path(mp.upload_id, n), "rb") as part:
                    while chunk := part.read(2**20):
                        h.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
        shutil.rmtree(self.data_dir / "parts" / mp.upload_id, ignore_errors=True)
        return size, h.hexdigest()

    def discard_parts(self, mp: Multipart) -> None:
        shutil.rmtree(self.data_dir / "parts" / mp.upload_id, ignore_errors=True)

    # -- stats ---------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        recs = self.listing()
        counts = self.counts.snapshot()
        other_host = counts.pop("other_host")
        with self.lock:
            return {
                "files": [
                    {"id": r.id, "sha256": r.sha256, "bytes": r.bytes, "purpose": r.purpose, "filename": r.filename,
                     "processing_status": r.processing_status, "method": r.method}
                    for r in recs
                ],
                **counts,
                "multipart": {u: {"state": m.state, "file_id": m.file_id, "parts": sorted(m.parts)}
                              for u, m in self.multipart.items()},
                "other_host": other_host,
            }


def check_content(path: Path, purpose: str) -> dict[str, Any]:
    """What the service's asynchronous validation says. Batch files get the documented batch
    rules of SPEC §1; other purposes only need one JSON object per non-blank line."""
    nlines = 0
    seen: set[str] = set()
    size = path.stat().st_size
    if purpose == "batch-api" and size > BATCH_MAX_BYTES:
        return {"valid": False, "error": f"file is {size} bytes; the limit is {BATCH_MAX_BYTES}",
                "error_type": "INVALID_FORMAT", "nlines": 0}
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            nlines += 1
            try:
                obj = json.loads(raw)
            except ValueError:
                return _bad(f"line {number}: not valid JSON", nlines)
            if not isinstance(obj, dict):
                return _bad(f"line {number}: not a JSON object", nlines)
            if purpose != "batch-api":
                continue
            cid = obj.get("custom_id")
            if not isinstance(cid, str) or not 1 <= len(cid) <= BATCH_MAX_ID:
                return _bad(f"line {number}: custom_id must be a string of 1..{BATCH_MAX_ID} characters", nlines)
            if cid in seen:
                return _bad(f"line {number}: duplicate custom_id {cid!r}", nlines)
            seen.add(cid)
            if not isinstance(obj.get("body"), dict):
                return _bad(f"line {number}: body must be an object", nlines)
            if nlines > BATCH_MAX_LINES:
                return _bad(f"more than {BATCH_MAX_LINES} lines", nlines)
    if nlines == 0:
        return _bad("the file has no records", 0)
    return {"valid": True, "nlines": nlines}


def _bad(message: str, nlines: int) -> dict[str, Any]:
    return {"valid": False, "error": message, "error_type": "INVALID_FORMAT", "nlines": nlines}


__all__ = ["FileRecord", "Multipart", "Store", "check_content", "MIN_PART"]
