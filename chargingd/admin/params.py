"""The admin socket's request side: JSON-RPC error codes, RpcError, parameter
validation (``Params``: amounts as decimal strings, ids, identities) and how accounts
and audit entries are rendered in answers. Pure; chargingd.admin.methods dispatches."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from chargingd import ledger as balance
from chargingd.admin.rpc import INTERNAL_ERROR as INTERNAL_ERROR
from chargingd.admin.rpc import INVALID_PARAMS as INVALID_PARAMS
from chargingd.admin.rpc import INVALID_REQUEST as INVALID_REQUEST
from chargingd.admin.rpc import METHOD_NOT_FOUND as METHOD_NOT_FOUND
from chargingd.admin.rpc import NOT_FOUND as NOT_FOUND
from chargingd.admin.rpc import PARSE_ERROR as PARSE_ERROR
from chargingd.admin.rpc import RpcError as RpcError
from chargingd.core.currencies import is_known_currency, minor_unit
from chargingd.core.money import AmountError, format_amount, parse_amount
from chargingd.ledger import Account, AuditEntry, Mode

# Application codes (-32000..-32099), one per ledger error code.
LEDGER_CODES: dict[str, int] = {
    balance.LedgerError.code: -32000,
    balance.UnknownAccount.code: -32001,
    balance.AccountExists.code: -32002,
    balance.AccountNotActive.code: -32003,
    balance.InsufficientCredit.code: -32004,
    balance.TooManyCalls.code: -32005,
    balance.CurrencyMismatch.code: -32006,
    balance.InvalidRequest.code: -32007,
    balance.DuplicateTransaction.code: -32008,
}
REDIS_UNAVAILABLE = -32010

_CURRENCY = re.compile(r"^[A-Z]{3}$")
_NAME = re.compile(r"^[A-Za-z0-9_.@:+-]{1,64}$")


@dataclass(frozen=True)
class Peer:
    """The connected process, from SO_PEERCRED."""

    pid: int
    uid: int
    gid: int


def error_response(req_id: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": req_id, "error": error}


def render_account(acc: Account) -> dict[str, Any]:
    """An account as JSON: amounts as decimal strings with at least the decimals of the
    currency's minor unit (2 for EUR, 0 for JPY, 3 for BHD), more where they have them
    (9.8512 EUR)."""
    places = minor_unit(acc.currency)

    def amt(micros: int) -> str:
        return format_amount(micros, places)

    return {
        "id": acc.id,
        "mode": str(acc.mode),
        "currency": acc.currency,
        "status": str(acc.status),
        "status_reason": acc.status_reason,
        "balance": amt(acc.balance_micros),
        "reserved": amt(acc.reserved_micros),
        "available": amt(acc.available_micros),
        "credit_limit": amt(acc.credit_limit_micros),
        "tariff": acc.tariff,
        "max_calls": acc.max_calls,
        "live_sessions": acc.live_sessions,
        "identities": list(acc.identities),
        "initial_balance": amt(acc.initial_balance_micros),
        "topups": amt(acc.topups_micros),
        "debits": amt(acc.debits_micros),
        "created_ms": acc.created_ms,
        "updated_ms": acc.updated_ms,
    }


# Audit fields that hold micro-units; rendered as decimal strings like every amount.
AUDIT_AMOUNT_KEYS = frozenset(
    {"balance", "reserved", "amount", "asked", "cumulative", "released", "credit_limit"}
    | {"old.credit_limit"}
)
_INT = re.compile(r"^-?[0-9]+$")


def _audit_fields(fields: dict[str, str], places: int) -> dict[str, str]:
    return {
        k: format_amount(int(v), places) if k in AUDIT_AMOUNT_KEYS and _INT.match(v) else v
        for k, v in fields.items()
    }


def render_audit(entry: AuditEntry, currency: str = "") -> dict[str, Any]:
    """An audit entry as JSON; amounts in before/after/details as decimal strings, with
    the decimals of the account's ``currency`` at least (2 when not given)."""
    places = minor_unit(currency)
    return {
        "id": entry.id,
        "ts_ms": entry.ts_ms,
        "who": entry.who,
        "what": entry.what,
        "why": entry.why,
        "before": _audit_fields(entry.before, places),
        "after": _audit_fields(entry.after, places),
        "details": _audit_fields(entry.details, places),
    }


