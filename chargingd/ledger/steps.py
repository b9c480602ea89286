"""Ledger steps: the keys, arguments and reply decoding of reserve, commit and release,
built in one place for both paths that run them.

The Ledger's own calls (step by step; the Redis Cluster path) and the fused scripts of
sessions/ (one round trip per credit-control request on a single Redis) both take
their keys and ARGV from a StepBuilder and decode the replies with it. The fused
scripts do not copy money logic: the ledger's own reserve/commit/release.lua (and
account_check.lua) are wrapped, at load time, as Lua functions (``ledger_reserve(KEYS,
ARGV)`` ...) ahead of the caller's script (fused_source), so the ledger's scripts stay
the only place where money moves (DESIGN invariant 2).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any, Final

from chargingd.core.chain import chained
from chargingd.ledger import codec as C
from chargingd.ledger import keys as K
from chargingd.ledger.types import (
    CommitResult,
    Grant,
    InvalidRequest,
    RefusalReason,
    SessionClosed,
    Status,
)

MAX_LEASE_MS = 7 * 86400 * 1000
# What commit, release and correct do with a debit beyond what the account can give
# (its own hold + balance - other holds - floor): "cap" takes what is there, "debt"
# takes it all (the balance goes below the floor: an overrun, committed and flagged).
POLICIES = ("cap", "debt")
EMBEDDABLE = (
    "reserve",
    "reserve_first",
    "commit",
    "release",
    "account_check",
    "check_packed",
    "status",
    "known",
)
# an embedded script's parameters other than KEYS and ARGV (reserve_first: the caller's
# per-process arguments, reserve.lua's ARGV.c, passed without setting them in ARGV;
# check_packed: account_check's key and first_check's two, no tables)
PARAMS = {"reserve_first": "KEYS, ARGV, c", "check_packed": "key, check, identity"}
_INDEX_MEMORY = 100_000  # accounts whose hold-index score this process remembers


def session_deadline_ms(late_after_ms: int, redis_offset_ms: int) -> int:
    """Until when (Redis's clock) a new session's reserve sent now may run; 0: any time
    (no request timeout). Here, compiled: LedgerBase (interpreted) and the sessions'
    fused path (one call per authorize) both ask it."""
    if not late_after_ms:
        return 0
    return int(time.time() * 1000) + redis_offset_ms + late_after_ms


def fused_source(body: str, embeds: Sequence[str]) -> str:
    """The ledger prelude, each ledger script of ``embeds`` as ``ledger_NAME(KEYS, ARGV)``,
    then ``body`` (a caller's script that calls them)."""
    lua = resources.files("chargingd.ledger") / "lua"
    parts = [C.prelude()]
    for name in embeds:
        if name not in EMBEDDABLE:
            raise ValueError(f"ledger script {name!r} cannot be embedded")
        script = (lua / f"{name}.lua").read_text()
        params = PARAMS.get(name, "KEYS, ARGV")
        parts.append(f"local function ledger_{name}({params})\n{script}\nend")
    parts.append(body)
    return "\n".join(parts)


# Step, ReserveStep and AccountCheck are built per request: plain classes with their
# own __init__ (a dataclass's __init__ is interpreted even in the compiled build, one
# object.__setattr__ per field), frozen (Final: compiled, a write raises
# AttributeError), with a dataclass's equality, hash and repr.
class Step:
    """One ledger script call: its KEYS and ARGV."""

    __slots__ = ("argv", "keys")

    def __init__(self, keys: list[str], argv: list[Any]) -> None:
        self.keys: Final = keys
        self.argv: Final = argv

    def _values(self) -> tuple[Any, ...]:
        return (self.keys, self.argv)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Step)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return f"{type(self).__qualname__}(keys={self.keys!r}, argv={self.argv!r})"


class ReserveStep(Step):
    """A reserve, and the hold-index write to send first in the same pipeline (None:
    this process already indexed the account past the new lease)."""

    __slots__ = ("account_id", "index", "index_score", "session_id")

    def __init__(
        self,
        keys: list[str],
        argv: list[Any],
        index: tuple[Any, ...] | None,
        index_score: int,
        account_id: str,
        session_id: str,
    ) -> None:
        super().__init__(keys, argv)
        self.index: Final = index
        self.index_score: Final = index_score
        self.account_id: Final = account_id
        self.session_id: Final = session_id

    def _values(self) -> tuple[Any, ...]:
        return (
            self.keys,
            self.argv,
            self.index,
            self.index_score,
            self.account_id,
            self.session_id,
        )

    def __repr__(self) -> str:
        return (
            f"ReserveStep(keys={self.keys!r}, argv={self.argv!r}, index={self.index!r}, "
            f"index_score={self.index_score!r}, account_id={self.account_id!r}, "
            f"session_id={self.session_id!r})"
        )


class AccountCheck:
    """What a caller decided with: the script goes on only if the account still has it."""

    __slots__ = ("currency", "identity", "mode", "tariff")

    def __init__(self, tariff: str, currency: str, identity: str, mode: str = "") -> None:
        self.tariff: Final = tariff
        self.currency: Final = currency
        self.identity: Final = identity  # "" for a per-client default account
        self.mode: Final = mode  # prepaid | postpaid ("" any): the caller answers with it

    def _values(self) -> tuple[str, str, str, str]:
        return (self.tariff, self.currency, self.identity, self.mode)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, AccountCheck)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return (
            f"AccountCheck(tariff={self.tariff!r}, currency={self.currency!r}, "
            f"identity={self.identity!r}, mode={self.mode!r})"
        )


