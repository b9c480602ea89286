"""One story about money (DESIGN invariant 7), over a generated month of live traffic:
invoice usage = the period's CDRs' charged_micros = the ledger's debits for those
calls, to the micro-unit.

The calls go through the real credit control (Sessions, the Ledger's Lua scripts, a
real tariff) with concurrent calls per account, interims, calls that cross the
period's edges and unanswered ones; the CDRs they write are stored by the billing
database's own path (BillingDB.store_cdrs); the invoices come from the invoice run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from datetime import UTC, datetime
from pathlib import Path

import redis.asyncio as aioredis
from invoicing_harness import make_books
from sessions_harness import (
    BERLIN,
    EUR,
    MUNICH,
    Clock,
    RecordingCutter,
    call,
    make_ledger,
    make_sessions,
    read_cdrs,
    usage,
)

from chargingd.billing.cdr import CDR, CHARGE_RECORDED
from chargingd.billing.db import BillingDB
from chargingd.invoicing import Invoice, invoice_run
from chargingd.ledger import Ledger, Mode
from chargingd.sessions.ccapi import Authorized, UsageKind
from chargingd.sessions.service import Sessions

ACCOUNTS = ("p0", "p1", "p2", "p3")
NOV_START = datetime(2026, 11, 1, tzinfo=UTC)
DEC_START = datetime(2026, 12, 1, tzinfo=UTC)


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


async def _slot(
    sessions: Sessions, clock: Clock, t0_ms: int, calls: list[tuple[str, str, int, str]]
) -> None:
    """Calls (session, user, usage_s, number) that start together at t0 (concurrently),
    send an interim every minute while they last and stop in the order they end."""
    clock.now_ms = t0_ms
    infos = {sid: call(sid, user=user, called=number) for sid, user, _, number in calls}
    answers = await asyncio.gather(*(sessions.authorize(i) for i in infos.values()))
    live = [c for c, a in zip(calls, answers, strict=True) if isinstance(a, Authorized)]
    assert len(live) == len(calls), answers
    await asyncio.gather(
        *(sessions.account(usage(infos[sid], UsageKind.START, 0, t0_ms)) for sid, *_ in live)
    )
    for minute in range(1, max(u for _, _, u, _ in live) // 60 + 1):
        clock.now_ms = t0_ms + minute * 60_000
        reports = [
            usage(infos[sid], UsageKind.INTERIM, minute * 60, clock.now_ms)
            for sid, _, usage_s, _ in live
            if usage_s > minute * 60
        ]
        await asyncio.gather(*(sessions.account(r) for r in reports))
    for sid, _, usage_s, _ in sorted(live, key=lambda c: c[2]):
        clock.now_ms = t0_ms + usage_s * 1000
        await sessions.account(usage(infos[sid], UsageKind.STOP, usage_s, clock.now_ms))


async def _month_of_traffic(sessions: Sessions, clock: Clock) -> None:
    rng = random.Random(11)
    slots: list[tuple[datetime, list[tuple[str, str, int, str]]]] = []
    n = 0
    for day in range(1, 31):
        for hour in (9, 14, 20):
            calls = []
            for account in ACCOUNTS:
                for _ in range(rng.randint(0, 2)):
                    usage_s = rng.choice((0, 7, 45, 61, 130, 299))
                    calls.append((f"c{n}", account, usage_s, rng.choice((BERLIN, MUNICH))))
                    n += 1
            if calls:
                slots.append((datetime(2026, 11, day, hour, rng.randint(0, 59), tzinfo=UTC), calls))
    # Across the edges: started 31 Oct, ended 1 Nov; started 30 Nov, ended 1 Dec.
    slots.insert(0, (datetime(2026, 10, 31, 23, 58, tzinfo=UTC), [("edge-oct", "p0", 300, MUNICH)]))
    slots.append((datetime(2026, 11, 30, 23, 57, tzinfo=UTC), [("edge-nov", "p1", 400, BERLIN)]))
    for start, calls in slots:
        await _slot(sessions, clock, _ms(start), calls)


async def _ledger_debits(ledger: Ledger, account_id: str) -> dict[str, int]:
    """Session id -> what the ledger debited for it (commit and release entries)."""
    debits: dict[str, int] = {}
    for entry in await ledger.audit(account_id, count=100_000):
        if entry.what in ("commit", "release"):
            sid = entry.details["session"]
            debits[sid] = debits.get(sid, 0) + int(entry.details["amount"])
    return debits


async def test_invoice_usage_equals_cdrs_equals_ledger_debits(
    redis: aioredis.Redis, pg_url: str, tmp_path: Path
) -> None:
    clock = Clock(_ms(NOV_START))
    ledger = await make_ledger(redis, clock)
    for account in ACCOUNTS:
        await ledger.create_account(
            account, mode=Mode.POSTPAID, currency="EUR", credit_limit_micros=10_000 * EUR,
            tariff="retail", identities=(f"user:{account}",), who="test",
        )  # fmt: skip
    sessions = make_sessions(redis, ledger, clock, tmp_path, RecordingCutter())
    await _month_of_traffic(sessions, clock)
    cdrs = await read_cdrs(redis)
    db = await BillingDB.open(pg_url)
    try:
        assert await db.store_cdrs(cdrs) == len(cdrs)
        # A mediated echo of a call charged live is a second record, never a second charge.
        echo = dataclasses.replace(cdrs[5], source="pbx", charge=CHARGE_RECORDED, charged_micros=0)
        assert await db.store_cdrs([echo]) == 1
    finally:
        await db.close()
    books = await make_books(
        pg_url, ledger, default_vat_rate="19", now=datetime(2026, 12, 2, tzinfo=UTC)
    )
    try:
        result = await invoice_run(books, "2026-11")
    finally:
        await books.db.close()
    invoices = {i.account_id: i for i in result.issued if isinstance(i, Invoice)}
    assert sorted(invoices) == list(ACCOUNTS)
    november = [c for c in cdrs if _ms(NOV_START) <= c.start_ms < _ms(DEC_START)]
    assert {c.call_id for c in cdrs} - {c.call_id for c in november} == {"edge-oct"}
    assert "edge-nov" in {c.call_id for c in november}
    total_checked = 0
    for account, inv in invoices.items():
        mine: list[CDR] = [c for c in november if c.account_id == account]
        debits = await _ledger_debits(ledger, account)
        from_cdrs = sum(c.charged_micros for c in mine)
        from_ledger = sum(debits.get(c.call_id, 0) for c in mine)
        assert inv.usage_micros == from_cdrs == from_ledger, account
        assert inv.usage_calls == sum(1 for c in mine if c.answer_ms)
        assert sum(ln.exact_micros for ln in inv.lines if ln.kind == "usage") == from_cdrs
        total_checked += len(mine)
    assert total_checked > 200 and sum(i.usage_micros for i in invoices.values()) > 50 * EUR
