"""ISO 4217 minor units, and how `[invoicing] minor_unit_decimals` overrides them."""

from __future__ import annotations

import pytest

from chargingd.core.config import ConfigError, config_from_dict
from chargingd.core.currencies import ISO_4217, MINOR_UNITS, minor_unit

# List One's codes without a minor unit ("N.A."): precious metals, bond-market units,
# the SDR, the SUCRE and the ADB unit of account.
NO_MINOR_UNIT = {"XAG", "XAU", "XBA", "XBB", "XBC", "XBD", "XDR", "XPD", "XPT", "XSU", "XUA"}


def test_every_code_of_list_one_has_its_minor_unit() -> None:
    assert set(MINOR_UNITS) == ISO_4217 - NO_MINOR_UNIT
    by_unit: dict[int, set[str]] = {}
    for code, unit in MINOR_UNITS.items():
        by_unit.setdefault(unit, set()).add(code)
    assert by_unit[0] == {
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI",
        "VND", "VUV", "XAF", "XOF", "XPF",
    }  # fmt: skip
    assert by_unit[3] == {"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"}
    assert by_unit[4] == {"CLF", "UYW"}
    assert set(by_unit) == {0, 2, 3, 4}
    assert (minor_unit("EUR"), minor_unit("XAU"), minor_unit("HRK")) == (2, 2, 2)


def test_invoices_round_to_the_currency_unless_the_config_says_one_value() -> None:
    own = config_from_dict({}).invoicing
    assert own.minor_unit_decimals is None
    assert [own.decimals(c) for c in ("EUR", "JPY", "BHD", "CLF")] == [2, 0, 3, 4]
    assert own.overridden("JPY") is None
    # A config written when 2 was the default for all keeps meaning what it says.
    two = config_from_dict({"invoicing": {"minor_unit_decimals": 2}}).invoicing
    assert [two.decimals(c) for c in ("EUR", "JPY", "BHD")] == [2, 2, 2]
    assert two.overridden("EUR") is None
    assert "rounds JPY to 2 decimals, not its own 0" in (two.overridden("JPY") or "")
    with pytest.raises(ConfigError, match=r"minor_unit_decimals must be 0\.\.6"):
        config_from_dict({"invoicing": {"minor_unit_decimals": 7}})
