"""The native tariff file: TOML, documented in docs/tariffs.md, loaded into the rating model.

Every error is a TariffLoadError naming the file, the line (TOML syntax errors,
and the line of the offending table where it can be found) and the key path.
Numbers with a fraction are read as exact Decimals (tomllib parse_float).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import partial
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chargingd.core.currencies import is_known_currency
from chargingd.core.money import PLAIN_DECIMAL
from chargingd.rating.durations import DurationError, parse_duration
from chargingd.rating.loaders.errors import TariffLoadError
from chargingd.rating.model import (
    DEFAULT_MAX_CALL_NS,
    DestinationRate,
    MaxCostStrategy,
    PlanEntry,
    PricingMode,
    Rate,
    RateSlot,
    RatingActivation,
    RatingError,
    RatingPlan,
    RatingProfile,
    RoundingMethod,
)
from chargingd.rating.periods import ANY, TimePeriod, normalize_weekday, parse_time_of_day
from chargingd.rating.plan import TariffPlan
from chargingd.rating.prefixes import PrefixError, PrefixIndex

T = TypeVar("T")
_LINE_RE = re.compile(r"at line (\d+)")
_QUOTED_RE = re.compile(r"'([^']*)'")
_KIND_NAMES: dict[type, str] = {
    int: "an integer",
    str: "a string",
    dict: "a table",
    list: "a list",
    bool: "true or false",
}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_TARIFF_KEYS = {
    "id", "currency", "timezone", "tenant", "category", "pricing", "rounding_decimals",
    "max_call_duration", "destination_files", "rounding", "decimals",
}  # fmt: skip
_PERIOD_KEYS = {"years", "months", "month_days", "week_days", "dates", "start", "end"}
_RATE_KEYS = {"connect_fee", "rate", "unit", "increment", "slots"}
_SLOT_KEYS = {"start", "rate", "unit", "increment"}
_BINDING_KEYS = {
    "destinations", "rate", "period", "weight", "rounding", "decimals", "max_cost",
    "max_cost_strategy", "min_duration",
}  # fmt: skip
_PROFILE_KEYS = {"tenant", "category", "subject", "plan", "from", "fallback_subjects"}
_TOP_KEYS = {"tariff", "destinations", "numbers", "periods", "rates", "plans", "profiles"}


class _Ctx:
    """The file being loaded, for error messages with lines and key paths."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()

    def fail(self, key: str, reason: str, table: str = "", nth: int = 0) -> TariffLoadError:
        line = self._line_of(table, nth)
        if line is not None:
            line = self._line_in_block(line, key, table, reason)
        return TariffLoadError(self.path, reason, line=line, key=key)

    def _line_in_block(self, header: int, key: str, table: str, reason: str) -> int:
        """The line inside the table that starts at ``header`` which the error is about.

        The key's own line (`timezone = ...` for tariff.timezone) or the line holding
        the value the reason quotes ('abc', '-1s'); else the table's header line.
        """
        if not self.lines[header - 1].lstrip().startswith("["):
            return header  # `table = ...` written inline: that line is the place
        block = []
        for number in range(header + 1, len(self.lines) + 1):
            text = self.lines[number - 1].split("#", 1)[0].strip()
            if text.startswith("["):
                break
            block.append((number, text))
        leaf = re.sub(r"\[\d+\]$", "", key.rsplit(".", 1)[-1])
        if key.startswith(f"{table}.") and leaf:
            for number, text in block:
                if re.match(rf'"?{re.escape(leaf)}"?\s*=', text):
                    return number
        quoted = _QUOTED_RE.search(reason)
        if quoted and quoted.group(1):
            value = quoted.group(1)
            for number, text in block:
                if f'"{value}"' in text or f"'{value}'" in text or f"= {value}" in text:
                    return number
        return header

    def _line_of(self, table: str, nth: int) -> int | None:
        """Best effort: the line of the nth [table] / [[table]] header, or of `table = `."""
        if not table:
            return None
        headers = (f"[{table}]", f"[[{table}]]")
        seen = 0
        for number, line in enumerate(self.lines, 1):
            stripped = line.strip().replace(" ", "")
            if stripped.startswith(headers):
                if seen == nth:
                    return number
                seen += 1
        leaf = table.rsplit(".", 1)[-1]
        for number, line in enumerate(self.lines, 1):
            if line.strip().startswith((f"{leaf} =", f"{leaf}=", f'"{leaf}" =')):
                return number
        return None

    def check_keys(self, table: dict[str, Any], allowed: set[str], key: str, nth: int = 0) -> None:
        for name in table:
            if name not in allowed:
                header = re.sub(r"\[\d+\]$", "", key)
                raise self.fail(f"{key}.{name}", f"unknown key {name!r}", header, nth)

    def get(self, table: dict[str, Any], name: str, kind: type[T], key: str, default: T) -> T:
        value = table.get(name, default)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            what = _KIND_NAMES.get(kind, f"a {kind.__name__}")
            raise self.fail(f"{key}.{name}", f"must be {what}", key)
        return value

    def convert(self, key: str, table: str, func: Callable[[], T], nth: int = 0) -> T:
        """Run a conversion; a ValueError becomes a TariffLoadError at key."""
        try:
            return func()
        except (ValueError, TypeError, InvalidOperation, RatingError) as exc:
            raise self.fail(key, str(exc), table, nth) from None


