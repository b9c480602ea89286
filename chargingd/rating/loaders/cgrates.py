"""Import a CGRateS tariff plan (TP) directory into chargingd's rating model.

`load_tp_dir` reads Destinations, Timings, Rates, DestinationRates, RatingPlans and
RatingProfiles (chargingd.rating.loaders.cgrates_csv), checks every cross-reference, and returns a
TariffPlan in CGRateS pricing mode, so calls cost what CGRateS charges, to the last
decimal. Other TP files (accounts, actions, chargers...) are listed as ignored.
See docs/cgrates.md for the column-by-column mapping.
"""

from __future__ import annotations

from datetime import UTC, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chargingd.rating.durations import NS_PER_S
from chargingd.rating.loaders.cgrates_csv import (
    ANY,
    CgrDestinationRate,
    CgrRateSlot,
    CgrTariffPlanFiles,
    CgrTiming,
    read_tp_dir,
)
from chargingd.rating.loaders.errors import TariffLoadError
from chargingd.rating.model import (
    DestinationRate,
    MaxCostStrategy,
    PlanEntry,
    PricingMode,
    Rate,
    RateSlot,
    RatingActivation,
    RatingPlan,
    RatingProfile,
    RoundingMethod,
    TariffError,
)
from chargingd.rating.periods import ANY_PERIOD, SECONDS_PER_DAY, TimePeriod, normalize_weekday
from chargingd.rating.plan import TariffPlan
from chargingd.rating.prefixes import PrefixError, PrefixIndex

DEFAULT_ROUNDING_DECIMALS = 5  # CGRateS general.rounding_decimals default
DEFAULT_TENANT = "cgrates.org"  # CGRateS general.default_tenant default
_UNROUNDED_DECIMALS = 6  # RoundingMethod "" (CGRateS: no rounding) -> micro-units

_ROUNDING = {
    "*up": RoundingMethod.UP,
    "*middle": RoundingMethod.HALF_UP,
    "*down": RoundingMethod.DOWN,
}


def load_tp_dir(
    path: str | Path, *, rounding_decimals: int | None = None, timezone: tzinfo | str = UTC
) -> TariffPlan:
    """Load a CGRateS TP directory as a TariffPlan priced the CGRateS way.

    `rounding_decimals` is CGRateS' general.rounding_decimals (default 5): the
    precision of span and increment costs; `timezone` its general.default_timezone
    (Timings and zone-less activation times). Raises TariffLoadError (file, line, reason).
    """
    directory = Path(path)
    decimals = DEFAULT_ROUNDING_DECIMALS if rounding_decimals is None else rounding_decimals
    if not 0 <= decimals <= 12:
        raise TariffLoadError(directory, f"rounding_decimals {decimals} is not 0..12")
    if isinstance(timezone, str):
        try:
            timezone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise TariffLoadError(directory, f"unknown time zone {timezone!r}") from None
    files = read_tp_dir(directory, timezone)
    return _Builder(files).build(decimals, timezone)


