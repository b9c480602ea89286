"""Where mediated CDRs go: the billing database, or memory (tests, ``--dry-run``).

Besides storing (idempotent on (source, call_id)), a store answers which calls are
stored already and what a stored call charged: a call stored once is never debited
again, and a ``record_only`` source's call is matched to its live CDR. It also keeps
the pending halves of calls a rotated file split (mediation.pairing).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from chargingd.billing.cdr import CDR
from chargingd.billing.db import BillingDB
from chargingd.billing.lookup import LegCall, StoredCharge, charges, leg_call, naming
from chargingd.mediation import pendingdb
from chargingd.mediation.pendingdb import PendingHalf


class CdrStore(Protocol):
    def exclusive(
        self, source: str, waiting: Callable[[str], None] | None = None
    ) -> AbstractAsyncContextManager[None]:
        """Run one import of ``source`` at a time: held while the body runs; another
        import holding it is waited for (``waiting`` is told so first)."""
        ...

    async def store_cdrs(self, cdrs: Sequence[CDR]) -> int:
        """Store the CDRs not stored yet; how many were new."""
        ...

    async def charges(self, source: str, call_ids: Sequence[str]) -> dict[str, StoredCharge]:
        """The stored CDRs of ``source`` among ``call_ids``, by call id."""
        ...

    async def named(self, source: str, uuids: Sequence[str]) -> set[str]:
        """Which of ``uuids`` a stored CDR of ``source`` names as its B-leg (bleg_uuid)."""
        ...

    async def leg_call(self, source: str, leg: str, before_ms: int) -> LegCall | None:
        """The stored call of ``source`` that had the CUCM call leg ``leg`` (as its
        called leg first), not a conference bridge leg's own CDR, the latest to start
        by ``before_ms``; None: none."""
        ...

    async def pend(
        self, source: str, halves: Sequence[PendingHalf]
    ) -> dict[str, list[PendingHalf]]:
        """Keep the halves (a (key, kind) kept already keeps its first); every half
        kept of their keys afterwards, by key."""
        ...

    async def unpend(self, source: str, halves: Sequence[tuple[str, str]]) -> None:
        """Forget the kept halves (key, kind); kind "": every half of the key."""
        ...

    async def expired(self, source: str, max_age_s: int) -> list[PendingHalf]:
        """The halves kept longer than ``max_age_s``, oldest first."""
        ...

    async def kept(self, source: str, keys: Sequence[str] | None = None) -> list[PendingHalf]:
        """Every half kept for ``source`` (of ``keys`` only, when given), oldest first."""
        ...


class DbStore:
    """The billing database (PostgreSQL)."""

    def __init__(self, db: BillingDB) -> None:
        self.db = db

    def exclusive(
        self, source: str, waiting: Callable[[str], None] | None = None
    ) -> AbstractAsyncContextManager[None]:
        return pendingdb.import_lock(self.db, source, waiting)

    async def store_cdrs(self, cdrs: Sequence[CDR]) -> int:
        return await self.db.store_cdrs(cdrs)

    async def charges(self, source: str, call_ids: Sequence[str]) -> dict[str, StoredCharge]:
        return await charges(self.db, source, call_ids)

    async def named(self, source: str, uuids: Sequence[str]) -> set[str]:
        return await naming(self.db, source, uuids)

    async def leg_call(self, source: str, leg: str, before_ms: int) -> LegCall | None:
        return await leg_call(self.db, source, leg, before_ms)

    async def pend(
        self, source: str, halves: Sequence[PendingHalf]
    ) -> dict[str, list[PendingHalf]]:
        return await pendingdb.pend(self.db, source, halves)

    async def unpend(self, source: str, halves: Sequence[tuple[str, str]]) -> None:
        await pendingdb.unpend(self.db, source, halves)

    async def expired(self, source: str, max_age_s: int) -> list[PendingHalf]:
        return await pendingdb.expired(self.db, source, max_age_s)

    async def kept(self, source: str, keys: Sequence[str] | None = None) -> list[PendingHalf]:
        return await pendingdb.kept(self.db, source, keys)


class MemoryStore:
    """An in-memory CDR store, idempotent on (source, call_id) like the billing DB."""

    def __init__(self) -> None:
        self.cdrs: dict[tuple[str, str], CDR] = {}
        # (source, key) -> kind -> the half kept
        self.halves: dict[tuple[str, str], dict[str, PendingHalf]] = {}
        self._imports: dict[str, asyncio.Lock] = {}  # a lock per source (exclusive)

    @contextlib.asynccontextmanager
    async def exclusive(
        self, source: str, waiting: Callable[[str], None] | None = None
    ) -> AsyncIterator[None]:
        lock = self._imports.setdefault(source, asyncio.Lock())
        if lock.locked() and waiting is not None:
            waiting(f"waiting for another import of source {source} to end")
        async with lock:
            yield

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
                c.call_id, c.account_id, c.cost_micros, c.charged_micros, c.charge, c.status
            )
            for c in found
            if c is not None
        }

    async def named(self, source: str, uuids: Sequence[str]) -> set[str]:
        wanted = set(uuids)
        return {
            c.extra["bleg_uuid"]
            for (src, _), c in self.cdrs.items()
            if src == source and c.extra.get("bleg_uuid") in wanted
        }

    async def leg_call(self, source: str, leg: str, before_ms: int) -> LegCall | None:
        for called, key in ((True, "dest_leg"), (False, "orig_leg")):
            found = sorted(
                (c for (src, _), c in self.cdrs.items() if src == source
                 and c.extra.get(key) == leg and "conference" not in c.extra
                 and c.start_ms <= before_ms),
                key=lambda c: c.start_ms,
            )  # fmt: skip
            if found:
                c = found[-1]
                extra = {
                    k: c.extra[k]
                    for k in ("caller_raw", "dialled", "access_code")
                    if c.extra.get(k)
                }
                return LegCall(c.call_id, called, c.caller, c.callee, extra)
        return None

    async def pend(
        self, source: str, halves: Sequence[PendingHalf]
    ) -> dict[str, list[PendingHalf]]:
        now_ms = int(time.time() * 1000)
        for half in halves:
            kinds = self.halves.setdefault((source, half.key), {})
            if half.kind not in kinds:
                kinds[half.kind] = dataclasses.replace(half, since_ms=now_ms)
        return {
            h.key: sorted(self.halves[(source, h.key)].values(), key=lambda k: k.order)
            for h in halves
        }

    async def unpend(self, source: str, halves: Sequence[tuple[str, str]]) -> None:
        for key, kind in halves:
            kinds = self.halves.get((source, key))
            if kinds is None:
                continue
            if kind:
                kinds.pop(kind, None)
            if not kind or not kinds:
                del self.halves[(source, key)]

    async def expired(self, source: str, max_age_s: int) -> list[PendingHalf]:
        cutoff = int(time.time() * 1000) - max_age_s * 1000
        return [h for h in await self.kept(source) if h.since_ms < cutoff]

    async def kept(self, source: str, keys: Sequence[str] | None = None) -> list[PendingHalf]:
        wanted = None if keys is None else set(keys)
        found = [
            h
            for (src, key), kinds in self.halves.items()
            if src == source and (wanted is None or key in wanted)
            for h in kinds.values()
        ]
        return sorted(found, key=lambda h: (h.since_ms, h.key, h.order))
