"""Tariff files: the native TOML format (docs/tariffs.md) and a CGRateS TP directory.

`load_plan` dispatches on the path: a file is the native format, a directory a
CGRateS tariff plan (chargingd.rating.loaders.cgrates). Errors name the file, line or key path.
"""

from __future__ import annotations

from pathlib import Path

from chargingd.rating.model import TariffPlan


class TariffLoadError(ValueError):
    """A tariff that cannot be loaded: names the file, the line or key path, the reason."""

    def __init__(self, file: str | Path, reason: str, *, line: int | None = None, key: str = ""):
        self.file = str(file)
        self.line = line
        self.key = key
        self.reason = reason
        where = self.file + (f":{line}" if line else "") + (f": {key}" if key else "")
        super().__init__(f"{where}: {reason}")


def load_plan(path: str | Path, *, rounding_decimals: int | None = None) -> TariffPlan:
    """Load a native tariff file, or a CGRateS TP directory (CGRateS pricing mode)."""
    path = Path(path)
    if path.is_dir():
        from chargingd.rating.loaders import cgrates

        plan: TariffPlan = cgrates.load_tp_dir(path, rounding_decimals=rounding_decimals)
        return plan
    from chargingd.rating.loaders.native import load_native

    return load_native(path, rounding_decimals=rounding_decimals)
