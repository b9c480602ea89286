"""The ledger's journal: every money movement, for the billing database and assurance.

Each script that moves money appends one entry to the account's journal stream
``{a:ID}:journal`` inside the same script (lua/common.lua ``journal``), so a movement
and its entry exist together or not at all. Unlike the audit trail it is never
trimmed by the scripts: the exporter copies entries to PostgreSQL (ledger_journal)
and only then trims what it copied, keeping the newest entry so the chain below
always has a link in Redis.

Entry fields: k kind (open, debit, correct, usage, rerate, topup, adjust), a the
balance's change (signed micros), b the balance after, n top-ups - debits after, r
the reference (session id, call id or transaction id), s the CDR source (usage,
rerate), w who, y why, t the caller's clock (ms). Because every entry carries the
balance and the net of lifetime totals after it, a change made outside the scripts
shows as a break between two entries (docs/assurance.md).

This module reads (the exporter, `chargingd assure`); it writes only the trim.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from chargingd.ledger import keys as K
from chargingd.ledger.codec import s

KINDS = ("open", "debit", "correct", "usage", "rerate", "topup", "adjust")
SESSION_KINDS = ("debit", "correct")  # ref is a live session id
CALL_KINDS = ("usage", "rerate")  # ref is a CDR call id, with its source


@dataclass(frozen=True)
class JournalEntry:
    account_id: str
    entry_id: str  # "ms-seq" of the stream
    at_ms: int
    kind: str
    amount_micros: int  # the balance's change: < 0 debited, > 0 credited
    balance_micros: int  # after it
    net_micros: int  # top-ups - debits after it
    ref: str = ""
    source: str = ""
    who: str = ""
    why: str = ""

    @property
    def entry_key(self) -> tuple[int, int]:
        ms, _, seq = self.entry_id.partition("-")
        return int(ms), int(seq or 0)


@dataclass(frozen=True)
class AccountSnapshot:
    """An account's balance and totals with its newest journal entry, read together."""

    account_id: str
    currency: str
    balance_micros: int
    initial_micros: int
    topups_micros: int
    debits_micros: int
    last: JournalEntry | None

    @property
    def net_micros(self) -> int:
        return self.topups_micros - self.debits_micros


@dataclass(frozen=True)
class ExpiredHold:
    account_id: str
    session_id: str
    held_micros: int
    lease_expiry_ms: int


def decode_entry(account_id: str, entry_id: Any, raw: Any) -> JournalEntry:
    """One stream entry; ``raw`` is a dict or a flat field/value list (from Lua)."""
    if isinstance(raw, dict):
        f = {s(k): s(v) for k, v in raw.items()}
    else:
        f = {s(raw[i]): s(raw[i + 1]) for i in range(0, len(raw), 2)}
    return JournalEntry(
        account_id=account_id,
        entry_id=s(entry_id),
        at_ms=int(f.get("t", "0")),
        kind=f.get("k", ""),
        amount_micros=int(f.get("a", "0")),
        balance_micros=int(f.get("b", "0")),
        net_micros=int(f.get("n", "0")),
        ref=f.get("r", ""),
        source=f.get("s", ""),
        who=f.get("w", ""),
        why=f.get("y", ""),
    )


class LedgerInspector:
    """Read-only views of the ledger for the exporter and assurance (keys built here)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        source = (resources.files("chargingd.ledger") / "lua" / "journal_tail.lua").read_text()
        self._tail = redis.register_script(source)

    async def account_ids(self, *, batch: int = 1000) -> AsyncIterator[list[str]]:
        """Every account id, a page at a time (SSCAN of the account index)."""
        cursor = 0
        while True:
            cursor, ids = await self.redis.sscan(K.ACCOUNTS_KEY, cursor=cursor, count=batch)
            if ids:
                yield sorted(s(i) for i in ids)
            if int(cursor) == 0:
                return

    async def read_journal(
        self, account_ids: Sequence[str], after: dict[str, str], *, count: int = 1000
    ) -> dict[str, list[JournalEntry]]:
        """Up to ``count`` entries per account after the id in ``after`` (from the
        start when absent), oldest first; accounts without new entries are left out."""
        pipe = self.redis.pipeline(transaction=False)
        for account_id in account_ids:
            start = after.get(account_id)
            pipe.xrange(K.journal_key(account_id), f"({start}" if start else "-", "+", count)
        replies = await pipe.execute()
        out: dict[str, list[JournalEntry]] = {}
        for account_id, rows in zip(account_ids, replies, strict=True):
            if rows:
                out[account_id] = [decode_entry(account_id, i, f) for i, f in rows]
        return out

    async def trim_journal(self, upto: dict[str, str]) -> int:
        """Drop each account's entries older than the given id (that entry is kept)."""
        if not upto:
            return 0
        pipe = self.redis.pipeline(transaction=False)
        for account_id, entry_id in upto.items():
            # Exact (not ~): a journal is small once copied, and kept entries are re-read.
            pipe.xtrim(K.journal_key(account_id), minid=entry_id, approximate=False)
        return sum(int(n) for n in await pipe.execute())

    async def snapshots(self, account_ids: Sequence[str]) -> list[AccountSnapshot]:
        """Each existing account's balance, totals and newest journal entry (one script
        per account, so the three are read at the same moment)."""
        out = []
        for account_id in account_ids:
            reply = await self._tail(keys=[K.acct_key(account_id), K.journal_key(account_id)])
            if not reply:
                continue
            (balance, initial, topups, debits, currency), last = reply
            out.append(
                AccountSnapshot(
                    account_id=account_id,
                    currency=s(currency or b""),
                    balance_micros=int(balance or 0),
                    initial_micros=int(initial or 0),
                    topups_micros=int(topups or 0),
                    debits_micros=int(debits or 0),
                    last=decode_entry(account_id, last[0], last[1]) if last else None,
                )
            )
        return out

    async def expired_holds(self, account_ids: Sequence[str], before_ms: int) -> list[ExpiredHold]:
        """Holds whose lease expired before ``before_ms`` and are still there."""
        pipe = self.redis.pipeline(transaction=False)
        for account_id in account_ids:
            pipe.zrangebyscore(K.leases_key(account_id), "-inf", f"({before_ms}", withscores=True)
        leased = await pipe.execute()
        found = [(a, rows) for a, rows in zip(account_ids, leased, strict=True) if rows]
        if not found:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for account_id, rows in found:
            pipe.hmget(K.holds_key(account_id), [r[0] for r in rows])
        amounts = await pipe.execute()
        out = []
        for (account_id, rows), held in zip(found, amounts, strict=True):
            for (sid, expiry), amount in zip(rows, held, strict=True):
                out.append(ExpiredHold(account_id, s(sid), int(amount or 0), int(expiry)))
        return out
