"""What Redis holds right now: CDRs not in the database yet, live sessions and holds,
each account's balance and newest journal entry.

- Stuck CDRs: entries of ``cdr:stream`` older than ``stuck_after_s`` that the
  exporter's group has not delivered, or delivered and never acknowledged (a dead
  consumer), and every dead-lettered CDR. They are loaded into the run's tables, so a
  stuck CDR still explains its call and its ledger movements: it is one finding.
- Sessions live past their Session-Timeout: answered for longer than the usage their
  money pays for (``paid_usage_s``) plus ``session_grace_s``. Money: what the elapsed
  usage costs under the session's plan minus what is debited and held.
- Holds whose lease expired ``hold_grace_s`` ago and are still there (the sweeper
  missed them); a live session's expired hold is part of its own finding.

Findings here are as of the run (its clock), whatever the period.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis.exceptions import ResponseError

from chargingd.assurance.model import Finding, Kind
from chargingd.assurance.pricing import CallPricer
from chargingd.billing.cdr import CDR, CDR_STREAM
from chargingd.ledger.journal import ExpiredHold
from chargingd.sessions.store import SessionRecord

PAGE = 10_000


@dataclass(frozen=True)
class StuckCdr:
    """A CDR that is in Redis but not in the database; ``cdr`` None: undecodable."""

    entry_id: str
    found: str  # "stream: not delivered" | "stream: pending at X" | "dead letter: why"
    cdr: CDR | None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else "" if value is None else str(value)


def _ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


def _decode(raw: bytes | None) -> CDR | None:
    if not raw:
        return None
    try:
        return CDR.unpack(raw)
    except Exception:  # bad input boundary: an undecodable CDR is data, reported as such
        return None


async def stuck_cdrs(
    redis: Any, *, group: str, dead_letters: str, cutoff_ms: int, limit: int = 1_000_000
) -> list[StuckCdr]:
    """Entries older than ``cutoff_ms`` the group never delivered or never acknowledged,
    and the dead letters (at most ``limit`` of each)."""
    out: list[StuckCdr] = []
    try:
        groups: Any = await redis.xinfo_groups(CDR_STREAM)
    except ResponseError:
        groups = None  # no stream at all
    if groups is not None:
        mine = [g for g in groups if _text(g.get("name")) == group]
        last = _text(mine[0].get("last-delivered-id")) if mine else "0-0"
        out += await _undelivered(redis, last or "0-0", cutoff_ms, limit)
        if mine and int(mine[0].get("pending") or 0):
            out += await _pending(redis, group, cutoff_ms, limit)
    out += await _dead(redis, dead_letters, limit)
    return out


async def _undelivered(redis: Any, last: str, cutoff_ms: int, limit: int) -> list[StuckCdr]:
    out: list[StuckCdr] = []
    start = f"({last}"
    while len(out) < limit:
        rows: Any = await redis.xrange(CDR_STREAM, start, f"{cutoff_ms}", count=PAGE)
        for entry_id, fields in rows:
            out.append(StuckCdr(_text(entry_id), "stream: not delivered to the exporter",
                                _decode(fields.get(b"cdr"))))  # fmt: skip
        if len(rows) < PAGE:
            break
        start = f"({_text(rows[-1][0])}"
    return out[:limit]


async def _pending(redis: Any, group: str, cutoff_ms: int, limit: int) -> list[StuckCdr]:
    rows: Any = await redis.xpending_range(CDR_STREAM, group, "-", f"{cutoff_ms}", limit)
    if not rows:
        return []
    pipe = redis.pipeline(transaction=False)
    for row in rows:
        entry_id = _text(row["message_id"])
        pipe.xrange(CDR_STREAM, entry_id, entry_id)
    found = await pipe.execute()
    out = []
    for row, entries in zip(rows, found, strict=True):
        if not entries:
            continue  # deleted from the stream: nothing left to store
        where = f"stream: pending at consumer {_text(row['consumer'])}, never acknowledged"
        out.append(StuckCdr(_text(row["message_id"]), where, _decode(entries[0][1].get(b"cdr"))))
    return out


async def _dead(redis: Any, stream: str, limit: int) -> list[StuckCdr]:
    rows: Any = await redis.xrange(stream, "-", "+", count=limit)
    # A dead letter names the cdr:stream entry it came from.
    return [
        StuckCdr(
            _text(fields.get(b"id")) or _text(entry_id),
            f"dead letter: {_text(fields.get(b'reason'))}",
            _decode(fields.get(b"cdr")),
        )
        for entry_id, fields in rows
    ]


def stuck_rows(stuck: Sequence[StuckCdr]) -> list[tuple[Any, ...]]:
    """Rows of the run's a_stuck table (charges.STUCK_COLUMNS), ids below zero."""
    rows: list[tuple[Any, ...]] = []
    for n, s in enumerate(stuck, start=1):
        c = s.cdr
        if c is None:
            rows.append((-n, None, s.entry_id, None, None, None, None, None, None, None, None,
                         None, None, None, None, s.found + " (undecodable)", None))  # fmt: skip
            continue
        rows.append(
            (-n, c.source, c.call_id, c.account_id, c.caller, c.callee, _when(c.start_ms),
             _when(c.answer_ms) if c.answer_ms else None, c.duration_s, c.cost_micros,
             c.charged_micros, c.charge, c.charge_reason, c.currency, c.extra.get("client", ""),
             s.found, c.revision)
        )  # fmt: skip
    return rows


