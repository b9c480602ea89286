"""The ledger's public types: account modes and statuses, typed errors, results.

Re-exported by chargingd.ledger.ledger (import them from there). Errors carry a stable
``code`` that each frontend maps to its own answer; never compare error strings.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar, Final


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

    code: ClassVar[str] = "ledger_error"


class UnknownAccount(LedgerError):
    code: ClassVar[str] = "unknown_account"


class AccountExists(LedgerError):
    code: ClassVar[str] = "account_exists"


class AccountNotActive(LedgerError):
    """Suspended, blocked or closed."""

    code: ClassVar[str] = "account_not_active"


class InsufficientCredit(LedgerError):
    code: ClassVar[str] = "insufficient_credit"


class TooManyCalls(LedgerError):
    code: ClassVar[str] = "too_many_calls"


class CurrencyMismatch(LedgerError):
    code: ClassVar[str] = "currency_mismatch"


class InvalidRequest(LedgerError):
    code: ClassVar[str] = "invalid_request"


class DuplicateTransaction(LedgerError):
    """Same transaction id with different content: refused, nothing changed."""

    code: ClassVar[str] = "duplicate_transaction"


class StaleCharge(LedgerError):
    """A rerate's "charged before" is not what the ledger holds for the call: a late
    Stop corrected the call after the CDR the rerate priced (its newer revision not
    yet in the billing database). Nothing moved."""

    code: ClassVar[str] = "stale_charge"


class SessionClosed(LedgerError):
    """reserve on a session that was already released (its tombstone is still there)."""

    code: ClassVar[str] = "session_closed"


class RefusalReason(enum.StrEnum):
    UNKNOWN_ACCOUNT = "unknown_account"
    SUSPENDED = "suspended"  # any non-active status
    INSUFFICIENT_CREDIT = "insufficient_credit"
    TOO_MANY_CALLS = "too_many_calls"
    # The reserve ran after its caller's deadline (Redis stalled): it refused itself.
    LATE = "late"
    # Refused earlier by Ledger.refuse (an authorize whose answer never came back).
    SYSTEM_ERROR = "system_error"


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


class Grant:
    """Outcome of reserve: granted > 0, or a refusal with its reason.

    Built per authorize and Interim: a plain class with its own __init__ (a dataclass's
    is interpreted even compiled), frozen (Final), a dataclass's equality, hash, repr."""

    __slots__ = ("available_micros", "granted_micros", "reason")

    def __init__(
        self,
        granted_micros: int,
        reason: RefusalReason | None = None,
        available_micros: int = 0,  # what the account could still give after this grant
    ) -> None:
        self.granted_micros: Final = granted_micros
        self.reason: Final = reason
        self.available_micros: Final = available_micros

    @property
    def ok(self) -> bool:
        return self.reason is None and self.granted_micros > 0

    def _values(self) -> tuple[int, RefusalReason | None, int]:
        return (self.granted_micros, self.reason, self.available_micros)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Grant)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return (
            f"Grant(granted_micros={self.granted_micros!r}, reason={self.reason!r}, "
            f"available_micros={self.available_micros!r})"
        )


class CommitResult:
    """Outcome of commit, release and correct.

    Built per Interim and Stop: a plain class with its own __init__ (a dataclass's is
    interpreted even compiled), frozen (Final), a dataclass's equality, hash, repr."""

    __slots__ = (
        "balance_micros",
        "debited_micros",
        "duplicate",
        "overrun",
        "total_debited_micros",
    )

    def __init__(
        self,
        debited_micros: int,  # debited by this call (0 for a replay or an older usage)
        total_debited_micros: int,  # cumulative debit of the session
        balance_micros: int,
        overrun: bool,  # the debit took the balance below its floor (debt)
        duplicate: bool,  # nothing new to debit
    ) -> None:
        self.debited_micros: Final = debited_micros
        self.total_debited_micros: Final = total_debited_micros
        self.balance_micros: Final = balance_micros
        self.overrun: Final = overrun
        self.duplicate: Final = duplicate

    def _values(self) -> tuple[int, int, int, bool, bool]:
        return (
            self.debited_micros,
            self.total_debited_micros,
            self.balance_micros,
            self.overrun,
            self.duplicate,
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, CommitResult)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return (
            f"CommitResult(debited_micros={self.debited_micros!r}, "
            f"total_debited_micros={self.total_debited_micros!r}, "
            f"balance_micros={self.balance_micros!r}, overrun={self.overrun!r}, "
            f"duplicate={self.duplicate!r})"
        )


@dataclass(frozen=True)
class AuditEntry:
    id: str
    ts_ms: int
    who: str
    what: str
    why: str
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    # What the change was about: session, amount, txn, overrun, changed fields...
    details: dict[str, str] = field(default_factory=dict)
