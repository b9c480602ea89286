"""Admin-socket methods of invoicing: billing profiles, subscriptions, one-off charges
and credits, payments. Used by AdminMethods (a mixin: the handlers share its Params,
its ledger and its error boundary).

Amounts are decimal strings like every amount of the socket; dates are YYYY-MM-DD.
Subscriptions and charges belong to postpaid accounts (a prepaid account pays by
top-up); an unknown account is refused before anything is written.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any, Protocol, TypeVar

import psycopg

from chargingd.billing.db import BillingDBError
from chargingd.invoicing import Books, InvoicingError, Refused, backdating
from chargingd.invoicing import charges as ch
from chargingd.invoicing import payments as pay
from chargingd.invoicing import profiles as prof
from chargingd.invoicing.model import Charge, Profile, Subscription, money
from chargingd.invoicing.tax import percent
from chargingd.ledger import Ledger, Mode, UnknownAccount

log = logging.getLogger("chargingd.admin")

# Application codes of invoicing refusals (-32020..-32029); bad parameters are -32602.
INVOICING_CODES = {
    "refused": -32020,
    "not_found": -32021,
    "conflict": -32022,
    "billing_unavailable": -32023,
    "no_billing": -32024,
    "invalid_params": -32602,
}


class InvalidParams(InvoicingError):
    code = "invalid_params"


class BillingUnavailable(InvoicingError):
    code = "billing_unavailable"


class NoBilling(InvoicingError):
    code = "no_billing"


def rpc_code(exc: InvoicingError) -> int:
    """The JSON-RPC error code of an invoicing refusal."""
    return INVOICING_CODES.get(exc.code, INVOICING_CODES["refused"])


class Params(Protocol):
    """What these handlers use of admin.params.Params."""

    raw: dict[str, Any]

    def has(self, name: str) -> bool: ...

    def text(self, name: str, default: str | None = None) -> str: ...

    def ident(self, name: str = "id") -> str: ...

    def integer(
        self, name: str, default: int | None = None, *, lo: int = 0, hi: int = 1 << 31
    ) -> int: ...

    def amount(self, name: str, default: str | None = None, *, negative: bool = False) -> int: ...


_WRITE = frozenset({"operator", "reason"})
BILLING_METHODS: dict[str, tuple[str, frozenset[str]]] = {
    "billing.get": ("billing_get", frozenset({"id"})),
    "billing.set": ("billing_set", _WRITE | {"id"} | prof.FIELDS),
    "subscription.add": (
        "subscription_add",
        _WRITE | {"id", "description", "amount", "starts_on", "ends_on", "quantity"},
    ),
    "subscription.end": ("subscription_end", _WRITE | {"subscription", "ends_on"}),
    "subscription.list": ("subscription_list", frozenset({"id"})),
    "charge.add": (
        "charge_add",
        _WRITE | {"id", "kind", "description", "amount", "date", "reference"},
    ),
    "charge.list": ("charge_list", frozenset({"id"})),
    "payment.add": ("payment_add", _WRITE | {"id", "amount", "invoice", "reference"}),
    "payment.list": ("payment_list", frozenset({"id"})),
}
BILLING_READ_ONLY = frozenset({"billing.get", "subscription.list", "charge.list", "payment.list"})

OpenBooks = Callable[[], Awaitable[Books]]
H = TypeVar("H", bound=Callable[..., Awaitable[Any]])


def billing_errors(handler: H) -> H:
    """Database trouble as a BillingUnavailable (AdminMethods maps InvoicingError)."""

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except (BillingDBError, psycopg.OperationalError) as exc:
            log.error("admin billing request failed, database unavailable: %s", exc)
            raise BillingUnavailable(f"billing database unavailable: {exc}") from None

    return wrapper  # type: ignore[return-value]


def render_profile(p: Profile) -> dict[str, Any]:
    return {
        "account": p.account_id,
        "billing_day": p.billing_day,
        "customer_name": p.customer_name,
        "customer_address": list(p.customer_address),
        "email": p.email,
        "country": p.country,
        "tax_mode": p.tax_mode,
        "vat_rate": None if p.vat_rate_ppm is None else percent(p.vat_rate_ppm),
        "vat_id": p.vat_id,
        "tax_note": p.tax_note,
        "payment_terms_days": p.payment_terms_days,
        "zero_invoices": p.zero_invoices,
        "call_detail": p.call_detail,
    }


def render_subscription(s: Subscription, decimals: int = 2) -> dict[str, Any]:
    """``decimals``: at least those of the account's currency (BillingMethods._places)."""
    return {
        "subscription": s.id,
        "account": s.account_id,
        "description": s.description,
        "amount": money(s.amount_micros, decimals),
        "quantity": s.quantity,
        "starts_on": s.starts_on.isoformat(),
        "ends_on": s.ends_on.isoformat() if s.ends_on else None,
    }


def render_charge(c: Charge, decimals: int = 2) -> dict[str, Any]:
    return {
        "charge": c.id,
        "account": c.account_id,
        "kind": c.kind,
        "description": c.description,
        "amount": money(c.amount_micros, decimals),
        "date": c.charge_date.isoformat(),
        "reference": c.reference,
        "invoice": c.invoice,
    }


def _date(p: Params, name: str, default: date | None = None) -> date:
    if not p.has(name):
        if default is None:
            raise InvalidParams(f"missing parameter {name!r}")
        return default
    try:
        return date.fromisoformat(p.text(name))
    except ValueError:
        raise InvalidParams(f"{name} must be a date YYYY-MM-DD") from None


