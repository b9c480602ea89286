"""The ledger: every balance key and every script that writes money.

Callers use the Ledger's typed methods and the types and errors named here; nothing
outside this package builds a ledger key, a script argument or decodes a reply.
"""

from chargingd.ledger.ledger import Ledger
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
    StaleCharge,
    Status,
    TooManyCalls,
    UnknownAccount,
)
from chargingd.ledger.usage import INSUFFICIENT_POLICIES, UsageCharge, UsageRequest

__all__ = [
    "INSUFFICIENT_POLICIES",
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
    "StaleCharge",
    "Status",
    "TooManyCalls",
    "UnknownAccount",
    "UsageCharge",
    "UsageRequest",
]
