"""`chargingd ctl` commands of invoicing: payments, subscriptions, charges and credits,
an account's billing profile. Each builds one JSON-RPC request (admin/billing.py)."""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Callable
from datetime import date
from typing import Any

from rich.console import Console
from rich.table import Table

from chargingd.core.money import AmountError, parse_amount

Request = tuple[str, dict[str, Any]]


class BillingUsageError(ValueError):
    """A bad argument found before anything is sent."""


def _amount(text: str) -> str:
    try:
        if parse_amount(text) <= 0:
            raise BillingUsageError("the amount must be positive")
    except AmountError as exc:
        raise BillingUsageError(str(exc)) from None
    return text


def _common(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    if getattr(args, "reason", None):
        params["reason"] = args.reason
    if args.operator:
        params["operator"] = args.operator
    return params


def req_payment_add(args: argparse.Namespace) -> Request:
    params = {
        "id": args.account,
        "amount": _amount(args.amount),
        "invoice": args.invoice,
        "reference": args.ref,
    }
    return "payment.add", _common(args, params)


def req_payment_list(args: argparse.Namespace) -> Request:
    return "payment.list", {"id": args.account}


def req_subscription_add(args: argparse.Namespace) -> Request:
    params: dict[str, Any] = {
        "id": args.account,
        "description": args.description,
        "amount": _amount(args.amount),
        "starts_on": args.start,
        "quantity": args.quantity,
    }
    if args.end:
        params["ends_on"] = args.end
    return "subscription.add", _common(args, params)


def req_subscription_end(args: argparse.Namespace) -> Request:
    return "subscription.end", _common(args, {"subscription": args.id, "ends_on": args.on})


def req_subscription_list(args: argparse.Namespace) -> Request:
    return "subscription.list", {"id": args.account}


def _charge(kind: str) -> Callable[[argparse.Namespace], Request]:
    def build(args: argparse.Namespace) -> Request:
        params: dict[str, Any] = {
            "id": args.account,
            "kind": kind,
            "amount": _amount(args.amount),
            "description": args.description,
            "reference": args.ref or f"ctl-{uuid.uuid4().hex}",
        }
        if args.date:
            params["date"] = args.date
        return "charge.add", _common(args, params)

    return build


def req_charge_list(args: argparse.Namespace) -> Request:
    return "charge.list", {"id": args.account}


def req_billing_show(args: argparse.Namespace) -> Request:
    return "billing.get", {"id": args.account}


def _flag(value: str | None) -> bool | None:
    return None if value is None else value == "yes"


def req_billing_set(args: argparse.Namespace) -> Request:
    fields: dict[str, Any] = {
        "billing_day": args.billing_day,
        "customer_name": args.name,
        "customer_address": args.address,
        "email": args.email,
        "country": args.country,
        "tax_mode": args.tax_mode,
        "vat_id": args.vat_id,
        "tax_note": args.tax_note,
        "payment_terms_days": args.terms,
        "zero_invoices": _flag(args.zero_invoices),
        "call_detail": _flag(args.call_detail),
    }
    params = {k: v for k, v in fields.items() if v is not None}
    if args.vat_rate is not None:
        params["vat_rate"] = None if args.vat_rate == "default" else args.vat_rate
    if not params:
        raise BillingUsageError("nothing to change: give at least one option")
    return "billing.set", _common(args, {"id": args.account, **params})


def _day(text: str) -> str:
    """A day YYYY-MM-DD, checked while the options are read: a malformed one is a usage
    error (exit 2, docs/operations.md), not sent for the daemon to refuse (exit 1)."""
    try:
        if len(text) == 10:
            date.fromisoformat(text)
            return text
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"not a date: {text!r} (YYYY-MM-DD)")


def _billing_day(text: str) -> int:
    """--billing-day 1..28, checked before anything is sent (exit 2) as dates are."""
    if text.isdigit() and 1 <= int(text) <= 28:
        return int(text)
    raise argparse.ArgumentTypeError(f"must be a day 1..28, not {text!r}")


def _payment_parsers(sub: Any) -> None:
    payment = sub.add_parser("payment", help="payments of invoices")
    actions = payment.add_subparsers(dest="payment_command", metavar="ACTION", required=True)
    p = actions.add_parser("add", help="record a payment (idempotent on --ref)")
    p.add_argument("account")
    p.add_argument("amount", help="decimal amount, e.g. 119.00")
    p.add_argument("--invoice", required=True, metavar="NUMBER", help="invoice paid")
    p.add_argument("--ref", required=True, help="the payment's own reference (bank txn id)")
    p.set_defaults(build=req_payment_add)
    p = actions.add_parser("list", help="payments of an account")
    p.add_argument("account")
    p.set_defaults(build=req_payment_list)


