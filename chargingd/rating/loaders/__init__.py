"""Tariff files: the native TOML format (docs/tariffs.md) and a CGRateS TP directory.

`load_plan` dispatches on the path: a file is the native format, a directory a
CGRateS tariff plan (chargingd.rating.loaders.cgrates). Errors name the file, line or key path.
"""

from __future__ import annotations

from pathlib import Path

from chargingd.rating.loaders.cgrates import load_tp_dir
from chargingd.rating.loaders.errors import TariffLoadError
from chargingd.rating.loaders.native import load_native
from chargingd.rating.plan import TariffPlan

__all__ = ["TariffLoadError", "load_configured", "load_plan"]


def load_plan(
    path: str | Path, *, rounding_decimals: int | None = None, timezone: str | None = None
) -> TariffPlan:
    """Load a native tariff file, or a CGRateS TP directory (CGRateS pricing mode).

    `timezone` is CGRateS' general.default_timezone for a TP directory (its Timings
    name no zone; default UTC); a native file names its own ([tariff].timezone).
    """
    path = Path(path)
    if path.is_dir():
        if timezone is None:
            return load_tp_dir(path, rounding_decimals=rounding_decimals)
        return load_tp_dir(path, rounding_decimals=rounding_decimals, timezone=timezone)
    if timezone is not None:
        raise TariffLoadError(
            path, "a time zone is given only for a CGRateS TP directory: set [tariff].timezone"
        )
    return load_native(path, rounding_decimals=rounding_decimals)


def load_configured(
    path: str | Path, *, tp_timezone: str = "UTC", tp_rounding_decimals: int | None = None
) -> TariffPlan:
    """A plan of the config ([rating] default_plan / plans, a mediation source's plan):
    a CGRateS TP directory is read with [rating] cgrates_timezone and
    cgrates_rounding_decimals (CGRateS' general settings); a native file with its own
    [tariff] timezone and rounding_decimals."""
    path = Path(path)
    if path.is_dir():
        return load_tp_dir(path, rounding_decimals=tp_rounding_decimals, timezone=tp_timezone)
    return load_native(path)
