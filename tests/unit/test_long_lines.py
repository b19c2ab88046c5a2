"""Long lines: their memory is bounded across the whole process, not per check. One line
longer than LONG_LINE is built and decoded at a time (`check._stream._LongLines`), however
many workers check files at once, and the permit is given back whatever becomes of the pass."""

from __future__ import annotations

import json
import subprocess
import sys

from inboxd.check._stream import LONG_LINE, StreamState, _LongLines, line_batches

LINE_MB = 24

# four threads check four files of one long line each, at once, as four workers would; the
# process reports its peak RSS (ru_maxrss) before and after, and the verdicts
SCRIPT = """
import json, resource, sys, threading
from inboxd.check import check_file
from inboxd.check._stream import return_large_buffers
return_large_buffers()  # as the daemon does at its start
paths = sys.argv[1:]
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = {}
sys.setswitchinterval(1e-4)  # the threads take turns often: the four passes overlap
start = threading.Barrier(len(paths))
def check(p):
    start.wait()
    results[p] = check_file(p, "fine-tune", "basic")
threads = [threading.Thread(target=check, args=(p,)) for p in paths]
for t in threads:
    t.start()
for t in threads:
    t.join()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_kib": base, "peak_kib": peak, "passed": [results[p].passed for p in paths],
                  "records": [results[p].records for p in paths]}))
"""


def test_four_long_lines_checked_at_once_cost_about_one(tmp_path):
    paths = []
    for i in range(4):
        p = tmp_path / f"long{i}.jsonl"
        record = {"messages": [{"role": "user", "content": f"{i}" + "x" * (LINE_MB * 2**20)},
                               {"role": "assistant", "content": "ok"}]}
        p.write_text(json.dumps(record) + "\n" + json.dumps({"messages": record["messages"][1:]}) + "\n")
        paths.append(str(p))
    res = subprocess.run([sys.executable, "-c", SCRIPT, *paths], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["records"] == [2, 2, 2, 2]
    grown_mib = (out["peak_kib"] - out["base_kib"]) / 1024
    # one line at a time: the line (a bytearray, grown in place) and its decoded string, ~2.2 x
    # 24 MiB, plus a chunk or two per thread. Four at once built by concatenation: over 4 x 2 x 24.
    assert grown_mib < 3 * LINE_MB, f"peak grew by {grown_mib:.0f} MiB for four {LINE_MB} MiB lines"


class _Chunks:
    def __init__(self, *chunks: bytes) -> None:
        self._chunks = list(chunks)

    def read(self, size: int = -1) -> bytes:
        return self._chunks.pop(0) if self._chunks else b""


def test_the_permit_is_held_while_a_long_line_is_in_hand_and_given_back_when_the_pass_stops():
    long = b"x" * (LONG_LINE + 10)
    stream = line_batches(_Chunks(b"{}\n" + long[:LONG_LINE], long[LONG_LINE:] + b"\n{}\n", b"more"),  # type: ignore[arg-type]
                          StreamState(), max_line_bytes=4 * LONG_LINE)
    assert next(stream) == (1, [b"{}"])
    assert not _LongLines.lock.locked()
    first, batch = next(stream)
    assert (first, len(batch[0])) == (2, len(long)) and _LongLines.lock.locked()
    stream.close()  # the caller gives up in the middle (an exception, a truncated pass)
    assert not _LongLines.lock.locked()


def test_the_permit_is_given_back_once_the_caller_asks_for_the_next_lines():
    long = b"y" * (2 * LONG_LINE)
    state = StreamState()
    got = []
    for first, batch in line_batches(_Chunks(long[:LONG_LINE], long[LONG_LINE:] + b"\n", b"{}\n"),  # type: ignore[arg-type]
                                     state, max_line_bytes=4 * LONG_LINE):
        got.append((first, [len(x) for x in batch], _LongLines.lock.locked()))
    assert got == [(1, [2 * LONG_LINE], True), (2, [2], False)]
    assert not _LongLines.lock.locked() and state.lines == 2
