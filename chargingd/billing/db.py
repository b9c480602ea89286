"""The billing database (PostgreSQL): connection, schema migrations and CDR storage
(the embedded server: billing/embedded.py; the errors: billing/errors.py).

With no URL configured chargingd starts an embedded PostgreSQL (the ``pgserver``
package carries a real server) under ``<data_dir>/pg``; otherwise it connects to a
``postgresql://`` URL. Every source of CDRs (the exporter, mediation) stores them
with :meth:`BillingDB.store_cdrs`: idempotent on (source, call_id), and postpaid
usage per account and month is accumulated in the same transaction.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg

from chargingd.billing.cdr import CDR, CHARGE_NONE, CHARGE_RECORDED, CHARGES
from chargingd.billing.embedded import database_url, embedded_dir, start_embedded, stop_embedded
from chargingd.billing.errors import (
    BillingDBError,
    DatabaseUnavailable,
    InvalidCDR,
    MigrationError,
)
from chargingd.core.config import Config

# The embedded server and the errors live in their own modules; importing them from
# here keeps working.
__all__ = [
    "BillingDB",
    "BillingDBError",
    "Conn",
    "DatabaseUnavailable",
    "InvalidCDR",
    "Migration",
    "MigrationError",
    "UsagePeriod",
    "database_url",
    "embedded_dir",
    "load_migrations",
    "migrate",
    "start_embedded",
    "stop_embedded",
    "validate_cdr",
]

log = logging.getLogger("chargingd.billingdb")

# pg_advisory_xact_lock key held while migrating ("chgdmig" in ASCII): two daemons
# starting at once never apply a migration twice.
MIGRATION_LOCK_KEY = 0x636867646D6967
_MIGRATION_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")
_RETRIES = 3

Conn = psycopg.AsyncConnection[Any]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """The NNN_name.sql files of chargingd/sql (or `directory`), in version order."""
    if directory is None:
        root: Any = resources.files("chargingd.billing") / "sql"
    else:
        root = directory
    found: dict[int, Migration] = {}
    for entry in root.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _MIGRATION_NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} is not NNN_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations have version {version:03d}")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


async def migrate(conn: Conn, migrations: Sequence[Migration] | None = None) -> list[int]:
    """Apply the migrations not yet applied, in order, in one transaction; return them.

    An advisory lock serialises concurrent daemons; a changed checksum of an applied
    migration is a MigrationError (never edit an applied file: add a new one).
    """
    todo = list(load_migrations() if migrations is None else migrations)
    applied_now: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version, checksum FROM schema_migrations")
        applied = {int(v): str(c) for v, c in await cur.fetchall()}
        for m in todo:
            if m.version in applied:
                if applied[m.version] != m.checksum:
                    raise MigrationError(f"applied migration {m.version:03d}_{m.name} was edited")
                continue
            await conn.execute(m.sql.encode())
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (m.version, m.name, m.checksum),
            )
            applied_now.append(m.version)
        newer = sorted(set(applied) - {m.version for m in todo})
    if newer:
        log.warning("billing database has migrations this chargingd does not know: %s", newer)
    if applied_now:
        log.info("billing database migrated to version %03d", applied_now[-1])
    return applied_now


# -- CDR storage --------------------------------------------------------------------

_STAGE_COLUMNS = (
    "seq, source, call_id, account_id, caller, callee, destination, start_ms, answer_ms,"
    " end_ms, duration_s, billed_s, cost_micros, currency, tariff, gateway,"
    " disconnect_cause, status, extra, charged_micros, charge, charge_reason, revision"
)

_CREATE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS cdr_stage (
    seq INTEGER, source TEXT, call_id TEXT, account_id TEXT, caller TEXT, callee TEXT,
    destination TEXT, start_ms BIGINT, answer_ms BIGINT, end_ms BIGINT, duration_s INTEGER,
    billed_s INTEGER, cost_micros BIGINT, currency TEXT, tariff TEXT, gateway TEXT,
    disconnect_cause INTEGER, status TEXT, extra JSONB, charged_micros BIGINT, charge TEXT,
    charge_reason TEXT, revision INTEGER
) ON COMMIT DELETE ROWS
"""

