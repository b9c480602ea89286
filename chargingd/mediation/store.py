"""Where mediated CDRs go: the billing database, or memory (tests, ``--dry-run``).

Besides storing (idempotent on (source, call_id)), a store answers which calls are
stored already and what a stored call charged: a call stored once is never debited
again, and a ``record_only`` source's call is matched to its live CDR.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from chargingd.billing.cdr import CDR
from chargingd.billing.db import BillingDB
from chargingd.billing.lookup import StoredCharge, charges


class CdrStore(Protocol):
    async def store_cdrs(self, cdrs: Sequence[CDR]) -> int:
        """Store the CDRs not stored yet; how many were new."""
        ...

    async def charges(self, source: str, call_ids: Sequence[str]) -> dict[str, StoredCharge]:
        """The stored CDRs of ``source`` among ``call_ids``, by call id."""
        ...


class DbStore:
    """The billing database (PostgreSQL)."""

    def __init__(self, db: BillingDB) -> None:
        self.db = db

    async def store_cdrs(self, cdrs: Sequence[CDR]) -> int:
        return await self.db.store_cdrs(cdrs)

    async def charges(self, source: str, call_ids: Sequence[str]) -> dict[str, StoredCharge]:
        return await charges(self.db, source, call_ids)


class MemoryStore:
    """An in-memory CDR store, idempotent on (source, call_id) like the billing DB."""

    def __init__(self) -> None:
        self.cdrs: dict[tuple[str, str], CDR] = {}

    async def store_cdrs(self, cdrs: Sequence[CDR]) -> int:
        new = 0
        for cdr in cdrs:
            key = (cdr.source, cdr.call_id)
            if key not in self.cdrs:
                self.cdrs[key] = cdr
                new += 1
        return new

    async def charges(self, source: str, call_ids: Sequence[str]) -> dict[str, StoredCharge]:
        found = (self.cdrs.get((source, call_id)) for call_id in call_ids)
        return {
            c.call_id: StoredCharge(
                c.call_id, c.account_id, c.cost_micros, c.charged_micros, c.charge
            )
            for c in found
            if c is not None
        }
