"""CGRateS tariff-plan CSV files, parsed into typed rows (no rating logic here).

Reads the six rating files of a CGRateS TP directory: Destinations, Timings, Rates,
DestinationRates, RatingPlans, RatingProfiles. Values keep CGRateS' meaning: durations
are Go durations in nanoseconds (a bare integer is nanoseconds, as in CGRateS'
utils.ParseDurationWithNanosecs), money stays Decimal. chargingd.rating.loaders.cgrates turns these
rows into the rating model. Every bad row raises TariffLoadError naming file, line and reason.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal, InvalidOperation
from pathlib import Path

from chargingd.rating.durations import DurationError, parse_duration
from chargingd.rating.loaders.errors import TariffLoadError

ANY = "*any"
ROUNDING_METHODS = frozenset({"*up", "*middle", "*down"})
MAX_COST_STRATEGIES = frozenset({"", "*free", "*disconnect"})

_CLOCK = re.compile(r"([0-9]{1,2}):([0-9]{1,2}):([0-9]{1,2})")


@dataclass(frozen=True, slots=True)
class CgrTiming:
    """One Timings.csv row; empty tuples mean *any. week_days use Go's 0 = Sunday."""

    id: str
    years: tuple[int, ...]
    months: tuple[int, ...]
    month_days: tuple[int, ...]
    week_days: tuple[int, ...]
    start_s: int  # seconds after midnight
    end_s: int | None  # inclusive end second after midnight, None = end of day
    line: int


@dataclass(frozen=True, slots=True)
class CgrRateSlot:
    """One Rates.csv row (one group of a rate)."""

    connect_fee: Decimal
    rate: Decimal
    rate_unit_ns: int
    rate_increment_ns: int
    group_interval_start_ns: int
    line: int


@dataclass(frozen=True, slots=True)
class CgrDestinationRate:
    """One DestinationRates.csv row; destination_id may be *any."""

    destination_id: str
    rate_id: str
    rounding_method: str  # "" (no rounding), *up, *middle or *down
    rounding_decimals: int
    max_cost: Decimal
    max_cost_strategy: str  # "", *free or *disconnect
    line: int


@dataclass(frozen=True, slots=True)
class CgrRatingPlanBinding:
    """One RatingPlans.csv row; timing_id may be *any."""

    destination_rates_id: str
    timing_id: str
    weight: Decimal
    line: int


@dataclass(frozen=True, slots=True)
class CgrRatingActivation:
    """One RatingProfiles.csv row."""

    tenant: str
    category: str
    subject: str
    activation: datetime
    rating_plan_id: str
    fallback_subjects: tuple[str, ...]
    line: int


@dataclass(slots=True)
class CgrTariffPlanFiles:
    """Everything read from one TP directory, keyed by CGRateS id, rows in file order."""

    directory: Path
    destinations: dict[str, list[tuple[str, int]]]  # id -> (prefix, line)
    timings: dict[str, CgrTiming]
    rates: dict[str, list[CgrRateSlot]]
    destination_rates: dict[str, list[CgrDestinationRate]]
    rating_plans: dict[str, list[CgrRatingPlanBinding]]
    rating_profiles: list[CgrRatingActivation]
    ignored_files: tuple[str, ...]


# ---------------------------------------------------------------- field parsers


def parse_go_duration_ns(text: str) -> int:
    """A CGRateS duration column in nanoseconds: "60s", "1m30s", "1h", "0", "1024" (ns).

    Empty is 0 and a bare integer is nanoseconds (utils.ParseDurationWithNanosecs).
    """
    s = text.strip()
    if s == "":
        return 0
    try:
        return parse_duration(s)
    except DurationError as exc:
        raise ValueError(str(exc)) from None


def parse_decimal(text: str, *, empty: Decimal | None = Decimal(0)) -> Decimal:
    """A decimal amount; empty means `empty` (CGRateS reads an empty number as 0)."""
    s = text.strip()
    if s == "":
        if empty is None:
            raise ValueError("empty number")
        return empty
    try:
        value = Decimal(s)
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"not a finite number: {text!r}")
    return value


