"""Money at the edges: decimal strings in, integer micro-units inside (DESIGN invariant 1)."""

from __future__ import annotations

import re
from decimal import Decimal

from chargingd.core.chain import chained

MICROS_PER_UNIT = 1_000_000
_MAX_DECIMALS = 6
# The largest amount (micro-units) anything may move or state: one value for the
# admin edge, the ledger's checks and its Lua scripts. Redis Lua numbers are doubles,
# exact to 2**53; balances and lifetime totals may reach MAX_TOTAL_MICROS, which the
# ledger's scripts are given (ledger/codec.py prelude) rather than a literal of their own.
MAX_AMOUNT_MICROS = 10**15
MAX_TOTAL_MICROS = 4 * MAX_AMOUNT_MICROS
assert MAX_TOTAL_MICROS < 2**53
MAX_ABS_UNITS = MAX_AMOUNT_MICROS // MICROS_PER_UNIT
# A plain decimal: ASCII digits, an optional "-", an optional "." with digits after it.
# No exponent ("1e3"), no "+", no whitespace, no "_" or non-ASCII digits (Decimal takes
# all of these), no hex, no NaN/Infinity: what an operator types is what is meant.
PLAIN_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?", re.ASCII)
PLAIN_HINT = "digits with an optional '-' and '.', such as 12.50"


class AmountError(ValueError):
    """An amount that is not a decimal string with at most 6 decimals."""


def parse_amount(text: str | int | Decimal, *, allow_negative: bool = True) -> int:
    """Parse a plain decimal amount ("12.50") into integer micro-units, exactly.

    Floats are refused on purpose: 0.1 has no exact binary value. So are "1e3",
    " 1.00" and "+1.00": an amount is written one way only (PLAIN_DECIMAL).
    """
    if isinstance(text, (bool, float)):
        raise AmountError(f"amount must be a decimal string, not {type(text).__name__}")
    if isinstance(text, str) and not PLAIN_DECIMAL.fullmatch(text):
        raise AmountError(f"not a plain decimal amount: {text!r} ({PLAIN_HINT})")
    try:
        value = Decimal(text)
    except (ArithmeticError, ValueError):
        raise chained(AmountError(f"not a decimal amount: {text!r}"), None) from None
    if not value.is_finite():
        raise AmountError(f"not a finite amount: {text!r}")
    if abs(value) * MICROS_PER_UNIT > MAX_AMOUNT_MICROS:
        raise AmountError(f"amount {text!r} is out of range (at most {MAX_ABS_UNITS:.0e} units)")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if exponent < -_MAX_DECIMALS and value != value.quantize(Decimal(1).scaleb(-_MAX_DECIMALS)):
        raise AmountError(f"amount {text!r} has more than {_MAX_DECIMALS} decimals")
    if value < 0 and not allow_negative:
        raise AmountError(f"amount must not be negative: {text!r}")
    return int(value * MICROS_PER_UNIT)


def format_amount(micros: int, decimals: int = 6) -> str:
    """Render micro-units as a decimal string; `decimals` below 6 only trims zeros."""
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), MICROS_PER_UNIT)
    frac_text = f"{frac:06d}"
    keep = max(decimals, len(frac_text.rstrip("0")))
    frac_text = frac_text[:keep]
    return f"{sign}{whole}.{frac_text}" if frac_text else f"{sign}{whole}"
