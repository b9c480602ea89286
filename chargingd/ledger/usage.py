"""Usage the ledger did not see live: a mediated call's debit, and re-pricing any
charged call (usage.lua). Both are idempotent on the call: (source, call id).

``charge``: debit a mediated call's rated cost once; the same call again is a replay
that answers what was charged the first time (two imports of one file charge once).
``rerate``: move a call's charge to a new target; the difference is debited or
refunded, and a refund never exceeds what the call had charged.

When the money is not available (balance - holds - floor; floor 0 prepaid,
-credit_limit postpaid), ``insufficient`` says what happens: ``debt`` takes the whole
amount (the call happened; reason ``debt``), ``cap`` takes what is available (reason
``capped``: charged_micros < the cost, the rest is the operator's to collect).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from chargingd.ledger import keys as K
from chargingd.ledger.codec import s
from chargingd.ledger.types import CurrencyMismatch, InvalidRequest, StaleCharge, UnknownAccount

INSUFFICIENT_POLICIES = ("debt", "cap")
Run = Callable[[str, list[str], list[Any]], Awaitable[Any]]


@dataclass(frozen=True)
class UsageCharge:
    """What the ledger holds for one call after usage.lua."""

    charged_micros: int  # what the ledger has moved for this call, in all
    reason: str  # "" | "debt" | "capped" | "rerate"
    balance_micros: int  # the account's balance after the script
    moved_micros: int  # what this request moved: > 0 debited, < 0 refunded, 0 replay
    replay: bool  # the call was known: nothing moved


@dataclass(frozen=True)
class UsageRequest:
    """The script's arguments beyond the amount, as the Ledger fills them in."""

    account_id: str
    source: str
    call_id: str
    currency: str | None
    insufficient: str
    who: str
    why: str


def check(req: UsageRequest) -> None:
    K.check_account_id(req.account_id)
    K.check_token(req.source, "usage source", 64)
    K.check_token(req.call_id, "call id")
    if req.currency is not None:
        K.check_currency(req.currency)
    if req.insufficient not in INSUFFICIENT_POLICIES:
        raise InvalidRequest(f"insufficient must be debt or cap, not {req.insufficient!r}")
    K.check_text(req.who, "who", required=True)
    K.check_text(req.why, "why")


async def run_usage(
    run: Run,
    req: UsageRequest,
    *,
    mode: str,
    amount_micros: int,
    base_micros: int,
    now_ms: int,
    audit_max: str,
    ttl_ms: str,
) -> UsageCharge:
    """Call usage.lua for ``req``; typed errors for what it refuses (nothing changed)."""
    check(req)
    K.check_amount(amount_micros, "usage amount", lo=0)
    K.check_amount(base_micros, "charged amount", lo=0)
    keys = [
        K.acct_key(req.account_id),
        K.usage_key(req.account_id, req.source, req.call_id),
        K.audit_key(req.account_id),
    ]
    if mode == "rerate":  # a live call's session: corrected since its CDR was stored?
        keys.append(K.session_keys(req.account_id, req.call_id)[4])
    args: list[Any] = [mode, amount_micros, base_micros, req.insufficient, req.currency or ""]
    args += [now_ms, req.who, req.why, audit_max, ttl_ms, req.source, req.call_id]
    return decode(await run("usage", keys, args), req)


def decode(res: Sequence[Any], req: UsageRequest) -> UsageCharge:
    status = s(res[0])
    if status in ("ok", "replay"):
        return UsageCharge(
            charged_micros=int(s(res[1])),
            reason=s(res[2]),
            balance_micros=int(s(res[3])),
            moved_micros=int(s(res[4])),
            replay=status == "replay",
        )
    if status == "currency":
        raise CurrencyMismatch(f"account {req.account_id!r} is in {s(res[1])}, not {req.currency}")
    if status == "range":
        raise InvalidRequest(f"call {req.call_id!r} takes {req.account_id!r} out of range")
    if status == "stale":
        raise StaleCharge(
            f"call {req.call_id!r} of {req.account_id!r}: a late Stop corrected its charge to"
            f" {s(res[1])} micro-units after the CDR this rerate priced was stored; rerate"
            " again once its new revision is exported"
        )
    raise UnknownAccount(f"no account {req.account_id!r}")
