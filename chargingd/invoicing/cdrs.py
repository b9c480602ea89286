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
