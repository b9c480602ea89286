"""Reading back stored CDRs by key: which calls of a source are stored, and what each
charged. Mediation uses it to charge a call once (a stored call is never debited
again) and to match the switch's record of a call to the CDR chargingd wrote live."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chargingd.billing.db import BillingDB, Conn


@dataclass(frozen=True)
class StoredCharge:
    """A stored CDR's money: who paid, what the ledger moved and how."""

    call_id: str
    account_id: str
    cost_micros: int
    charged_micros: int
    charge: str
    status: str = ""  # CdrStatus: an unanswered call's id may be taken by its answered one


async def charges(db: BillingDB, source: str, call_ids: Sequence[str]) -> dict[str, StoredCharge]:
    """The stored CDRs of ``source`` among ``call_ids``, by call id."""
    if not call_ids:
        return {}

    async def work(conn: Conn) -> dict[str, StoredCharge]:
        cur = await conn.execute(
            "SELECT call_id, account_id, cost_micros, charged_micros, charge, status FROM cdrs"
            " WHERE source = %s AND call_id = ANY(%s)",
            (source, list(call_ids)),
        )
        return {str(row[0]): StoredCharge(*row) for row in await cur.fetchall()}

    result: dict[str, StoredCharge] = await db.run(work)
    return result


async def naming(db: BillingDB, source: str, uuids: Sequence[str]) -> set[str]:
    """Which of ``uuids`` a stored CDR of ``source`` names as its B-leg (extra
    bleg_uuid: a FreeSWITCH A-leg; index cdrs_bleg_uuid, migration 012)."""
    if not uuids:
        return set()

    async def work(conn: Conn) -> set[str]:
        # A lookup per uuid (LATERAL ... LIMIT 1), not "= ANY": the planner cannot know
        # how few rows a thousand uuids match, and chose a scan of the whole table.
        cur = await conn.execute(
            "SELECT u FROM unnest(%s::text[]) AS u, LATERAL (SELECT 1 FROM cdrs"
            " WHERE extra ? 'bleg_uuid' AND extra ->> 'bleg_uuid' = u AND source = %s"
            " LIMIT 1) AS hit",
            (list(uuids), source),
        )
        return {str(row[0]) for row in await cur.fetchall()}

    result: set[str] = await db.run(work)
    return result


_KNOWN_ACCOUNT = """
SELECT EXISTS (SELECT 1 FROM cdrs WHERE account_id = %(a)s)
    OR EXISTS (SELECT 1 FROM ledger_journal WHERE account_id = %(a)s)
    OR EXISTS (SELECT 1 FROM billing_profiles WHERE account_id = %(a)s)
"""


async def account_known(db: BillingDB, account_id: str) -> bool:
    """The billing database has a trace of the account: a CDR, a ledger journal entry
    (the exporter copies its "open"), or a billing profile. False does not prove the
    account missing: one created since the last journal copy, with no call yet, lives
    in the ledger (Redis) only, which the caller asks then."""

    async def work(conn: Conn) -> bool:
        cur = await conn.execute(_KNOWN_ACCOUNT, {"a": account_id})
        row = await cur.fetchone()
        return bool(row and row[0])

    found: bool = await db.run(work)
    return found
