"""The ``[invoicing]`` section: invoice numbering, taxes, payment terms, dunning, issuer.

Loaded by chargingd.core.config; nothing here does I/O. Percentages and amounts are
decimal strings (never floats); they are checked here and turned into integers by
chargingd.invoicing (VAT rates as parts per million).
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

from chargingd.core.currencies import minor_unit
from chargingd.core.numbers import is_iso_country

_SERIES = re.compile(r"[A-Za-z0-9._/-]*(\{year\})?[A-Za-z0-9._/-]*")
_COUNTRY = re.compile(r"[A-Z]{2}")
_PERCENT = re.compile(r"[0-9]{1,3}(\.[0-9]{1,4})?")


def check_country(what: str, country: str) -> None:
    """A customer country is an ISO 3166 alpha-2 code in capitals: "UK" or "XX" would
    silently miss the VAT rate of "GB" (ValueError). It is an address, not a place
    numbers are dialled from: the ISO codes phonenumbers has no plan for (AQ, PN...,
    numbers.ISO_WITHOUT_NUMBERING_PLAN) are countries here."""
    if not _COUNTRY.fullmatch(country) or not is_iso_country(country):
        raise ValueError(
            f"{what} {country!r} is not an ISO 3166 code"
            + (" (the United Kingdom is GB)" if country.upper() == "UK" else "")
        )


def percent_to_ppm(text: str) -> int:
    """ "19" or "7.7" (percent, at most 4 decimals) -> parts per million of the amount."""
    if not _PERCENT.fullmatch(text):
        raise ValueError(f'{text!r} is not a percentage such as "19" or "7.7"')
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a percentage") from None
    if value > 100:
        raise ValueError(f"{text!r}: a tax rate must be between 0 and 100 percent")
    if 0 < value < 1:
        # No VAT or sales tax is below 1 %; "0.19" is a fraction typed for 19 %, and
        # taken as percent it would under-tax every invoice a hundredfold.
        raise ValueError(
            f"{text!r} would be {text} %: rates are in percent "
            f'("{(value * 100).normalize():f}" for {(value * 100).normalize():f} %)'
        )
    return int(value * 10_000)


@dataclass(frozen=True)
class IssuerConfig:
    """Who issues the invoices: printed at the top of every invoice."""

    name: str = ""
    address: tuple[str, ...] = ()
    vat_id: str = ""
    email: str = ""
    phone: str = ""
    # Payment details printed under the totals (IBAN, BIC, bank name).
    bank: str = ""
    # One short line at the bottom of every page (registration, court, directors).
    footer: str = ""


@dataclass(frozen=True)
class InvoicingConfig:
    # Billing periods and due dates are computed in this IANA time zone.
    time_zone: str = "UTC"
    # Number series; "{year}" is the issue year. A number is SERIES-000001.
    invoice_series: str = "INV-{year}"
    credit_note_series: str = "CN-{year}"
    statement_series: str = "STM-{year}"
    number_digits: int = 6
    # Due date = issue time + payment_terms_days (a billing profile may override it).
    payment_terms_days: int = 14
    # Run the dunning loop in `chargingd serve`: a postpaid account whose invoice is
    # unpaid dunning_grace_days after its due date is suspended; paying reactivates it.
    dunning_in_serve: bool = True
    dunning_grace_days: int = 7
    dunning_interval_s: float = 300.0
    # Issue invoices whose total is zero (a billing profile may ask for them anyway).
    zero_amount_invoices: bool = False
    # Issue prepaid statements for periods without any money movement or call.
    empty_statements: bool = False
    # Line amounts, taxes and totals are rounded to the minor unit of the document's
    # currency (ISO 4217: 2 for EUR, 0 for JPY, 3 for BHD; docs/invoicing.md, "Taxes
    # and rounding"). Set, this many decimals apply to every currency instead.
    minor_unit_decimals: int | None = None
    # A period can be invoiced once it ended this long ago (late Stops, mediation files).
    settle_delay_s: int = 3600
    # Earlier periods re-counted at each run: CDRs stored or corrected after their
    # period was invoiced appear as "usage correction" lines.
    late_usage_periods: int = 1
    # Invoices issued per database transaction.
    batch_size: int = 200
    # VAT in percent: by customer country, else the default.
    default_vat_rate: str = "0"
    vat_rates: dict[str, str] = field(default_factory=dict)
    reverse_charge_note: str = (
        "Reverse charge: VAT to be accounted for by the recipient"
        " (Art. 196 Council Directive 2006/112/EC)."
    )
    exempt_note: str = "Exempt from VAT."
    # Destination groups of usage lines: group name -> destination id patterns of the
    # tariff ("*" matches any characters); first matching group wins, in file order.
    # A destination id no group matches is its own group.
    destination_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Most calls listed in a PDF call-detail appendix (the CSV export has them all).
    call_detail_max_rows: int = 5000
    issuer: IssuerConfig = field(default_factory=IssuerConfig)

    def validate(self) -> None:
        try:
            zoneinfo.ZoneInfo(self.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"time_zone {self.time_zone!r} is not an IANA zone") from None
        for name in ("invoice_series", "credit_note_series", "statement_series"):
            value = getattr(self, name)
            if not value or not _SERIES.fullmatch(value):
                raise ValueError(f"{name} must be letters, digits, ._/- and at most one {{year}}")
        if len({self.invoice_series, self.credit_note_series, self.statement_series}) != 3:
            raise ValueError("invoice, credit note and statement series must differ")
        self._validate_numbers()
        for country, rate in {"default": self.default_vat_rate, **self.vat_rates}.items():
            if country != "default":
                check_country("vat_rates key", country)
            percent_to_ppm(rate)
        for group, patterns in self.destination_groups.items():
            if not group.strip() or not patterns or not all(p.strip() for p in patterns):
                raise ValueError(f"destination_groups: {group!r} needs a name and patterns")

    def _validate_numbers(self) -> None:
        if not 1 <= self.number_digits <= 12:
            raise ValueError("number_digits must be 1..12")
        if not 0 <= self.payment_terms_days <= 365 or not 0 <= self.dunning_grace_days <= 365:
            raise ValueError("payment_terms_days and dunning_grace_days must be 0..365")
        if self.dunning_interval_s <= 0:
            raise ValueError("dunning_interval_s must be positive")
        if self.minor_unit_decimals is not None and not 0 <= self.minor_unit_decimals <= 6:
            raise ValueError("minor_unit_decimals must be 0..6")
        if self.settle_delay_s < 0 or not 0 <= self.late_usage_periods <= 12:
            raise ValueError("settle_delay_s must be >= 0 and late_usage_periods 0..12")
        if not 1 <= self.batch_size <= 10_000 or self.call_detail_max_rows < 0:
            raise ValueError("batch_size must be 1..10000, call_detail_max_rows >= 0")

    def decimals(self, currency: str) -> int:
        """What a document in ``currency`` is rounded to: ``minor_unit_decimals`` when the
        config sets it (one value for every currency), else the currency's own minor
        unit (ISO 4217; 2 for a code without one)."""
        if self.minor_unit_decimals is not None:
            return self.minor_unit_decimals
        return minor_unit(currency)

    def overridden(self, currency: str) -> str | None:
        """Why ``currency`` is rounded to other decimals than its own (a note for the
        run's output), else None."""
        own = minor_unit(currency)
        if self.minor_unit_decimals is None or self.minor_unit_decimals == own:
            return None
        return (
            f"[invoicing] minor_unit_decimals = {self.minor_unit_decimals} rounds {currency}"
            f" to {self.minor_unit_decimals} decimals, not its own {own} (ISO 4217):"
            " remove the option to round each currency to its own minor unit"
        )

    def vat_ppm(self, country: str) -> int:
        """The VAT rate of a customer country (parts per million), else the default."""
        return percent_to_ppm(self.vat_rates.get(country, self.default_vat_rate))