def parse_int_list(text: str, lo: int, hi: int, what: str) -> tuple[int, ...]:
    """A `;`-separated list of integers in [lo, hi]; empty or *any gives ()."""
    s = text.strip()
    if s in ("", ANY):
        return ()
    out: list[int] = []
    for item in s.split(";"):
        item = item.strip()
        if not re.fullmatch(r"[0-9]+", item) or not lo <= int(item) <= hi:
            raise ValueError(f"bad {what} {item!r} (want {lo}..{hi}, ';'-separated, or *any)")
        out.append(int(item))
    return tuple(out)


def parse_week_days(text: str) -> tuple[int, ...]:
    """Week days 0..7 where both 0 and 7 are Sunday (CGRateS stores time.Weekday(day % 7))."""
    days = parse_int_list(text, 0, 7, "week day")
    return tuple(sorted({d % 7 for d in days}))


def parse_clock_s(text: str) -> int:
    """HH:MM:SS to seconds after midnight."""
    m = _CLOCK.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"bad time {text!r} (want HH:MM:SS or *asap)")
    h, mi, s = (int(g) for g in m.groups())
    if h > 23 or mi > 59 or s > 59:
        raise ValueError(f"time out of range: {text!r}")
    return h * 3600 + mi * 60 + s


def parse_timing_time(text: str) -> tuple[int, int | None]:
    """The Time column: "HH:MM:SS", "start;end", *asap or empty (from midnight).

    In a rating plan CGRateS' left margin of "*asap" parses to midnight, so *asap
    rates from 00:00:00 (it only means "now" for ActionPlans).
    """
    parts = [p.strip() for p in text.split(";")]
    if len(parts) > 2:
        raise ValueError(f"bad time {text!r}")
    start = parts[0]
    start_s = 0 if start in ("", "*asap", ANY) else parse_clock_s(start)
    end_s = parse_clock_s(parts[1]) if len(parts) == 2 and parts[1] else None
    if end_s is not None and end_s < start_s:
        raise ValueError(f"time range ends before it starts: {text!r}")
    return start_s, end_s


_TIME_LAYOUTS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d")


def parse_activation_time(text: str, tz: tzinfo = UTC) -> datetime:
    """RFC 3339 ("2014-01-14T00:00:00Z"), naive date-times (in `tz`) or Unix seconds.

    Empty is the zero time (always active), as CGRateS' ParseTimeDetectLayout gives.
    """
    s = text.strip()
    if s == "":
        return datetime(1, 1, 1, tzinfo=UTC)
    if re.fullmatch(r"[0-9]{9,11}", s):
        return datetime.fromtimestamp(int(s), tz=UTC)
    try:
        parsed = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None:
        for layout in _TIME_LAYOUTS:
            try:
                parsed = datetime.strptime(s, layout)
                break
            except ValueError:
                continue
    if parsed is None:
        raise ValueError(f"bad activation time {text!r} (want RFC 3339)")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=tz)


def parse_rounding_decimals(text: str) -> int:
    s = text.strip() or "0"
    if not re.fullmatch(r"[0-9]+", s) or int(s) > 12:
        raise ValueError(f"bad RoundingDecimals {text!r} (want 0..12)")
    return int(s)


def require_id(text: str, what: str) -> str:
    s = text.strip()
    if not s:
        raise ValueError(f"empty {what}")
    return s


# ---------------------------------------------------------------- rows


def _error(file: str | Path, line: int, reason: str) -> TariffLoadError:
    return TariffLoadError(file, reason, line=line or None)


def read_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, stripped fields) of each data row; `#` lines and blank lines skipped."""
    name = path
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _error(name, 0, f"not UTF-8 text: {exc}") from None
    except OSError as exc:
        raise _error(name, 0, f"cannot read: {exc.strerror}") from None
    for line_no, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if '"' not in raw:  # the common case, 5x faster than a csv.reader per line
            yield line_no, [f.strip() for f in raw.split(",")]
            continue
        try:
            fields = next(csv.reader([raw], skipinitialspace=True, strict=True))
        except csv.Error as exc:
            raise _error(name, line_no, f"bad CSV: {exc}") from None
        yield line_no, [f.strip() for f in fields]


def header_fields(path: Path) -> list[str]:
    """The column names of the first `#` header line, lower-cased ([] if none)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return []
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            return [f.strip().lower() for f in stripped.lstrip("#").split(",")]
        return []
    return []