class Params:
    """By-name parameters of one call; every getter raises -32602 with a clear message."""

    def __init__(self, raw: Any, allowed: frozenset[str]) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise RpcError(INVALID_PARAMS, "params must be an object (by-name parameters)")
        unknown = sorted(set(raw) - allowed)
        if unknown:
            hint = ", ".join(sorted(allowed)) or "none"
            raise RpcError(INVALID_PARAMS, f"unknown parameter {unknown[0]!r} (allowed: {hint})")
        self.raw: dict[str, Any] = raw

    def has(self, name: str) -> bool:
        return self.raw.get(name) is not None

    def text(self, name: str, default: str | None = None) -> str:
        value = self.raw.get(name, default)
        if value is None:
            raise RpcError(INVALID_PARAMS, f"missing parameter {name!r}")
        if not isinstance(value, str):
            raise RpcError(INVALID_PARAMS, f"{name} must be a string")
        return value

    def ident(self, name: str = "id") -> str:
        value = self.text(name)
        if not value.strip() or len(value) > 128 or any(c.isspace() for c in value):
            raise RpcError(INVALID_PARAMS, f"{name} must be 1-128 characters without spaces")
        return value

    def integer(
        self, name: str, default: int | None = None, *, lo: int = 0, hi: int = 1 << 31
    ) -> int:
        value = self.raw.get(name, default)
        if value is None:
            raise RpcError(INVALID_PARAMS, f"missing parameter {name!r}")
        if not isinstance(value, int) or isinstance(value, bool):
            raise RpcError(INVALID_PARAMS, f"{name} must be an integer")
        if not lo <= value <= hi:
            raise RpcError(INVALID_PARAMS, f"{name} must be between {lo} and {hi}")
        return value

    def flag(self, name: str) -> bool:
        """An optional JSON boolean, false when absent."""
        value = self.raw.get(name, False)
        if not isinstance(value, bool):
            raise RpcError(INVALID_PARAMS, f"{name} must be true or false")
        return value

    def amount(self, name: str, default: str | None = None, *, negative: bool = False) -> int:
        """A decimal string in micro-units; floats are refused (0.1 is not exact)."""
        value = self.raw.get(name, default)
        if value is None:
            raise RpcError(INVALID_PARAMS, f"missing parameter {name!r}")
        if not isinstance(value, str):
            kind = type(value).__name__
            raise RpcError(
                INVALID_PARAMS, f'{name} must be a decimal string such as "12.50", not {kind}'
            )
        try:
            return parse_amount(value, allow_negative=negative)
        except AmountError as exc:
            message = str(exc) if name == "amount" else f"{name}: {exc}"
            raise RpcError(INVALID_PARAMS, message) from None

    def currency(self, name: str = "currency", *, known: bool = False) -> str:
        """``known``: a code ISO 4217 has (an account's new currency); without it any
        three capitals (a check against an account's stored currency, which may be
        an older, odd one)."""
        value = self.text(name)
        if not _CURRENCY.match(value):
            raise RpcError(INVALID_PARAMS, f"{name} must be a 3-letter ISO 4217 code such as EUR")
        if known and not is_known_currency(value):
            raise RpcError(
                INVALID_PARAMS, f"{name} {value!r} is not an ISO 4217 currency code (EUR, USD...)"
            )
        return value

    def mode(self, name: str = "mode") -> Mode:
        value = self.text(name)
        try:
            return Mode(value)
        except ValueError:
            raise RpcError(
                INVALID_PARAMS, f"{name} must be prepaid or postpaid, not {value!r}"
            ) from None

    def identities(self, name: str = "identities") -> tuple[str, ...]:
        value = self.raw.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RpcError(
                INVALID_PARAMS, f'{name} must be a list of strings such as ["user:alice"]'
            )
        for item in value:
            kind, _, ref = item.partition(":")
            if not kind or not ref or any(c.isspace() for c in item):
                raise RpcError(INVALID_PARAMS, f"identity {item!r} is not KIND:VALUE (user:alice)")
        return tuple(value)