# One statement: insert the new CDRs (the highest revision of duplicates within the
# batch, in key order so concurrent writers lock in the same order), or replace a
# stored one by a higher revision (a correction), then fold exactly those changes
# into usage_periods (UTC month of the start): a new row adds itself, a replaced row
# adds the difference (``old`` reads the rows as they were before this statement). A
# recorded_only CDR is a second record of a call another CDR already counts: stored,
# but not added to usage.
_INSERT_FROM_STAGE = """
WITH staged AS (
    SELECT DISTINCT ON (source, call_id) * FROM cdr_stage
    ORDER BY source, call_id, revision DESC, seq
), old AS (
    SELECT c.source, c.call_id, c.account_id, c.start_time, c.currency, c.duration_s,
        c.billed_s, c.cost_micros, c.charged_micros, c.charge
    FROM cdrs c JOIN staged s ON c.source = s.source AND c.call_id = s.call_id
), ins AS (
    INSERT INTO cdrs AS c (source, call_id, account_id, caller, callee, destination,
        start_time, answer_time, end_time, duration_s, billed_s, cost_micros, currency,
        tariff, gateway, disconnect_cause, status, extra, charged_micros, charge,
        charge_reason, revision)
    SELECT source, call_id, account_id, caller, callee, destination,
        timestamptz 'epoch' + start_ms * interval '1 millisecond',
        CASE WHEN answer_ms = 0 THEN NULL
             ELSE timestamptz 'epoch' + answer_ms * interval '1 millisecond' END,
        timestamptz 'epoch' + end_ms * interval '1 millisecond',
        duration_s, billed_s, cost_micros, currency, tariff, gateway, disconnect_cause,
        status, extra, charged_micros, charge, charge_reason, revision
    FROM staged ORDER BY source, call_id
    ON CONFLICT (source, call_id) DO UPDATE SET
        account_id = EXCLUDED.account_id, caller = EXCLUDED.caller,
        callee = EXCLUDED.callee, destination = EXCLUDED.destination,
        start_time = EXCLUDED.start_time, answer_time = EXCLUDED.answer_time,
        end_time = EXCLUDED.end_time, duration_s = EXCLUDED.duration_s,
        billed_s = EXCLUDED.billed_s, cost_micros = EXCLUDED.cost_micros,
        currency = EXCLUDED.currency, tariff = EXCLUDED.tariff,
        gateway = EXCLUDED.gateway, disconnect_cause = EXCLUDED.disconnect_cause,
        status = EXCLUDED.status, extra = EXCLUDED.extra,
        charged_micros = EXCLUDED.charged_micros, charge = EXCLUDED.charge,
        charge_reason = EXCLUDED.charge_reason, revision = EXCLUDED.revision,
        stored_at = now()
    WHERE c.revision < EXCLUDED.revision
    RETURNING source, call_id, account_id, start_time, currency, duration_s, billed_s,
        cost_micros, charged_micros, charge
), delta AS (
    SELECT account_id, start_time, currency, 1 AS calls, duration_s, billed_s,
        cost_micros, charged_micros, charge
    FROM ins
    UNION ALL
    SELECT o.account_id, o.start_time, o.currency, -1, -o.duration_s, -o.billed_s,
        -o.cost_micros, -o.charged_micros, o.charge
    FROM old o JOIN ins i ON o.source = i.source AND o.call_id = i.call_id
), usage AS (
    INSERT INTO usage_periods AS u (account_id, period, currency, calls, duration_s,
        billed_s, cost_micros, charged_micros)
    SELECT account_id, to_char(start_time AT TIME ZONE 'UTC', 'YYYY-MM'), currency,
        sum(calls), sum(duration_s), sum(billed_s), sum(cost_micros), sum(charged_micros)
    FROM delta WHERE charge <> 'recorded_only' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (account_id, period, currency) DO UPDATE SET
        calls = u.calls + EXCLUDED.calls,
        duration_s = u.duration_s + EXCLUDED.duration_s,
        billed_s = u.billed_s + EXCLUDED.billed_s,
        cost_micros = u.cost_micros + EXCLUDED.cost_micros,
        charged_micros = u.charged_micros + EXCLUDED.charged_micros,
        updated_at = now()
)
SELECT source, call_id FROM ins
"""


