"""Browsing CDRs: by account and time, one call by its id, an invoice's call detail.

Listings page by CDR id (``--after``) and always go through the
``(account_id, start_time)`` or ``start_time`` index.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chargingd.billing.db import BillingDB, Conn
from chargingd.invoicing.model import NotFound, money

_COLUMNS = (
    "id, source, call_id, account_id, caller, callee, destination, start_time, answer_time,"
    " end_time, duration_s, billed_s, cost_micros, charged_micros, currency, tariff, gateway,"
    " disconnect_cause, status, extra, charge, charge_reason"
)


class NoSuchCursor(NotFound):
    """``after_id`` names no CDR: the listing has no place to continue from (an empty
    page would read as "no more CDRs")."""

    code = "no_such_cdr"


@dataclass(frozen=True)
class CdrRow:
    id: int
    source: str
    call_id: str
    account_id: str
    caller: str
    callee: str
    destination: str
    start_time: datetime
    answer_time: datetime | None
    end_time: datetime
    duration_s: int
    billed_s: int
    cost_micros: int
    charged_micros: int
    currency: str
    tariff: str
    gateway: str
    disconnect_cause: int
    status: str
    extra: dict[str, Any]
    charge: str = ""  # live, mediated_debit, recorded_only, none
    charge_reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source": self.source,
            "call_id": self.call_id,
            "account": self.account_id,
            "caller": self.caller,
            "callee": self.callee,
            "destination": self.destination,
            "start": self.start_time.isoformat(),
            "answer": self.answer_time.isoformat() if self.answer_time else None,
            "end": self.end_time.isoformat(),
            "duration_s": self.duration_s,
            "billed_s": self.billed_s,
            "cost": money(self.cost_micros, 2),
            "charged": money(self.charged_micros, 2),
            "currency": self.currency,
            "tariff": self.tariff,
            "gateway": self.gateway,
            "disconnect_cause": self.disconnect_cause,
            "status": self.status,
            "charge": self.charge,
            "charge_reason": self.charge_reason,
            "extra": self.extra,
        }


def _row(r: Sequence[Any]) -> CdrRow:
    return CdrRow(
        id=int(r[0]), source=r[1], call_id=r[2], account_id=r[3], caller=r[4], callee=r[5],
        destination=r[6], start_time=r[7], answer_time=r[8], end_time=r[9],
        duration_s=int(r[10]), billed_s=int(r[11]), cost_micros=int(r[12]),
        charged_micros=int(r[13]), currency=r[14], tariff=r[15], gateway=r[16],
        disconnect_cause=int(r[17]), status=r[18], extra=r[19], charge=r[20],
        charge_reason=r[21],
    )  # fmt: skip


async def list_cdrs(
    db: BillingDB,
    *,
    account_id: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    after_id: int = 0,
    limit: int = 100,
) -> list[CdrRow]:
    """CDRs started in [start, end) (of one account), oldest first (start time, then
    id), after CDR ``after_id`` in that order. The cursor is the row's place in the
    order, not its id: ids follow storage, and a CDR stored late (a mediated file, a
    late Stop) has a lower start than CDRs stored before it, so "id > after" skipped
    it for good. An ``after_id`` that names no CDR raises NoSuchCursor."""
    params = {"account": account_id, "start": start, "end": end, "after": after_id, "limit": limit}

    async def work(conn: Conn) -> list[CdrRow]:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM cdrs"
            " WHERE (%(account)s::text IS NULL OR account_id = %(account)s)"
            " AND (%(start)s::timestamptz IS NULL OR start_time >= %(start)s)"
            " AND (%(end)s::timestamptz IS NULL OR start_time < %(end)s)"
            " AND (%(after)s::bigint = 0 OR (start_time, id) >"
            " (SELECT a.start_time, a.id FROM cdrs a WHERE a.id = %(after)s))"
            " ORDER BY start_time, id LIMIT %(limit)s",
            params,
        )
        rows = [_row(r) for r in await cur.fetchall()]
        if not rows and after_id:  # the end of the listing, or no such CDR?
            cur = await conn.execute("SELECT 1 FROM cdrs WHERE id = %s", (after_id,))
            if await cur.fetchone() is None:
                raise NoSuchCursor(f"no CDR with id {after_id}")
        return rows

    result: list[CdrRow] = await db.run(work)
    return result


async def find_cdr(db: BillingDB, call_id: str) -> list[CdrRow]:
    """Every CDR with this call id (one per source that recorded the call)."""

    async def work(conn: Conn) -> list[CdrRow]:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM cdrs WHERE call_id = %s ORDER BY source", (call_id,)
        )
        return [_row(r) for r in await cur.fetchall()]

    result: list[CdrRow] = await db.run(work)
    return result


async def call_detail(
    db: BillingDB,
    account_id: str,
    start: datetime,
    end: datetime,
    *,
    currency: str,
    limit: int | None = None,
) -> list[CdrRow]:
    """The calls an invoice's usage lines count (answered or charged), in time order:
    only those in the invoice's currency (others are the run's errors, never billed)."""

    async def work(conn: Conn) -> list[CdrRow]:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM cdrs WHERE account_id = %s AND start_time >= %s"
            " AND start_time < %s AND (answer_time IS NOT NULL OR charged_micros <> 0)"
            " AND charge <> 'recorded_only' AND currency = %s"
            " ORDER BY start_time, id LIMIT %s",
            (account_id, start, end, currency, limit),
        )
        return [_row(r) for r in await cur.fetchall()]

    result: list[CdrRow] = await db.run(work)
    return result


CSV_HEADER = (
    "start", "answer", "end", "caller", "callee", "destination", "duration_s", "billed_s",
    "charged", "currency", "status", "call_id", "source",
)  # fmt: skip


def calls_csv(rows: Sequence[CdrRow], decimals: int = 6) -> str:
    """Call detail as CSV (amounts as exact decimal strings)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for r in rows:
        writer.writerow(
            (
                r.start_time.isoformat(), r.answer_time.isoformat() if r.answer_time else "",
                r.end_time.isoformat(), r.caller, r.callee, r.destination, r.duration_s,
                r.billed_s, money(r.charged_micros, decimals), r.currency, r.status, r.call_id,
                r.source,
            )
        )  # fmt: skip
    return out.getvalue()


