"""Rating: the tariff model and the public pricing API (pure: no I/O, no asyncio).

The model follows CGRateS' tariff plan: destinations (prefix sets, see
rating/prefixes.py), rates made of slots (connect fee; per slot a group interval
start, a price per rate unit and a billing increment), time periods
(rating/periods.py), rating plans binding destinations to destination-rates per
period with weights, and rating profiles choosing a plan per
tenant/category/subject from an activation time. The walk itself lives in
engine.py, pricing on top of it in price.py, and plan.TariffPlan is the entry point;
this module holds the data.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal
from typing import Any, ClassVar

from chargingd.core.money import format_amount
from chargingd.rating.durations import NS_PER_S, format_duration
from chargingd.rating.periods import ANY_PERIOD, TimePeriod
from chargingd.rating.prefixes import ANY_DESTINATION, PrefixIndex

ANY_SUBJECT = "*any"
DEFAULT_MAX_CALL_NS = 3 * 3600 * NS_PER_S  # CGRateS sessions' max_call_duration


class RatingError(Exception):
    """A call that cannot be rated; `code` is stable, never compare messages."""

    code: ClassVar[str] = "rating_error"


class UnknownDestination(RatingError):
    code: ClassVar[str] = "unknown_destination"


class UnknownSubject(RatingError):
    code: ClassVar[str] = "unknown_subject"


class TariffError(RatingError, ValueError):
    """An inconsistent tariff model (a plan naming a missing rate, a bad slot...)."""

    code: ClassVar[str] = "bad_tariff"


class RoundingMethod(enum.StrEnum):
    UP = "up"  # CGRateS *up
    HALF_UP = "half-up"  # CGRateS *middle
    DOWN = "down"  # CGRateS *down

    @classmethod
    def parse(cls, text: str) -> RoundingMethod:
        """Accept native ("half-up") and CGRateS ("*middle") spellings."""
        key = text.strip().lower().lstrip("*").replace("_", "-")
        alias = {"middle": "half-up", "halfup": "half-up", "ceil": "up", "floor": "down"}
        try:
            return cls(alias.get(key, key))
        except ValueError:
            raise ValueError(f"rounding method {text!r} is not up, half-up or down") from None


class MaxCostStrategy(enum.StrEnum):
    FREE = "free"  # CGRateS *free: the cost stops growing at max_cost
    DISCONNECT = "disconnect"  # CGRateS *disconnect: max_usage stops at max_cost

    @classmethod
    def parse(cls, text: str) -> MaxCostStrategy:
        try:
            return cls(text.strip().lower().lstrip("*"))
        except ValueError:
            raise ValueError(f"max cost strategy {text!r} is not free or disconnect") from None


class PricingMode(enum.StrEnum):
    EXACT = "exact"  # exact arithmetic, rounded once on the total
    CGRATES = "cgrates"  # span and increment costs rounded half-up like CGRateS


@dataclass(frozen=True)
class RateSlot:
    """One CGRateS Rates row: from `group_interval_start_ns` of the CALL, `rate` per unit."""

    group_interval_start_ns: int
    rate: Decimal  # price per rate_unit
    rate_unit_ns: int
    rate_increment_ns: int

    def __post_init__(self) -> None:
        if self.group_interval_start_ns < 0:
            raise TariffError("group interval start must not be negative")
        if self.rate_unit_ns <= 0 or self.rate_increment_ns <= 0:
            raise TariffError("rate unit and rate increment must be positive")
        if not self.rate.is_finite() or self.rate < 0:
            raise TariffError(f"rate {self.rate} must be a non-negative decimal")


@dataclass(frozen=True)
class Rate:
    """A connect fee and slots sorted by group interval start (the first starts at 0)."""

    id: str
    slots: tuple[RateSlot, ...]
    connect_fee: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        slots = tuple(sorted(self.slots, key=lambda s: s.group_interval_start_ns))
        if not slots or slots[0].group_interval_start_ns != 0:
            raise TariffError(f"rate {self.id}: the first slot must start at 0s")
        starts = [s.group_interval_start_ns for s in slots]
        if len(set(starts)) != len(starts):
            raise TariffError(f"rate {self.id}: two slots start at the same offset")
        if not self.connect_fee.is_finite() or self.connect_fee < 0:
            raise TariffError(f"rate {self.id}: connect fee must be a non-negative decimal")
        object.__setattr__(self, "slots", slots)


@dataclass(frozen=True)
class DestinationRate:
    """A rate for one destination plus the call-level rules (CGRateS DestinationRates row)."""

    destination_id: str
    rate: Rate
    rounding_method: RoundingMethod = RoundingMethod.HALF_UP
    rounding_decimals: int = 4
    max_cost: Decimal | None = None
    max_cost_strategy: MaxCostStrategy = MaxCostStrategy.FREE
    min_duration_ns: int = 0  # a shorter (non-zero) call is billed as this long
    id: str = ""  # the DestinationRates group id, for breakdowns
    # Which of a call's rates rounds its total: the first of the largest rank (CGRateS
    # GetLongestRounding compares the RoundingDecimals as written). None: the
    # rounding_decimals. A CGRateS rate that does not round (RoundingDecimals 0 or no
    # RoundingMethod) keeps its written decimals here and rounds to micro-units.
    rounding_rank: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.rounding_decimals <= 12:
            raise TariffError("rounding decimals must be 0..12")
        if self.max_cost is not None and (not self.max_cost.is_finite() or self.max_cost < 0):
            raise TariffError("max cost must be a non-negative decimal")
        if self.min_duration_ns < 0:
            raise TariffError("minimum duration must not be negative")
        if self.rounding_rank is not None and not 0 <= self.rounding_rank <= 12:
            raise TariffError("rounding rank must be 0..12")


@dataclass(frozen=True)
class PlanEntry:
    """One RatingPlans row for one destination: its rate in a period, with a weight."""

    destination_rate: DestinationRate
    period: TimePeriod = ANY_PERIOD
    weight: float = 0.0


@dataclass(frozen=True)
class RatingPlan:
    """Destination id -> entries (one per period); `*any` matches every number."""

    id: str
    entries: Mapping[str, tuple[PlanEntry, ...]]

    @classmethod
    def build(cls, plan_id: str, entries: Iterable[PlanEntry]) -> RatingPlan:
        """Group entries by their destination id."""
        grouped: dict[str, list[PlanEntry]] = {}
        for entry in entries:
            grouped.setdefault(entry.destination_rate.destination_id, []).append(entry)
        return cls(plan_id, {k: tuple(v) for k, v in grouped.items()})


@dataclass(frozen=True)
class RatingActivation:
    """From `activation_time` on, `plan` rates the profile; fallbacks when it has no match."""

    activation_time: datetime  # timezone-aware
    plan: RatingPlan
    fallback_subjects: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.activation_time.tzinfo is None:
            raise TariffError("activation time must be timezone-aware")


@dataclass(frozen=True)
class RatingProfile:
    """Which plan rates tenant/category/subject (`*any` subject: everyone else), over time."""

    tenant: str
    category: str
    subject: str
    activations: tuple[RatingActivation, ...]

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.activations, key=lambda a: a.activation_time))
        object.__setattr__(self, "activations", ordered)

    def active_at(self, when: datetime) -> RatingActivation | None:
        """The activation in force at `when` (the latest one not after it)."""
        found = None
        for activation in self.activations:
            if activation.activation_time > when:
                break
            found = activation
        return found


@dataclass(frozen=True)
class CostSpan:
    """One priced part of a call: one rate, one period, one slot."""

    start: datetime
    offset_ns: int  # billed offset from the call start
    usage_ns: int  # real usage inside the span
    billed_ns: int  # usage rounded up to whole increments
    rate_id: str
    period_id: str
    destination_rate_id: str
    rate: Decimal
    rate_unit_ns: int
    increment_ns: int
    increments: int
    connect_fee: Decimal  # non-zero on the first span only
    cost: Decimal  # this span (connect fee excluded); exact to 12 decimals
    increment_cost: Decimal | None = None  # CGRateS mode: the rounded cost of one increment
    plan_id: str = ""  # the rating plan of this span (a call may cross an activation)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "start": self.start.isoformat(),
            "offset": format_duration(self.offset_ns),
            "usage": format_duration(self.usage_ns),
            "billed": format_duration(self.billed_ns),
            "billed_s": _seconds(self.billed_ns),
            "rate_id": self.rate_id,
            "period": self.period_id,
            "destination_rate": self.destination_rate_id,
            "rate": str(self.rate),
            "rate_unit": format_duration(self.rate_unit_ns),
            "increment": format_duration(self.increment_ns),
            "increments": self.increments,
            "connect_fee": str(self.connect_fee),
            "cost": _plain(self.cost),
        }
        out["plan_id"] = self.plan_id
        if self.increment_cost is not None:
            out["increment_cost"] = _plain(self.increment_cost)
        return out


@dataclass(frozen=True)
class CallCost:
    """The price of one call: `cost_micros` is authoritative; spans explain it."""

    cost_micros: int
    usage_ns: int
    billed_ns: int
    destination_id: str
    plan_id: str  # the rating plan used
    spans: tuple[CostSpan, ...]
    matched_prefix: str = ""
    subject: str = ""  # the profile subject that matched (after fallbacks)
    decimals: int = 6  # the rounding decimals applied to the total
    capped: bool = False  # max cost (*free) reached
    tariff_id: str = ""
    mode: PricingMode = PricingMode.EXACT

    @property
    def cost(self) -> str:
        """The cost as a decimal string with the tariff's decimals ("0.70")."""
        return format_amount(self.cost_micros, min(self.decimals, 6))

    def to_json(self) -> dict[str, Any]:
        """JSON-ready: cost as a decimal string plus the span/rate/increment breakdown."""
        return {
            "cost": self.cost,
            "cost_micros": self.cost_micros,
            "usage": format_duration(self.usage_ns),
            "usage_s": _seconds(self.usage_ns),
            "billed": format_duration(self.billed_ns),
            "billed_s": _seconds(self.billed_ns),
            "destination_id": self.destination_id,
            "prefix": self.matched_prefix,
            "plan_id": self.plan_id,
            "subject": self.subject,
            "tariff_id": self.tariff_id,
            "mode": str(self.mode),
            "capped": self.capped,
            "spans": [span.to_json() for span in self.spans],
        }


