"""The ledger: every Redis key of an account and every Lua script that changes money.

Nothing else in chargingd touches balance keys (DESIGN invariant 2). All keys of one
account carry the hash tag ``{a:ID}`` so every script is Redis-Cluster safe
(invariant 5); key names are built in chargingd.ledger.keys only. Amounts are
integer micro-units (invariant 1). Public types live in chargingd.ledger.types and
are re-exported here.
"""

from __future__ import annotations

import time
from typing import Any

from chargingd.core.currencies import money_text
from chargingd.ledger import codec as C
from chargingd.ledger import keys as K
from chargingd.ledger.accounts import AccountLedger
from chargingd.ledger.base import CLOCK_SYNC_S
from chargingd.ledger.types import (
    Account,
    AccountExists,
    AccountNotActive,
    AuditEntry,
    CommitResult,
    CurrencyMismatch,
    DuplicateTransaction,
    Grant,
    InsufficientCredit,
    InvalidRequest,
    LedgerError,
    Mode,
    RefusalReason,
    SessionClosed,
    Status,
    TooManyCalls,
    UnknownAccount,
)
from chargingd.ledger.usage import UsageCharge, UsageRequest, run_usage

__all__ = [
    "Account",
    "AccountExists",
    "AccountNotActive",
    "AuditEntry",
    "CommitResult",
    "CurrencyMismatch",
    "DuplicateTransaction",
    "Grant",
    "InsufficientCredit",
    "InvalidRequest",
    "Ledger",
    "LedgerError",
    "Mode",
    "RefusalReason",
    "SessionClosed",
    "Status",
    "TooManyCalls",
    "UnknownAccount",
    "UsageCharge",
    "UsageRequest",
]