# The calls an issuing run counts, staged in its transaction (dropped at commit): the
# usage it bills is summed from here (usage.usage_of_stage) and the calls of each
# document it writes are copied from here (keep_calls), so a document's call detail
# is exactly what its usage lines count, whatever CDRs are stored meanwhile.
_STAGE_COLUMNS = (
    "id, revision, source, call_id, account_id, caller, callee, destination, start_time,"
    " answer_time, end_time, duration_s, billed_s, charged_micros, currency, status, charge"
)
_CREATE_STAGE = """
CREATE TEMP TABLE IF NOT EXISTS invoice_call_stage (
    id BIGINT, revision INTEGER, source TEXT, call_id TEXT, account_id TEXT, caller TEXT,
    callee TEXT, destination TEXT, start_time TIMESTAMPTZ, answer_time TIMESTAMPTZ,
    end_time TIMESTAMPTZ, duration_s INTEGER, billed_s INTEGER, charged_micros BIGINT,
    currency TEXT, status TEXT, charge TEXT
) ON COMMIT DROP
"""
# One statement: the snapshot it returns is the one the calls were read in.
_STAGE = f"""
WITH staged AS (
    INSERT INTO invoice_call_stage ({_STAGE_COLUMNS})
    SELECT {_STAGE_COLUMNS} FROM cdrs
    WHERE account_id = ANY(%(accounts)s) AND start_time >= %(start)s AND start_time < %(end)s
      AND charge <> 'recorded_only'
    RETURNING 1
)
SELECT pg_current_snapshot()::text, (SELECT count(*) FROM staged)
"""
_KEPT_COLUMNS = (
    "cdr_id, revision, source, call_id, caller, callee, destination, start_time, answer_time,"
    " end_time, duration_s, billed_s, charged_micros, status"
)


async def stage_calls(
    conn: Conn, account_ids: Sequence[str], start: datetime, end: datetime
) -> str:
    """Stage the CDRs of these accounts started in [start, end) for this transaction;
    the snapshot (pg_snapshot as text) they were read in."""
    await conn.execute(_CREATE_STAGE)
    await conn.execute("TRUNCATE invoice_call_stage")
    params = {"accounts": list(account_ids), "start": start, "end": end}
    cur = await conn.execute(_STAGE, params)
    row = await cur.fetchone()
    assert row is not None
    return str(row[0])


