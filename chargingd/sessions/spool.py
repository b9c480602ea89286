"""A bounded local spool of credit-control events that could not reach Redis.

Under the fail_open policy a call may be accepted while Redis is unreachable; its
accounting must not be lost. Each process appends JSON lines to its own file
``<data_dir>/spool/sessions-<pid>.jsonl``; replay takes a file by renaming it
(exactly one process wins the rename) and feeds each entry back to sessions/service.py.
Files of dead processes are replayed by whoever runs next.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from chargingd.core.ratelog import RateLimitedLog
from chargingd.core.redisconn import pid_alive
from chargingd.sessions.ccapi import CallInfo, UsageKind, UsageReport

log = logging.getLogger("chargingd.sessions.spool")
_REPLAY_STOPPED = "spool replay stopped"

Entry = dict[str, Any]


class SpoolFull(Exception):
    """The spool holds spool_max_entries already; the event is refused (and logged)."""

    code = "spool_full"


def report_to_entry(report: UsageReport) -> Entry:
    """dataclasses.asdict of the report, with its call's fields (CallInfo.as_dict);
    answer_ms, direction and other_leg_id only when the gateway said them (FreeSWITCH):
    other lines stay as before."""
    entry: Entry = {"type": "usage", **report.as_dict()}
    entry["call"] = report.call.as_dict()
    if report.answer_ms < 0:
        del entry["answer_ms"]
    for said in ("direction", "other_leg_id"):
        if not entry[said]:
            del entry[said]
    return entry


def entry_to_report(entry: Entry) -> UsageReport:
    """Rebuild a UsageReport from its spooled form; KeyError/TypeError when malformed."""
    call = dict(entry["call"])
    call["lookup"] = tuple(call.get("lookup", ()))
    return UsageReport(
        call=CallInfo(**call),
        kind=UsageKind(entry["kind"]),
        usage_s=int(entry["usage_s"]),
        event_ms=int(entry["event_ms"]),
        disconnect_cause=int(entry.get("disconnect_cause", 0)),
        terminate_cause=str(entry.get("terminate_cause", "")),
        usage_reported=bool(entry.get("usage_reported", True)),
        sip_code=int(entry.get("sip_code", 0)),
        quality=tuple((str(k), str(v)) for k, v in entry.get("quality", ())),
        answer_ms=int(entry.get("answer_ms", -1)),
        direction=str(entry.get("direction", "")),
        other_leg_id=str(entry.get("other_leg_id", "")),
    )


def orphan_fields(report: UsageReport, reason: str, source: str) -> dict[str, str]:
    """Stream fields of accounting no account was found for (kept, never lost)."""
    fields = {f"call.{k}": str(v) for k, v in report.call.as_dict().items()}
    fields |= {
        "source": source,
        "reason": reason,
        "kind": report.kind.value,
        "usage_s": str(report.usage_s),
        "event_ms": str(report.event_ms),
        "disconnect_cause": str(report.disconnect_cause),
    }
    if report.direction:  # FreeSWITCH: which leg, and its partner (to pair them)
        fields["direction"] = report.direction
    if report.other_leg_id:
        fields["other_leg_id"] = report.other_leg_id
    return fields


class Spool:
    """Append-only JSON lines, bounded by entry count, replayed when Redis is back."""

    def __init__(self, directory: Path, *, max_entries: int, pid: int | None = None) -> None:
        """``pid``: the owner of the spool file (default: this process, read at use)."""
        self.directory = directory
        self.max_entries = max_entries
        self._pid = pid
        self._count: int | None = None
        self._count_pid = self.pid
        # Replay is retried every reaper pass: while Redis is away, a line per interval.
        self._stops = RateLimitedLog(log, level=logging.WARNING)

    @property
    def pid(self) -> int:
        """This process (read at use: workers may fork after the spool was built)."""
        return os.getpid() if self._pid is None else self._pid

    @property
    def path(self) -> Path:
        return self.directory / f"sessions-{self.pid}.jsonl"

    def _entries_on_disk(self) -> int:
        if self._count is None or self._count_pid != self.pid:
            self._count_pid = self.pid
            try:
                with self.path.open("rb") as fh:
                    self._count = sum(1 for _ in fh)
            except FileNotFoundError:
                self._count = 0
        return self._count

    def append(self, entry: Entry) -> None:
        """Write one event durably (fsync); raises SpoolFull at the bound."""
        if self._entries_on_disk() >= self.max_entries:
            raise SpoolFull(f"spool {self.path} holds {self.max_entries} entries")
        self.directory.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, separators=(",", ":"), sort_keys=True) + "\n"
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        self._count = self._entries_on_disk() + 1

    def pending(self) -> list[Path]:
        """Spool files this process may replay: its own and those of dead processes."""
        if not self.directory.is_dir():
            return []
        out = []
        for path in sorted(self.directory.glob("sessions-*.jsonl")):
            pid_text = path.stem.removeprefix("sessions-")
            if path == self.path or (pid_text.isdigit() and not pid_alive(int(pid_text))):
                out.append(path)
        # A file a replayer took and died with (killed mid-replay): its entries are
        # still owed; replaying them again is harmless (cumulative usage, tombstones).
        for path in sorted(self.directory.glob("sessions-*.jsonl.replay-*")):
            pid_text = path.name.rpartition(".replay-")[2]
            if pid_text.isdigit() and not pid_alive(int(pid_text)):
                out.append(path)
        return out

    async def replay(self, handler: Callable[[Entry], Awaitable[None]]) -> int:
        """Feed every pending entry to ``handler``; what fails is appended back. Returns done."""
        done = 0
        for path in self.pending():
            taken = path.with_name(f"{path.name}.replay-{self.pid}")
            try:
                os.rename(path, taken)
            except FileNotFoundError:
                continue  # another process took it
            if path == self.path:
                self._count = 0
            done += await self._replay_file(taken, handler)
        return done

    def _keep(self, lines: list[str]) -> None:
        """Put unreplayed lines back in this process's spool (past its bound: they were
        accepted already), in one fsync'd write."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write("".join(line + "\n" for line in lines))
            fh.flush()
            os.fsync(fh.fileno())
        self._count = None

    async def _replay_file(self, taken: Path, handler: Callable[[Entry], Awaitable[None]]) -> int:
        lines = taken.read_text(encoding="utf-8").splitlines()
        done = 0
        for index, line in enumerate(lines):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                log.error("spool %s: dropping unreadable line %d", taken, index + 1)
                continue
            try:
                await handler(entry)
            except BaseException as exc:
                # Redis went away again, a bug, or shutdown (cancelled): keep this and
                # the rest for later, in this process's own spool.
                why = f"at entry {index + 1} of {taken.name}: {type(exc).__name__}: {exc}"
                self._stops.failure(_REPLAY_STOPPED, why)
                self._keep(lines[index:])
                taken.unlink()
                if not isinstance(exc, Exception):
                    raise
                return done
            done += 1
        taken.unlink()
        self._stops.recovered(_REPLAY_STOPPED)
        return done
