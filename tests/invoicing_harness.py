"""Helpers of the invoicing tests: CDRs bulk-loaded with COPY, accounts, a Books."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from chargingd.billing.db import BillingDB
from chargingd.core.config import config_from_dict
from chargingd.invoicing.context import Books
from chargingd.ledger import Ledger, Mode

CDR_COLUMNS = (
    "source, call_id, account_id, caller, callee, destination, start_time, answer_time,"
    " end_time, duration_s, billed_s, cost_micros, currency, tariff, gateway, disconnect_cause,"
    " status, charged_micros, charge"
)
# A moment well after every period the tests bill (periods must be over).
NOW = datetime(2027, 3, 10, 12, 0, tzinfo=UTC)


def cdr(
    n: int,
    account_id: str,
    start: datetime,
    *,
    billed_s: int = 60,
    charged_micros: int = 100_000,
    destination: str = "DE_FIX",
    answered: bool = True,
    currency: str = "EUR",
    source: str = "radius",
    charge: str = "live",
) -> tuple[Any, ...]:
    """One CDR row in CDR_COLUMNS order."""
    answer = start + timedelta(seconds=2) if answered else None
    end = (answer or start) + timedelta(seconds=billed_s)
    return (
        source, f"call-{account_id}-{n}", account_id, "+4930123456", "+4930999999", destination,
        start, answer, end, billed_s, billed_s, charged_micros, currency, "plan", "gw1", 16,
        "normal" if answered else "unanswered", charged_micros, charge,
    )  # fmt: skip


async def load_cdrs(url: str, rows: Iterable[tuple[Any, ...]]) -> int:
    """COPY rows into cdrs; how many."""
    count = 0
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = conn.cursor()
        async with cur.copy(f"COPY cdrs ({CDR_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                await copy.write_row(row)
                count += 1
        await conn.commit()
    return count


async def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(sql.encode(), params)
        return list(await cur.fetchall()) if cur.description else []


def invoicing_config(**overrides: Any) -> Any:
    raw: dict[str, Any] = {"settle_delay_s": 0, **overrides}
    return config_from_dict({"invoicing": raw}).invoicing


async def make_books(url: str, ledger: Ledger | None, *, now: datetime = NOW, **cfg: Any) -> Books:
    db = await BillingDB.open(url)
    return Books(invoicing_config(**cfg), db, ledger, clock=lambda: now, who="test")


async def postpaid(
    ledger: Ledger, account_id: str, *, limit: str = "1000", currency: str = "EUR", **more: Any
) -> None:
    await ledger.create_account(
        account_id,
        mode=Mode.POSTPAID,
        currency=currency,
        credit_limit_micros=int(limit) * 1_000_000,
        who="test",
        **more,
    )


def at(day: int, hour: int = 10, month: int = 11, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)
