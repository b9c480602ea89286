"""The tariff plans sessions/service.py prices with, and its seconds/ms view of rating/plan.py.

rating/plan.py works in nanoseconds and timezone-aware datetimes; credit control works in
whole seconds (RADIUS Acct-Session-Time, Session-Timeout) and epoch ms. This module
is the one place that converts, so a change of the rating API touches one file.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import ClassVar, Final

from chargingd.core.config import RatingConfig
from chargingd.rating.card import RateCard
from chargingd.rating.durations import billed_seconds, seconds_to_ns
from chargingd.rating.loaders import load_configured
from chargingd.rating.model import RatingError
from chargingd.rating.plan import TariffPlan

DEFAULT_PLAN = "default"
# Numbers (leading digits) whose RateCard is remembered: an authorize asks three
# questions of one call (the first grant's price, the usage its hold pays for, the
# Session-Timeout) and each interim two; the card resolves the number once for all of
# them and for every call to it starting before its rate can change (RateCard.covers).
# Two generations of half that each: when the newer is full it becomes the older (the
# older forgotten), and a card found in the older moves to the newer. (Deleting a dict's oldest key
# instead costs a scan over the deleted slots before it: ~1 % of an authorize's CPU.)
CARDS_MAX = 4096
# rating/durations.py's NS_PER_S, here: that module is interpreted, and its three
# conversions (seconds_to_ns, billed_seconds, whole_seconds) were interpreted frames
# per rating question; the same arithmetic inline below.
NS_PER_S: Final = 1_000_000_000


class UnknownPlan(RatingError):
    code: ClassVar[str] = "unknown_plan"


class Priced:
    """What a usage costs under a plan, in the units sessions/service.py keeps. Built
    per request: a plain class with its own __init__ (a dataclass's is interpreted even
    compiled), frozen (Final), with a dataclass's equality, hash and repr."""

    __slots__ = ("billed_s", "cost_micros", "destination_id")

    def __init__(self, cost_micros: int, billed_s: int, destination_id: str) -> None:
        self.cost_micros: Final = cost_micros
        self.billed_s: Final = billed_s
        self.destination_id: Final = destination_id

    def _values(self) -> tuple[int, int, str]:
        return (self.cost_micros, self.billed_s, self.destination_id)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Priced)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return (
            f"Priced(cost_micros={self.cost_micros!r}, billed_s={self.billed_s!r}, "
            f"destination_id={self.destination_id!r})"
        )


