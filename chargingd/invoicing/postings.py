"""Ledger postings: what invoicing owes the ledger of a postpaid account.

An invoice's charges, credits and tax (beyond the calls the ledger already debited),
a credit note and a payment each move the account's balance, so that the ledger
tells the same story as the documents (DESIGN invariant 7): after an invoice is paid
in full, the balance is minus the usage not yet invoiced. Each posting is recorded
in the document's transaction and applied afterwards with its own transaction id,
so the ledger applies it once however often it is retried (every run, payment and
dunning pass retries what is still pending).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from chargingd.billing.db import BillingDB, Conn
from chargingd.ledger import Ledger, LedgerError

log = logging.getLogger("chargingd.invoicing")

_CONCURRENT = 200  # postings in flight at once (the ledger pipelines them)


@dataclass(frozen=True)
class Posting:
    txn_id: str
    account_id: str
    currency: str
    amount_micros: int
    why: str


async def record(conn: Conn, posting: Posting) -> None:
    """Record a posting in the caller's transaction (idempotent on txn_id)."""
    await conn.execute(
        "INSERT INTO ledger_postings (txn_id, account_id, currency, amount_micros, why)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (txn_id) DO NOTHING",
        (posting.txn_id, posting.account_id, posting.currency, posting.amount_micros, posting.why),
    )


async def pending(
    db: BillingDB, account_ids: Sequence[str] | None = None, *, limit: int = 100_000
) -> list[Posting]:
    async def work(conn: Conn) -> list[Posting]:
        cur = await conn.execute(
            "SELECT txn_id, account_id, currency, amount_micros, why FROM ledger_postings"
            " WHERE posted_at IS NULL AND (%s::text[] IS NULL OR account_id = ANY(%s))"
            " ORDER BY created_at, txn_id LIMIT %s",
            (account_ids, account_ids, limit),
        )
        return [Posting(*row) for row in await cur.fetchall()]

    result: list[Posting] = await db.run(work)
    return result


async def _apply(ledger: Ledger, p: Posting, who: str) -> str | None:
    """Post one; its txn_id when the ledger has it, None when it failed (retried later)."""
    try:
        await ledger.adjust(
            p.account_id,
            p.amount_micros,
            txn_id=p.txn_id,
            who=who,
            why=p.why,
            currency=p.currency,
            allow_debt=True,  # billed charges: a debt like a call's, never refused
        )
    except LedgerError as exc:
        log.error("ledger posting %s for %s failed: %s", p.txn_id, p.account_id, exc)
        return None
    return p.txn_id


async def post_pending(
    db: BillingDB, ledger: Ledger, *, who: str, account_ids: Sequence[str] | None = None
) -> int:
    """Apply every pending posting (of these accounts); returns how many were applied."""
    todo = await pending(db, account_ids)
    done = 0
    for i in range(0, len(todo), _CONCURRENT):
        chunk = todo[i : i + _CONCURRENT]
        posted = [t for t in await asyncio.gather(*(_apply(ledger, p, who) for p in chunk)) if t]

        async def mark(conn: Conn, txn_ids: list[str] = posted) -> None:
            await conn.execute(
                "UPDATE ledger_postings SET posted_at = now() WHERE txn_id = ANY(%s)", (txn_ids,)
            )

        if posted:
            await db.run(mark)
        done += len(posted)
    return done
