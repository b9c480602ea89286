"""What a called number is, for the destination rules: its country (ISO 3166), its type
(phonenumbers' PhoneNumberType: premium rate, shared cost, ...) and whether the
configured high-risk country or prefix lists name it.

phonenumbers (the project's phonenumberslite) types a number from its metadata; its
own parser and type lookup cost about 29 us a number, so numtypes.fast does the same
on the same metadata for "+digits" (about 3 us; the rest goes to phonenumbers), and
answers are cached per number (attacks repeat numbers; so do customers). Types are
what the number plan says the range is; a number the metadata does not know is typed
"" (unknown), never guessed.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import phonenumbers
from phonenumbers import PhoneNumberType

from chargingd.core.config.fraud import NUMBER_TYPES
from chargingd.fraud.numtypes import OTHER, SPECIAL, fast, fast_wanted, prefix_decides
from chargingd.fraud.plan import member_hash

CACHE_SIZE = 100_000
# A number's answer kept by the first characters that decide it (and its length): the
# shortest of these that does (numtypes.prefix_decides), up to PREFIX_CACHE of them.
PREFIX_SIZES = (6, 8, 10)
PREFIX_CACHE = 65_536
_TYPES: dict[int, str] = {
    PhoneNumberType.PREMIUM_RATE: "premium_rate",
    PhoneNumberType.SHARED_COST: "shared_cost",
    PhoneNumberType.PERSONAL_NUMBER: "personal_number",
    PhoneNumberType.UAN: "uan",
    PhoneNumberType.VOIP: "voip",
    PhoneNumberType.PAGER: "pager",
    PhoneNumberType.VOICEMAIL: "voicemail",
    PhoneNumberType.TOLL_FREE: "toll_free",
    PhoneNumberType.FIXED_LINE: "fixed_line",
    PhoneNumberType.MOBILE: "mobile",
    PhoneNumberType.FIXED_LINE_OR_MOBILE: "fixed_line_or_mobile",
}
# phonenumbers' region of non-geographic numbers (+800, +870, +882...).
_WORLD = "001"


_CODES = {name: kind for kind, name in _TYPES.items()}


class Destination(NamedTuple):
    number: str  # E.164 "+..."
    country: str  # ISO 3166 alpha-2; "" for non-geographic or unknown ranges
    # its type when it is one the classifier's rules match ("premium_rate", ...), else ""
    kind: str
    high_risk_country: bool
    high_risk_prefix: str  # the configured prefix it starts with, "" none
    # what the account's value keeps of it (plan.member_hash), cached with the rest
    member: int = 0

    @property
    def number_type(self) -> str:
        """Its full type ("premium_rate", "mobile", ...; "" unknown): for alerts,
        worked out when asked (the rules need only ``kind``)."""
        return region_and_type(self.number)[1]

    def matches(self, what: str) -> bool:
        """Does this destination have ``what`` (a [fraud] rule's match item, of the
        types its classifier was given)?"""
        if what == "high_risk_country":
            return self.high_risk_country
        if what == "high_risk_prefix":
            return bool(self.high_risk_prefix)
        return self.kind == what

    def reasons(self, match: tuple[str, ...]) -> list[str]:
        """The match items this destination has (for alerts: why it was risky)."""
        return [m for m in match if self.matches(m)]


class Classifier:
    """Classifies E.164 numbers against the configured high-risk lists (cached).
    ``types``: the number types the rules match (default: every type a rule may
    match); a destination's ``kind`` is its type only when it is one of them."""

    def __init__(
        self,
        countries: tuple[str, ...],
        prefixes: tuple[str, ...],
        types: tuple[str, ...] = NUMBER_TYPES,
        prefix_cache: int = PREFIX_CACHE,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.countries = frozenset(countries)
        # Longest first: the most specific configured prefix names the match.
        self.prefixes = tuple(sorted(prefixes, key=len, reverse=True))
        # ... looked up by length: one slice and set test per configured length
        self._by_length = tuple(
            (size, frozenset(p for p in self.prefixes if len(p) == size))
            for size in sorted({len(p) for p in self.prefixes}, reverse=True)
        )
        self.types = frozenset(t for t in types if t in NUMBER_TYPES)
        self._wanted = frozenset(_CODES[t] for t in self.types)
        assert self._wanted <= SPECIAL
        # number -> its destination, the oldest dropped first (a dict's get and set: an
        # LRU's bookkeeping cost more than the prefix's answer on a number seen once)
        self._numbers: dict[str, Destination] = {}
        self._cache_size = cache_size
        # (first characters, length) -> (country, kind, decided): a number's answer for
        # every "+digits" number of that length starting so (decided False: none, each
        # number is worked out); docs/fraud-cost.md "Nineteenth round"
        self._by_prefix: dict[tuple[str, int], tuple[str, str, bool]] = {}
        self._prefix_cache = prefix_cache

    def classify(self, number: str) -> Destination:
        """``number``'s destination (kept per number, up to ``cache_size``)."""
        numbers = self._numbers
        found = numbers.get(number)
        if found is None:
            if len(numbers) >= self._cache_size:  # the oldest goes (not all at once)
                del numbers[next(iter(numbers))]
            found = numbers[number] = self._classify(number)
        return found

    def cache_clear(self) -> None:
        """Forget the numbers' destinations (benchmarks of new numbers); the answers
        kept by prefix stay, as they do for a number not seen before."""
        self._numbers.clear()

    def _classify(self, number: str) -> Destination:
        size = len(number)
        kept: tuple[str, str, bool] | None = None
        plain = size > 4 and number.isascii() and number[0] == "+" and number[1:].isdigit()
        if plain:
            by_prefix = self._by_prefix
            for cut in PREFIX_SIZES:
                kept = by_prefix.get((number[:cut], size))
                if kept is not None:
                    break
        if kept is not None and kept[2]:
            country, kind = kept[0], kept[1]
        else:
            country, kind = self._country_kind(number)
            if plain and kept is None:
                self._learn(number, country, kind)
        prefix = ""
        for length, named in self._by_length:
            if number[:length] in named:
                prefix = number[:length]
                break
        member = member_hash(number)
        # tuple.__new__ as the NamedTuple's own __new__ does, without that interpreted
        # frame (~2.7k instructions per new number, compiled)
        fields = (number, country, kind, country in self.countries, prefix, member)
        return tuple.__new__(Destination, fields)

    def _country_kind(self, number: str) -> tuple[str, str]:
        found = fast_wanted(number, self._wanted)
        if found is None:  # phonenumbers' own parser (cached)
            country, number_type = region_and_type(number)
            return country, (number_type if number_type in self.types else "")
        region, code = found
        return ("" if region == _WORLD else region), ("" if code == OTHER else _TYPES[code])

    def _learn(self, number: str, country: str, kind: str) -> None:
        """Keep ``number``'s answer by the shortest of PREFIX_SIZES that decides it, else
        that none does (its 10 characters: the numbers starting so are each worked out)."""
        by_prefix = self._by_prefix
        if len(by_prefix) >= self._prefix_cache:  # the oldest goes (not all at once)
            del by_prefix[next(iter(by_prefix))]
        size = len(number)
        for cut in PREFIX_SIZES:
            if prefix_decides(number, min(cut, size)):
                by_prefix[(number[:cut], size)] = (country, kind, True)
                return
        by_prefix[(number[: PREFIX_SIZES[-1]], size)] = ("", "", False)


@functools.lru_cache(maxsize=CACHE_SIZE)
def region_and_type(number: str) -> tuple[str, str]:
    """(ISO country or "", number type or "") of an E.164 number."""
    found = fast(number)
    if found is not None:
        region, number_type = found
        return ("" if region == _WORLD else region), _TYPES.get(number_type, "")
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return "", ""
    region = phonenumbers.region_code_for_number(parsed) or ""
    kind = _TYPES.get(phonenumbers.number_type(parsed), "")
    return ("" if region == _WORLD else region), kind


def number_range(number: str, digits: int) -> str:
    """The range a number belongs to: ``digits`` digits cut off its end (0: itself)."""
    if digits <= 0:
        return number
    return number[: max(2, len(number) - digits)]