class Ledger(AccountLedger):
    """Typed methods over the Lua scripts; callers never build keys.

    ``clock_ms`` is injected (tests move time); scripts receive now_ms as ARGV so
    Redis replication and tests stay deterministic.
    """

    # -- money --------------------------------------------------------------------
    async def topup(
        self,
        account_id: str,
        amount_micros: int,
        *,
        txn_id: str,
        who: str,
        why: str = "",
        currency: str | None = None,
    ) -> Account:
        """amount > 0; same txn_id twice applies once; reactivates a credit-suspended postpaid."""
        K.check_amount(amount_micros, "top-up amount", lo=1)
        return await self._money("topup", account_id, amount_micros, txn_id, who, why, currency)

    async def adjust(
        self,
        account_id: str,
        amount_micros: int,
        *,
        txn_id: str,
        who: str,
        why: str,
        currency: str | None = None,
        allow_debt: bool = False,
    ) -> Account:
        """Signed adjustment; idempotent on txn_id.

        A negative one larger than what is available (balance - holds - floor; floor 0
        prepaid, -credit_limit postpaid) raises InsufficientCredit unless ``allow_debt``
        (real usage, e.g. a rerate); nothing changes then.
        """
        K.check_amount(amount_micros, "adjustment amount")
        if amount_micros == 0:
            raise InvalidRequest("an adjustment must not be zero")
        K.check_text(why, "why", required=True)
        return await self._money(
            "adjust", account_id, amount_micros, txn_id, who, why, currency, allow_debt
        )

    async def _money(
        self,
        kind: str,
        account_id: str,
        amount_micros: int,
        txn_id: str,
        who: str,
        why: str,
        currency: str | None,
        allow_debt: bool = False,
    ) -> Account:
        K.check_account_id(account_id)
        K.check_token(txn_id, "transaction id", 128)
        K.check_text(who, "who", required=True)
        K.check_text(why, "why")
        if currency is not None:
            K.check_currency(currency)
        keys = [
            K.acct_key(account_id),
            K.txn_key(account_id, txn_id),
            K.audit_key(account_id),
            K.leases_key(account_id),
        ]
        args = [kind, amount_micros, currency or "", self.clock_ms(), who, why, txn_id]
        args += [self.audit_max, self.txn_ttl_ms, int(allow_debt)]
        claimed = await self._claim_txn(account_id, txn_id)
        res = await self._run("topup", keys, args)
        if claimed == "new" and C.s(res[0]) == "unknown":
            await self._run("txn_unclaim", [K.txn_owner_key(txn_id)], [account_id])
        shown = currency or ""
        if not shown and C.s(res[0]) not in ("ok", "replay"):  # a refusal: its amounts
            # in the account's currency (one read, on refusals only)
            stored = await self.redis.hget(K.acct_key(account_id), "currency")
            shown = C.s(stored) if stored else ""
        what = f"{kind} of {money_text(amount_micros, shown)}"
        return C.money_result(res, account_id, txn_id, currency, what, shown)

    async def _claim_txn(self, account_id: str, txn_id: str) -> str:
        """Claim ``txn_id`` for ``account_id`` ("new" or "ok"); DuplicateTransaction when
        another account has it: a payment reference applies to one account only."""
        res = await self._run("txn_claim", [K.txn_owner_key(txn_id)], [account_id, self.txn_ttl_ms])
        status = C.s(res[0])
        if status == "taken":
            raise DuplicateTransaction(
                f"transaction id {txn_id!r} was applied to account {C.s(res[1])!r};"
                f" it cannot be used for {account_id!r}"
            )
        return status

    async def charge_usage(self, req: UsageRequest, cost_micros: int) -> UsageCharge:
        """Debit a call chargingd did not see live (a mediated record), once per
        (source, call id); a replay answers the first charge (chargingd.ledger.usage)."""
        return await run_usage(
            self._run, req, mode="charge", amount_micros=cost_micros, base_micros=0,
            now_ms=self.clock_ms(), audit_max=self.audit_max, ttl_ms=self.txn_ttl_ms,
        )  # fmt: skip

    async def rerate_usage(
        self, req: UsageRequest, *, charged_micros: int, target_micros: int
    ) -> UsageCharge:
        """Move a call's charge from ``charged_micros`` (what it had, when the ledger
        no longer remembers the call) to ``target_micros``: debit or refund the
        difference, once (the same target again is a replay)."""
        return await run_usage(
            self._run, req, mode="rerate", amount_micros=target_micros,
            base_micros=charged_micros, now_ms=self.clock_ms(), audit_max=self.audit_max,
            ttl_ms=self.txn_ttl_ms,
        )  # fmt: skip

    async def reserve(
        self,
        account_id: str,
        session_id: str,
        amount_micros: int,
        *,
        lease_ms: int,
        partial: bool | None = None,
        new_session: bool = True,
        who: str = "sessions",
    ) -> Grant:
        """Set this session's hold to ``amount`` (renewal replaces the previous hold; a
        renewal may set it to 0: nothing held, the session stays open).

        Refusals are returned (not raised) as Grant.reason. Reclaims the account's
        expired holds first. ``new_session`` applies the concurrent-call limit.
        Raises SessionClosed for a session already released.
        """
        step = self.steps.reserve(
            account_id,
            session_id,
            amount_micros,
            lease_ms=lease_ms,
            now_ms=self.clock_ms(),
            partial=partial,
            new_session=new_session,
            who=who,
            deadline_ms=self.new_session_deadline_ms() if new_session else 0,
        )
        keys, args = step.keys, step.argv
        # Index first, script second (same pipeline, in order; or awaited in turn): a
        # crash in between leaves a harmless stale entry, never a hold nobody sweeps.
        if step.index is None:
            res = await self._call("reserve", keys, args)
        elif self._batcher is not None:
            script = self._scripts["reserve"]
            indexed, reply = self._batcher.submit_many(
                [
                    (step.index, None),
                    (
                        ("EVALSHA", script.sha, len(keys), *keys, *args),
                        lambda: script(keys=keys, args=args),
                    ),
                ]
            )
            await indexed
            self.steps.indexed(step)
            res = await reply
        else:
            await self.redis.zadd(K.HOLD_INDEX_KEY, {account_id: step.index_score}, gt=True)
            self.steps.indexed(step)
            res = await self._call("reserve", keys, args)
        return self.steps.grant(res, account_id, session_id)

    async def commit(
        self,
        account_id: str,
        session_id: str,
        cumulative_cost_micros: int,
        *,
        who: str = "sessions",
        policy: str = "debt",
    ) -> CommitResult:
        """Debit cumulative cost minus what this session already debited (never negative);
        ``policy`` "cap": at most its hold plus what the account has available."""
        step = self.steps.commit(
            account_id,
            session_id,
            cumulative_cost_micros,
            now_ms=self.clock_ms(),
            who=who,
            policy=policy,
        )
        res = await self._run("commit", step.keys, step.argv)
        return self.steps.commit_result(res, account_id)

    async def release(
        self,
        account_id: str,
        session_id: str,
        final_cost_micros: int | None = None,
        *,
        who: str = "sessions",
        policy: str = "debt",
    ) -> CommitResult:
        """Session end: commit the final cost if given, drop what is left of the hold.

        Idempotent: a closed session is remembered (tombstone) so a replayed stop
        never charges again. ``policy`` "cap": debit at most the session's hold plus
        what the account has available (a call within what chargingd allowed).
        """
        step = self.steps.release(
            account_id,
            session_id,
            final_cost_micros,
            now_ms=self.clock_ms(),
            who=who,
            policy=policy,
        )
        res = await self._run("release", step.keys, step.argv)
        return self.steps.commit_result(res, account_id)

    async def refuse(
        self, account_id: str, session_id: str, reason: str, *, who: str = "sessions"
    ) -> str:
        """A new session was refused after all: drop its hold and remember the refusal
        (refuse.lua), so a late reserve refuses itself and a retransmission gets the
        same answer. "ok", or "charged" / "closed" (a real call: nothing done)."""
        step = self.steps.refuse(account_id, session_id, reason, now_ms=self.clock_ms(), who=who)
        res = await self._run("refuse", step.keys, step.argv)
        status = C.s(res[0])
        if status == "unknown":
            raise UnknownAccount(f"no account {account_id!r}")
        return status

    async def correct(
        self,
        account_id: str,
        session_id: str,
        target_micros: int,
        *,
        policy: str,
        why: str,
        who: str = "sessions",
        source: str = "",
    ) -> CommitResult:
        """Move a released session's cumulative debit to ``target_micros`` (a Stop that
        came after a provisional close): debit or refund the difference, once per target
        (correct.lua). ``debited_micros`` is what moved (< 0: refunded); ``duplicate``
        when this target was applied already or the session was never released.
        ``source``: the CDR source of the session's call; a rerate that moved the call's
        charge since its provisional close (its usage key) is then corrected from too,
        and ``total_debited_micros`` is the call's whole charge."""
        step = self.steps.correct(
            account_id,
            session_id,
            target_micros,
            now_ms=self.clock_ms(),
            why=why,
            policy=policy,
            who=who,
            source=source,
        )
        res = await self._run("correct", step.keys, step.argv)
        if C.s(res[0]) == "range":
            raise InvalidRequest(f"correcting {session_id!r} takes {account_id!r} out of range")
        return self.steps.commit_result(res, account_id)

    async def sweep_expired(self, *, limit: int = 1000) -> int:
        """Reclaim expired holds on every account; returns how many were reclaimed.

        Visits the accounts of the global hold index whose latest lease (+ pad) is over;
        until then reserve/release on the account reclaim its expired holds. ``limit``
        bounds the holds reclaimed (and accounts visited) by one call.
        """
        if self.late_after_ms and time.time() - self._synced_s > CLOCK_SYNC_S:
            await self.sync_clock()  # clocks drift: measured again now and then
        now = self.clock_ms()
        due: Any = await self.redis.zrangebyscore(
            K.HOLD_INDEX_KEY, "-inf", now, start=0, num=limit, withscores=True
        )
        total = 0
        for raw_id, score in due:
            if total >= limit:
                break
            account_id = C.s(raw_id)
            total += await self._sweep_account(account_id, int(score), now, limit - total)
        return total

    async def _sweep_account(self, account_id: str, score: int, now: int, limit: int) -> int:
        keys = [
            K.acct_key(account_id),
            K.holds_key(account_id),
            K.leases_key(account_id),
            K.audit_key(account_id),
        ]
        args = [now, "sweeper", self.audit_max, limit]
        reclaimed, left, latest = await self._run("sweep", keys, args)
        if int(left) > 0:
            pad = self.hold_index_pad_ms
            await self.redis.zadd(K.HOLD_INDEX_KEY, {account_id: int(latest) + pad}, gt=True)
        elif score <= now - self.hold_index_grace_ms:
            # Only if no reserve raised the score since we read it (see hold_index_drop.lua).
            await self._run("hold_index_drop", [K.HOLD_INDEX_KEY], [account_id, score])
        return int(reclaimed)