def load_native(path: str | Path, *, rounding_decimals: int | None = None) -> TariffPlan:
    """Load a native TOML tariff file into a TariffPlan."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TariffLoadError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(text, parse_float=_plain_float)
    except _NotPlain as exc:
        raise TariffLoadError(path, str(exc), line=_line_of_literal(text, exc.literal)) from None
    except tomllib.TOMLDecodeError as exc:
        found = _LINE_RE.search(str(exc))
        raise TariffLoadError(path, str(exc), line=int(found.group(1)) if found else None) from None
    except UnicodeDecodeError as exc:
        raise TariffLoadError(path, f"not UTF-8: {exc}") from None
    ctx = _Ctx(path, text)
    ctx.check_keys(data, _TOP_KEYS, "(top)")
    return _build(ctx, data, rounding_decimals)


def _build(ctx: _Ctx, data: dict[str, Any], rounding_decimals: int | None) -> TariffPlan:
    meta = ctx.get(data, "tariff", dict, "", {})
    ctx.check_keys(meta, _TARIFF_KEYS, "tariff")
    defaults = _defaults(ctx, meta)
    destinations = _destinations(ctx, data, meta)
    periods = _periods(ctx, ctx.get(data, "periods", dict, "", {}))
    rates = _rates(ctx, ctx.get(data, "rates", dict, "", {}))
    plans = _plans(ctx, ctx.get(data, "plans", dict, "", {}), rates, periods, defaults)
    known = destinations.destination_ids() | {"*any"}
    for plan in plans.values():
        for dest in plan.entries:
            if dest not in known:
                raise ctx.fail(
                    f"plans.{plan.id}", f"unknown destination {dest!r}", f"plans.{plan.id}"
                )
    tenant = ctx.get(meta, "tenant", str, "tariff", "")
    profiles = _profiles(ctx, data.get("profiles", []), plans, tenant, meta)
    pricing = ctx.get(meta, "pricing", str, "tariff", "exact")
    mode = ctx.convert("tariff.pricing", "tariff", lambda: PricingMode(pricing))
    digits = ctx.get(meta, "rounding_decimals", int, "tariff", 5)
    max_call = ctx.get(meta, "max_call_duration", str, "tariff", "")
    max_call_ns = ctx.convert(
        "tariff.max_call_duration", "tariff", lambda: parse_duration(max_call or "0")
    )
    zone = _zone(ctx, meta)
    currency = _currency(ctx, meta)
    return ctx.convert(
        "tariff",
        "tariff",
        lambda: TariffPlan(
            id=ctx.get(meta, "id", str, "tariff", ctx.path.stem),
            destinations=destinations,
            profiles=profiles,
            timezone=zone,
            mode=mode,
            rounding_decimals=digits if rounding_decimals is None else rounding_decimals,
            default_tenant=tenant,
            max_call_ns=max_call_ns or DEFAULT_MAX_CALL_NS,
            currency=currency,
        ),
    )


def _defaults(ctx: _Ctx, meta: dict[str, Any]) -> tuple[RoundingMethod, int]:
    method = ctx.get(meta, "rounding", str, "tariff", "half-up")
    parsed = ctx.convert("tariff.rounding", "tariff", lambda: RoundingMethod.parse(method))
    return parsed, ctx.get(meta, "decimals", int, "tariff", 4)


def _currency(ctx: _Ctx, meta: dict[str, Any]) -> str:
    """The ISO 4217 code the prices are in ("" = any). Live credit control refuses the
    calls of an account in another currency: "eur" or "EURO" would refuse every call."""
    code = ctx.get(meta, "currency", str, "tariff", "")
    if code and not is_known_currency(code):
        raise ctx.fail(
            "tariff.currency", f"{code!r} is not an ISO 4217 currency code (EUR, USD...)", "tariff"
        )
    return code


def _zone(ctx: _Ctx, meta: dict[str, Any]) -> ZoneInfo:
    name = ctx.get(meta, "timezone", str, "tariff", "UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ctx.fail("tariff.timezone", f"unknown time zone {name!r}", "tariff") from None


def _destinations(ctx: _Ctx, data: dict[str, Any], meta: dict[str, Any]) -> PrefixIndex:
    index = PrefixIndex()
    for name, prefixes in ctx.get(data, "destinations", dict, "", {}).items():
        key = f"destinations.{name}"
        if not isinstance(prefixes, list) or not all(isinstance(p, str) for p in prefixes):
            raise ctx.fail(key, 'must be a list of prefix strings, e.g. ["447"]', key)
        ctx.convert(key, key, partial(index.add_many, name, prefixes))
    # Whole numbers, matched exactly: short codes and extensions as the daemon reads
    # them from a gateway of its country (4711 from DE: +494711), which as prefixes
    # would also match every longer number beginning so.
    for name, numbers in ctx.get(data, "numbers", dict, "", {}).items():
        key = f"numbers.{name}"
        if not isinstance(numbers, list) or not all(isinstance(n, str) for n in numbers):
            raise ctx.fail(key, 'must be a list of whole numbers, e.g. ["+494711"]', key)
        for number in numbers:
            ctx.convert(key, key, partial(index.add_whole, number, name))
    for number, deck in enumerate(ctx.get(meta, "destination_files", list, "tariff", [])):
        key = f"tariff.destination_files[{number}]"
        if not isinstance(deck, str):
            raise ctx.fail(key, "must be a file name", "tariff")
        try:
            index.load_deck(ctx.path.parent / deck)
        except OSError as exc:
            raise ctx.fail(key, f"cannot read {deck}: {exc.strerror or exc}", "tariff") from None
        except PrefixError as exc:
            raise TariffLoadError(ctx.path.parent / deck, str(exc), key=key) from None
    return index


def _int_set(ctx: _Ctx, table: dict[str, Any], name: str, key: str) -> frozenset[int]:
    values = ctx.get(table, name, list, key, [])
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ctx.fail(f"{key}.{name}", "must be a list of integers", key)
    return frozenset(values)


def _periods(ctx: _Ctx, table: dict[str, Any]) -> dict[str, TimePeriod]:
    periods = {ANY: TimePeriod(ANY)}
    for name, spec in table.items():
        key = f"periods.{name}"
        if not isinstance(spec, dict):
            raise ctx.fail(key, "must be a table", key)
        ctx.check_keys(spec, _PERIOD_KEYS, key)
        periods[name] = ctx.convert(key, key, partial(_period, ctx, name, spec, key))
    return periods


def _period(ctx: _Ctx, name: str, spec: dict[str, Any], key: str) -> TimePeriod:
    days = ctx.get(spec, "dates", list, key, [])
    dates = frozenset(d if isinstance(d, date) else date.fromisoformat(d) for d in days)
    week_days = frozenset(normalize_weekday(d) for d in _int_set(ctx, spec, "week_days", key))
    return TimePeriod(
        name,
        years=_int_set(ctx, spec, "years", key),
        months=_int_set(ctx, spec, "months", key),
        month_days=_int_set(ctx, spec, "month_days", key),
        week_days=week_days,
        dates=dates,
        start_s=parse_time_of_day(ctx.get(spec, "start", str, key, "00:00")),
        end_s=parse_time_of_day(ctx.get(spec, "end", str, key, "24:00")),
    )


class _NotPlain(ValueError):
    """A TOML number written with an exponent or a sign "+" (money is written plainly)."""

    def __init__(self, literal: str) -> None:
        super().__init__(f"{literal} is not an amount: write it as a plain decimal such as 0.05")
        self.literal = literal


def _plain_float(text: str) -> Decimal:
    if not PLAIN_DECIMAL.fullmatch(text.replace("_", "")):
        raise _NotPlain(text)
    return Decimal(text.replace("_", ""))


def _line_of_literal(text: str, literal: str) -> int | None:
    """The first line holding `literal` as a TOML value (after `=`, `[`, `,` or `{`,
    outside a comment): tomllib's parse_float is told the number, not where it is. The
    first such line is the one tomllib met first (it reads the file in order)."""
    value = re.compile(r"(?:^|[=\[,{])\s*" + re.escape(literal) + r"\s*(?:$|[\],}])")
    for number, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0]
        if value.search(code):
            return number
    return None


def _money(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise ValueError(f'{value!r} is not an amount (write it as 0.05 or "0.05")')
    if isinstance(value, str) and not PLAIN_DECIMAL.fullmatch(value):
        # One way to write money (issue 9): no exponent, sign "+" or spaces.
        raise ValueError(f"{value!r} is not an amount: write it as a plain decimal such as 0.05")
    try:
        return Decimal(value)
    except InvalidOperation:
        raise ValueError(f"{value!r} is not an amount (write it as 0.05)") from None


def _duration(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DurationError(f'{value!r} is not a duration (write it as "60s")')
    return parse_duration(value)


def _rates(ctx: _Ctx, table: dict[str, Any]) -> dict[str, Rate]:
    rates = {}
    for name, spec in table.items():
        key = f"rates.{name}"
        if not isinstance(spec, dict):
            raise ctx.fail(key, "must be a table", key)
        ctx.check_keys(spec, _RATE_KEYS, key)
        rates[name] = ctx.convert(key, key, partial(_rate, name, spec))
    return rates


def _rate(name: str, spec: dict[str, Any]) -> Rate:
    rows = spec.get("slots")
    if rows is None:
        rows = [{k: spec[k] for k in ("rate", "unit", "increment") if k in spec}]
    elif "rate" in spec or not isinstance(rows, list):
        raise ValueError("give either rate/unit/increment or a list of slots, not both")
    slots = []
    for number, row in enumerate(rows):
        if not isinstance(row, dict) or set(row) - _SLOT_KEYS or "rate" not in row:
            raise ValueError(f"slot {number}: needs rate (and start, unit, increment) only")
        unit = _duration(row.get("unit", "60s"))
        slots.append(
            RateSlot(
                _duration(row.get("start", "0s")),
                _money(row["rate"]),
                unit,
                _duration(row.get("increment", row.get("unit", "60s"))),
            )
        )
    return Rate(name, tuple(slots), _money(spec.get("connect_fee", "0")))


def _plans(
    ctx: _Ctx,
    table: dict[str, Any],
    rates: dict[str, Rate],
    periods: dict[str, TimePeriod],
    defaults: tuple[RoundingMethod, int],
) -> dict[str, RatingPlan]:
    plans = {}
    for name, spec in table.items():
        key = f"plans.{name}"
        if not isinstance(spec, dict) or set(spec) != {"rates"}:
            raise ctx.fail(key, "must hold only [[plans.NAME.rates]] entries", key)
        entries = []
        for number, row in enumerate(ctx.get(spec, "rates", list, key, [])):
            row_key = f"{key}.rates[{number}]"
            if not isinstance(row, dict):
                raise ctx.fail(row_key, "must be a table", f"{key}.rates", number)
            ctx.check_keys(row, _BINDING_KEYS, row_key, number)
            entries += ctx.convert(
                row_key,
                f"{key}.rates",
                partial(_binding, row, rates, periods, defaults, name),
                number,
            )
        plans[name] = RatingPlan.build(name, entries)
    return plans


def _binding(
    row: dict[str, Any],
    rates: dict[str, Rate],
    periods: dict[str, TimePeriod],
    defaults: tuple[RoundingMethod, int],
    plan: str,
) -> list[PlanEntry]:
    if row.get("rate") not in rates:
        raise ValueError(f"unknown rate {row.get('rate')!r}")
    period_name = row.get("period", ANY)
    if period_name not in periods:
        raise ValueError(f"unknown period {period_name!r}")
    dests = row.get("destinations")
    if not isinstance(dests, list) or not dests or not all(isinstance(d, str) for d in dests):
        raise ValueError('destinations must be a non-empty list of names, e.g. ["UK_MOBILE"]')
    weight = row.get("weight", 0)
    if isinstance(weight, bool) or not isinstance(weight, (int, Decimal)):
        raise ValueError("weight must be a number")
    decimals = row.get("decimals", defaults[1])
    if isinstance(decimals, bool) or not isinstance(decimals, int):
        raise ValueError("decimals must be an integer")
    max_cost = row.get("max_cost")
    common = {
        "rate": rates[row["rate"]],
        "rounding_method": RoundingMethod.parse(str(row.get("rounding", defaults[0]))),
        "rounding_decimals": decimals,
        "max_cost": None if max_cost is None else _money(max_cost),
        "max_cost_strategy": MaxCostStrategy.parse(str(row.get("max_cost_strategy", "free"))),
        "min_duration_ns": _duration(row.get("min_duration", 0)),
        "id": f"{plan}:{row['rate']}",
    }
    period = periods[period_name]
    return [
        PlanEntry(DestinationRate(destination_id=d, **common), period, float(weight))  # type: ignore[arg-type]
        for d in dests
    ]


def _profiles(
    ctx: _Ctx, rows: object, plans: dict[str, RatingPlan], tenant: str, meta: dict[str, Any]
) -> list[RatingProfile]:
    if not isinstance(rows, list):
        raise ctx.fail("profiles", "must be an array of [[profiles]] tables", "profiles")
    grouped: dict[tuple[str, str, str], list[RatingActivation]] = {}
    default_category = ctx.get(meta, "category", str, "tariff", "call")
    for number, row in enumerate(rows):
        key = f"profiles[{number}]"
        if not isinstance(row, dict):
            raise ctx.fail(key, "must be a table", "profiles", number)
        ctx.check_keys(row, _PROFILE_KEYS, key, number)
        plan_name = row.get("plan")
        if plan_name not in plans:
            raise ctx.fail(f"{key}.plan", f"unknown plan {plan_name!r}", "profiles", number)
        activation = ctx.convert(
            key, "profiles", partial(_activation, row, plans[plan_name]), number
        )
        subject = row.get("subject", "*any")
        ident = (str(row.get("tenant", tenant)), str(row.get("category", default_category)))
        grouped.setdefault((*ident, str(subject)), []).append(activation)
    if not grouped:
        raise ctx.fail("profiles", "no [[profiles]]: nobody could be rated", "")
    return [RatingProfile(t, c, s, tuple(acts)) for (t, c, s), acts in grouped.items()]


def _activation(row: dict[str, Any], plan: RatingPlan) -> RatingActivation:
    when = row.get("from", _EPOCH)
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    if isinstance(when, date) and not isinstance(when, datetime):
        when = datetime(when.year, when.month, when.day, tzinfo=UTC)
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise ValueError("from must be a date-time with a UTC offset, e.g. 2026-01-01T00:00:00Z")
    fallbacks = row.get("fallback_subjects", [])
    if not isinstance(fallbacks, list) or not all(isinstance(s, str) for s in fallbacks):
        raise ValueError("fallback_subjects must be a list of subjects")
    return RatingActivation(when, plan, tuple(fallbacks))
