"""Subscriptions (recurring charges) and one-off charges and credits of postpaid accounts.

A subscription is billed for the days of each invoiced period it runs (prorated by
day, in arrears). A one-off charge or credit is billed once, on the first invoice
whose period ends after its date; ``reference`` makes adding one idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from chargingd.billing.db import BillingDB, Conn
from chargingd.invoicing.model import Charge, Conflict, NotFound, Refused, Subscription
from chargingd.invoicing.periods import Period

_SUB_COLUMNS = "id, account_id, description, amount_micros, quantity, starts_on, ends_on"
_CHARGE_COLUMNS = (
    "c.id, c.account_id, c.kind, c.description, c.amount_micros, c.charge_date, c.reference,"
    " i.number"
)
MAX_TEXT = 200


def _text(value: str, what: str) -> str:
    if not value.strip() or len(value) > MAX_TEXT or not value.isprintable():
        raise Refused(f"{what} must be 1-{MAX_TEXT} printable characters")
    return value


def _subscription(row: Sequence[Any]) -> Subscription:
    return Subscription(int(row[0]), row[1], row[2], int(row[3]), int(row[4]), row[5], row[6])


def _charge(row: Sequence[Any]) -> Charge:
    return Charge(int(row[0]), row[1], row[2], row[3], int(row[4]), row[5], row[6], row[7])


async def add_subscription(
    db: BillingDB,
    account_id: str,
    *,
    description: str,
    amount_micros: int,
    starts_on: date,
    ends_on: date | None = None,
    quantity: int = 1,
    who: str,
) -> Subscription:
    """A recurring monthly charge of ``amount_micros`` per unit, from ``starts_on``."""
    _text(description, "description")
    if amount_micros <= 0:
        raise Refused("a subscription amount must be positive")
    if not 1 <= quantity <= 1_000_000:
        raise Refused("quantity must be 1..1000000")
    if ends_on is not None and ends_on < starts_on:
        raise Refused("a subscription cannot end before it starts")

    async def work(conn: Conn) -> Subscription:
        cur = await conn.execute(
            "INSERT INTO subscriptions (account_id, description, amount_micros, quantity,"
            f" starts_on, ends_on, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            f" RETURNING {_SUB_COLUMNS}",
            (account_id, description, amount_micros, quantity, starts_on, ends_on, who),
        )
        row = await cur.fetchone()
        assert row is not None
        return _subscription(row)

    result: Subscription = await db.run(work)
    return result


async def end_subscription(
    db: BillingDB, subscription_id: int, ends_on: date
) -> tuple[Subscription, Subscription]:
    """Set the last day billed (included); (the subscription before, after). Invoices
    already issued are not changed (invoicing.backdating says what they billed)."""

    async def work(conn: Conn) -> tuple[Subscription, Subscription]:
        cur = await conn.execute(
            f"SELECT {_SUB_COLUMNS} FROM subscriptions WHERE id = %s FOR UPDATE",
            (subscription_id,),
        )
        row = await cur.fetchone()
        if row is None:
            raise NotFound(f"no subscription {subscription_id}")
        if ends_on < row[5]:
            raise Refused(f"subscription {subscription_id} starts {row[5]}: it cannot end before")
        cur = await conn.execute(
            f"UPDATE subscriptions SET ends_on = %s WHERE id = %s RETURNING {_SUB_COLUMNS}",
            (ends_on, subscription_id),
        )
        updated = await cur.fetchone()
        assert updated is not None
        return _subscription(row), _subscription(updated)

    result: tuple[Subscription, Subscription] = await db.run(work)
    return result


async def list_subscriptions(db: BillingDB, account_id: str) -> list[Subscription]:
    async def work(conn: Conn) -> list[Subscription]:
        cur = await conn.execute(
            f"SELECT {_SUB_COLUMNS} FROM subscriptions WHERE account_id = %s ORDER BY id",
            (account_id,),
        )
        return [_subscription(r) for r in await cur.fetchall()]

    result: list[Subscription] = await db.run(work)
    return result


async def add_charge(
    db: BillingDB,
    account_id: str,
    *,
    kind: str,
    description: str,
    amount_micros: int,
    charge_date: date,
    reference: str,
    who: str,
) -> tuple[Charge, bool]:
    """Record a one-off charge or credit; (charge, created). The same reference with
    the same content is a replay (created False); with other content a Conflict."""
    if kind not in ("charge", "credit"):
        raise Refused("kind must be charge or credit")
    _text(description, "description")
    _text(reference, "reference")
    if amount_micros <= 0:
        raise Refused(f"the amount of a {kind} must be positive")
    wanted = (account_id, kind, description, amount_micros, charge_date)

    async def work(conn: Conn) -> tuple[Charge, bool]:
        cur = await conn.execute(
            "INSERT INTO account_charges (account_id, kind, description, amount_micros,"
            " charge_date, reference, created_by) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (reference) DO NOTHING RETURNING id",
            (*wanted, reference, who),
        )
        created = await cur.fetchone() is not None
        cur = await conn.execute(
            f"SELECT {_CHARGE_COLUMNS} FROM account_charges c"
            " LEFT JOIN invoices i ON i.id = c.invoice_id WHERE c.reference = %s",
            (reference,),
        )
        row = await cur.fetchone()
        assert row is not None
        charge = _charge(row)
        found = (charge.account_id, charge.kind, charge.description, charge.amount_micros)
        if (*found, charge.charge_date) != wanted:
            raise Conflict(
                f"reference {reference!r} was used for another {charge.kind} of account"
                f" {charge.account_id}; use a new reference"
            )
        return charge, created

    result: tuple[Charge, bool] = await db.run(work)
    return result


async def list_charges(db: BillingDB, account_id: str) -> list[Charge]:
    async def work(conn: Conn) -> list[Charge]:
        cur = await conn.execute(
            f"SELECT {_CHARGE_COLUMNS} FROM account_charges c"
            " LEFT JOIN invoices i ON i.id = c.invoice_id"
            " WHERE c.account_id = %s ORDER BY c.id",
            (account_id,),
        )
        return [_charge(r) for r in await cur.fetchall()]

    result: list[Charge] = await db.run(work)
    return result


# -- what an invoice run bills ----------------------------------------------------------


async def running_subscriptions(
    conn: Conn, account_ids: Sequence[str], period: Period
) -> dict[str, list[Subscription]]:
    """Subscriptions of these accounts that run on some day of the period."""
    cur = await conn.execute(
        f"SELECT {_SUB_COLUMNS} FROM subscriptions WHERE account_id = ANY(%s)"
        " AND starts_on < %s AND (ends_on IS NULL OR ends_on >= %s) ORDER BY id",
        (list(account_ids), period.end_day, period.first_day),
    )
    found: dict[str, list[Subscription]] = {}
    for row in await cur.fetchall():
        sub = _subscription(row)
        found.setdefault(sub.account_id, []).append(sub)
    return found


async def open_charges(
    conn: Conn, account_ids: Sequence[str], period: Period
) -> dict[str, list[Charge]]:
    """Charges and credits not billed yet, dated before the end of the period."""
    cur = await conn.execute(
        f"SELECT {_CHARGE_COLUMNS} FROM account_charges c"
        " LEFT JOIN invoices i ON i.id = c.invoice_id"
        " WHERE c.invoice_id IS NULL AND c.account_id = ANY(%s) AND c.charge_date < %s"
        " ORDER BY c.id",
        (list(account_ids), period.end_day),
    )
    found: dict[str, list[Charge]] = {}
    for row in await cur.fetchall():
        charge = _charge(row)
        found.setdefault(charge.account_id, []).append(charge)
    return found


async def mark_billed(conn: Conn, billed: dict[int, Sequence[int]]) -> None:
    """invoice id -> the charge ids it billed (in the issuing transaction).

    Raises Conflict (the transaction rolls back) if another run billed one meanwhile.
    """
    invoice_ids = [i for i, ids in billed.items() for _ in ids]
    charge_ids = [c for ids in billed.values() for c in ids]
    if not charge_ids:
        return
    cur = await conn.execute(
        "UPDATE account_charges c SET invoice_id = b.invoice_id"
        " FROM unnest(%s::bigint[], %s::bigint[]) AS b(invoice_id, charge_id)"
        " WHERE c.id = b.charge_id AND c.invoice_id IS NULL",
        (invoice_ids, charge_ids),
    )
    if cur.rowcount != len(charge_ids):
        raise Conflict("a charge was billed by another run meanwhile; nothing issued, run again")