def expect_columns(
    name: str | Path, line: int, fields: list[str], allowed: tuple[int, ...]
) -> None:
    if len(fields) not in allowed:
        want = " or ".join(str(n) for n in allowed)
        raise _error(name, line, f"{len(fields)} columns, want {want}")


# ---------------------------------------------------------------- files

RATING_FILES = (
    "Destinations.csv",
    "Timings.csv",
    "Rates.csv",
    "DestinationRates.csv",
    "RatingPlans.csv",
    "RatingProfiles.csv",
)


def _rows(path: Path, allowed: tuple[int, ...]) -> Iterator[tuple[int, list[str]]]:
    for line, fields in read_rows(path):
        expect_columns(path, line, fields, allowed)
        yield line, fields


def load_destinations(path: Path) -> dict[str, list[tuple[str, int]]]:
    """Destinations.csv: Id,Prefix (one prefix per row, rows of one Id accumulate)."""
    out: dict[str, list[tuple[str, int]]] = {}
    for line, (dest_id, prefix) in _rows(path, (2,)):
        try:
            key = require_id(dest_id, "destination Id")
            value = require_id(prefix, "prefix")
        except ValueError as exc:
            raise _error(path, line, str(exc)) from None
        if key == ANY:
            raise _error(path, line, "*any is reserved, not a destination Id")
        out.setdefault(key, []).append((value, line))
    return out


def load_timings(path: Path) -> dict[str, CgrTiming]:
    """Timings.csv: Id,Years,Months,MonthDays,WeekDays,Time."""
    out: dict[str, CgrTiming] = {}
    for line, f in _rows(path, (6,)):
        try:
            tid = require_id(f[0], "timing Id")
            start_s, end_s = parse_timing_time(f[5])
            timing = CgrTiming(
                id=tid,
                years=parse_int_list(f[1], 1, 9999, "year"),
                months=parse_int_list(f[2], 1, 12, "month"),
                month_days=parse_int_list(f[3], 1, 31, "month day"),
                week_days=parse_week_days(f[4]),
                start_s=start_s,
                end_s=end_s,
                line=line,
            )
        except ValueError as exc:
            raise _error(path, line, str(exc)) from None
        if tid == ANY:
            raise _error(path, line, "*any is a built-in timing, not redefinable")
        if tid in out:
            raise _error(path, line, f"timing {tid!r} defined twice")
        out[tid] = timing
    return out


def load_rates(path: Path) -> dict[str, list[CgrRateSlot]]:
    """Rates.csv: Id,ConnectFee,Rate,RateUnit,RateIncrement,GroupIntervalStart."""
    out: dict[str, list[CgrRateSlot]] = {}
    for line, f in _rows(path, (6,)):
        try:
            rid = require_id(f[0], "rate Id")
            slot = CgrRateSlot(
                connect_fee=parse_decimal(f[1]),
                rate=parse_decimal(f[2], empty=None),
                rate_unit_ns=parse_go_duration_ns(f[3]),
                rate_increment_ns=parse_go_duration_ns(f[4]),
                group_interval_start_ns=parse_go_duration_ns(f[5]),
                line=line,
            )
        except ValueError as exc:
            raise _error(path, line, str(exc)) from None
        if slot.connect_fee < 0 or slot.rate < 0:
            raise _error(path, line, "negative ConnectFee or Rate")
        slots = out.setdefault(rid, [])
        if any(s.group_interval_start_ns == slot.group_interval_start_ns for s in slots):
            raise _error(path, line, f"rate {rid!r} has two rows with GroupIntervalStart {f[5]!r}")
        slots.append(slot)
    return out


def load_destination_rates(path: Path) -> dict[str, list[CgrDestinationRate]]:
    """DestinationRates.csv: Id,DestinationId,RatesTag,RoundingMethod,RoundingDecimals,
    MaxCost,MaxCostStrategy (older files stop after RoundingDecimals or MaxCost)."""
    out: dict[str, list[CgrDestinationRate]] = {}
    for line, f in _rows(path, (5, 6, 7)):
        f = [*f, "", ""][:7]
        try:
            row = CgrDestinationRate(
                destination_id=require_id(f[1], "DestinationId"),
                rate_id=require_id(f[2], "RatesTag"),
                rounding_method=f[3],
                rounding_decimals=parse_rounding_decimals(f[4]),
                max_cost=parse_decimal(f[5]),
                max_cost_strategy=f[6],
                line=line,
            )
            drid = require_id(f[0], "destination rate Id")
        except ValueError as exc:
            raise _error(path, line, str(exc)) from None
        if row.rounding_method and row.rounding_method not in ROUNDING_METHODS:
            raise _error(path, line, f"unknown RoundingMethod {row.rounding_method!r}")
        if row.max_cost_strategy not in MAX_COST_STRATEGIES:
            raise _error(path, line, f"unknown MaxCostStrategy {f[6]!r}")
        if row.max_cost < 0:
            raise _error(path, line, "negative MaxCost")
        out.setdefault(drid, []).append(row)
    return out