class _Builder:
    """Turns parsed TP rows into model objects, memoised by CGRateS id."""

    def __init__(self, files: CgrTariffPlanFiles) -> None:
        self.files = files
        self.dir = files.directory
        self.rates: dict[str, Rate] = {}
        self.periods: dict[str, TimePeriod] = {ANY: ANY_PERIOD}
        self.dest_rates: dict[str, list[DestinationRate]] = {}
        self.plans: dict[str, RatingPlan] = {}

    def build(self, rounding_decimals: int, timezone: tzinfo) -> TariffPlan:
        index = self._destinations()
        for timing in self.files.timings.values():
            self.periods[timing.id] = self._period(timing)
        for rate_id, slots in self.files.rates.items():
            self.rates[rate_id] = self._rate(rate_id, slots)
        for dr_id, rows in self.files.destination_rates.items():
            self.dest_rates[dr_id] = [self._dest_rate(dr_id, row) for row in rows]
        for plan_id in self.files.rating_plans:
            self.plans[plan_id] = self._plan(plan_id)
        profiles = self._profiles()
        tenants = {p.tenant for p in profiles}
        if len(tenants) == 1:
            default_tenant = next(iter(tenants))
        else:
            default_tenant = DEFAULT_TENANT if DEFAULT_TENANT in tenants else ""
        try:
            return TariffPlan(
                id=self.dir.name,
                destinations=index,
                profiles=profiles,
                timezone=timezone,
                mode=PricingMode.CGRATES,
                rounding_decimals=rounding_decimals,
                default_tenant=default_tenant,
            )
        except TariffError as exc:
            raise TariffLoadError(self.dir, str(exc)) from None

    # -- one file each -------------------------------------------------------------

    def _destinations(self) -> PrefixIndex:
        index = PrefixIndex()
        path = self.dir / "Destinations.csv"
        for dest_id, prefixes in self.files.destinations.items():
            for prefix, line in prefixes:
                try:
                    # CGRateS matches any text prefix ("voicemail"), not only digits
                    index.add(prefix, dest_id, digits_only=False)
                except PrefixError as exc:
                    raise TariffLoadError(path, str(exc), line=line) from None
        return index

    def _period(self, timing: CgrTiming) -> TimePeriod:
        # CGRateS' end time is inclusive (IsActiveAt: not after HH:MM:SS), ours exclusive.
        end_s = SECONDS_PER_DAY if timing.end_s is None else timing.end_s + 1
        try:
            return TimePeriod(
                timing.id,
                years=frozenset(timing.years),
                months=frozenset(timing.months),
                month_days=frozenset(timing.month_days),
                week_days=frozenset(normalize_weekday(d) for d in timing.week_days),
                start_s=timing.start_s,
                end_s=end_s,
            )
        except ValueError as exc:
            raise TariffLoadError(self.dir / "Timings.csv", str(exc), line=timing.line) from None

    def _rate(self, rate_id: str, rows: list[CgrRateSlot]) -> Rate:
        # CGRateS (GetRateInterval) takes the connect fee of the rate's first row, and
        # GetRateParameters reads a 0 RateUnit or RateIncrement as one second.
        try:
            slots = tuple(
                RateSlot(
                    group_interval_start_ns=row.group_interval_start_ns,
                    rate=row.rate,
                    rate_unit_ns=row.rate_unit_ns or NS_PER_S,
                    rate_increment_ns=row.rate_increment_ns or NS_PER_S,
                )
                for row in rows
            )
            return Rate(rate_id, slots, connect_fee=rows[0].connect_fee)
        except TariffError as exc:
            raise TariffLoadError(self.dir / "Rates.csv", str(exc), line=rows[0].line) from None

    def _dest_rate(self, dr_id: str, row: CgrDestinationRate) -> DestinationRate:
        path = self.dir / "DestinationRates.csv"
        if row.destination_id != ANY and row.destination_id not in self.files.destinations:
            reason = f"unknown destination {row.destination_id!r} (not in Destinations.csv)"
            raise TariffLoadError(path, reason, line=row.line)
        rate = self.rates.get(row.rate_id)
        if rate is None:
            reason = f"unknown rate {row.rate_id!r} (not in Rates.csv)"
            raise TariffLoadError(path, reason, line=row.line)
        method = _ROUNDING.get(row.rounding_method, RoundingMethod.HALF_UP)
        decimals = row.rounding_decimals
        if not row.rounding_method or decimals == 0:
            # CGRateS does not round such a total: GetLongestRounding takes a span's
            # rounding only for RoundingDecimals > 0 (starting from 0 and no method),
            # and utils.Round without a method returns the value. So 70s at 0.01/s
            # with "*up,0" costs 0.7, not 1. Its rank stays the written decimals: a
            # span of the same call with more decimals rounds the total.
            method = RoundingMethod.HALF_UP
            decimals = max(decimals, _UNROUNDED_DECIMALS)
        # CGRateS ignores MaxCost unless both a strategy and a positive cost are set.
        capped = bool(row.max_cost_strategy) and row.max_cost > 0
        try:
            return DestinationRate(
                destination_id=row.destination_id,
                rate=rate,
                rounding_method=method,
                rounding_decimals=decimals,
                max_cost=row.max_cost if capped else None,
                max_cost_strategy=(
                    MaxCostStrategy.parse(row.max_cost_strategy) if capped else MaxCostStrategy.FREE
                ),
                id=dr_id,
                rounding_rank=row.rounding_decimals,
            )
        except (TariffError, ValueError) as exc:
            raise TariffLoadError(path, str(exc), line=row.line) from None

    def _plan(self, plan_id: str) -> RatingPlan:
        path = self.dir / "RatingPlans.csv"
        entries: list[PlanEntry] = []
        for binding in self.files.rating_plans[plan_id]:
            dest_rates = self.dest_rates.get(binding.destination_rates_id)
            if dest_rates is None:
                reason = f"unknown DestinationRates id {binding.destination_rates_id!r}"
                raise TariffLoadError(path, reason, line=binding.line)
            period = self.periods.get(binding.timing_id)
            if period is None:
                reason = f"unknown timing {binding.timing_id!r} (not in Timings.csv)"
                raise TariffLoadError(path, reason, line=binding.line)
            weight = float(binding.weight)
            entries.extend(PlanEntry(dr, period, weight) for dr in dest_rates)
        return RatingPlan.build(plan_id, entries)

    def _profiles(self) -> list[RatingProfile]:
        path = self.dir / "RatingProfiles.csv"
        grouped: dict[tuple[str, str, str], list[RatingActivation]] = {}
        for row in self.files.rating_profiles:
            plan = self.plans.get(row.rating_plan_id)
            if plan is None:
                reason = f"unknown RatingPlanId {row.rating_plan_id!r} (not in RatingPlans.csv)"
                raise TariffLoadError(path, reason, line=row.line)
            key = (row.tenant, row.category, row.subject)
            activations = grouped.setdefault(key, [])
            if any(a.activation_time == row.activation for a in activations):
                reason = f"{'/'.join(key)} has two rows activated at {row.activation.isoformat()}"
                raise TariffLoadError(path, reason, line=row.line)
            activations.append(RatingActivation(row.activation, plan, row.fallback_subjects))
        if not grouped:
            raise TariffLoadError(path, "no rating profile rows")
        return [RatingProfile(t, c, s, tuple(acts)) for (t, c, s), acts in grouped.items()]


def ignored_files(path: str | Path) -> tuple[str, ...]:
    """The CSV files of a TP directory that the import does not read (accounts, actions...)."""
    directory = Path(path)
    return read_tp_dir(directory).ignored_files


__all__ = ["DEFAULT_ROUNDING_DECIMALS", "ignored_files", "load_tp_dir"]