class BillingMethods:
    """The invoicing handlers of the admin socket (mixed into AdminMethods)."""

    ledger: Ledger
    open_books: OpenBooks | None = None
    _books: Books | None = None

    async def books(self) -> Books:
        if self.open_books is None:
            raise NoBilling("no billing here: this daemon has no billing database")
        if self._books is None:
            self._books = await self.open_books()
        return self._books

    async def _postpaid(self, account_id: str) -> int:
        """The account's invoicing decimals; refused unless it is postpaid."""
        acc = await self.ledger.get_account(account_id)  # UnknownAccount: a clear error
        if acc.mode is not Mode.POSTPAID:
            raise Refused(
                f"account {account_id} is prepaid: subscriptions and charges are billed on"
                " postpaid invoices (a prepaid account pays by top-up)",
            )
        return (await self.books()).cfg.decimals(acc.currency)

    async def _places(self, account_id: str) -> int:
        """Decimals of an account's invoicing amounts: its currency's minor unit (or
        [invoicing] minor_unit_decimals); 2 for an account the ledger does not know."""
        try:
            currency = (await self.ledger.get_account(account_id)).currency
        except UnknownAccount:
            currency = ""
        return (await self.books()).cfg.decimals(currency)

    @billing_errors
    async def billing_get(self, p: Params, who: str) -> Any:
        account_id = p.ident()
        await self.ledger.get_account(account_id)
        return render_profile(await prof.get_profile((await self.books()).db, account_id))

    @billing_errors
    async def billing_set(self, p: Params, who: str) -> Any:
        account_id = p.ident()
        await self.ledger.get_account(account_id)
        changes = {k: v for k, v in p.raw.items() if k in prof.FIELDS}
        profile = await prof.set_profile((await self.books()).db, account_id, changes, who=who)
        return render_profile(profile)

    @billing_errors
    async def subscription_add(self, p: Params, who: str) -> Any:
        account_id = p.ident()
        places = await self._postpaid(account_id)
        books = await self.books()
        sub = await ch.add_subscription(
            books.db,
            account_id,
            description=p.text("description"),
            amount_micros=p.amount("amount"),
            starts_on=_date(p, "starts_on"),
            ends_on=_date(p, "ends_on") if p.has("ends_on") else None,
            quantity=p.integer("quantity", 1, lo=1, hi=1_000_000),
            who=who,
        )
        # Started in a period already invoiced: that invoice does not bill it, nor will
        # any later run (docs/invoicing.md): say so, and how to bill it.
        diffs = await backdating.effects(books, None, sub)
        return render_subscription(sub, places) | backdating.answer(diffs, sub)

    @billing_errors
    async def subscription_end(self, p: Params, who: str) -> Any:
        sub_id = p.integer("subscription", lo=1, hi=1 << 62)
        books = await self.books()
        before, sub = await ch.end_subscription(books.db, sub_id, _date(p, "ends_on"))
        # Ended back to a day an issued invoice covers (or extended into one): the
        # invoice stays as issued; say which, by how much, and what to issue instead.
        diffs = await backdating.effects(books, before, sub)
        answer = render_subscription(sub, await self._places(sub.account_id))
        return answer | backdating.answer(diffs, sub)

    @billing_errors
    async def subscription_list(self, p: Params, who: str) -> Any:
        account_id = p.ident()
        subs = await ch.list_subscriptions((await self.books()).db, account_id)
        places = await self._places(account_id)
        return {"subscriptions": [render_subscription(s, places) for s in subs]}

    @billing_errors
    async def charge_add(self, p: Params, who: str) -> Any:
        account_id = p.ident()
        places = await self._postpaid(account_id)
        books = await self.books()
        charge, created = await ch.add_charge(
            books.db,
            account_id,
            kind=p.text("kind", "charge"),
            description=p.text("description"),
            amount_micros=p.amount("amount"),
            charge_date=_date(p, "date", books.now().date()),
            reference=p.text("reference") if p.has("reference") else f"ctl-{uuid.uuid4().hex}",
            who=who,
        )
        return render_charge(charge, places) | {"created": created}

    @billing_errors
    async def charge_list(self, p: Params, who: str) -> Any:
        account_id = p.ident()
        found = await ch.list_charges((await self.books()).db, account_id)
        places = await self._places(account_id)
        return {"charges": [render_charge(c, places) for c in found]}

    @billing_errors
    async def payment_add(self, p: Params, who: str) -> Any:
        account_id = p.ident()
        await self.ledger.get_account(account_id)
        books = await self.books()
        payment, invoice = await pay.add_payment(
            books,
            account_id,
            p.amount("amount"),
            invoice_number=p.text("invoice"),
            reference=p.text("reference"),
            who=who,
        )
        after = await self.ledger.get_account(account_id)
        places = books.cfg.decimals(payment.currency)
        return {
            "reference": payment.reference,
            "account": payment.account_id,
            "invoice": payment.invoice,
            "amount": money(payment.amount_micros, places),
            "currency": payment.currency,
            "received_at": payment.received_at.isoformat(),
            "created": payment.created,
            "invoice_status": invoice.status,
            "outstanding": money(invoice.outstanding_micros, places),
            "account_status": str(after.status),
            "balance": money(after.balance_micros, places),
        }

    @billing_errors
    async def payment_list(self, p: Params, who: str) -> Any:
        books = await self.books()
        found = await pay.list_payments(books, p.ident())
        return {
            "payments": [
                {
                    "reference": x.reference,
                    "invoice": x.invoice,
                    "amount": money(x.amount_micros, books.cfg.decimals(x.currency)),
                    "currency": x.currency,
                    "received_at": x.received_at.isoformat(),
                }
                for x in found
            ]
        }