class Pricer:
    """Plan id -> loaded TariffPlan, plus the default plan for accounts naming none."""

    def __init__(self, plans: Mapping[str, TariffPlan], default: TariffPlan | None = None) -> None:
        self.plans = dict(plans)
        if default is not None:
            self.plans.setdefault(DEFAULT_PLAN, default)
        self.has_default = default is not None
        self._cards: dict[tuple[str, str, str], RateCard] = {}
        self._older_cards: dict[tuple[str, str, str], RateCard] = {}
        # The last card _card answered and the question it answered: an authorize asks
        # its first grant's price and the usage its hold pays for of one call in turn
        # (RecordMaker.new_record), the second from here without the two generations'
        # look-up (the plan's prefix and rating-subject calls, a tuple key hashed).
        self._last_plan = ""
        self._last_subject = ""
        self._last_number = ""
        self._last_card: RateCard | None = None
        # number -> (plan, subject, the card _looked_up answered for them): a call's
        # later questions (its Interim's three, its Stop's two) among the other calls'
        # without the plan's prefix walk, rating subject and tuple key each time (~3,000
        # instructions a question, round 19a); checked whole (plan, subject, covers), at
        # most CARDS_MAX numbers, all forgotten when full.
        self._by_number: dict[str, tuple[str, str, RateCard]] = {}

    def _plan(self, plan_id: str) -> TariffPlan:
        """A loaded plan; UnknownPlan for a live session whose plan is no longer loaded
        (a restart with other [rating] plans): its accounting is orphaned, not crashed."""
        plan = self.plans.get(plan_id)
        if plan is None:
            raise UnknownPlan(f"tariff plan {plan_id!r} is not loaded")
        return plan

    def plan_id_for(self, tariff: str) -> str | None:
        """The plan rating an account whose ``tariff`` is given; None when not loaded."""
        if not tariff:
            return DEFAULT_PLAN if self.has_default else None
        return tariff if tariff in self.plans else None

    def currency_of(self, plan_id: str) -> str:
        """The plan's currency ("" when the tariff does not say)."""
        return self.plans[plan_id].currency

    def _card(self, plan_id: str, subject: str, number: str, start_ns: int) -> RateCard:
        """A RateCard pricing the call (remembered: two generations, see CARDS_MAX).
        One card per number serves every call starting within its validity
        (RateCard.covers: until the next period boundary or profile activation), from
        every subject rated as *any (TariffPlan.rating_subject), to every number with the
        same leading digits a prefix can cover (PrefixIndex.significant: a card depends
        on its number through them only). The same question as the last one (plan,
        subject, number) takes the last card when it covers the start: any card that
        covers a start prices it as a card built for it would (RateCard.covers)."""
        last = self._last_card
        if (
            last is not None
            and number == self._last_number
            and subject == self._last_subject
            and plan_id == self._last_plan
            and last.covers(start_ns)
        ):
            return last
        known = self._by_number.get(number)
        if (
            known is not None
            and known[1] == subject
            and known[0] == plan_id
            and known[2].covers(start_ns)
        ):
            card = known[2]
        else:
            card = self._looked_up(plan_id, subject, number, start_ns)
            by_number = self._by_number
            if len(by_number) >= CARDS_MAX:
                by_number.clear()
            by_number[number] = (plan_id, subject, card)
        self._last_plan = plan_id
        self._last_subject = subject
        self._last_number = number
        self._last_card = card
        return card

    def _looked_up(self, plan_id: str, subject: str, number: str, start_ns: int) -> RateCard:
        """_card from the two generations (or built, and remembered there)."""
        plan = self._plan(plan_id)
        digits = plan.destinations.significant(number.lstrip("+"))
        key = (plan_id, plan.rating_subject(subject), digits)
        card = self._cards.get(key)
        if card is not None and card.covers(start_ns):
            return card
        older = self._older_cards.get(key)
        if older is not None and older.covers(start_ns):
            card = older
        else:
            card = plan.card(subject=subject, destination=number.lstrip("+"), start_ns=start_ns)
        if len(self._cards) >= CARDS_MAX // 2:
            self._older_cards = self._cards
            self._cards = {}
        self._cards[key] = card
        return card

    def price(
        self, plan_id: str, *, subject: str, number: str, start_ms: int, usage_s: int
    ) -> Priced:
        """Rate ``usage_s`` seconds to ``number`` (E.164); raises rating.RatingError."""
        if usage_s >= 0:
            start_ns = start_ms * 1_000_000
            card = self._card(plan_id, subject, number, start_ns)
            found = card.cost_at(start_ns, usage_s * NS_PER_S)  # seconds_to_ns
            # billed_seconds: rounded up
            return Priced(found.cost_micros, -(-found.billed_ns // NS_PER_S), card.destination_id)
        # Refused by rating itself (the same error as ever).
        cost = self._plan(plan_id).rate(
            subject=subject,
            destination=number.lstrip("+"),
            start=_when(start_ms),
            usage_ns=seconds_to_ns(usage_s),
            breakdown=False,
        )
        billed_s = billed_seconds(cost.billed_ns)
        return Priced(cost.cost_micros, billed_s, cost.destination_id)

    def paid_s(
        self, plan_id: str, *, subject: str, number: str, start_ms: int, amount_micros: int
    ) -> int:
        """Whole seconds ``amount_micros`` pays for on this call (rounded down)."""
        if amount_micros <= 0:
            return 0
        start_ns = start_ms * 1_000_000
        card = self._card(plan_id, subject, number, start_ns)
        usage_ns = card.max_usage_at(start_ns, amount_micros)
        return usage_ns // NS_PER_S  # whole_seconds: rounded down


@functools.lru_cache(maxsize=4096)
def _when(ms: int) -> datetime:
    # A call is priced at the same start (auth or answer time) many times: cached.
    seconds, rest_ms = divmod(ms, 1000)
    return datetime.fromtimestamp(seconds, UTC) + timedelta(milliseconds=rest_ms)


def load_pricer(cfg: RatingConfig) -> Pricer:
    """Load every configured plan at start; a bad file stops the daemon (TariffLoadError)."""
    load = functools.partial(
        load_configured,
        tp_timezone=cfg.cgrates_timezone,
        tp_rounding_decimals=cfg.cgrates_rounding_decimals,
    )
    plans = {plan_id: load(path) for plan_id, path in cfg.plans.items()}
    default = load(cfg.default_plan) if cfg.default_plan else None
    return Pricer(plans, default)


__all__ = ["DEFAULT_PLAN", "Priced", "Pricer", "RatingError", "load_pricer"]
