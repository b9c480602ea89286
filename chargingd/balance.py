"""The ledger: every Redis key of an account and every Lua script that changes money.

Nothing else in chargingd touches balance keys (DESIGN invariant 2). All keys of one
account carry the hash tag ``{a:ID}`` so every script is Redis-Cluster safe
(invariant 5). Amounts are integer micro-units (invariant 1).

API CONTRACT (skeleton written first so that admin/sessions can code against it;
bodies are filled in by the ledger work):
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Mode(enum.StrEnum):
    PREPAID = "prepaid"
    POSTPAID = "postpaid"


class Status(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    BLOCKED = "blocked"
    CLOSED = "closed"


class LedgerError(Exception):
    """Base of typed ledger errors; ``code`` is stable and mapped by each frontend."""

    code = "ledger_error"


class UnknownAccount(LedgerError):
    code = "unknown_account"


class AccountExists(LedgerError):
    code = "account_exists"


class AccountNotActive(LedgerError):
    """Suspended, blocked or closed."""

    code = "account_not_active"


class InsufficientCredit(LedgerError):
    code = "insufficient_credit"


class TooManyCalls(LedgerError):
    code = "too_many_calls"


class CurrencyMismatch(LedgerError):
    code = "currency_mismatch"


class InvalidRequest(LedgerError):
    code = "invalid_request"


class DuplicateTransaction(LedgerError):
    """Same transaction id with different content: refused, nothing changed."""

    code = "duplicate_transaction"


class RefusalReason(enum.StrEnum):
    UNKNOWN_ACCOUNT = "unknown_account"
    SUSPENDED = "suspended"  # any non-active status
    INSUFFICIENT_CREDIT = "insufficient_credit"
    TOO_MANY_CALLS = "too_many_calls"


@dataclass(frozen=True)
class Account:
    id: str
    mode: Mode
    currency: str
    balance_micros: int
    credit_limit_micros: int
    reserved_micros: int
    status: Status
    tariff: str
    max_calls: int  # 0 = unlimited
    identities: tuple[str, ...] = ()  # "user:alice", "ani:+4930123456"
    status_reason: str = ""  # "credit" when suspended automatically, "operator" otherwise
    topups_micros: int = 0  # sum of top-ups and positive adjustments, ever
    debits_micros: int = 0  # sum of committed call debits and negative adjustments, ever
    initial_balance_micros: int = 0
    live_sessions: int = 0
    created_ms: int = 0
    updated_ms: int = 0

    @property
    def available_micros(self) -> int:
        """What a new reservation could get right now."""
        floor = -self.credit_limit_micros if self.mode is Mode.POSTPAID else 0
        return max(0, self.balance_micros - self.reserved_micros - floor)


@dataclass(frozen=True)
class Grant:
    """Outcome of reserve: granted > 0, or a refusal with its reason."""

    granted_micros: int
    reason: RefusalReason | None = None
    available_micros: int = 0  # what the account could still give after this grant

    @property
    def ok(self) -> bool:
        return self.reason is None and self.granted_micros > 0


@dataclass(frozen=True)
class CommitResult:
    debited_micros: int  # debited by this call (0 for a replay or an older usage)
    total_debited_micros: int  # cumulative debit of the session
    balance_micros: int
    overrun: bool  # the debit took the balance below its floor (debt)
    duplicate: bool  # nothing new to debit


@dataclass(frozen=True)
class AuditEntry:
    id: str
    ts_ms: int
    who: str
    what: str
    why: str
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)


class Ledger:
    """Typed methods over the Lua scripts; callers never build keys.

    ``clock_ms`` is injected (tests move time); scripts receive now_ms as ARGV so
    Redis replication and tests stay deterministic.
    """

    def __init__(
        self,
        redis: object,
        *,
        clock_ms: object = None,
        audit_max_entries: int = 100_000,
        txn_ttl_s: int = 90 * 86400,
    ) -> None:
        raise NotImplementedError

    async def load_scripts(self) -> None:
        """Register every .lua script once (SCRIPT LOAD); EVALSHA reloads on NOSCRIPT."""
        raise NotImplementedError

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
        raise NotImplementedError

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
        raise NotImplementedError

    async def get_account(self, account_id: str) -> Account:
        """Raise UnknownAccount."""
        raise NotImplementedError

    async def find_account(self, identity: str) -> str | None:
        """Account id for an identity such as "user:alice" or "ani:+4930123456"."""
        raise NotImplementedError

    async def list_accounts(
        self, *, cursor: int = 0, count: int = 100
    ) -> tuple[int, list[Account]]:
        raise NotImplementedError

    async def set_status(
        self, account_id: str, status: Status, *, who: str, why: str = ""
    ) -> Account:
        """Operator suspend/resume/block/close; status_reason becomes "operator"."""
        raise NotImplementedError

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
        raise NotImplementedError

    async def adjust(
        self,
        account_id: str,
        amount_micros: int,
        *,
        txn_id: str,
        who: str,
        why: str,
        currency: str | None = None,
    ) -> Account:
        """Signed adjustment; idempotent on txn_id."""
        raise NotImplementedError

    async def reserve(
        self,
        account_id: str,
        session_id: str,
        amount_micros: int,
        *,
        lease_ms: int,
        partial: bool | None = None,
        new_session: bool = True,
    ) -> Grant:
        """Set this session's hold to ``amount`` (renewal replaces the previous hold).

        Refusals are returned (not raised) as Grant.reason. Reclaims the account's
        expired holds first. ``new_session`` applies the concurrent-call limit.
        """
        raise NotImplementedError

    async def commit(
        self, account_id: str, session_id: str, cumulative_cost_micros: int
    ) -> CommitResult:
        """Debit cumulative cost minus what this session already debited (never negative)."""
        raise NotImplementedError

    async def release(
        self, account_id: str, session_id: str, final_cost_micros: int | None = None
    ) -> CommitResult:
        """Session end: commit the final cost if given, drop what is left of the hold.

        Idempotent: a closed session is remembered (tombstone) so a replayed stop
        never charges again.
        """
        raise NotImplementedError

    async def sweep_expired(self, *, limit: int = 1000) -> int:
        """Reclaim expired holds on every account; returns how many were reclaimed."""
        raise NotImplementedError

    async def audit(
        self, account_id: str, *, count: int = 100, before_id: str = "+"
    ) -> list[AuditEntry]:
        """Newest first."""
        raise NotImplementedError