def load_rating_plans(path: Path) -> dict[str, list[CgrRatingPlanBinding]]:
    """RatingPlans.csv: Id,DestinationRatesId,TimingTag,Weight."""
    out: dict[str, list[CgrRatingPlanBinding]] = {}
    for line, f in _rows(path, (4,)):
        try:
            rpid = require_id(f[0], "rating plan Id")
            row = CgrRatingPlanBinding(
                destination_rates_id=require_id(f[1], "DestinationRatesId"),
                timing_id=require_id(f[2], "TimingTag"),
                weight=parse_decimal(f[3]),
                line=line,
            )
        except ValueError as exc:
            raise _error(path, line, str(exc)) from None
        out.setdefault(rpid, []).append(row)
    return out


def _profile_layout(path: Path) -> bool:
    """True when the file has CGRateS' older leading Direction column (header names it)."""
    header = header_fields(path)
    return bool(header) and header[0] == "direction"


def load_rating_profiles(path: Path, tz: tzinfo = UTC) -> list[CgrRatingActivation]:
    """RatingProfiles.csv: Tenant,Category,Subject,ActivationTime,RatingPlanId,
    RatesFallbackSubject; older files lead with Direction (only *out rows rate calls)."""
    with_direction = _profile_layout(path)
    out: list[CgrRatingActivation] = []
    for line, f in read_rows(path):
        if not with_direction and len(f) in (7, 8) and f[0] in ("*out", "*in"):
            with_direction = True  # headerless older file
        allowed = (7, 8) if with_direction else (5, 6, 7)  # 7th/8th: CdrStatQueueIds
        expect_columns(path, line, f, allowed)
        if with_direction:
            if f[0] != "*out":
                continue  # CGRateS rates calls in the *out direction only
            f = f[1:]
        f = [*f, ""][:6]
        try:
            fallbacks = tuple(s.strip() for s in f[5].split(";") if s.strip())
            out.append(
                CgrRatingActivation(
                    tenant=require_id(f[0], "Tenant"),
                    category=require_id(f[1], "Category"),
                    subject=require_id(f[2], "Subject"),
                    activation=parse_activation_time(f[3], tz),
                    rating_plan_id=require_id(f[4], "RatingPlanId"),
                    fallback_subjects=fallbacks,
                    line=line,
                )
            )
        except ValueError as exc:
            raise _error(path, line, str(exc)) from None
    return out


def read_tp_dir(directory: Path, tz: tzinfo = UTC) -> CgrTariffPlanFiles:
    """Read and parse the rating files of a TP directory (no cross-checks yet).

    `tz` is the zone of activation times written without one (CGRateS default_timezone).
    """
    if not directory.is_dir():
        raise _error(str(directory), 0, "not a directory")
    for required in ("Rates.csv", "DestinationRates.csv", "RatingPlans.csv", "RatingProfiles.csv"):
        if not (directory / required).is_file():
            raise _error(directory / required, 0, "missing (a CGRateS TP directory needs it)")
    dests = directory / "Destinations.csv"
    timings = directory / "Timings.csv"
    ignored = tuple(sorted(p.name for p in directory.glob("*.csv") if p.name not in RATING_FILES))
    return CgrTariffPlanFiles(
        directory=directory,
        destinations=load_destinations(dests) if dests.is_file() else {},
        timings=load_timings(timings) if timings.is_file() else {},
        rates=load_rates(directory / "Rates.csv"),
        destination_rates=load_destination_rates(directory / "DestinationRates.csv"),
        rating_plans=load_rating_plans(directory / "RatingPlans.csv"),
        rating_profiles=load_rating_profiles(directory / "RatingProfiles.csv", tz),
        ignored_files=ignored,
    )
