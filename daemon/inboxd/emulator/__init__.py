"""A local Files API for tests, benchmarks and offline pipelines (SPEC §1, §7).

It speaks the protocol as the official clients do, strictly: bearer auth on every API call;
single uploads through signed, expiring presigned urls that refuse an Authorization header
and need an exact Content-Length; multipart with S3's part rules (5 MiB minimum but the
last, ETag = MD5 of the part, complete checks every number and ETag); the checksum 409;
asynchronous processing_status with the batch rules; listing, content download, delete.
It shares no code with `inboxd.api`, so one cannot hide the other's bugs.

Faults, random (rates 0..1, set by flags or `POST /v1/_emulator/faults`):
  error_rate (500 on API calls), rate_limit_rate (429 with Retry-After and retry-after-ms),
  part_error_rate (503 on storage PUTs), drop_rate (a storage PUT's connection is cut
  half-way through the body), slow_seconds (every answer waits), url_ttl_seconds,
  processing_delay_seconds.
Faults, scripted (`POST /v1/_emulator/script`, a list consumed in order of matching):
  {"route": R, "status": 503, "times": 2, "part_number": N?} answers R with that status;
  {"route": R, "hostile": MODE} answers with a hostile reply. Routes: create, put,
  initiate, part_put, complete, abort, preprocess, retrieve, list, content, delete. Modes:
  no_location, file_location (Location file:///etc/passwd), other_host_location (a url on
  another loopback address whose listener counts Authorization headers:
  stats["other_host"]), bad_file_id (an id with "../"), no_etag (a storage PUT answered
  without ETag), garbage_json (200 with a body that is not JSON), hang (the connection is
  accepted and never answered), huge_content_length (headers promise 5 GB, the body is
  short, the connection closes), redirect_loop (307 to the same url).
Switches: dedupe=False (`--no-dedupe`) never answers the checksum 409, so the same bytes sent
twice become two files (a re-send is visible); latency_ms (`--latency-ms`) delays every API
and storage answer.
Observing: `GET /v1/_emulator/stats` (files with the sha256 of the bytes received, request
and status counts by route, faults injected, Authorization headers seen by storage; conflicts
(checksum 409s), creates (POST /files and initiate answered) and creates_by_sha256 (by the
checksum sent, else the content's sha256 once it arrived), deletes, aborts);
`POST /v1/_emulator/reset` (clears the counters, not the files).
"""

from ._server import Emulator, serve_forever
from ._settings import EmulatorSettings, Faults

__all__ = ["Emulator", "EmulatorSettings", "Faults", "serve_forever"]