class StepBuilder:
    """Builds and checks the ledger's step arguments; decodes their replies.

    The arguments a caller of the Ledger gives (ids, amounts, flags, names) are typed
    ``object``: whatever they are, the checks here refuse a bad one with InvalidRequest,
    interpreted or compiled (a compiled argument check would raise TypeError)."""

    def __init__(
        self,
        *,
        audit_max: str,
        session_ttl_ms: str,
        reclaim_per_reserve: str,
        audit_holds: str,
        partial_grants: bool,
        hold_index_pad_ms: int,
        refusal_ttl_ms: int = 60_000,
    ) -> None:
        self.audit_max = audit_max
        self.session_ttl_ms = session_ttl_ms
        self.reclaim_per_reserve = reclaim_per_reserve
        self.audit_holds = audit_holds
        self.partial_grants = partial_grants
        self.refusal_ttl_ms = refusal_ttl_ms
        # The sweeper visits an account at (latest lease expiry + pad); the pad lets
        # renewals on a busy account skip re-indexing (see _index_score).
        self.hold_index_pad_ms = hold_index_pad_ms
        self._indexed: dict[str, int] = {}

    def reserve(
        self,
        account_id: object,
        session_id: object,
        amount_micros: object,
        *,
        lease_ms: object,
        now_ms: int,
        partial: object = None,
        new_session: object = True,
        who: object = "sessions",
        deadline_ms: int = 0,
    ) -> ReserveStep:
        """reserve.lua's keys and ARGV (checked), with the hold-index write it needs.
        ``deadline_ms`` (Redis's clock, 0 none): a later run refuses itself ('late')."""
        account_id = K.check_account_id(account_id)
        session_id = K.check_token(session_id, "session id")
        # a renewal may hold nothing (a session whose usage is final: sessions/idle.py)
        lo = 0 if new_session is False else 1
        amount = K.check_amount(amount_micros, "reserve amount", lo=lo)
        lease = K.check_int(lease_ms, "lease_ms", 1, MAX_LEASE_MS)
        allow_partial = self.partial_grants if partial is None else partial
        args: list[Any] = [session_id, amount, now_ms, lease, _flag(allow_partial, "partial")]
        args += [
            _flag(new_session, "new_session"),
            _who(who),
            self.audit_max,
            self.reclaim_per_reserve,
        ]
        args += [self.audit_holds, deadline_ms, self.refusal_ttl_ms]
        score = self._index_score(account_id, now_ms + lease)
        index = None if score is None else ("ZADD", K.HOLD_INDEX_KEY, "GT", score, account_id)
        return ReserveStep(
            K.session_keys(account_id, session_id),
            args,
            index,
            score or 0,
            account_id,
            session_id,
        )

    def indexed(self, step: ReserveStep) -> None:
        """Once the step's hold-index write is known written."""
        if step.index is None:
            return
        if len(self._indexed) > _INDEX_MEMORY:
            self._indexed.clear()
        self._indexed[step.account_id] = step.index_score

    def _index_score(self, account_id: str, expiry_ms: int) -> int | None:
        """The hold-index score to write so the sweeper visits after ``expiry_ms``, or None.

        The index score only grows (ZADD GT) until the sweeper drops an account whose
        holds are all gone, and it drops only entries older than the grace period; so
        a score this process wrote that already covers the expiry needs no new write.
        """
        if self._indexed.get(account_id, 0) >= expiry_ms:
            return None
        return expiry_ms + self.hold_index_pad_ms

    def commit(
        self,
        account_id: object,
        session_id: object,
        cumulative_cost_micros: object,
        *,
        now_ms: int,
        who: object = "sessions",
        policy: object = "debt",
    ) -> Step:
        """commit.lua's keys and ARGV: debit cumulative cost minus what was debited
        (``policy`` "cap": at most what the account can give now)."""
        account_id = K.check_account_id(account_id)
        session_id = K.check_token(session_id, "session id")
        cost = K.check_amount(cumulative_cost_micros, "cumulative cost", lo=0)
        args: list[Any] = [session_id, cost, now_ms, _who(who), self.audit_max]
        args += [self.session_ttl_ms, check_policy(policy)]
        return Step(K.session_keys(account_id, session_id), args)

    def release(
        self,
        account_id: object,
        session_id: object,
        final_cost_micros: object,
        *,
        now_ms: int,
        who: object = "sessions",
        policy: object = "debt",
    ) -> Step:
        """release.lua's keys and ARGV (no final cost, None: release the hold only;
        ``policy`` "cap": debit at most what the account can give)."""
        account_id = K.check_account_id(account_id)
        session_id = K.check_token(session_id, "session id")
        final = ""
        if final_cost_micros is not None:
            final = str(K.check_amount(final_cost_micros, "final cost", lo=0))
        args: list[Any] = [session_id, final, now_ms, _who(who), self.audit_max]
        args += [self.session_ttl_ms]
        args += [self.reclaim_per_reserve, check_policy(policy)]
        return Step(K.session_keys(account_id, session_id), args)

    def refuse(
        self,
        account_id: object,
        session_id: object,
        reason: object,
        *,
        now_ms: int,
        who: object = "sessions",
    ) -> Step:
        """refuse.lua's keys and ARGV: drop a new session's hold, remember the refusal."""
        account_id = K.check_account_id(account_id)
        session_id = K.check_token(session_id, "session id")
        named: Any = reason  # the enum's check, not a compiled one (TypeError)
        RefusalReason(named)  # one of the reasons a retransmission is answered with
        args: list[Any] = [session_id, reason, now_ms, _who(who), self.audit_max]
        args += [self.refusal_ttl_ms]
        return Step(K.session_keys(account_id, session_id), args)

    def correct(
        self,
        account_id: object,
        session_id: object,
        target_micros: object,
        *,
        now_ms: int,
        why: object,
        policy: object,
        who: object = "sessions",
        source: object = "",
    ) -> Step:
        """correct.lua's keys and ARGV: move a released session's debit to a target;
        with ``source`` (the call's CDR source) the call's usage key too (a rerate's
        move since the provisional close)."""
        account_id = K.check_account_id(account_id)
        session_id = K.check_token(session_id, "session id")
        target = K.check_amount(target_micros, "corrected cost", lo=0)
        why = K.check_text(why, "why", required=True)
        args: list[Any] = [session_id, target, now_ms, _who(who), why, self.audit_max]
        args += [self.session_ttl_ms, check_policy(policy)]
        keys = K.session_keys(account_id, session_id)
        if source:
            source = K.check_token(source, "source")
            keys = [*keys[:5], K.usage_key(account_id, source, session_id)]
        return Step(keys, args)

    @staticmethod
    def known(account_id: object, session_id: object) -> Step:
        """known.lua's keys and ARGV: has the ledger answered this session already (a
        lease, a remembered refusal, a close)?"""
        account_id = K.check_account_id(account_id)
        session_id = K.check_token(session_id, "session id")
        keys = K.session_keys(account_id, session_id)
        return Step([keys[2], keys[4]], [session_id])

    @staticmethod
    def active_check(account_id: object) -> Step:
        """account_check.lua's keys and ARGV to check only that the account is active."""
        account_id = K.check_account_id(account_id)
        return Step([K.acct_key(account_id)], ["status", "", "", "", ""])

    @staticmethod
    def account_check(account_id: str, check: AccountCheck | None) -> Step:
        """account_check.lua's keys and ARGV (check None: nothing is checked)."""
        keys = [K.acct_key(account_id)]
        if check is None:
            return Step(keys, [0, "", "", "", ""])
        return Step(keys, [1, check.tariff, check.currency, check.identity, check.mode])

    @staticmethod
    def first_args(step: ReserveStep) -> list[Any]:
        """A reserve step's ARGV as the plain authorize takes them (reserve_first.lua's
        ARGV[1..5]): session id, amount, now, the lease's END (now + lease ms: the text
        its lease and lease_due are written with, no format in Lua; reserve.lua's
        lease ms again on the general path) and the deadline."""
        argv = step.argv
        return [argv[0], argv[1], argv[2], argv[2] + argv[3], argv[10]]

    @staticmethod
    def first_check(check: AccountCheck | None) -> list[str]:
        """account_check.lua's ARGV packed in two, as the plain authorize takes them
        (sessions/lua/session_authorize.lua, ledger/lua/reserve_first.lua): "" (nothing
        checked) or "TARIFF\\0CURRENCY\\0MODE" (a currency code and a mode hold no NUL:
        read from its end), and "" or the identity (compared first with the account's
        identities whole: its only one is the same string, no search)."""
        if check is None:
            return ["", ""]
        return [f"{check.tariff}\0{check.currency}\0{check.mode}", check.identity or ""]

    def status(
        self,
        account_id: object,
        status: object,
        *,
        now_ms: int,
        who: object,
        why: object = "",
        reason: object = "operator",
        only_from: Iterable[object] = (),
    ) -> Step:
        """status.lua's keys and ARGV (checked): Ledger.set_status's, and the block step
        the fraud rules embed (chargingd/fraud/lua/check.lua), which may fill ARGV[4]
        (why: free text for the audit trail) with the rule that fired."""
        account_id = K.check_account_id(account_id)
        named: Any = status  # the enum's check, not a compiled one (TypeError)
        try:
            checked = Status(named)
        except ValueError:
            raise chained(InvalidRequest(f"bad status {status!r}"), None) from None
        K.check_text(who, "who", required=True)
        K.check_text(why, "why")
        K.check_text(reason, "reason", required=True, max_len=32)
        expect = ",".join(K.check_text(x, "status/reason", max_len=64) for x in only_from)
        keys = [K.acct_key(account_id), K.audit_key(account_id)]
        return Step(keys, [checked.value, now_ms, who, why, self.audit_max, reason, expect])

    def audit(self, account_id: object, *, now_ms: int, who: object, why: object) -> Step:
        """An audit entry a script outside the ledger writes with common.lua's audit()
        (a change of the account's that is no ledger script's: `ctl fraud lift`): KEYS
        the account and its audit stream, ARGV now, who, why, the trail's max entries."""
        account_id = K.check_account_id(account_id)
        K.check_text(who, "who", required=True)
        K.check_text(why, "why")
        keys = [K.acct_key(account_id), K.audit_key(account_id)]
        return Step(keys, [now_ms, who, why, self.audit_max])

    @staticmethod
    def grant(reply: Sequence[Any], account_id: str, session_id: str) -> Grant:
        """A reserve.lua reply as a Grant; SessionClosed for a session already released."""
        status = C.s(reply[0])
        if status == "ok":
            return Grant(int(reply[1]), None, int(reply[2]))
        if status == "closed":
            raise SessionClosed(f"session {session_id!r} of {account_id!r} was released")
        return Grant(0, RefusalReason(C.s(reply[1])), int(reply[2]))

    @staticmethod
    def commit_result(reply: Sequence[Any], account_id: str) -> CommitResult:
        """A commit.lua or release.lua reply (typed errors raised)."""
        return C.commit_result(reply, account_id)


def check_policy(policy: object) -> str:
    """ "cap" or "debt" (see POLICIES)."""
    if not isinstance(policy, str) or policy not in POLICIES:
        raise InvalidRequest(f"policy must be cap or debt, not {policy!r}")
    return policy


def _flag(flag: object, what: str) -> int:
    """A caller's yes/no as the script's 0/1: a bool, or the int 0 or 1 exactly; anything
    else (a string such as "0", None, 2) is InvalidRequest, not a flag taken as true or a
    ValueError."""
    if flag is True or flag is False or (type(flag) is int and flag in (0, 1)):
        return 1 if flag else 0
    raise InvalidRequest(f"{what} must be true or false")


def _who(who: object) -> str:
    """Who moves the money, for the audit trail: text (None or a number is InvalidRequest,
    not a command Redis cannot be sent)."""
    return K.check_text(who, "who")
