"""Account administration over the ledger's scripts: create, update, identities,
status, lookups and read-only views (holds by currency, the audit trail)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from chargingd.ledger import codec as C
from chargingd.ledger import keys as K
from chargingd.ledger.base import LedgerBase
from chargingd.ledger.types import (
    Account,
    AccountExists,
    AuditEntry,
    InvalidRequest,
    Mode,
    Status,
    UnknownAccount,
)

SAMPLE_CHUNK = 64  # accounts read per pipeline by reserved_by_currency


class AccountLedger(LedgerBase):
    """Accounts: settings, identities, status; no money moves here except through
    the status script (which never changes a balance)."""

    async def create_account(
        self,
        account_id: str,
        *,
        mode: Mode,
        currency: str,
        balance_micros: int = 0,
        credit_limit_micros: int = 0,
        tariff: str = "",
        max_calls: int = 0,
        identities: tuple[str, ...] = (),
        who: str,
        why: str = "",
    ) -> Account:
        """Raise AccountExists if present; identities must be free (else InvalidRequest)."""
        K.check_account_id(account_id)
        mode = C.check_mode(mode)
        K.check_currency(currency)
        K.check_amount(balance_micros, "balance")
        K.check_amount(credit_limit_micros, "credit limit", lo=0)
        if mode is Mode.PREPAID and credit_limit_micros:
            raise C.prepaid_credit_limit(credit_limit_micros, currency)
        K.check_text(tariff, "tariff", max_len=128)
        K.check_int(max_calls, "max_calls", 0, C.MAX_CALLS_LIMIT)
        identities = K.check_identities(identities)
        K.check_text(who, "who", required=True)
        K.check_text(why, "why")
        claimed = await self._claim(account_id, identities)
        # Listed before it exists: a crash in between leaves an id that list skips.
        await self.redis.sadd(K.ACCOUNTS_KEY, account_id)
        args = [account_id, mode.value, currency, balance_micros, credit_limit_micros, tariff]
        args += [max_calls, "\n".join(identities), self.clock_ms(), who, why, self.audit_max]
        try:
            res = await self._run("create", [K.acct_key(account_id), K.audit_key(account_id)], args)
            if C.s(res[0]) == "exists":
                raise AccountExists(f"account {account_id!r} already exists")
        except Exception:
            await self._unclaim(account_id, claimed)
            raise
        return await self.get_account(account_id)

    async def update_account(
        self,
        account_id: str,
        *,
        who: str,
        why: str = "",
        credit_limit_micros: int | None = None,
        tariff: str | None = None,
        max_calls: int | None = None,
        currency: str | None = None,
        identities: tuple[str, ...] | None = None,
        mode: Mode | None = None,
    ) -> Account:
        """Change settings; identities move in the global index (all free, else InvalidRequest).

        Currency can change only while balance and holds are zero. A change of mode or
        credit limit must not leave a prepaid account with a credit limit (InvalidRequest).
        """
        K.check_account_id(account_id)
        K.check_text(who, "who", required=True)
        K.check_text(why, "why")
        pairs = C.update_pairs(credit_limit_micros, tariff, max_calls, currency, mode)
        if identities is not None:
            identities = K.check_identities(identities)
            pairs += ["identities", "\n".join(identities)]
        if not pairs:
            raise InvalidRequest("nothing to update")
        current = await self.get_account(account_id)
        claimed: list[str] = []
        if identities is not None:
            added = [i for i in identities if i not in current.identities]
            claimed = await self._claim(account_id, tuple(added))
        expected = "\n".join(current.identities) if identities is not None else ""
        args = [self.clock_ms(), who, why, self.audit_max, expected, *pairs]
        try:
            res = await self._run("update", [K.acct_key(account_id), K.audit_key(account_id)], args)
            C.check_update_status(res, account_id, currency or current.currency)
        except Exception:
            await self._unclaim(account_id, claimed)
            raise
        if identities is not None:
            await self._unclaim(account_id, [i for i in current.identities if i not in identities])
        return await self.get_account(account_id)

    async def _claim(self, account_id: str, identities: tuple[str, ...]) -> list[str]:
        """Point identities at the account, all or none; returns those newly claimed."""
        if not identities:
            return []
        res = await self._run("identities_claim", [K.IDENTITIES_KEY], [account_id, *identities])
        if C.s(res[0]) == "taken":
            raise InvalidRequest(f"identity {C.s(res[1])} belongs to account {C.s(res[2])}")
        return [C.s(i) for i in res[1:]]

    async def _unclaim(self, account_id: str, identities: Sequence[str]) -> None:
        if identities:
            await self._run("identities_drop", [K.IDENTITIES_KEY], [account_id, *identities])

    async def get_account(self, account_id: str) -> Account:
        """Raise UnknownAccount."""
        K.check_account_id(account_id)
        res = await self._run("get", [K.acct_key(account_id), K.leases_key(account_id)], [])
        if not res:
            raise UnknownAccount(f"no account {account_id!r}")
        return C.decode_account(res[0], int(res[1]))

    async def find_account(self, identity: str) -> str | None:
        """Account id for an identity such as "user:alice" or "ani:+4930123456" (in this
        tick's pipeline when batching, so an authorize's lookups share one round trip)."""
        if self._batcher is not None:
            found = await self._batcher.submit(("HGET", K.IDENTITIES_KEY, identity))
        else:
            found = await self.redis.hget(K.IDENTITIES_KEY, identity)
        return None if found is None else C.s(found)

    async def refusal(self, account_id: str, session_id: str) -> str:
        """Why the session id was refused on this account ("": it was not, or no longer
        remembered: the refusal lives ``refusal_ttl_s``, as for a retransmission)."""
        K.check_account_id(account_id)
        found = await self.redis.hget(K.session_key(account_id, session_id), "refused")
        return "" if found is None else C.s(found)

    async def list_accounts(
        self, *, cursor: int = 0, count: int = 100
    ) -> tuple[int, list[Account]]:
        """One SSCAN page of the account index: (next cursor, 0 at the end; accounts by id)."""
        K.check_int(cursor, "cursor", 0, 1 << 62)
        K.check_int(count, "count", 1, 10_000)
        next_cursor, ids = await self.redis.sscan(K.ACCOUNTS_KEY, cursor=cursor, count=count)
        found = await asyncio.gather(*(self._get_or_none(C.s(i)) for i in ids))
        accounts = sorted((a for a in found if a is not None), key=lambda a: a.id)
        return int(next_cursor), accounts

    async def _get_or_none(self, account_id: str) -> Account | None:
        try:
            return await self.get_account(account_id)
        except (UnknownAccount, InvalidRequest):
            return None  # listed by a create that did not complete

    async def set_status(
        self,
        account_id: str,
        status: Status,
        *,
        who: str,
        why: str = "",
        reason: str = "operator",
        only_from: tuple[str, ...] = (),
    ) -> Account:
        """Suspend/resume/block/close; a non-active status records ``reason``.

        ``only_from`` ("suspended/dunning", "active/") limits the change to accounts
        whose current status/reason is listed (else nothing changes): a rule such as
        dunning never overrides an operator. Returns the account as it is now.
        """
        step = self.steps.status(
            account_id,
            status,
            now_ms=self.clock_ms(),
            who=who,
            why=why,
            reason=reason,
            only_from=only_from,
        )
        res = await self._run("status", step.keys, step.argv)
        if C.s(res[0]) == "unknown":
            raise UnknownAccount(f"no account {account_id!r}")
        return await self.get_account(account_id)

    async def reserved_by_currency(self, *, limit: int = 100_000) -> dict[str, int]:
        """Micro-units held for live calls, summed by currency (read-only, for monitoring).

        Reads the accounts of the hold index (those that may hold money), at most
        ``limit``, in one pipeline; an account without holds adds 0.
        """
        ids: Any = await self.redis.zrange(K.HOLD_INDEX_KEY, 0, limit - 1)
        out: dict[str, int] = {}
        # Pipelines of SAMPLE_CHUNK: one of thousands held the loop (and the requests in
        # flight) while it was packed and parsed (docs/performance.md, round 6c).
        for start in range(0, len(ids), SAMPLE_CHUNK):
            pipe = self.redis.pipeline(transaction=False)
            for raw_id in ids[start : start + SAMPLE_CHUNK]:
                pipe.hmget(K.acct_key(C.s(raw_id)), ["currency", "reserved"])
            for currency, reserved in await pipe.execute():
                if currency is not None and reserved is not None:
                    key = C.s(currency)
                    out[key] = out.get(key, 0) + int(reserved)
        return out

    async def audit(
        self, account_id: str, *, count: int = 100, before_id: str = "+"
    ) -> list[AuditEntry]:
        """Newest first; ``before_id`` (exclusive) pages back from an entry id."""
        K.check_account_id(account_id)
        K.check_int(count, "count", 1, 100_000)
        top = "+" if K.check_audit_id(before_id) == "+" else f"({before_id}"
        rows: Any = await self.redis.xrevrange(K.audit_key(account_id), top, "-", count=count)
        return [C.decode_audit(entry_id, fields) for entry_id, fields in rows]
