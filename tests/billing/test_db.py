"""The billing database on a real PostgreSQL (pgserver): migrations, idempotent storage."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from cdr_factory import BASE_MS, make_cdr

from chargingd.billing.cdr import CDR
from chargingd.billing.db import (
    BillingDB,
    InvalidCDR,
    Migration,
    MigrationError,
    load_migrations,
    migrate,
)


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[BillingDB]:
    database = await BillingDB.open(pg_url)
    yield database
    await database.close()


async def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute(query.encode())
        return list(await cur.fetchall())


def test_migration_files_are_versioned_in_order() -> None:
    migrations = load_migrations()
    versions = [m.version for m in migrations]
    assert versions == sorted(versions)
    assert versions[:2] == [1, 2]
    assert migrations[0].name == "cdrs"


async def test_migrations_run_once(pg_empty_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_empty_url) as conn:
        first = await migrate(conn)
        second = await migrate(conn)
    assert first == [m.version for m in load_migrations()]
    assert second == []
    rows = await _rows(pg_empty_url, "SELECT version, name FROM schema_migrations ORDER BY version")
    assert rows == [(m.version, m.name) for m in load_migrations()]


async def test_concurrent_daemons_migrate_once(pg_empty_url: str) -> None:
    """Two daemons starting at once: the advisory lock lets one of them migrate."""
    conns = [await psycopg.AsyncConnection.connect(pg_empty_url) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
    finally:
        for c in conns:
            await c.close()
    applied = [r for r in results if r]
    assert len(applied) == 1
    assert sum(len(r) for r in results) == len(load_migrations())


async def test_edited_migration_is_refused(pg_empty_url: str) -> None:
    migrations = load_migrations()
    async with await psycopg.AsyncConnection.connect(pg_empty_url) as conn:
        await migrate(conn, migrations)
        edited = [dataclasses.replace(migrations[0], sql=migrations[0].sql + "\n-- edit\n")]
        with pytest.raises(MigrationError, match="was edited"):
            await migrate(conn, edited)


async def test_new_migration_is_applied_later(pg_empty_url: str) -> None:
    migrations = load_migrations()
    extra = Migration(999, "test_extra", "CREATE TABLE test_extra (x INTEGER);")
    async with await psycopg.AsyncConnection.connect(pg_empty_url) as conn:
        await migrate(conn, migrations)
        assert await migrate(conn, [*migrations, extra]) == [999]
    assert await _rows(pg_empty_url, "SELECT count(*) FROM test_extra") == [(0,)]


async def test_store_is_idempotent(db: BillingDB, pg_url: str) -> None:
    cdrs = [make_cdr(i) for i in range(50)]
    assert await db.store_cdrs(cdrs) == 50
    assert await db.store_cdrs(cdrs) == 0
    # A mixed batch: 10 old, 10 new, and a CDR repeated inside the batch.
    mixed = cdrs[:10] + [make_cdr(i) for i in range(50, 60)] + [make_cdr(55)]
    assert await db.store_cdrs(mixed) == 10
    assert await db.count_cdrs() == 60
    # Same call_id from another source is another call.
    assert await db.store_cdrs([make_cdr(0, source="mediation-a")]) == 1
    rows = await _rows(pg_url, "SELECT count(*), count(DISTINCT (source, call_id)) FROM cdrs")
    assert rows == [(61, 61)]


async def test_stored_row_keeps_every_field(db: BillingDB, pg_url: str) -> None:
    cdr = make_cdr(7, extra={"codec": "G711", "q": "it's"}, cost_micros=123_456_789_012)
    unanswered = make_cdr(8, answer_ms=0, duration_s=0, billed_s=0, cost_micros=0)
    await db.store_cdrs([cdr, unanswered])
    rows = await _rows(
        pg_url,
        "SELECT account_id, start_time, answer_time, end_time, duration_s, billed_s,"
        " cost_micros, currency, tariff, gateway, disconnect_cause, status, extra"
        " FROM cdrs ORDER BY call_id",
    )
    first = rows[0]
    assert first[0] == cdr.account_id
    assert first[1] == datetime.fromtimestamp(cdr.start_ms / 1000, UTC)
    assert first[2] == datetime.fromtimestamp(cdr.answer_ms / 1000, UTC)
    assert first[3] == datetime.fromtimestamp(cdr.end_ms / 1000, UTC)
    assert first[4:12] == (
        cdr.duration_s, cdr.billed_s, 123_456_789_012, "EUR", "standard", "10.0.0.1", 16, "normal"
    )  # fmt: skip
    assert first[12] == {"codec": "G711", "q": "it's"}
    assert rows[1][2] is None  # unanswered: no answer time


async def test_millisecond_times_are_exact(db: BillingDB, pg_url: str) -> None:
    cdr = make_cdr(1, start_ms=BASE_MS + 123, answer_ms=BASE_MS + 999, end_ms=BASE_MS + 61_001)
    await db.store_cdrs([cdr])
    rows = await _rows(
        pg_url,
        "SELECT (extract(epoch FROM start_time) * 1000)::bigint,"
        " (extract(epoch FROM answer_time) * 1000)::bigint,"
        " (extract(epoch FROM end_time) * 1000)::bigint FROM cdrs",
    )
    assert rows == [(BASE_MS + 123, BASE_MS + 999, BASE_MS + 61_001)]


async def test_usage_periods_count_new_rows_only(db: BillingDB) -> None:
    cdrs = [make_cdr(i) for i in range(30)]
    await db.store_cdrs(cdrs)
    await db.store_cdrs(cdrs[:20])  # redelivered: must not count twice
    december = make_cdr(100, account_id="acct-0", start_ms=BASE_MS + 30 * 86_400_000)
    await db.store_cdrs([december])
    usage = await db.usage("acct-0")
    assert [u.period for u in usage] == ["2026-12", "2026-11"]
    mine = [c for c in cdrs if c.account_id == "acct-0"]
    november = usage[1]
    assert november.calls == len(mine) == 10
    assert november.duration_s == sum(c.duration_s for c in mine)
    assert november.billed_s == sum(c.billed_s for c in mine)
    assert november.cost_micros == sum(c.cost_micros for c in mine)
    assert usage[0].calls == 1 and usage[0].cost_micros == december.cost_micros
    assert await db.usage("acct-0", "2026-12") == [usage[0]]
    invoice = await db.period_usage("2026-11")
    assert [u.account_id for u in invoice] == ["acct-0", "acct-1", "acct-2"]
    assert sum(u.cost_micros for u in invoice) == sum(c.cost_micros for c in cdrs)
    with pytest.raises(ValueError):
        await db.period_usage("2026-13")


async def test_concurrent_writers_store_each_cdr_once(db: BillingDB, pg_url: str) -> None:
    """Two connections storing overlapping batches at once: no duplicate, no error."""
    other = await BillingDB.open(pg_url)
    try:
        batches = [[make_cdr(i) for i in range(k, k + 200)] for k in (0, 100, 50, 150)]
        counts = await asyncio.gather(
            *(d.store_cdrs(b) for d, b in zip([db, other, db, other], batches, strict=True))
        )
    finally:
        await other.close()
    assert sum(counts) == 350
    assert await db.count_cdrs() == 350
    usage = [u for a in range(3) for u in await db.usage(f"acct-{a}")]
    assert sum(u.calls for u in usage) == 350


@pytest.mark.parametrize(
    "changes",
    [
        {"call_id": ""},
        {"cost_micros": 1.5},
        {"duration_s": -1},
        {"extra": {"k": 1}},
        {"account_id": None},
    ],
)
async def test_bad_cdr_is_refused_and_nothing_stored(
    db: BillingDB, changes: dict[str, object]
) -> None:
    with pytest.raises(InvalidCDR):
        await db.store_cdrs([make_cdr(1), make_cdr(2, **changes)])
    assert await db.count_cdrs() == 0


async def test_before_commit_sees_new_cdrs_and_can_abort(db: BillingDB) -> None:
    await db.store_cdrs([make_cdr(1)])
    seen: list[CDR] = []
    n = await db.store_cdrs([make_cdr(1), make_cdr(2), make_cdr(2)], before_commit=seen.extend)
    assert n == 1
    assert [c.call_id for c in seen] == ["call-2"]

    def fail(_: list[CDR]) -> None:
        raise OSError("disk full")

    with pytest.raises(OSError):
        await db.store_cdrs([make_cdr(3)], before_commit=fail)
    assert await db.count_cdrs() == 2  # rolled back
    assert sum(u.calls for u in await db.usage("acct-0")) == 0


def test_embedded_server_forgets_killed_users(tmp_path: Path) -> None:
    """A daemon killed by SIGKILL stays in pgserver's user list, so the server would
    never stop; starting the embedded server first drops the dead ones."""
    from chargingd.billing.embedded import _forget_dead_users

    dead = subprocess.Popen(["true"])
    dead.wait()
    users = tmp_path / ".handle_pids.json"
    users.write_text(json.dumps([os.getpid(), dead.pid]))
    _forget_dead_users(tmp_path)
    assert json.loads(users.read_text()) == [os.getpid()]


async def test_a_higher_revision_replaces_the_stored_cdr_and_moves_usage_by_the_difference(
    db: BillingDB, pg_url: str
) -> None:
    """A call reaped as stale (revision 0, 75 s provisional) and corrected by its late
    Stop (revision 1, 200 s): one row, the final usage and charge, usage_periods
    moved by the difference; an older revision arriving again changes nothing."""
    stale = make_cdr(
        1, duration_s=75, billed_s=75, cost_micros=750_000, charged_micros=750_000,
        charge="live", status="stale", charge_reason="provisional",
    )  # fmt: skip
    final = dataclasses.replace(
        stale, duration_s=200, billed_s=200, cost_micros=2_000_000, charged_micros=2_000_000,
        status="normal", charge_reason="", revision=1,
    )  # fmt: skip
    assert await db.store_cdrs([stale]) == 1
    assert await db.store_cdrs([final]) == 1
    assert await db.store_cdrs([stale]) == 0  # a re-sent revision 0 loses
    rows = await _rows(
        pg_url, "SELECT status, duration_s, charged_micros, revision FROM cdrs ORDER BY id"
    )
    assert rows == [("normal", 200, 2_000_000, 1)]
    (usage,) = await db.usage(stale.account_id)
    assert (usage.calls, usage.duration_s, usage.charged_micros) == (1, 200, 2_000_000)


async def test_revisions_of_one_call_in_one_batch_keep_the_highest(
    db: BillingDB, pg_url: str
) -> None:
    first = make_cdr(2, charged_micros=10, charge="live")
    second = dataclasses.replace(first, duration_s=99, charged_micros=20, revision=1)
    stored: list[CDR] = []
    assert await db.store_cdrs([first, second, first], before_commit=stored.extend) == 1
    assert stored == [second]
    rows = await _rows(pg_url, "SELECT duration_s, charged_micros, revision FROM cdrs")
    assert rows == [(99, 20, 1)]
    (usage,) = await db.usage(first.account_id)
    assert (usage.calls, usage.charged_micros) == (1, 20)
