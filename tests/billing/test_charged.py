"""charged_micros: what the ledger moved for each CDR, from the live close path through
the exporter into PostgreSQL and CSV; old CDRs and old rows get the value they had."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any

import msgpack
import psycopg
import pytest
import redis.asyncio as aioredis
from cdr_factory import make_cdr
from sessions_harness import (
    EUR,
    Clock,
    add_account,
    call,
    make_ledger,
    make_sessions,
    read_cdrs,
    usage,
)

from chargingd.billing.cdr import CDR, CDR_STREAM
from chargingd.billing.db import BillingDB, InvalidCDR, load_migrations, migrate
from chargingd.billing.exporter import Exporter
from chargingd.core.config import config_from_dict
from chargingd.sessions.ccapi import UsageKind

PER_S = 10_000  # the harness's Berlin rate: 0.60 a minute, billed per second


def _old_packed(cdr: CDR) -> bytes:
    """A CDR as a daemon from before charged_micros packed it."""
    fields = dataclasses.asdict(cdr)
    for name in ("charged_micros", "charge", "charge_reason"):
        del fields[name]
    raw: bytes = msgpack.packb(fields, use_bin_type=True)
    return raw


def test_old_cdrs_decode_with_what_they_charged() -> None:
    live = CDR.unpack(_old_packed(make_cdr(1)))
    assert (live.charge, live.charged_micros) == ("live", live.cost_micros)
    mediated = CDR.unpack(_old_packed(make_cdr(2, source="asterisk-pbx")))
    assert (mediated.charge, mediated.charged_micros) == ("none", 0)
    new = make_cdr(3, charged_micros=5, charge="mediated_debit", charge_reason="capped")
    assert CDR.unpack(new.pack()) == new
    # Forward compatible: a field from a newer version is dropped, not fatal.
    assert CDR.unpack(msgpack.packb({**dataclasses.asdict(new), "surprise": 1})) == new


async def test_live_close_records_what_the_ledger_debited_and_exports_it(
    redis: aioredis.Redis, pg_url: str, tmp_path: Path
) -> None:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await add_account(ledger, balance_micros=10 * EUR)
    info = call("live-1")
    await sessions.authorize(info)
    await sessions.account(usage(info, UsageKind.START, 0, clock.now_ms))
    clock.advance(60)
    await sessions.account(usage(info, UsageKind.INTERIM, 60, clock.now_ms))
    clock.advance(30)
    await sessions.account(usage(info, UsageKind.STOP, 90, clock.now_ms))
    (cdr,) = await read_cdrs(redis)
    account = await ledger.get_account("acc1")
    assert cdr.charge == "live"
    assert cdr.charged_micros == account.debits_micros == 90 * PER_S
    assert account.balance_micros == 10 * EUR - cdr.charged_micros

    cfg = config_from_dict(
        {"billing": {"db_url": pg_url}, "export": {"csv_dir": str(tmp_path / "csv")}}
    )
    db = await BillingDB.open(pg_url)
    try:
        await Exporter(redis, cfg, db=db).drain()

        async def row(conn: Any) -> Any:
            cur = await conn.execute(
                "SELECT charged_micros, charge, charge_reason FROM cdrs WHERE call_id = 'live-1'"
            )
            return await cur.fetchone()

        assert await db.run(row) == (90 * PER_S, "live", "")
        (period,) = await db.usage("acc1")
        assert period.charged_micros == period.cost_micros == 90 * PER_S
    finally:
        await db.close()
    (published,) = (tmp_path / "csv").glob("cdrs-*.csv")
    with open(published, newline="", encoding="utf-8") as fh:
        (out,) = list(csv.DictReader(fh))
    assert (out["charged"], out["charge"], out["charge_reason"]) == ("0.900000", "live", "")


async def test_recorded_only_cdrs_are_stored_but_not_counted_as_usage(pg_url: str) -> None:
    db = await BillingDB.open(pg_url)
    try:
        live = make_cdr(0, charged_micros=make_cdr(0).cost_micros, charge="live")
        echo = make_cdr(0, source="cisco-gw", charge="recorded_only")  # the switch's record
        debit = make_cdr(3, source="pbx", charged_micros=100, charge="mediated_debit",
                         charge_reason="capped")  # fmt: skip
        assert await db.store_cdrs([live, echo, debit]) == 3
        (period,) = await db.usage("acct-0")
        assert period.calls == 2  # the live call and the mediated debit; not the echo
        assert period.cost_micros == live.cost_micros + debit.cost_micros
        assert period.charged_micros == live.charged_micros + 100
        for bad in (
            make_cdr(9, charge="free"),
            make_cdr(9, charged_micros=-1, charge="live"),
            make_cdr(9, charged_micros=1, charge="none"),
        ):
            with pytest.raises(InvalidCDR):
                await db.store_cdrs([bad])
    finally:
        await db.close()


async def test_migration_gives_existing_rows_what_they_charged(pg_empty_url: str) -> None:
    """A database at version 002 with live and mediated rows, migrated to 003."""
    every = load_migrations()
    async with await psycopg.AsyncConnection.connect(pg_empty_url) as conn:
        await migrate(conn, [m for m in every if m.version <= 2])
        for source, call_id, cost in (("radius", "a", 1500), ("pbx", "b", 700)):
            await conn.execute(
                "INSERT INTO cdrs (source, call_id, account_id, caller, callee, destination,"
                " start_time, end_time, duration_s, billed_s, cost_micros, currency, tariff,"
                " gateway, disconnect_cause, status) VALUES (%s, %s, 'acct', '', '', '',"
                " '2026-11-01T10:00:00Z', '2026-11-01T10:01:00Z', 60, 60, %s, 'EUR', '', '',"
                " 16, 'normal')",
                (source, call_id, cost),
            )
        await conn.execute(
            "INSERT INTO usage_periods (account_id, period, currency, calls, duration_s,"
            " billed_s, cost_micros) VALUES ('acct', '2026-11', 'EUR', 2, 120, 120, 2200)"
        )
        await conn.commit()
        assert await migrate(conn, every) == [m.version for m in every if m.version > 2]
        cur = await conn.execute(
            "SELECT call_id, charged_micros, charge FROM cdrs ORDER BY call_id"
        )
        assert await cur.fetchall() == [("a", 1500, "live"), ("b", 0, "none")]
        cur = await conn.execute("SELECT charged_micros FROM usage_periods")
        assert await cur.fetchall() == [(1500,)]


async def test_exporter_dead_letters_nothing_for_old_stream_entries(
    redis: aioredis.Redis, pg_url: str
) -> None:
    """A stream written by the previous version is exported with live charges."""
    old = [make_cdr(i) for i in range(5)]
    for cdr in old:
        await redis.xadd(CDR_STREAM, {"cdr": _old_packed(cdr)})
    db = await BillingDB.open(pg_url)
    try:
        exporter = Exporter(redis, config_from_dict({"billing": {"db_url": pg_url}}), db=db)
        assert await exporter.drain() == 5
        assert (await exporter.status())["dead_letters"] == 0

        async def total(conn: Any) -> Any:
            cur = await conn.execute("SELECT sum(charged_micros), min(charge) FROM cdrs")
            return await cur.fetchone()

        assert await db.run(total) == (sum(c.cost_micros for c in old), "live")
    finally:
        await db.close()
