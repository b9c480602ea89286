"""The ledger: every Redis key of an account and every Lua script that changes money.

Nothing else in chargingd touches balance keys (DESIGN invariant 2). All keys of one
account carry the hash tag ``{a:ID}`` so every script is Redis-Cluster safe
(invariant 5); key names are built in chargingd.ledger.keys only. Amounts are
integer micro-units (invariant 1). Public types live in chargingd.ledger.types and
are re-exported here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from chargingd.core.clock import wall_ms
from chargingd.ledger import codec as C
from chargingd.ledger import keys as K
from chargingd.ledger.batch import CommandBatcher
from chargingd.ledger.steps import StepBuilder
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

CLOCK_SYNC_S = 60.0  # how often the sweeper measures Redis's clock again

_SCRIPTS = (
    "reserve",
    "commit",
    "release",
    "sweep",
    "get",
    "create",
    "update",
    "status",
    "topup",
    "identities_claim",
    "identities_drop",
    "hold_index_drop",
    "txn_claim",
    "txn_unclaim",
    "usage",
    "correct",
    "refuse",
)


class Ledger:
    """Typed methods over the Lua scripts; callers never build keys.

    ``clock_ms`` is injected (tests move time); scripts receive now_ms as ARGV so
    Redis replication and tests stay deterministic.
    """

    def __init__(
        self,
        redis: object,
        *,
        clock_ms: Callable[[], int] | None = None,
        audit_max_entries: int = 100_000,
        txn_ttl_s: int = 90 * 86400,
        partial_grants: bool = True,
        session_ttl_s: int = 7 * 86400,
        reclaim_per_reserve: int = 8,
        hold_index_pad_ms: int = 5_000,
        hold_index_grace_ms: int = 30_000,
        audit_holds: bool = True,
        batch_commands: bool | None = None,
        request_timeout_s: float | None = None,
        refusal_ttl_s: int = 60,
    ) -> None:
        """Optional extras beyond the contract: partial_grants (reserve's default policy),
        session_ttl_s (tombstone/debit record lifetime), reclaim_per_reserve, the hold
        index pad/grace (see sweep_expired), audit_holds (audit reserve too),
        batch_commands (pipeline each loop tick's calls; default: on unless a cluster),
        request_timeout_s (the Redis command timeout: a new session's reserve that runs
        later than half of it after it was sent refuses itself; None: never) and
        refusal_ttl_s (how long a new session's refusal is remembered)."""
        self.redis: Redis = redis  # type: ignore[assignment]
        self.clock_ms = clock_ms or wall_ms
        self.audit_max = str(audit_max_entries)
        self.txn_ttl_ms = str(txn_ttl_s * 1000)
        self.partial_grants = partial_grants
        self.session_ttl_ms = str(session_ttl_s * 1000)
        self.reclaim_per_reserve = str(reclaim_per_reserve)
        self.hold_index_pad_ms = hold_index_pad_ms
        self.hold_index_grace_ms = hold_index_grace_ms
        self.audit_holds = "1" if audit_holds else "0"
        # The one builder of reserve/commit/release arguments, for this class and for
        # the fused scripts of sessions/ alike.
        self.steps = StepBuilder(
            audit_max=self.audit_max,
            session_ttl_ms=self.session_ttl_ms,
            reclaim_per_reserve=self.reclaim_per_reserve,
            audit_holds=self.audit_holds,
            partial_grants=partial_grants,
            hold_index_pad_ms=hold_index_pad_ms,
            refusal_ttl_ms=refusal_ttl_s * 1000,
        )
        # A new session's reserve must run within half the command timeout of being
        # sent (the other half carries its answer back), on Redis's clock: the offset
        # between this process's wall clock and Redis's TIME is measured (sync_clock).
        self.late_after_ms = int(request_timeout_s * 500) if request_timeout_s else 0
        self.redis_offset_ms = 0
        self._synced_s = 0.0
        if batch_commands is None:
            batch_commands = isinstance(redis, Redis)
        self._batcher = CommandBatcher(self.redis) if batch_commands else None
        self._scripts: dict[str, AsyncScript] = {
            name: self.redis.register_script(C.load_script_source(name)) for name in _SCRIPTS
        }

    @property
    def batcher(self) -> CommandBatcher | None:
        """This tick's pipeline, shared with the session store so one request's commands
        (ledger and session alike) ride in one round trip; None when not batching."""
        return self._batcher

    async def load_scripts(self) -> None:
        """Register every .lua script once (SCRIPT LOAD); EVALSHA reloads on NOSCRIPT."""
        for script in self._scripts.values():
            await self.redis.script_load(script.script)
        await self.sync_clock()

    async def sync_clock(self) -> int:
        """Measure Redis's clock against this process's (the offset new-session
        deadlines are written in); returns the offset in ms."""
        if not self.late_after_ms:
            return 0
        before = time.time()
        seconds, micros = await self.redis.time()
        after = time.time()
        redis_ms = int(seconds) * 1000 + int(micros) // 1000
        self.redis_offset_ms = redis_ms - int((before + after) * 500)
        self._synced_s = after
        return self.redis_offset_ms

    def new_session_deadline_ms(self) -> int:
        """Until when (Redis's clock) a new session's reserve sent now may run; 0: any
        time (no request timeout configured)."""
        if not self.late_after_ms:
            return 0
        return int(time.time() * 1000) + self.redis_offset_ms + self.late_after_ms

    def _call(self, name: str, keys: list[str], args: list[Any]) -> Awaitable[Any]:
        """EVALSHA one script: queued in this tick's pipeline, or sent on its own."""
        script = self._scripts[name]
        if self._batcher is None:
            return script(keys=keys, args=args)
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        return self._batcher.submit(command, retry=lambda: script(keys=keys, args=args))

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._call(name, keys, args)

    # -- accounts ---------------------------------------------------------------
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

        Currency can change only while balance and holds are zero.
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
            C.check_update_status(C.s(res[0]), account_id)
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
        return C.money_result(res, account_id, txn_id, currency, f"{kind} of {amount_micros}")

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
        """Set this session's hold to ``amount`` (renewal replaces the previous hold).

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
    ) -> CommitResult:
        """Move a released session's cumulative debit to ``target_micros`` (a Stop that
        came after a provisional close): debit or refund the difference, once per target
        (correct.lua). ``debited_micros`` is what moved (< 0: refunded); ``duplicate``
        when this target was applied already or the session was never released."""
        step = self.steps.correct(
            account_id,
            session_id,
            target_micros,
            now_ms=self.clock_ms(),
            why=why,
            policy=policy,
            who=who,
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

    async def reserved_by_currency(self, *, limit: int = 100_000) -> dict[str, int]:
        """Micro-units held for live calls, summed by currency (read-only, for monitoring).

        Reads the accounts of the hold index (those that may hold money), at most
        ``limit``, in one pipeline; an account without holds adds 0.
        """
        ids: Any = await self.redis.zrange(K.HOLD_INDEX_KEY, 0, limit - 1)
        if not ids:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for raw_id in ids:
            pipe.hmget(K.acct_key(C.s(raw_id)), ["currency", "reserved"])
        out: dict[str, int] = {}
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
