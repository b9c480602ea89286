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
from chargingd.fraud.numtypes import OTHER, SPECIAL, fast, fast_wanted
from chargingd.fraud.plan import member_hash

CACHE_SIZE = 100_000
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
        self.classify = functools.lru_cache(maxsize=CACHE_SIZE)(self._classify)

    def _classify(self, number: str) -> Destination:
        found = fast_wanted(number, self._wanted)
        if found is None:  # phonenumbers' own parser (cached)
            country, number_type = region_and_type(number)
            kind = number_type if number_type in self.types else ""
        else:
            region, code = found
            country = "" if region == _WORLD else region
            kind = "" if code == OTHER else _TYPES[code]
        prefix = ""
        for size, named in self._by_length:
            if number[:size] in named:
                prefix = number[:size]
                break
        member = member_hash(number)
        return Destination(number, country, kind, country in self.countries, prefix, member)


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
