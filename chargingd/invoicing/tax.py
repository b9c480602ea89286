"""Taxes and the rounding rule of invoices (docs/invoicing.md, "Rounding").

The rule, in integers:
1. A line's exact amount is kept in micro-units (usage: the sum of its CDRs'
   ``charged_micros``); its net amount is that, rounded half away from zero to the
   currency's minor unit (cents for EUR, whole yen for JPY, 0.001 for BHD), once per line.
2. A line's tax is its rounded net amount times the rate, rounded the same way.
3. Subtotal, tax and total are sums of the rounded line figures, so every figure
   printed on an invoice adds up as printed.
Exempt and reverse-charge invoices carry tax 0 and say why (the note, the VAT id).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from chargingd.core.config.invoicing import InvoicingConfig
from chargingd.invoicing.periods import round_half_up_div

PPM = 1_000_000


class TaxMode(enum.StrEnum):
    STANDARD = "standard"
    EXEMPT = "exempt"
    REVERSE_CHARGE = "reverse_charge"


@dataclass(frozen=True)
class TaxProfile:
    """What one invoice charges: the rate (parts per million) and the printed note."""

    mode: TaxMode
    rate_ppm: int
    country: str = ""
    vat_id: str = ""
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": str(self.mode),
            "rate_ppm": self.rate_ppm,
            "rate": percent(self.rate_ppm),
            "country": self.country,
            "vat_id": self.vat_id,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TaxProfile:
        return cls(
            TaxMode(data["mode"]),
            int(data["rate_ppm"]),
            data.get("country", ""),
            data.get("vat_id", ""),
            data.get("note", ""),
        )


def percent(rate_ppm: int) -> str:
    """190000 -> "19", 77000 -> "7.7" (the printed rate)."""
    text = format(Decimal(rate_ppm) / 10_000, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def resolve(
    cfg: InvoicingConfig,
    *,
    mode: str,
    country: str,
    rate_ppm: int | None,
    vat_id: str,
    note: str,
) -> TaxProfile:
    """The tax of an account's billing profile (its own rate, else the country's)."""
    tax_mode = TaxMode(mode)
    if tax_mode is TaxMode.REVERSE_CHARGE:
        return TaxProfile(tax_mode, 0, country, vat_id, note or cfg.reverse_charge_note)
    if tax_mode is TaxMode.EXEMPT:
        return TaxProfile(tax_mode, 0, country, vat_id, note or cfg.exempt_note)
    rate = cfg.vat_ppm(country) if rate_ppm is None else rate_ppm
    return TaxProfile(tax_mode, rate, country, vat_id, note)


def minor_unit_micros(decimals: int) -> int:
    """Micro-units in one minor unit: 10_000 for cents (2 decimals)."""
    return int(10 ** (6 - decimals))


def whole_units(amount_micros: int, decimals: int, rest: int) -> bool:
    """A positive amount in whole minor units (``decimals``), or exactly ``rest``: what
    is left of a document issued when its currency was rounded to more decimals (a
    JPY invoice of 135.81 from before invoices knew the yen has no minor unit)."""
    return amount_micros > 0 and (
        amount_micros % minor_unit_micros(decimals) == 0 or amount_micros == rest
    )


def round_minor(micros: int, decimals: int) -> int:
    """Round micro-units half away from zero to the minor unit (rule 1)."""
    unit = minor_unit_micros(decimals)
    return round_half_up_div(micros, unit) * unit


def line_tax(net_micros: int, rate_ppm: int, decimals: int) -> int:
    """Tax of one rounded net amount (rule 2)."""
    if rate_ppm == 0:
        return 0
    unit = minor_unit_micros(decimals)
    return round_half_up_div(net_micros * rate_ppm, PPM * unit) * unit