def _when(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _iso(ms: int) -> str:
    return _when(ms).isoformat() if ms else ""


def overdue_sessions(
    live: Sequence[SessionRecord], now_ms: int, grace_s: int, pricer: CallPricer
) -> list[Finding]:
    """Live sessions past the usage their money pays for, plus the grace."""
    out = []
    for rec in live:
        since = rec.answer_ms or rec.auth_ms
        elapsed_s = max(0, (now_ms - since) // 1000)
        if elapsed_s <= rec.paid_usage_s + grace_s:
            continue
        secured = rec.debited_micros + rec.held_micros
        detail: dict[str, Any] = {
            "caller": rec.caller, "callee": rec.callee, "gateway": rec.gateway,
            "client": rec.client, "authorized": _iso(rec.auth_ms), "answered": _iso(rec.answer_ms),
            "elapsed_s": elapsed_s, "paid_usage_s": rec.paid_usage_s,
            "last_usage_s": rec.last_usage_s, "debited_micros": rec.debited_micros,
            "held_micros": rec.held_micros, "as_of": _iso(now_ms),
        }  # fmt: skip
        money = 0
        if rec.answer_ms:
            cost = pricer.plan_call(rec.plan, rec.account_id, rec.callee, since, elapsed_s)
            if cost is None:
                detail["priced"] = f"not priced: plan {rec.plan!r} cannot price it"
            else:
                detail["elapsed_cost_micros"] = cost
                money = max(0, cost - secured)
        if rec.cut_reason:
            detail["cut_reason"] = rec.cut_reason
        out.append(
            Finding(Kind.SESSION_PAST_TIMEOUT, rec.account_id, rec.currency, money, "session",
                    rec.session_id, detail=detail)
        )  # fmt: skip
    return out


def hold_findings(
    holds: Sequence[ExpiredHold],
    currencies: dict[str, str],
    overdue: set[tuple[str, str]],
    now_ms: int,
) -> list[Finding]:
    """Expired holds still held; those of a session reported overdue are in its finding."""
    return [
        Finding(
            Kind.HOLD_PAST_LEASE,
            h.account_id,
            currencies.get(h.account_id, ""),
            h.held_micros,
            "hold",
            h.session_id,
            detail={
                "held_micros": h.held_micros,
                "lease_expired": _iso(h.lease_expiry_ms),
                "expired_s": max(0, (now_ms - h.lease_expiry_ms) // 1000),
                "as_of": _iso(now_ms),
            },
        )
        for h in holds
        if (h.account_id, h.session_id) not in overdue
    ]
