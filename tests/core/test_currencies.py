"""ISO 4217 minor units."""

from __future__ import annotations

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
