"""Billing profiles: an account's billing day, customer details and tax profile.

An account without a row is billed with the defaults (billing day 1, the
configured default VAT rate, no customer name).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from chargingd.billing.db import BillingDB, Conn
from chargingd.core.config.invoicing import check_country, percent_to_ppm
from chargingd.invoicing.model import Profile, Refused
from chargingd.invoicing.tax import TaxMode

_COLUMNS = (
    "account_id, billing_day, customer_name, customer_address, email, country, tax_mode,"
    " vat_rate_ppm, vat_id, tax_note, payment_terms_days, zero_invoices, call_detail"
)
# Fields `set_profile` accepts, with the checks of each.
FIELDS = frozenset(
    {
        "billing_day",
        "customer_name",
        "customer_address",
        "email",
        "country",
        "tax_mode",
        "vat_rate",
        "vat_id",
        "tax_note",
        "payment_terms_days",
        "zero_invoices",
        "call_detail",
    }
)


def _profile(row: Sequence[Any]) -> Profile:
    return Profile(
        account_id=row[0],
        billing_day=int(row[1]),
        customer_name=row[2],
        customer_address=tuple(row[3]),
        email=row[4],
        country=row[5],
        tax_mode=row[6],
        vat_rate_ppm=row[7],
        vat_id=row[8],
        tax_note=row[9],
        payment_terms_days=row[10],
        zero_invoices=bool(row[11]),
        call_detail=bool(row[12]),
    )


async def load_profiles(conn: Conn, account_ids: Sequence[str] | None) -> dict[str, Profile]:
    """The stored profiles of these accounts (every account's when None)."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM billing_profiles WHERE %s::text[] IS NULL OR account_id = ANY(%s)",
        (account_ids, account_ids),
    )
    return {row[0]: _profile(row) for row in await cur.fetchall()}


async def get_profile(db: BillingDB, account_id: str) -> Profile:
    """The account's profile, or the defaults."""

    async def work(conn: Conn) -> Profile:
        found = await load_profiles(conn, [account_id])
        return found.get(account_id, Profile(account_id))

    result: Profile = await db.run(work)
    return result


def _check(name: str, value: Any) -> Any:
    """The stored value of one field, or Refused with a clear message."""
    if name == "billing_day":
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 28:
            raise Refused("billing_day must be an integer 1..28")
    elif name == "payment_terms_days":
        if value is not None and (not isinstance(value, int) or not 0 <= value <= 365):
            raise Refused("payment_terms_days must be 0..365 (or null: the configured terms)")
    elif name in ("zero_invoices", "call_detail"):
        if not isinstance(value, bool):
            raise Refused(f"{name} must be true or false")
    elif name == "customer_address":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise Refused("customer_address must be a list of lines")
        if len(value) > 8 or any(len(v) > 200 for v in value):
            raise Refused("customer_address: at most 8 lines of 200 characters")
    elif name == "vat_rate":
        return _vat_rate(value)
    else:
        return _check_text(name, value)
    return value


def _vat_rate(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise Refused('vat_rate must be a percentage string such as "19" (or null)')
    try:
        return percent_to_ppm(value)
    except ValueError as exc:
        raise Refused(f"vat_rate: {exc}") from None


def _check_text(name: str, value: Any) -> str:
    if not isinstance(value, str) or len(value) > 500 or not value.isprintable():
        raise Refused(f"{name} must be printable text up to 500 characters")
    if name == "country" and value:
        try:
            check_country("country", value)
        except ValueError as exc:
            raise Refused(str(exc)) from None
    if name == "tax_mode" and value not in {m.value for m in TaxMode}:
        raise Refused("tax_mode must be standard, exempt or reverse_charge")
    return value


async def set_profile(
    db: BillingDB, account_id: str, changes: dict[str, Any], *, who: str
) -> Profile:
    """Create or change an account's profile (only the given fields); returns it."""
    unknown = sorted(set(changes) - FIELDS)
    if unknown:
        raise Refused(f"unknown billing profile field {unknown[0]!r}")
    if not changes:
        raise Refused("nothing to change")
    values = {("vat_rate_ppm" if k == "vat_rate" else k): _check(k, v) for k, v in changes.items()}
    names = sorted(values)
    assignments = ", ".join(f"{n} = EXCLUDED.{n}" for n in names)
    columns = ", ".join(["account_id", "updated_by", *names])
    placeholders = ", ".join(["%s"] * (len(names) + 2))

    async def work(conn: Conn) -> Profile:
        await conn.execute(
            f"INSERT INTO billing_profiles ({columns}) VALUES ({placeholders})"
            f" ON CONFLICT (account_id) DO UPDATE SET {assignments},"
            " updated_by = EXCLUDED.updated_by, updated_at = now()",
            (account_id, who, *(values[n] for n in names)),
        )
        found = await load_profiles(conn, [account_id])
        return found[account_id]

    try:
        result: Profile = await db.run(work)
    except psycopg.errors.CheckViolation as exc:  # reverse charge needs a VAT id
        raise Refused(_constraint_message(exc)) from None
    return result


def _constraint_message(exc: Exception) -> str:
    text = str(exc)
    if "reverse_charge_needs_vat_id" in text:
        return "reverse charge needs the customer's VAT id (vat_id)"
    return f"billing profile refused: {text.splitlines()[0]}"
