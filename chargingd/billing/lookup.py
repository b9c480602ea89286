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


async def charges(db: BillingDB, source: str, call_ids: Sequence[str]) -> dict[str, StoredCharge]:
    """The stored CDRs of ``source`` among ``call_ids``, by call id."""
    if not call_ids:
        return {}

    async def work(conn: Conn) -> dict[str, StoredCharge]:
        cur = await conn.execute(
            "SELECT call_id, account_id, cost_micros, charged_micros, charge FROM cdrs"
            " WHERE source = %s AND call_id = ANY(%s)",
            (source, list(call_ids)),
        )
        return {str(row[0]): StoredCharge(*row) for row in await cur.fetchall()}

    result: dict[str, StoredCharge] = await db.run(work)
    return result
