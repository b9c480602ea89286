"""Helpers of the assurance tests: CDRs of a switch and of live sessions, a Context on
the test's real Redis and PostgreSQL, and a run of the reconciliation."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from chargingd.assurance import Context, Finding, Kind, RunParams, Sources, reconcile
from chargingd.assurance.pricing import CallPricer
from chargingd.billing.cdr import CDR, CHARGE_LIVE, CHARGE_RECORDED
from chargingd.billing.db import BillingDB
from chargingd.core.config import RatingConfig
from chargingd.sessions.store import SessionStore

# 2026-11-04 10:00:00 UTC; the period of the tests is that day.
DAY = datetime(2026, 11, 4, tzinfo=UTC)
BASE_MS = int((DAY + timedelta(hours=10)).timestamp() * 1000)
MICROS_PER_S = 10_000  # one cent per second
SWITCH = "sw1"


def live_cdr(n: int, account: str = "alice", *, usage_s: int = 60, **changes: Any) -> CDR:
    """The n-th live call (RADIUS), one per minute, charged what it cost."""
    start = BASE_MS + n * 60_000
    cost = usage_s * MICROS_PER_S
    fields: dict[str, Any] = {
        "source": "radius", "call_id": f"sess-{n}", "account_id": account,
        "caller": "+4930111111", "callee": f"+4420794600{n:02d}", "destination": "UK",
        "start_ms": start, "answer_ms": start + 1000 if usage_s else 0,
        "end_ms": start + 1000 + usage_s * 1000, "duration_s": usage_s, "billed_s": usage_s,
        "cost_micros": cost, "currency": "EUR", "tariff": "default", "gateway": "127.0.0.1",
        "disconnect_cause": 16, "status": "normal" if usage_s else "unanswered",
        "extra": {"client": "gw"}, "charged_micros": cost, "charge": CHARGE_LIVE,
    }  # fmt: skip
    fields.update(changes)
    return CDR(**fields)


def switch_cdr(live: CDR, *, usage_s: int | None = None, **changes: Any) -> CDR:
    """The switch's own record of a live call (a record_only source), rated like it."""
    usage = live.duration_s if usage_s is None else usage_s
    fields: dict[str, Any] = {
        "source": SWITCH, "call_id": live.call_id.upper(), "duration_s": usage,
        "billed_s": usage, "cost_micros": usage * MICROS_PER_S,
        "end_ms": live.answer_ms + usage * 1000, "extra": {}, "charged_micros": 0,
        "charge": CHARGE_RECORDED, "charge_reason": "",
    }  # fmt: skip
    fields.update(changes)
    return dataclasses.replace(live, **fields)


def sources(match_on: str = "call_id", *, rate: bool = True) -> Sources:
    return Sources(switch={SWITCH: ("record_only", "radius", match_on, rate)})


def params(**changes: Any) -> RunParams:
    base: dict[str, Any] = {
        "start": DAY, "end": DAY + timedelta(days=1), "start_tolerance_s": 10,
        "duration_tolerance_s": 2, "duration_tolerance_bp": 100, "hold_grace_s": 5,
        "session_grace_s": 5, "stuck_after_s": 60,
    }  # fmt: skip
    base.update(changes)
    return RunParams(**base)


async def no_tariff(account_id: str) -> str | None:
    return None


def context(
    db: BillingDB, redis: aioredis.Redis, src: Sources | None = None, *,
    rating: RatingConfig | None = None,
) -> Context:  # fmt: skip
    return Context(
        db=db,
        redis=redis,
        sessions=SessionStore(redis, session_ttl_s=86400, closed_ttl_s=86400, batch_commands=False),
        pricer=CallPricer(rating or RatingConfig(), no_tariff),
        sources=src or sources(),
    )


async def run(ctx: Context, p: RunParams | None = None, now_ms: int | None = None) -> list[Finding]:
    outcome = await reconcile(ctx, p or params(), now_ms or BASE_MS + 86_400_000)
    return outcome.findings


def by_kind(findings: list[Finding]) -> dict[Kind, list[Finding]]:
    out: dict[Kind, list[Finding]] = {}
    for f in findings:
        out.setdefault(f.kind, []).append(f)
    return out


@dataclass
class SwitchCall:
    """A RADIUS call as its gateway's own accounting file records it."""

    session_id: str
    caller: str
    callee: str
    usage_s: int
    setup_ms: int


def _cisco_time(ms: int) -> str:
    t = datetime.fromtimestamp(ms / 1000, UTC)
    return f"{t:%H:%M:%S}.{t.microsecond // 1000:03d} UTC {t:%a %b} {t.day} {t.year}"


def cisco_detail_file(path: Path, calls: list[SwitchCall]) -> Path:
    """The gateway's own accounting of ``calls``: a FreeRADIUS detail file of a Cisco
    gateway's originate leg (Start and Stop, answered 200 ms after setup)."""
    out = []
    for p in calls:
        connect_ms = p.setup_ms + 200
        common = [
            "\tNAS-IP-Address = 127.0.0.1",
            f'\tAcct-Session-Id = "{p.session_id}"',
            f'\tCalling-Station-Id = "{p.caller}"',
            f'\tCalled-Station-Id = "{p.callee}"',
            f'\th323-conf-id = "h323-conf-id={p.session_id}"',
            '\th323-call-origin = "h323-call-origin=originate"',
            f'\th323-setup-time = "h323-setup-time={_cisco_time(p.setup_ms)}"',
        ]
        stamp = datetime.fromtimestamp(p.setup_ms / 1000, UTC).strftime("%a %b %d %H:%M:%S %Y")
        out += [stamp, "\tAcct-Status-Type = Start", *common, ""]
        out += [stamp, "\tAcct-Status-Type = Stop", *common,
                f'\th323-connect-time = "h323-connect-time={_cisco_time(connect_ms)}"',
                '\th323-disconnect-time = "h323-disconnect-time='
                f'{_cisco_time(connect_ms + p.usage_s * 1000)}"',
                '\th323-disconnect-cause = "h323-disconnect-cause=10"',
                f"\tAcct-Session-Time = {p.usage_s}", ""]  # fmt: skip
    path.write_text("\n".join(out))
    return path
