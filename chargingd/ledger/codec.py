"""Decoding what the ledger scripts return into the public dataclasses; argument helpers.

Kept apart from chargingd.ledger.ledger so the Ledger class reads as its API.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from chargingd.core.chain import chained
from chargingd.core.currencies import money_text
from chargingd.core.money import MAX_TOTAL_MICROS
from chargingd.ledger import keys as K
from chargingd.ledger.types import (
    Account,
    AccountNotActive,
    AuditEntry,
    CommitResult,
    CurrencyMismatch,
    DuplicateTransaction,
    InsufficientCredit,
    InvalidRequest,
    Mode,
    Status,
    UnknownAccount,
)

# Scripts that use the shared helpers of common.lua (prepended at load time).
WITH_PRELUDE = frozenset(
    {
        "reserve",
        "commit",
        "release",
        "correct",
        "refuse",
        "sweep",
        "create",
        "update",
        "status",
        "topup",
        "usage",
    }
)
MAX_CALLS_LIMIT = 1_000_000


def s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def prelude() -> str:
    """What precedes every money script: the one largest-total value, then common.lua."""
    common = (resources.files("chargingd.ledger") / "lua" / "common.lua").read_text()
    return f"local MAX_TOTAL_MICROS = {MAX_TOTAL_MICROS}\n{common}"


def load_script_source(name: str) -> str:
    """The Lua source of one ledger script as sent to Redis (prelude included)."""
    body = (resources.files("chargingd.ledger") / "lua" / f"{name}.lua").read_text()
    if name in WITH_PRELUDE:
        return prelude() + "\n" + body
    return body


def decode_account(flat: Sequence[Any], live: int) -> Account:
    f = {s(flat[i]): s(flat[i + 1]) for i in range(0, len(flat), 2)}
    return Account(
        id=f["id"],
        mode=Mode(f["mode"]),
        currency=f["currency"],
        balance_micros=int(f["balance"]),
        credit_limit_micros=int(f["credit_limit"]),
        reserved_micros=int(f["reserved"]),
        status=Status(f["status"]),
        tariff=f["tariff"],
        max_calls=int(f["max_calls"]),
        identities=tuple(i for i in f["identities"].split("\n") if i),
        status_reason=f["status_reason"],
        topups_micros=int(f["topups"]),
        debits_micros=int(f["debits"]),
        initial_balance_micros=int(f["initial"]),
        live_sessions=int(live),
        created_ms=int(f["created_ms"]),
        updated_ms=int(f["updated_ms"]),
    )


SNAPSHOT_FIELDS = ("balance", "reserved", "status", "status_reason")


def decode_audit(entry_id: Any, raw: dict[Any, Any]) -> AuditEntry:
    """One stream entry (see audit() in lua/common.lua) as an AuditEntry."""
    f = {s(k): s(v) for k, v in raw.items()}
    return AuditEntry(
        id=s(entry_id),
        ts_ms=int(f.get("ts", "0")),
        who=f.get("who", ""),
        what=f.get("what", ""),
        why=f.get("why", ""),
        before=dict(zip(SNAPSHOT_FIELDS, f.get("b", ",,,").split(",", 3), strict=False)),
        after=dict(zip(SNAPSHOT_FIELDS, f.get("a", ",,,").split(",", 3), strict=False)),
        details={k[2:]: v for k, v in f.items() if k.startswith("x.")},
    )


def commit_result(res: Sequence[Any], account_id: str) -> CommitResult:
    status = s(res[0])
    if status == "unknown":
        raise UnknownAccount(f"no account {account_id!r}")
    return CommitResult(
        debited_micros=int(res[1]),
        total_debited_micros=int(res[2]),
        balance_micros=int(res[3]),
        overrun=int(res[4]) == 1,
        duplicate=status != "ok",
    )


def check_mode(mode: Mode | str) -> Mode:
    try:
        return Mode(mode)
    except ValueError:
        raise chained(InvalidRequest(f"bad mode {mode!r}: prepaid or postpaid"), None) from None


def update_pairs(
    credit_limit_micros: int | None,
    tariff: str | None,
    max_calls: int | None,
    currency: str | None,
    mode: Mode | None,
) -> list[Any]:
    """Validated field/value pairs for update.lua."""
    pairs: list[Any] = []
    if credit_limit_micros is not None:
        pairs += ["credit_limit", K.check_amount(credit_limit_micros, "credit limit", lo=0)]
    if tariff is not None:
        pairs += ["tariff", K.check_text(tariff, "tariff", max_len=128)]
    if max_calls is not None:
        pairs += ["max_calls", K.check_int(max_calls, "max_calls", 0, MAX_CALLS_LIMIT)]
    if currency is not None:
        pairs += ["currency", K.check_currency(currency)]
    if mode is not None:
        pairs += ["mode", check_mode(mode).value]
    return pairs


def prepaid_credit_limit(credit_limit_micros: int, currency: str = "") -> InvalidRequest:
    """The refusal of a credit limit on a prepaid account: only postpaid accounts
    spend below zero (the Lua credit floor), a prepaid one would show it unused. The
    limit in the account's ``currency`` (its minor unit and code)."""
    return InvalidRequest(
        "a prepaid account has no credit limit (it spends its balance only):"
        f" credit_limit {money_text(credit_limit_micros, currency)} needs mode postpaid,"
        " or set credit_limit 0"
    )


def check_update_status(res: Sequence[Any], account_id: str, currency: str = "") -> None:
    status = s(res[0])
    if status == "prepaid_credit_limit":
        raise prepaid_credit_limit(int(res[1]), currency)
    if status == "unknown":
        raise UnknownAccount(f"no account {account_id!r}")
    if status == "identities_changed":
        raise InvalidRequest(f"identities of {account_id!r} changed meanwhile; retry")
    if status == "currency_in_use":
        raise InvalidRequest(f"currency of {account_id!r} can change only at zero balance")


def money_result(
    res: Sequence[Any],
    account_id: str,
    txn_id: str,
    currency: str | None,
    what: str,
    shown: str = "",
) -> Account:
    """The account after topup.lua, or its refusal as a typed error (nothing changed);
    ``shown`` the account's currency, amounts of the refusal are written in."""
    status = s(res[0])
    if status in ("ok", "replay"):
        flat, live = json.loads(s(res[1]))
        return decode_account(flat, live)
    if status == "debt":
        raise InsufficientCredit(
            f"{what} exceeds what {account_id!r} has available"
            f" ({money_text(int(res[1]), shown)});"
            " allow_debt is needed to leave a debt"
        )
    if status == "range":
        raise InvalidRequest(f"{what} takes {account_id!r} out of the ledger's range")
    if status == "duplicate":
        raise DuplicateTransaction(f"transaction {txn_id!r} was used for something else")
    if status == "currency":
        raise CurrencyMismatch(f"account {account_id!r} is in {s(res[1])}, not {currency}")
    if status == "closed":
        raise AccountNotActive(f"account {account_id!r} is closed")
    raise UnknownAccount(f"no account {account_id!r}")
