"""The ledger's journal -> PostgreSQL (table ledger_journal), for assurance and reports.

Each account's journal stream (chargingd/ledger/journal.py) is read past the last
entry this process copied, written in one transaction per page of accounts (COPY
into a staging table, INSERT ... ON CONFLICT DO NOTHING on the stream entry id, so a
re-read after a crash stores nothing twice) and only then trimmed in Redis, keeping
the newest entry. The CDR exporter runs a pass every [export] journal_interval_s.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from chargingd.billing.db import BillingDB, Conn
from chargingd.ledger.journal import JournalEntry, LedgerInspector

log = logging.getLogger("chargingd.exporter")

_COLUMNS = (
    "account_id, entry_ms, entry_seq, at, kind, amount_micros, balance_micros, net_micros,"
    " ref, source, who, why"
)
_STAGE = "CREATE TEMP TABLE journal_stage (LIKE ledger_journal) ON COMMIT DROP"
_INSERT = f"""
INSERT INTO ledger_journal ({_COLUMNS})
SELECT {_COLUMNS} FROM journal_stage ORDER BY account_id, entry_ms, entry_seq
ON CONFLICT DO NOTHING
"""
MAX_PASSES = 1000  # drain(): a journal written faster than it is read still ends


def _row(e: JournalEntry) -> tuple[Any, ...]:
    ms, seq = e.entry_key
    at = datetime.fromtimestamp(e.at_ms / 1000, UTC)
    return (e.account_id, ms, seq, at, e.kind, e.amount_micros, e.balance_micros, e.net_micros,
            e.ref, e.source, e.who, e.why)  # fmt: skip


async def store_entries(db: BillingDB, entries: Sequence[JournalEntry]) -> int:
    """Write journal entries (idempotent on the stream entry); how many were new."""
    if not entries:
        return 0

    async def work(conn: Conn) -> int:
        await conn.execute(_STAGE)
        async with conn.cursor() as cur:
            async with cur.copy(f"COPY journal_stage ({_COLUMNS}) FROM STDIN") as copy:
                for e in entries:
                    await copy.write_row(_row(e))
            await cur.execute(_INSERT)
            return cur.rowcount

    inserted: int = await db.run(work)
    return inserted


class JournalExport:
    """Copies every account's journal to the database; one instance per exporter."""

    def __init__(self, redis: Any, *, page: int = 1000, count: int = 1000) -> None:
        self.inspector = LedgerInspector(redis)
        self.page = page
        self.count = count
        self._last: dict[str, str] = {}  # account -> last entry copied by this process
        self.copied = 0

    async def step(self, db: BillingDB) -> int:
        """One pass over every account; returns how many entries were new."""
        new = 0
        async for ids in self.inspector.account_ids(batch=self.page):
            todo = ids
            while todo:
                found = await self.inspector.read_journal(todo, self._last, count=self.count)
                if not found:
                    break
                entries = [e for rows in found.values() for e in rows]
                new += await store_entries(db, entries)
                upto = {acct: rows[-1].entry_id for acct, rows in found.items()}
                await self.inspector.trim_journal(upto)
                self._last.update(upto)
                todo = [acct for acct, rows in found.items() if len(rows) >= self.count]
        self.copied += new
        return new

    async def drain(self, db: BillingDB) -> int:
        """Passes until one finds nothing new (``chargingd assure`` runs this first)."""
        total = 0
        for _ in range(MAX_PASSES):
            new = await self.step(db)
            total += new
            if new == 0:
                break
        return total