async def keep_calls(conn: Conn, documents: Sequence[tuple[int, str, str]]) -> None:
    """Copy the staged calls each document counts into invoice_calls: (document id,
    account, currency). The calls listed are those call_detail lists (answered or
    charged, in the document's currency)."""
    if not documents:
        return
    ids, accounts, currencies = (list(col) for col in zip(*documents, strict=True))
    await conn.execute(
        f"INSERT INTO invoice_calls (invoice_id, {_KEPT_COLUMNS})"
        " SELECT d.invoice_id, s.id, s.revision, s.source, s.call_id, s.caller, s.callee,"
        " s.destination, s.start_time, s.answer_time, s.end_time, s.duration_s, s.billed_s,"
        " s.charged_micros, s.status"
        " FROM invoice_call_stage s JOIN unnest(%s::bigint[], %s::text[], %s::text[])"
        " AS d(invoice_id, account_id, currency)"
        " ON s.account_id = d.account_id AND s.currency = d.currency"
        " WHERE s.answer_time IS NOT NULL OR s.charged_micros <> 0",
        (ids, accounts, currencies),
    )


@dataclass(frozen=True)
class DocumentCalls:
    """A document's call detail, and a note when it is not what the document billed."""

    rows: list[CdrRow]
    note: str | None = None


async def document_calls(db: BillingDB, inv: Any, *, decimals: int = 6) -> DocumentCalls:
    """The calls ``inv`` (an Invoice) billed, as it counted them: the copy its run kept.
    A document issued before migration 014 has none: its period's calls as the CDRs are
    now, with a note when they no longer add up to what it counted (a late call or a
    rerate since, billed as a usage correction on a later invoice)."""

    async def work(conn: Conn) -> tuple[bool, list[Any], tuple[Any, ...] | None]:
        cur = await conn.execute("SELECT calls_kept FROM invoices WHERE id = %s", (inv.id,))
        found = await cur.fetchone()
        kept = bool(found and found[0])
        if kept:
            cur = await conn.execute(
                f"SELECT {_KEPT_COLUMNS} FROM invoice_calls WHERE invoice_id = %s"
                " ORDER BY start_time, cdr_id",
                (inv.id,),
            )
            return True, list(await cur.fetchall()), None
        cur = await conn.execute(
            "SELECT calls, charged_micros FROM invoice_usage WHERE invoice_id = %s AND period = %s",
            (inv.id, inv.period),
        )
        return False, [], await cur.fetchone()

    kept, rows, counted = await db.run(work)
    if kept:
        return DocumentCalls(
            [
                CdrRow(
                    id=int(r[0]),
                    source=r[2],
                    call_id=r[3],
                    account_id=inv.account_id,
                    caller=r[4],
                    callee=r[5],
                    destination=r[6],
                    start_time=r[7],
                    answer_time=r[8],
                    end_time=r[9],
                    duration_s=int(r[10]),
                    billed_s=int(r[11]),
                    cost_micros=0,
                    charged_micros=int(r[12]),
                    currency=inv.currency,
                    tariff="",
                    gateway="",
                    disconnect_cause=0,
                    status=r[13],
                    extra={},
                )
                for r in rows
            ]
        )
    now = await call_detail(
        db, inv.account_id, inv.period_start, inv.period_end, currency=inv.currency
    )
    if counted is None:  # a credit note: no usage of its own
        return DocumentCalls(now)
    calls = sum(1 for r in now if r.answer_time is not None)
    charged = sum(r.charged_micros for r in now)
    if (calls, charged) == (int(counted[0]), int(counted[1])):
        return DocumentCalls(now)
    cur = inv.currency
    note = (
        f"{inv.number} was issued before documents kept their calls (migration 014): these"
        f" are the period's calls as the CDRs are now, {calls} calls,"
        f" {money(charged, decimals)} {cur}; it billed {int(counted[0])} calls,"
        f" {money(int(counted[1]), decimals)} {cur}. The difference is billed as a usage"
        " correction on a later invoice."
    )
    return DocumentCalls(now, note)
