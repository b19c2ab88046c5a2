"""Daemons sharing an inbox agree on what it means: the settings that decide a file's fate.

Several daemons (hosts on a shared filesystem) may serve one inbox; whoever wins the claim's
rename processes the file, with its own configuration. If their settings differ, a file's
fate depends on which daemon won it: with one host configured for the batch round trip and
one without, the second archives inputs with no job and no word. So an inbox records the
settings it is served with, and a daemon whose settings differ does not claim there.

What is recorded (`fate_settings`): `purpose`, `validate`, `patterns`, `on_success`, the
done and failed folders, and the `[inboxes.batch]` table (all of it but `poll_seconds` and
`max_jobs_in_flight`, which only pace the work). Folders inside the inbox are recorded
relative to it, so hosts that mount the share at different paths still agree. Per-host
keys (`observer`, `create`, bandwidth caps) are not recorded.

Where (both written atomically, a temp file renamed):
- ``<inbox>/.inboxd/.settings.json`` (`RECORD`): the inbox's settings, their digest, and who
  wrote them;
- ``<inbox>/.inboxd/<claimer>/.settings.json`` (`HOLDER`): what each daemon runs with, in
  its own claim folder, so it lives and dies with the claims' liveness (flock where the
  filesystem has it, else pid and heartbeat: `ClaimArea.owner_dead`).

The rule (`Agreement.check`, run at start, after a reload and every few seconds):
1. A daemon first writes its own settings into its claim folder, then reads the record.
2. No record: it creates one with its settings (a no-replace rename: of two daemons
   starting at once, one record wins, and the other compares with it).
3. The record's digest is its own: it claims.
4. Otherwise, if any live daemon (another claim folder whose owner is alive) runs with the
   recorded settings, it does not claim there, and says which keys differ: the log
   (`inbox.settings_differ`), `inboxd status`, `/healthz` and `inboxd config check`.
5. Otherwise no live daemon holds the recorded settings any more: it rewrites the record
   with its own (`inbox.settings_recorded`, with the keys that changed) and claims.

The record is the settings of the inbox's live daemons: it changes only once no live daemon
holds the old. A reload that changes the settings on every host in turn therefore strands
nothing: the hosts already reloaded pause while a host on the old settings is still alive,
that host goes on serving the inbox alone, and once the last one reloads (or stops, or dies)
the record moves to the new settings and every paused host resumes at its next check. Files
claimed before a reload finish with the settings they were claimed under. A paused daemon
takes over no dead daemon's claims either (they were claimed under the recorded settings; a
live daemon holding them takes them over). A daemon that leaves the inbox (a reload that
removes it, a stop) withdraws its settings first, so the others need not wait for it to be
judged dead.

Two daemons with new, different settings that find the old record unheld at the same moment
may both rewrite it; the last write stands, and the other pauses at its next check (a few
seconds: `Liveness.heartbeat_every`). The docs: docs/shared-inboxes.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from ..config import InboxConfig
from ..state.fs import move_no_replace, write_atomic
from .claim import ClaimArea, Liveness
from .inboxes import InboxState

log = structlog.get_logger("inboxd.daemon")

SCHEMA = "inboxd.settings/v1"
RECORD = ".settings.json"  # a dot-name: never a candidate, never a claim
HOLDER = ".settings.json"
# [inboxes.batch] keys that pace the work but do not change what a file becomes
BATCH_PACING = frozenset({"poll_seconds", "max_jobs_in_flight"})
REPEAT_SECONDS = 600.0  # a daemon that stays paused says so again this often


def _folder(inbox: InboxConfig, folder: Path) -> str:
    """A folder as recorded: relative to the inbox when inside it (mount points may differ)."""
    if folder.is_relative_to(inbox.path):
        return folder.relative_to(inbox.path).as_posix()
    return str(folder)


def fate_settings(inbox: InboxConfig) -> dict[str, Any]:
    """The inbox's settings that decide a file's fate, as plain data (see the module)."""
    batch: dict[str, Any] | None = None
    if inbox.batch is not None:
        batch = {k: v for k, v in inbox.batch.model_dump(mode="json").items() if k not in BATCH_PACING}
        if inbox.batch.outbox is not None:
            batch["outbox"] = _folder(inbox, inbox.batch.outbox)
    return {
        "purpose": inbox.purpose,
        "validate": inbox.validate_mode,
        "patterns": sorted(set(inbox.patterns)),
        "on_success": inbox.on_success,
        "done_dir": _folder(inbox, inbox.done),
        "failed_dir": _folder(inbox, inbox.failed),
        "batch": batch,
    }


def digest(settings: dict[str, Any]) -> str:
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def differing_keys(mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """The keys whose values differ, `batch.<key>` inside the batch table (`batch` when one
    side has no table)."""
    out = []
    for key in sorted(set(mine) | set(theirs)):
        a, b = mine.get(key), theirs.get(key)
        if a == b:
            continue
        if key == "batch" and isinstance(a, dict) and isinstance(b, dict):
            out += [f"batch.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(key)
    return out


def _value(settings: dict[str, Any], key: str) -> Any:
    """A key of `differing_keys` looked up in settings (``batch.endpoint`` inside the table)."""
    head, _, sub = key.partition(".")
    value = settings.get(head)
    return value.get(sub) if sub and isinstance(value, dict) else value


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_record(work: Path) -> dict[str, Any] | None:
    """The inbox's recorded settings, or None when there is none (or it is not one)."""
    data = _read_json(work / RECORD)
    if data is None or data.get("schema") != SCHEMA or not isinstance(data.get("settings"), dict) \
            or not isinstance(data.get("digest"), str):
        return None
    return data