def _stage_row(seq: int, c: CDR) -> tuple[Any, ...]:
    return (
        seq, c.source, c.call_id, c.account_id, c.caller, c.callee, c.destination,
        c.start_ms, c.answer_ms, c.end_ms, c.duration_s, c.billed_s, c.cost_micros,
        c.currency, c.tariff, c.gateway, c.disconnect_cause, c.status,
        json.dumps(c.extra, separators=(",", ":")), c.charged_micros, c.charge,
        c.charge_reason, c.revision,
    )  # fmt: skip


def validate_cdr(c: CDR) -> None:
    """Raise InvalidCDR when a CDR cannot be stored (wrong types, empty key, negatives)."""
    for name in ("source", "call_id", "account_id", "currency", "status"):
        value = getattr(c, name)
        if not isinstance(value, str) or not value:
            raise InvalidCDR(f"CDR {name} must be a non-empty string")
    for name in (
        "start_ms", "answer_ms", "end_ms", "duration_s", "billed_s", "cost_micros",
        "charged_micros", "revision",
    ):  # fmt: skip
        value = getattr(c, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise InvalidCDR(f"CDR {name} must be an integer")
    if min(c.start_ms, c.answer_ms, c.end_ms, c.duration_s, c.billed_s, c.revision) < 0:
        raise InvalidCDR("CDR times and durations must not be negative")
    _validate_charge(c)
    for name in ("caller", "callee", "destination", "tariff", "gateway"):
        if not isinstance(getattr(c, name), str):
            raise InvalidCDR(f"CDR {name} must be a string")
    if not isinstance(c.disconnect_cause, int) or not isinstance(c.extra, dict):
        raise InvalidCDR("CDR disconnect_cause must be an integer and extra a table")
    if any(not isinstance(k, str) or not isinstance(v, str) for k, v in c.extra.items()):
        raise InvalidCDR("CDR extra must map strings to strings")


def _validate_charge(c: CDR) -> None:
    if c.charge not in CHARGES:
        raise InvalidCDR(f"CDR charge must be one of {', '.join(CHARGES)}, not {c.charge!r}")
    if c.charged_micros < 0:
        raise InvalidCDR("CDR charged_micros must not be negative")
    if c.charge in (CHARGE_RECORDED, CHARGE_NONE) and c.charged_micros:
        raise InvalidCDR(f"a {c.charge} CDR moved no money: charged_micros must be 0")
    if not isinstance(c.charge_reason, str):
        raise InvalidCDR("CDR charge_reason must be a string")


@dataclass(frozen=True)
class UsagePeriod:
    account_id: str
    period: str  # 'YYYY-MM', UTC month of the calls' start
    currency: str
    calls: int
    duration_s: int
    billed_s: int
    cost_micros: int
    charged_micros: int = 0  # what the ledger moved for these calls (invariant 7)


BeforeCommit = Callable[[list[CDR]], None]


class BillingDB:
    """One connection to the billing database, shared by the tasks of one process.

    Calls are serialised by a lock; a broken connection is reopened on the next call.
    """

    def __init__(self, url: str, *, connect_timeout_s: float = 5.0) -> None:
        self.url = url
        self.connect_timeout_s = connect_timeout_s
        self._conn: Conn | None = None
        self._lock = asyncio.Lock()
        self.embedded: Path | None = None  # pgdata of an embedded server we started

    @classmethod
    async def open(cls, url: str, *, connect_timeout_s: float = 5.0) -> BillingDB:
        """Connect and bring the schema up to date."""
        db = cls(url, connect_timeout_s=connect_timeout_s)
        try:
            async with db._lock:
                await migrate(await db._connection())
        except BaseException:  # failed or cancelled (a daemon stopping): no open connection left
            await db.close()
            raise
        return db

    @classmethod
    async def from_config(cls, cfg: Config) -> BillingDB:
        """Open the configured database (starting the embedded one if no URL is set)."""
        url = await database_url(cfg)
        db = await cls.open(url, connect_timeout_s=cfg.billing.connect_timeout_s)
        db.embedded = embedded_dir(cfg)
        return db

    async def close(self, *, stop_embedded_server: bool = False) -> None:
        """Close the connection; optionally release the embedded server it started."""
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
        if stop_embedded_server and self.embedded is not None:
            await asyncio.to_thread(stop_embedded, self.embedded)
            self.embedded = None

    async def _connection(self) -> Conn:
        if self._conn is None or self._conn.closed or self._conn.broken:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url, connect_timeout=max(1, round(self.connect_timeout_s))
                )
                # The per-connection staging table of store_cdrs (emptied at each commit).
                await conn.execute(_CREATE_STAGE)
                await conn.commit()
            except psycopg.OperationalError as exc:
                raise DatabaseUnavailable(
                    f"cannot connect to the billing database: {exc}"
                ) from None
            self._conn = conn
        return self._conn

    async def run(self, work: Callable[[Conn], Any]) -> Any:
        """Run `work(conn)` (a coroutine function) in one transaction, retrying deadlocks."""
        async with self._lock:
            for attempt in range(_RETRIES):
                conn = await self._connection()
                try:
                    async with conn.transaction():
                        return await work(conn)
                except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                    if attempt == _RETRIES - 1:
                        raise
                    log.warning("billing transaction conflicted; retrying")
                except psycopg.OperationalError as exc:
                    await self.close()
                    raise DatabaseUnavailable(f"billing database error: {exc}") from None
        raise AssertionError("unreachable")

    async def store_cdrs(
        self, cdrs: Sequence[CDR], *, before_commit: BeforeCommit | None = None
    ) -> int:
        """Store CDRs in one transaction; return how many were new or replaced
        (idempotent).

        A CDR whose (source, call_id) is already stored is skipped unless it is a
        higher revision (a correction), which replaces the row; usage_periods moves by
        what was added or changed. ``before_commit`` gets the new CDRs inside the
        transaction (the CSV export writes them there). Raises InvalidCDR on a bad
        CDR (InvalidCDR, nothing stored) and DatabaseUnavailable when the database is down.
        """
        for c in cdrs:
            validate_cdr(c)
        if not cdrs:
            return 0

        async def work(conn: Conn) -> int:
            async with conn.cursor() as cur:
                async with cur.copy(f"COPY cdr_stage ({_STAGE_COLUMNS}) FROM STDIN") as copy:
                    for seq, c in enumerate(cdrs):
                        await copy.write_row(_stage_row(seq, c))
                await cur.execute(_INSERT_FROM_STAGE)
                keys = {(str(s), str(k)) for s, k in await cur.fetchall()}
            if before_commit is not None and keys:
                top: dict[tuple[str, str], int] = {}
                for c in cdrs:
                    key = (c.source, c.call_id)
                    top[key] = max(top.get(key, 0), c.revision)
                seen: set[tuple[str, str]] = set()
                new = []
                for c in cdrs:
                    key = (c.source, c.call_id)
                    if key in keys and key not in seen and c.revision == top[key]:
                        seen.add(key)
                        new.append(c)
                before_commit(new)
            return len(keys)

        inserted: int = await self.run(work)
        return inserted

    async def usage(self, account_id: str, period: str | None = None) -> list[UsagePeriod]:
        """Postpaid usage of an account, one row per period and currency (newest first)."""

        async def work(conn: Conn) -> list[UsagePeriod]:
            cur = await conn.execute(
                "SELECT account_id, period, currency, calls, duration_s, billed_s, cost_micros,"
                " charged_micros FROM usage_periods"
                " WHERE account_id = %s AND (%s::text IS NULL OR period = %s)"
                " ORDER BY period DESC, currency",
                (account_id, period, period),
            )
            return [UsagePeriod(*row) for row in await cur.fetchall()]

        result: list[UsagePeriod] = await self.run(work)
        return result

    async def period_usage(self, period: str) -> list[UsagePeriod]:
        """Every account's usage in one billing period ('YYYY-MM'), for invoicing."""
        if not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", period):
            raise ValueError(f"period must be YYYY-MM, not {period!r}")

        async def work(conn: Conn) -> list[UsagePeriod]:
            cur = await conn.execute(
                "SELECT account_id, period, currency, calls, duration_s, billed_s, cost_micros,"
                " charged_micros FROM usage_periods WHERE period = %s"
                " ORDER BY account_id, currency",
                (period,),
            )
            return [UsagePeriod(*row) for row in await cur.fetchall()]

        result: list[UsagePeriod] = await self.run(work)
        return result

    async def count_cdrs(self) -> int:
        async def work(conn: Conn) -> int:
            cur = await conn.execute("SELECT count(*) FROM cdrs")
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        n: int = await self.run(work)
        return n
