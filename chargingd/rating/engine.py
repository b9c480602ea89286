"""The rating walk behind price.price_call and price.max_usage (pure, integer maths).

Every amount is an integer count of 1/L currency units, L being one common
denominator for the whole tariff (the lcm of all rate units times a power of
ten), so exact pricing never loses a digit and costs no Fraction objects.

The walk (CGRateS semantics): from the call start, a span ends at the next
period boundary (a period start or end, local midnight) or where a later rate
slot starts (offset from the CALL start); its usage is rounded up to whole
increments and the cursor moves by the billed length, so a rounded-up span eats
into the next one (CGRateS roundTimeSpansToIncrement).
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import math
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Any, ClassVar

from chargingd.rating.durations import NS_PER_S
from chargingd.rating.model import (
    ANY_SUBJECT,
    DestinationRate,
    MaxCostStrategy,
    PlanEntry,
    PricingMode,
    RatingError,
    RatingPlan,
    RatingProfile,
    RoundingMethod,
    Tariff,
    TariffError,
    UnknownDestination,
    UnknownSubject,
)
from chargingd.rating.periods import SECONDS_PER_DAY, TimePeriod
from chargingd.rating.prefixes import ANY_DESTINATION
from chargingd.rating.resolve import ResolveCache

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO_SCALE = 6
_DISPLAY_SCALE = 12
_CACHE_MAX = 65536
_POW10: list[int] = [10**i for i in range(64)]
_MAX_DECIMALS = 18
# CGRateS calldesc.go RECURSION_MAX_DEPTH: the subject's own profile is depth 1, its
# RatesFallbackSubjects 2, theirs 3; getRatingPlansForPrefix refuses depth 4.
_FALLBACK_DEPTH = 3


class UnratedPeriod(RatingError):
    """The destination has rates, but none whose period covers this moment."""

    code: ClassVar[str] = "unrated_period"


def _decimal_parts(value: Decimal) -> tuple[int, int]:
    """(integer numerator, decimal exponent >= 0) with value == num / 10**exp."""
    sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)
    num = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
    if exponent >= 0:
        return num * int(10**exponent), 0
    if exponent < -_MAX_DECIMALS:
        raise TariffError(f"{value} has more than {_MAX_DECIMALS} decimals")
    return num, -exponent


def pow10(exp: int) -> int:
    """10**exp from a table (exp 0..63)."""
    return _POW10[exp]


def round_div(num: int, den: int, method: RoundingMethod) -> int:
    """num/den rounded to an integer with `method` (num, den >= 0)."""
    if method is RoundingMethod.DOWN:
        return num // den
    if method is RoundingMethod.UP:
        return -(-num // den)
    return (2 * num + den) // (2 * den)


@dataclass(slots=True)
class _Slot:
    start_ns: int
    increment_ns: int
    per_ns: int  # cost of one ns in 1/L units
    rate: Decimal
    unit_ns: int
    per_increment: int  # increment_ns * per_ns: the cost of one increment (exact mode)


@dataclass(slots=True)
class _DestRate:
    src: DestinationRate
    slots: list[_Slot]
    starts: list[int]
    connect: int  # 1/L units
    max_cost_micros: int | None
    # src's rounding, read per span of a walk (price.py): native fields, not the
    # interpreted dataclass's attributes
    decimals: int
    method: RoundingMethod
    strategy: MaxCostStrategy
    min_ns: int
    # DestinationRate.rounding_rank (None: its decimals): which rate of a walk rounds
    # the total (the first of the largest rank)
    rank: int
    # price.py _enough of this rate's boundary-free walk, for one limit (-1: not yet)
    enough_limit: int = -1
    enough: int = -1


@dataclass(slots=True)
class _Entry:
    period: TimePeriod
    weight: float
    dr: _DestRate


@dataclass(slots=True)
class _Match:
    plan: RatingPlan
    destination_id: str
    prefix: str
    subject: str
    entries: tuple[_Entry, ...]


class _Piece:
    """One span of the walk before pricing. A plain class with its own __init__ (built
    per span of every rating question; a dataclass's __init__ is interpreted even
    compiled, round 9a); internal to the walk, never compared or printed."""

    __slots__ = ("entry", "increments", "offset_ns", "plan_id", "slot", "usage_ns")

    def __init__(
        self,
        offset_ns: int,
        usage_ns: int,
        increments: int,
        slot: _Slot,
        entry: _Entry,
        plan_id: str,
    ) -> None:
        self.offset_ns = offset_ns
        self.usage_ns = usage_ns
        self.increments = increments
        self.slot = slot
        self.entry = entry
        self.plan_id = plan_id


def _winner(spans: list[tuple[int, int, _Entry]], at_ns: int) -> _Entry | None:
    """Of the entries whose [start, end) (epoch ns) covers this instant, the highest
    weight; ties: the later start."""
    best: _Entry | None = None
    for start_ns, end_ns, entry in spans:
        if start_ns <= at_ns < end_ns and (
            best is None
            or (entry.weight, entry.period.start_s) > (best.weight, best.period.start_s)
        ):
            best = entry
    return best


class Engine:
    """Compiled tariff: profiles by key, entries by plan and destination, one denominator."""

    def __init__(self, tariff: Tariff) -> None:
        self.tariff = tariff
        self.tz: tzinfo = tariff.timezone
        self.mode = tariff.mode
        self.profiles: dict[tuple[str, str, str], RatingProfile] = {}
        for profile in tariff.profiles:
            ident = (profile.tenant, profile.category, profile.subject)
            if ident in self.profiles:  # the same subject twice: one timeline of activations
                merged = self.profiles[ident].activations + profile.activations
                profile = dataclasses.replace(profile, activations=merged)
            self.profiles[ident] = profile
        plans = {id(a.plan): a.plan for p in self.profiles.values() for a in p.activations}
        drs = [
            e.destination_rate for pl in plans.values() for es in pl.entries.values() for e in es
        ]
        self.scale_exp = max([_DISPLAY_SCALE, tariff.rounding_decimals, *self._exps(drs)])
        units = [s.rate_unit_ns for d in drs for s in d.rate.slots]
        self.denominator = math.lcm(1, *units) * _POW10[self.scale_exp]
        # What the walks of price.py read per span (native fields): exact pricing or
        # CGRateS' per-span rounding to `digits` decimals (1/L units per digit unit).
        self.exact = self.mode is PricingMode.EXACT
        self.digits = tariff.rounding_decimals
        self.digit_units = self.denominator // _POW10[self.digits]
        compiled: dict[int, _DestRate] = {}
        self.plans: dict[int, dict[str, tuple[_Entry, ...]]] = {}
        for key, plan in plans.items():
            self.plans[key] = {
                dest: tuple(self._entry(e, compiled) for e in entries)
                for dest, entries in plan.entries.items()
            }
        # Destinations (their bindings in a plan) with an always-active binding.
        self.always_bound = {
            id(bound)
            for dests in self.plans.values()
            for bound in dests.values()
            if any(e.period.always for e in bound)
        }
        self._day_cache: dict[tuple[int, date], tuple[list[int], list[_Entry | None]]] = {}
        # The last two local days found (most recent first): a grant walked across
        # midnight reads today and tomorrow alternately, every authorize (round 9a).
        self._last_day: tuple[date, int, int] = (date(1970, 1, 1), 0, 0)
        self._other_day: tuple[date, int, int] = (date(1970, 1, 1), 0, 0)
        # Plans whose every destination has an always-active binding (rating/resolve.py).
        self._timeless = {
            key
            for key, dests in self.plans.items()
            if all(id(bound) in self.always_bound for bound in dests.values())
        }
        # Profile activation times (epoch ns): a call crossing one is re-resolved there.
        self.switches = sorted(
            {epoch_ns(a.activation_time) for p in self.profiles.values() for a in p.activations}
        )
        self._resolved: ResolveCache[_Match] = ResolveCache(self.switches)
        # Answers of boundary-free walks (price.py, card.py), by destination rate.
        self.card_prices: dict[tuple[int, int], tuple[_DestRate, Any]] = {}
        self.afford_within: dict[tuple[int, int, int], tuple[_DestRate, int | None]] = {}
        # Answers of full walks of max-usage (price.py _walked), by card, start, budget
        # and limit.
        self.card_walks: dict[tuple[int, int, int, int], tuple[object, int]] = {}
        # The least budget no walk over some entries passes before a limit (price.py
        # _enough), by id of the entries: (the entries, the limit, that budget).
        self.enough: dict[int, tuple[tuple[_Entry, ...], int, int]] = {}

    @staticmethod
    def _exps(drs: list[DestinationRate]) -> Iterator[int]:
        for dr in drs:
            yield dr.rounding_decimals
            yield _decimal_parts(dr.rate.connect_fee)[1]
            for slot in dr.rate.slots:
                yield _decimal_parts(slot.rate)[1]

    def _entry(self, entry: PlanEntry, compiled: dict[int, _DestRate]) -> _Entry:
        dr = entry.destination_rate
        if id(dr) not in compiled:
            slots = [
                self._slot(s.group_interval_start_ns, s.rate_increment_ns, s.rate, s.rate_unit_ns)
                for s in dr.rate.slots
            ]
            max_cost = None
            if dr.max_cost is not None:
                num, exp = _decimal_parts(dr.max_cost)
                max_cost = num * _POW10[_MICRO_SCALE] // _POW10[exp]
            compiled[id(dr)] = _DestRate(
                dr,
                slots,
                [s.start_ns for s in slots],
                self._units(dr.rate.connect_fee),
                max_cost,
                dr.rounding_decimals,
                dr.rounding_method,
                dr.max_cost_strategy,
                dr.min_duration_ns,
                dr.rounding_decimals if dr.rounding_rank is None else dr.rounding_rank,
            )
        return _Entry(entry.period, entry.weight, compiled[id(dr)])

    def _slot(self, start_ns: int, increment_ns: int, rate: Decimal, unit_ns: int) -> _Slot:
        num, exp = _decimal_parts(rate)
        per_ns = num * self.denominator // (_POW10[exp] * unit_ns)
        return _Slot(start_ns, increment_ns, per_ns, rate, unit_ns, increment_ns * per_ns)

    def _units(self, value: Decimal) -> int:
        num, exp = _decimal_parts(value)
        return num * self.denominator // _POW10[exp]

    # -- resolution ---------------------------------------------------------------

    def resolve(
        self,
        tenant: str,
        category: str,
        subject: str,
        number: str,
        when: datetime | None,
        call_start_ns: int | None = None,
        when_ns: int | None = None,
    ) -> _Match:
        """Profile -> activation -> plan -> longest matching destination, with fallbacks.

        A destination counts only if one of its timings is active when checked: at
        `when` (`when_ns`: the same instant in epoch ns; one of the two is needed), or
        (CGRateS) at `call_start_ns` for the subject's own profile.
        """
        if when_ns is None:
            if when is None:
                raise RatingError("resolve needs an instant")
            when_ns = epoch_ns(when)
        own_ns = when_ns
        if call_start_ns is not None and self.mode is PricingMode.CGRATES:
            own_ns = call_start_ns  # ratingprofile.go checks cd.TimeStart for each activation
        return self._resolve_kept(tenant, category, subject, number, when, when_ns, own_ns)[0]

    def rating_subject(self, subject: str, *, tenant: str = "", category: str = "call") -> str:
        """TariffPlan.rating_subject: `subject` when it has a rating profile, else *any."""
        key = (tenant or self.tariff.default_tenant, category, subject)
        return subject if key in self.profiles else ANY_SUBJECT

    def resolve_timed(
        self, tenant: str, category: str, subject: str, number: str, when_ns: int
    ) -> tuple[_Match, bool]:
        """resolve() at an instant, and whether the answer may change before the next
        activation switch (True: a plan with period-bound destinations decided it)."""
        return self._resolve_kept(tenant, category, subject, number, None, when_ns, when_ns)

    def _resolve_kept(
        self,
        tenant: str,
        category: str,
        subject: str,
        number: str,
        when: datetime | None,
        when_ns: int,
        own_ns: int,
    ) -> tuple[_Match, bool]:
        """resolve() through its memory (rating/resolve.py), with the answer's kind."""
        # Only the leading digits a prefix can cover decide the answer: share it.
        digits = self.tariff.destinations.significant(number)
        span_key, key = self._resolved.keys(tenant, category, subject, digits, when_ns, own_ns)
        found, timed = self._resolved.get_timed(span_key, key)
        if found is None:
            if when is None:
                when = from_epoch_ns(when_ns)
            found, timed = self._resolve(tenant, category, subject, number, when, when_ns, own_ns)
            self._resolved.put(span_key, key, found, timed=timed)
        return found, timed

    def _resolve(
        self,
        tenant: str,
        category: str,
        subject: str,
        number: str,
        when: datetime,
        when_ns: int,
        own_ns: int,
    ) -> tuple[_Match, bool]:
        """resolve(), and whether a plan with period-bound destinations was consulted.

        Fallback subjects: CGRateS (calldesc.go getRatingPlansForPrefix) recurses into
        each fallback subject's own fallbacks before trying the next one (depth first),
        and not below _FALLBACK_DEPTH. A native tariff tries them breadth first, with
        no depth limit."""
        depth_first = self.mode is PricingMode.CGRATES
        pending: deque[tuple[str, int]] = deque([(subject, 1)])
        tried: dict[str, int] = {}  # subject -> the least depth it was tried at
        any_profile, timed = False, False
        while pending or ANY_SUBJECT not in tried:
            if not pending:
                pending.append((ANY_SUBJECT, 1))
            candidate, depth = pending.popleft()
            known = tried.get(candidate)
            if known is not None and known <= depth:
                continue  # tried already, its fallbacks at least as deep
            tried[candidate] = depth
            profile = self.profiles.get((tenant, category, candidate))
            activation = profile.active_at(when) if profile else None
            if activation is None:
                continue
            direct = not any_profile  # not reached through a fallback
            any_profile = True
            timed = timed or id(activation.plan) not in self._timeless
            found = self._match_plan(
                activation.plan, number, candidate, own_ns if direct else when_ns
            )
            if found is not None:
                return found, timed
            fallbacks = [(s, depth + 1) for s in activation.fallback_subjects]
            if not depth_first:
                pending.extend(fallbacks)
            elif depth < _FALLBACK_DEPTH:
                pending.extendleft(reversed(fallbacks))
        if not any_profile:
            raise UnknownSubject(f"no rating profile for {tenant}/{category}/{subject} at {when}")
        raise UnknownDestination(f"no rate for destination {number!r} (subject {subject})")

    def _match_plan(self, plan: RatingPlan, number: str, subject: str, at_ns: int) -> _Match | None:
        """The plan's destination for number: longest prefix, active timing, then *any.

        CGRateS (engine/ratingprofile.go GetRatingPlansForPrefix): per prefix, longest
        first, of the destinations bound in the plan only those with a timing active at
        the check instant count; of these the highest weight (RateIntervalList.GetWeight:
        the max over ALL its bindings, floored at 0) wins, ties the first. None active:
        the next shorter prefix, then *any (not time-checked).
        """
        entries = self.plans[id(plan)]
        for prefix, ids in self.tariff.destinations.matches(number):
            best: str | None = None
            best_weight = 0.0
            for dest_id in ids:
                bound = entries.get(dest_id)
                if bound is None or not self._active(bound, at_ns):
                    continue
                weight = self._dest_weight(bound)
                if best is None or weight > best_weight:
                    best, best_weight = dest_id, weight
            if best is not None:
                return _Match(plan, best, prefix, subject, entries[best])
        if ANY_DESTINATION in entries:
            return _Match(plan, ANY_DESTINATION, "", subject, entries[ANY_DESTINATION])
        return None

    def _dest_weight(self, bound: tuple[_Entry, ...]) -> float:
        """A destination's weight in a plan: its heaviest binding (CGRateS: at least 0)."""
        weight = max(e.weight for e in bound)
        return max(weight, 0.0) if self.mode is PricingMode.CGRATES else weight

    def _active(self, bound: tuple[_Entry, ...], at_ns: int) -> bool:
        """Whether one of the bindings' periods covers the instant (RITiming.IsActiveAt)."""
        if id(bound) in self.always_bound:
            return True
        day, first_ns, _ = self._local_day(at_ns)
        ends, winners = self._segments(bound, day, first_ns)
        index = min(bisect.bisect_right(ends, at_ns), len(ends) - 1)
        return winners[index] is not None

    # -- periods --------------------------------------------------------------------

    def _local_day(self, epoch_ns: int) -> tuple[date, int, int]:
        """The local date of an instant and the epoch ns of its first and next midnight."""
        cached = self._last_day
        if cached[1] <= epoch_ns < cached[2]:
            return cached
        other = self._other_day
        if other[1] <= epoch_ns < other[2]:
            self._last_day, self._other_day = other, cached
            return other
        day = datetime.fromtimestamp(epoch_ns // NS_PER_S, self.tz).date()
        found = (day, self._epoch_ns(day, 0), self._epoch_ns(day, SECONDS_PER_DAY))
        self._last_day, self._other_day = found, cached
        return found

    def _segments(
        self, entries: tuple[_Entry, ...], day: date, first_ns: int
    ) -> tuple[list[int], list[_Entry | None]]:
        """The day cut at every period start/end: segment end (epoch ns) and its winner."""
        key = (id(entries), day)
        cached = self._day_cache.get(key)
        if cached is not None:
            return cached
        # Each period's start and end as instants (a local time in a DST gap reads as
        # Go's time.Date does, CGRateS' RITiming: 02:30 in a 02:00->03:00 gap is 03:30);
        # the day is cut where one starts or ends, in the order of the instants, not of
        # the local clock, which a gap reorders.
        spans = [
            (self._epoch_ns(day, e.period.start_s), self._epoch_ns(day, e.period.end_s), e)
            for e in entries
            if e.period.matches_day(day)
        ]
        last_ns = self._epoch_ns(day, SECONDS_PER_DAY)
        cuts = {first_ns, last_ns} | {s[0] for s in spans} | {s[1] for s in spans}
        marks = sorted(c for c in cuts if first_ns <= c <= last_ns)
        ends: list[int] = []
        winners: list[_Entry | None] = []
        for begin_ns, end_ns in itertools.pairwise(marks):
            ends.append(end_ns)
            winners.append(_winner(spans, begin_ns))
        if len(self._day_cache) >= _CACHE_MAX:
            del self._day_cache[next(iter(self._day_cache))]  # the oldest day goes
        self._day_cache[key] = (ends, winners)
        return ends, winners

    def at(self, entries: tuple[_Entry, ...], epoch_ns: int) -> tuple[_Entry, int]:
        """The winning entry at an instant, and the epoch ns of the next period boundary."""
        day, first_ns, _ = self._local_day(epoch_ns)
        ends, winners = self._segments(entries, day, first_ns)
        index = bisect.bisect_right(ends, epoch_ns)
        if index >= len(ends):  # DST oddity: the local day ended early
            index = len(ends) - 1
        best = winners[index]
        if best is None:
            local = datetime.fromtimestamp(epoch_ns // NS_PER_S, self.tz)
            raise UnratedPeriod(f"no rate period covers {local.isoformat()}")
        boundary = ends[index]
        if boundary <= epoch_ns:
            boundary = (epoch_ns // NS_PER_S + 1) * NS_PER_S
        return best, boundary

    def bindings_stable_until(self, number: str, at_ns: int) -> int:
        """An instant after at_ns before which no period-bound destination binding a
        prefix of number has in any plan turns active or inactive (so a resolution of
        number in force at at_ns stays so until then, activations aside): the next end
        of the segments (Engine._segments) _active reads, at most the next midnight."""
        day, first_ns, until = self._local_day(at_ns)
        for _prefix, ids in self.tariff.destinations.matches(number):
            for dests in self.plans.values():
                for dest_id in ids:
                    bound = dests.get(dest_id)
                    if bound is None or id(bound) in self.always_bound:
                        continue
                    ends, _ = self._segments(bound, day, first_ns)
                    index = bisect.bisect_right(ends, at_ns)
                    if index < len(ends):
                        until = min(until, ends[index])
        return until

    def _epoch_ns(self, day: date, second_of_day: int) -> int:
        if second_of_day >= SECONDS_PER_DAY:
            day, second_of_day = day + timedelta(days=1), 0
        hours, rest = divmod(second_of_day, 3600)
        local = datetime.combine(day, time(hours, rest // 60, rest % 60), tzinfo=self.tz)
        return int(local.timestamp()) * NS_PER_S

    # -- the walk -------------------------------------------------------------------

    def pieces(
        self,
        match: _Match,
        start_ns: int,
        target_ns: int | None,
        limit_ns: int,
        rematch: Callable[[int, int], _Match | None] | None = None,
    ) -> Iterator[_Piece]:
        """Yield the spans of a call from start_ns; target None walks until limit_ns.

        At a profile activation time inside the call, `rematch` resolves the plan anew
        (CGRateS splits calls by rating plan activation too).
        """
        offset = 0
        end_ns = limit_ns if target_ns is None else target_ns
        switch = bisect.bisect_right(self.switches, start_ns)
        while offset < end_ns:
            now = start_ns + offset
            while switch < len(self.switches) and self.switches[switch] <= now:
                switch += 1
                found = rematch(now, start_ns) if rematch is not None else None
                match = found or match
            entry, boundary = self.at(match.entries, now)
            if switch < len(self.switches):
                boundary = min(boundary, self.switches[switch])
            slot, stop = slot_at(entry.dr, offset, min(boundary - start_ns, end_ns))
            increments = -(-(stop - offset) // slot.increment_ns)
            yield _Piece(offset, stop - offset, increments, slot, entry, match.plan.id)
            offset += increments * slot.increment_ns

    def next_switch(self, after_ns: int) -> int | None:
        """The first profile activation time after an instant (None: there is none)."""
        index = bisect.bisect_right(self.switches, after_ns)
        return self.switches[index] if index < len(self.switches) else None

    def rematcher(
        self, tenant: str, category: str, subject: str, number: str, start_ns: int
    ) -> Callable[[int, int], _Match | None] | None:
        """Resolution at a later instant of a call started at start_ns; None: keep the plan.
        None instead of a rematcher when no activation follows start_ns (none to cross)."""
        if not self.switches or self.switches[-1] <= start_ns:
            return None

        def rematch(at_ns: int, start_ns: int) -> _Match | None:
            try:
                return self.resolve(tenant, category, subject, number, None, start_ns, at_ns)
            except RatingError:
                return None

        return rematch

    def span_units(self, slot: _Slot, increments: int) -> tuple[int, int | None]:
        """Cost of `increments` of a slot in 1/L units (and CGRateS' rounded increment)."""
        billed = increments * slot.increment_ns
        if self.mode is PricingMode.EXACT or increments == 0:
            return billed * slot.per_ns, None
        digits = self.tariff.rounding_decimals
        den = self.denominator
        span_q = round_div(billed * slot.per_ns * _POW10[digits], den, RoundingMethod.HALF_UP)
        increment_q = round_div(span_q, increments, RoundingMethod.HALF_UP)
        return increment_q * increments * (den // _POW10[digits]), increment_q

    def final_micros(self, total_units: int, decimals: int, method: RoundingMethod) -> int:
        """Round the total once to `decimals` with `method`, then to micro-units."""
        units = round_div(total_units * _POW10[decimals], self.denominator, method)
        if decimals > _MICRO_SCALE:
            return round_div(units, _POW10[decimals - _MICRO_SCALE], method)
        return units * _POW10[_MICRO_SCALE - decimals]


def slot_at(dr: _DestRate, offset_ns: int, stop_ns: int) -> tuple[_Slot, int]:
    """The slot a span starting at `offset_ns` (from the call start) is priced by, and
    where the span ends: `stop_ns` or the start of the next slot, the earlier."""
    index = bisect.bisect_right(dr.starts, offset_ns) - 1
    if index + 1 < len(dr.starts):
        stop_ns = min(stop_ns, dr.starts[index + 1])
    return dr.slots[index], stop_ns


def from_epoch_ns(value: int) -> datetime:
    """The aware UTC datetime of an epoch ns instant (to the microsecond)."""
    return _EPOCH + timedelta(microseconds=value // 1000)


def epoch_ns(when: datetime) -> int:
    """Nanoseconds since the Unix epoch of an aware datetime (exact, no float)."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise RatingError("start must be a timezone-aware datetime")
    return ((when - _EPOCH) // timedelta(microseconds=1)) * 1000


def display_cost(units: int, denominator: int) -> Decimal:
    """1/L units as a Decimal rounded half-up to 12 decimals (breakdowns only)."""
    scaled = round_div(units * _POW10[_DISPLAY_SCALE], denominator, RoundingMethod.HALF_UP)
    return Decimal(scaled).scaleb(-_DISPLAY_SCALE)