def _subscription_parsers(sub: Any) -> None:
    s = sub.add_parser("subscription", help="recurring charges (monthly, prorated by day)")
    actions = s.add_subparsers(dest="subscription_command", metavar="ACTION", required=True)
    p = actions.add_parser("add", help="attach a recurring monthly charge")
    p.add_argument("account")
    p.add_argument("amount", help="monthly price per unit, e.g. 9.90")
    p.add_argument("--description", required=True, help='e.g. "DID rental +49 30 1234"')
    p.add_argument(
        "--from", dest="start", required=True, type=_day, metavar="DATE", help="first day"
    )
    p.add_argument("--to", dest="end", type=_day, metavar="DATE", help="last day (included)")
    p.add_argument("--quantity", type=int, default=1, help="units (channels, numbers)")
    p.set_defaults(build=req_subscription_add)
    p = actions.add_parser("end", help="set the last day of a subscription")
    p.add_argument("id", type=int, help="subscription id")
    p.add_argument(
        "--on", required=True, type=_day, metavar="DATE", help="last day billed (included)"
    )
    p.set_defaults(build=req_subscription_end)
    p = actions.add_parser("list", help="subscriptions of an account")
    p.add_argument("account")
    p.set_defaults(build=req_subscription_list)


def _charge_parsers(sub: Any) -> None:
    for name, help_text in (
        ("charge", "one-off charges (setup fee) billed on the next invoice"),
        ("credit", "one-off credits billed on the next invoice"),
    ):
        c = sub.add_parser(name, help=help_text)
        actions = c.add_subparsers(dest=f"{name}_command", metavar="ACTION", required=True)
        p = actions.add_parser("add", help=f"add a {name} (idempotent on --ref)")
        p.add_argument("account")
        p.add_argument("amount", help="decimal amount, e.g. 49.00")
        p.add_argument("--description", required=True)
        p.add_argument("--date", type=_day, metavar="DATE", help="default: today")
        p.add_argument("--ref", help="reference; default: a new one")
        p.set_defaults(build=_charge(name))
        p = actions.add_parser("list", help="charges and credits of an account")
        p.add_argument("account")
        p.set_defaults(build=req_charge_list)


def _billing_parsers(sub: Any) -> None:
    b = sub.add_parser("billing", help="an account's billing profile (cycle, customer, tax)")
    actions = b.add_subparsers(dest="billing_command", metavar="ACTION", required=True)
    p = actions.add_parser("show", help="the billing profile")
    p.add_argument("account")
    p.set_defaults(build=req_billing_show)
    p = actions.add_parser("set", help="change the billing profile")
    p.add_argument("account")
    p.add_argument(
        "--billing-day", type=_billing_day, help="day of the month periods start (1..28)"
    )
    p.add_argument("--name", help="customer name printed on invoices")
    p.add_argument("--address", action="append", help="address line (repeat per line)")
    p.add_argument("--email")
    p.add_argument("--country", help="ISO 3166 code, e.g. DE (picks the VAT rate)")
    p.add_argument("--tax-mode", choices=["standard", "exempt", "reverse_charge"])
    p.add_argument("--vat-rate", help='percent, e.g. 19, or "default" (the country\'s)')
    p.add_argument("--vat-id", help="customer VAT id (needed for reverse charge)")
    p.add_argument("--tax-note", help="printed tax note (exemption reason)")
    p.add_argument("--terms", type=int, help="payment terms in days")
    p.add_argument("--zero-invoices", choices=["yes", "no"], help="issue zero-amount invoices")
    p.add_argument("--call-detail", choices=["yes", "no"], help="call-detail appendix in PDFs")
    p.set_defaults(build=req_billing_set)


def add_parsers(sub: Any) -> None:
    """The invoicing commands of `ctl`."""
    _payment_parsers(sub)
    _subscription_parsers(sub)
    _charge_parsers(sub)
    _billing_parsers(sub)


# -- rendering --------------------------------------------------------------------------


def _kv(console: Console, title: str, data: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in data.items():
        shown = "-" if value is None or value == "" else value
        table.add_row(key, ", ".join(shown) if isinstance(shown, list) else str(shown))
    console.print(table)


def _rows(console: Console, title: str, rows: list[dict[str, Any]]) -> None:
    if not rows:
        console.print(f"{title}: none")
        return
    table = Table(title=title)
    for key in rows[0]:
        table.add_column(key)
    for row in rows:
        table.add_row(*("-" if v is None else str(v) for v in row.values()))
    console.print(table)


def _subscription(console: Console, result: dict[str, Any]) -> None:
    """A subscription; the issued invoices that bill it otherwise than it now runs (the
    warnings saying what to issue go to stderr, as every ctl warning)."""
    shown = {k: v for k, v in result.items() if k not in ("issued_invoices", "warnings")}
    _kv(console, f"subscription {result['subscription']}", shown)
    if result.get("issued_invoices"):
        _rows(console, "issued invoices that bill it otherwise", result["issued_invoices"])


RENDERERS: dict[str, Callable[[Console, Any], None]] = {
    "payment.add": lambda c, r: _kv(c, f"payment {r['reference']}", r),
    "payment.list": lambda c, r: _rows(c, "payments", r["payments"]),
    "subscription.add": _subscription,
    "subscription.end": _subscription,
    "subscription.list": lambda c, r: _rows(c, "subscriptions", r["subscriptions"]),
    "charge.add": lambda c, r: _kv(c, f"{r['kind']} {r['charge']}", r),
    "charge.list": lambda c, r: _rows(c, "charges and credits", r["charges"]),
    "billing.get": lambda c, r: _kv(c, f"billing profile of {r['account']}", r),
    "billing.set": lambda c, r: _kv(c, f"billing profile of {r['account']}", r),
}