def _seconds(ns: int) -> str:
    return _plain(Decimal(ns).scaleb(-9))


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


@dataclass
class Tariff:
    """A loaded tariff's data: destinations, plans, profiles and the pricing mode.

    plan.TariffPlan adds the compiled engine and the pricing API on top.
    """

    id: str
    destinations: PrefixIndex
    profiles: Iterable[RatingProfile]
    timezone: tzinfo = UTC
    mode: PricingMode = PricingMode.EXACT
    rounding_decimals: int = 5  # CGRateS' general.rounding_decimals (CGRATES mode)
    default_tenant: str = ""
    max_call_ns: int = DEFAULT_MAX_CALL_NS  # max_usage never answers more than this
    currency: str = ""

    def __post_init__(self) -> None:
        self.profiles = tuple(self.profiles)
        if not 0 <= self.rounding_decimals <= 12:
            raise TariffError("rounding_decimals must be 0..12")


__all__ = [
    "ANY_DESTINATION",
    "ANY_PERIOD",
    "ANY_SUBJECT",
    "CallCost",
    "CostSpan",
    "DestinationRate",
    "MaxCostStrategy",
    "PlanEntry",
    "PrefixIndex",
    "PricingMode",
    "Rate",
    "RateSlot",
    "RatingActivation",
    "RatingError",
    "RatingPlan",
    "RatingProfile",
    "RoundingMethod",
    "Tariff",
    "TariffError",
    "TimePeriod",
    "UnknownDestination",
    "UnknownSubject",
]