@dataclass
class Verdict:
    """One inbox's agreement, as one daemon (or `inboxd status`) sees it."""

    agreed: bool
    mine: dict[str, Any]
    record: dict[str, Any] | None = None
    keys: list[str] = field(default_factory=list)  # the keys that differ from the record
    holders: list[str] = field(default_factory=list)  # live daemons running with the record
    recorded: str = ""  # "created" | "replaced" when this check wrote the record

    def reason(self) -> str:
        """Why a daemon does not claim here (empty when it does)."""
        if self.agreed:
            return ""
        by = ", ".join(self.holders) or "none"
        return (f"this daemon's settings differ from the inbox's in {', '.join(self.keys)} "
                f"(held by live daemons: {by}); it does not claim here until they agree")

    def to_json(self) -> dict[str, Any]:
        record = self.record or {}
        return {"agreed": self.agreed, "differs": self.keys, "held_by": self.holders,
                "recorded_digest": record.get("digest"), "recorded_by": record.get("written_by"),
                "digest": digest(self.mine), "reason": self.reason() or None}


def live_holders(work: Path, wanted: str, liveness: Liveness, *, skip: str = "") -> list[str]:
    """The claimers of this inbox, alive, whose own settings have the digest `wanted`."""
    probe = ClaimArea(work, "", liveness)
    out: list[str] = []
    try:
        entries = list(os.scandir(work))
    except OSError:
        return out
    for d in entries:
        if d.name == skip or d.name.startswith(".") or not d.is_dir(follow_symlinks=False):
            continue
        held = _read_json(Path(d.path) / HOLDER)
        if held is None or held.get("digest") != wanted:
            continue
        if not probe.owner_dead(Path(d.path)):
            out.append(d.name)
    return sorted(out)


def assess(inbox: InboxConfig, liveness: Liveness, *, me: str = "") -> Verdict:
    """The verdict, read only: what `Agreement.check` would decide now, minus the writes (for
    `inboxd status` and `inboxd config check`, which hold no settings of their own)."""
    mine = fate_settings(inbox)
    record = read_record(inbox.work)
    if record is None or record["digest"] == digest(mine):
        return Verdict(True, mine, record)
    holders = live_holders(inbox.work, record["digest"], liveness, skip=me)
    keys = differing_keys(mine, record["settings"])
    return Verdict(not holders, mine, record, keys, holders)


class Agreement:
    """One daemon's side of the rule in one inbox (the module says the rule)."""

    def __init__(self, area: ClaimArea) -> None:
        self.area = area
        self._held: str | None = None  # the digest our holder file says

    def _hold(self, settings: dict[str, Any], dig: str) -> None:
        """Our settings into our claim folder (again if a takeover or a restart lost them)."""
        path = self.area.folder / HOLDER
        if self._held == dig and os.path.exists(path):
            return
        data = {"digest": dig, "settings": settings, "claimer": self.area.claimer, "host": socket.gethostname(),
                "pid": os.getpid(), "at": time.time()}
        write_atomic(path, json.dumps(data).encode(), sync_folder=False)
        self._held = dig

    def withdraw(self) -> None:
        """We leave the inbox: our settings no longer count."""
        try:
            (self.area.folder / HOLDER).unlink()
        except OSError:
            pass
        self._held = None

    def _write_record(self, settings: dict[str, Any], dig: str, *, replace: bool) -> bool:
        """The record, atomically: replacing the old one, or only where there is none (False
        when another daemon's record got there first)."""
        work = self.area.work
        data = {"schema": SCHEMA, "digest": dig, "settings": settings,
                "written_by": {"claimer": self.area.claimer, "host": socket.gethostname(), "pid": os.getpid(),
                               "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}}
        raw = (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()
        if replace:
            write_atomic(work / RECORD, raw)
            return True
        tmp = work / f"{RECORD}.{secrets.token_hex(4)}.new"
        write_atomic(tmp, raw, sync_folder=False)
        try:
            move_no_replace(tmp, work / RECORD)
        except FileExistsError:
            tmp.unlink(missing_ok=True)
            return False
        return True

    def check(self, inbox: InboxConfig) -> Verdict:
        """Apply the rule once (see the module): hold our settings, then claim, pause, or
        record ours."""
        mine = fate_settings(inbox)
        dig = digest(mine)
        self._hold(mine, dig)
        record = read_record(self.area.work)
        if record is None:
            if (self.area.work / RECORD).exists():  # unreadable: nobody can agree with it
                self._write_record(mine, dig, replace=True)
                return Verdict(True, mine, read_record(self.area.work), recorded="replaced")
            if self._write_record(mine, dig, replace=False):
                return Verdict(True, mine, read_record(self.area.work), recorded="created")
            record = read_record(self.area.work)
            if record is None:
                return Verdict(True, mine)  # gone again at once: the next check writes it
        if record["digest"] == dig:
            return Verdict(True, mine, record)
        keys = differing_keys(mine, record["settings"])
        holders = live_holders(self.area.work, record["digest"], self.area.liveness, skip=self.area.claimer)
        if holders:
            return Verdict(False, mine, record, keys, holders)
        self._write_record(mine, dig, replace=True)
        return Verdict(True, mine, record, keys, recorded="replaced")


class SettingsGate:
    """The daemon's use of `Agreement`: one per inbox, checked every `every` seconds (and at
    once at start and after a reload); `state.held` says why an inbox is not claimed from
    (the claimer skips it), and the log says each change."""

    def __init__(self, every: float) -> None:
        self.every = every
        self._agreements: dict[str, Agreement] = {}
        self._next = 0.0
        self._said: dict[str, float] = {}

    def _agreement(self, state: InboxState) -> Agreement:
        a = self._agreements.get(state.key)
        if a is None or a.area is not state.area:
            a = self._agreements[state.key] = Agreement(state.area)
        return a

    def check(self, state: InboxState) -> bool:
        """Check one inbox now; True when it was held and is claimed from again."""
        was_held = state.held is not None
        try:
            verdict = self._agreement(state).check(state.config)
        except OSError as exc:
            # the share is unreachable for a moment: keep the last verdict, say it once a check
            log.warning("inbox.settings_unchecked", inbox=state.key, error=str(exc))
            return False
        record = verdict.record or {}
        if verdict.recorded == "created":
            log.info("inbox.settings_recorded", inbox=state.key, digest=digest(verdict.mine), first=True)
        elif verdict.recorded == "replaced":
            log.warning("inbox.settings_recorded", inbox=state.key, digest=digest(verdict.mine),
                        previous=record.get("digest"), changed=verdict.keys,
                        reason="no live daemon holds the inbox's previous settings any more")
        if not verdict.agreed:
            state.held = verdict.reason()
            now = time.monotonic()
            if not was_held or now - self._said.get(state.key, 0.0) >= REPEAT_SECONDS:
                self._said[state.key] = now
                log.error("inbox.settings_differ", inbox=state.key, differs=verdict.keys, held_by=verdict.holders,
                          recorded_by=record.get("written_by"),
                          mine={k: _value(verdict.mine, k) for k in verdict.keys},
                          recorded={k: _value(record.get("settings", {}), k) for k in verdict.keys},
                          hint="this daemon claims nothing here until its settings for this inbox match those of "
                               "the live daemons that serve it (see docs/shared-inboxes.md); nothing is failed")
            return False
        state.held = None
        if was_held:
            self._said.pop(state.key, None)
            log.info("inbox.settings_agreed", inbox=state.key, digest=digest(verdict.mine),
                     reason="claiming again: the inbox's settings are this daemon's")
        return was_held

    def tick(self, states: Iterable[InboxState], now: float) -> list[InboxState]:
        """Check every inbox when due; the inboxes claimed from again."""
        if now < self._next:
            return []
        self._next = now + self.every
        return [s for s in states if not s.missing and self.check(s)]

    def withdraw(self, state: InboxState) -> None:
        """The daemon leaves the inbox (a stop, or a reload without it); `state.held` stays
        as it was (a run with --once ends in failure when an inbox was held)."""
        a = self._agreements.pop(state.key, None)
        if a is not None:
            a.withdraw()
