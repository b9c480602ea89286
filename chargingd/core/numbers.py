"""Telephone number normalisation: whatever a gateway sends -> E.164 ("+4930123456").

Gateways send Calling/Called-Station-Id in national or international dialling
form ("030123456", "004930123456", "01149301234" from a US trunk, "+4930123456"),
sometimes wrapped in a SIP or tel URI. The per-client default country tells the
``phonenumbers`` library which international prefix (IDD: "00" in Europe, "011" in
NANP) and which trunk prefix ("0") apply, so the same digits mean the same number
whichever gateway sent them.

phonenumbers costs ~25-50 us a number and real traffic has far more numbers than
any cache holds, so plain digit strings take a fast path first (``_fast_e164``): the
same steps as ``phonenumbers.parse`` (IDD or "+", country code, trunk prefix) from
the library's own metadata, for the cases where those steps are simple; anything
else (a country code written without IDD, carrier-code prefixes, URIs, separators)
goes to phonenumbers. tests/core/test_numbers_fast.py checks the fast path against
phonenumbers on generated numbers of every region. The fast path is not cached (it
costs less than a look-up in a cache of real variety's size); what phonenumbers
reads sits in a bounded LRU cache (it evicts the least recently used, never wipes).
"""

from __future__ import annotations

import functools
import re
from typing import ClassVar, Final

import phonenumbers
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

from chargingd.core.chain import chained

_E164_MAX_DIGITS = 15  # ITU-T E.164 §6: at most 15 digits after the country code sign
_MIN_NSN, _MAX_NSN = 2, 17  # phonenumbers' bounds of a national significant number
_SEPARATORS = re.compile(r"[\s\-./()]")
_URI_SCHEMES = ("sip:", "sips:", "tel:")
_LITERAL_DIGITS = re.compile(r"\d+")
CACHE_SIZE = 65_536  # normalised numbers kept (least recently used evicted)


class NumberError(ValueError):
    """A number that cannot be read as a telephone number; ``code`` is stable."""

    code: ClassVar[str] = "bad_number"  # ClassVar: also a class attribute under mypyc


def strip_uri(raw: str) -> str:
    """The user part of a SIP/tel URI ("sip:+4930123@gw;user=phone" -> "+4930123")."""
    text = raw.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    lowered = text.lower()
    for scheme in _URI_SCHEMES:
        if lowered.startswith(scheme):
            text = text[len(scheme) :]
            break
    text = text.split("@", 1)[0]
    return text.split(";", 1)[0]


# The ISO 3166-1 alpha-2 codes phonenumbers has no numbering plan for: Antarctica,
# Bouvet Island, South Georgia, Heard and McDonald Islands, Pitcairn, the French
# Southern Territories, the US Minor Outlying Islands (uninhabited, or dialled under
# another country's plan). phonenumbers' SUPPORTED_REGIONS holds the 242 other ISO
# codes of the 249 (and AC, TA, XK, which ISO does not assign); checked with 9.0.42.
ISO_WITHOUT_NUMBERING_PLAN = frozenset({"AQ", "BV", "GS", "HM", "PN", "TF", "UM"})


def is_region(country: str) -> bool:
    """Whether phonenumbers knows the dialling rules of this ISO 3166 alpha-2 region
    ("GB"; "UK" is no ISO 3166 code, and every number without "+" would fail there)."""
    return country.upper() in phonenumbers.SUPPORTED_REGIONS


def is_iso_country(country: str) -> bool:
    """Whether this is an ISO 3166 alpha-2 country, numbering plan or not: for a
    customer's address and VAT country, never for reading or matching numbers."""
    return is_region(country) or country.upper() in ISO_WITHOUT_NUMBERING_PLAN


def region_fault(country: str) -> str:
    """Why is_region refuses `country`, for the error after the key and the value: an
    ISO code without a numbering plan is one (no call is ever matched to it)."""
    code = country.upper()
    if code in ISO_WITHOUT_NUMBERING_PLAN:
        return "has no telephone numbering plan (phonenumbers)"
    return "is not an ISO 3166 code" + (" (the United Kingdom is GB)" if code == "UK" else "")


def to_e164(raw: str, *, country: str = "DE") -> str:
    """Normalise ``raw`` to E.164 with a leading "+", dialled from ``country``.

    Raises NumberError when the text holds no plausible number.
    """
    region = country.upper()
    if "\x00" in region:  # not a region; keep the cache key unambiguous
        return _parse_e164(raw, region)
    # A plain digit string takes the fast path uncached: it costs less than a look-up
    # in a cache as large as real number variety needs (and that misses anyway).
    if _is_digit_string(raw):
        fast = _fast_e164(raw, region)
        if fast is not None:
            return _checked(fast, raw)
    # One str key (not a (raw, country) tuple): a cached number is no object the
    # garbage collector tracks (docs/performance.md, round 6c).
    return _to_e164(region + "\x00" + raw)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _to_e164(key: str) -> str:
    """The cached phonenumbers reading of a "REGION\\0raw" key (what the fast path
    does not take)."""
    region, _, raw = key.partition("\x00")
    return _slow_e164(raw, region)


def _parse_e164(raw: str, country: str) -> str:
    if _is_digit_string(raw):
        fast = _fast_e164(raw, country)
        if fast is not None:
            return _checked(fast, raw)
    return _slow_e164(raw, country)


def _slow_e164(raw: str, country: str) -> str:
    text = _SEPARATORS.sub("", strip_uri(raw))
    if not text:
        raise NumberError("empty number")
    body = text[1:] if text.startswith("+") else text
    if not body.isdigit():
        raise NumberError(f"not a telephone number: {raw!r}")
    try:
        parsed = phonenumbers.parse(text, None if text.startswith("+") else country)
    except phonenumbers.NumberParseException as exc:
        raise chained(NumberError(f"not a telephone number: {raw!r} ({exc})"), None) from None
    e164: str = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return _checked(e164, raw)


def _is_digit_string(raw: str) -> bool:
    """ASCII digits, optionally after one "+" (str.isdigit alone takes other scripts)."""
    body = raw[1:] if raw.startswith("+") else raw
    return body.isascii() and body.isdigit()


def _checked(e164: str, raw: str) -> str:
    if not 2 <= len(e164) - 1 <= _E164_MAX_DIGITS:
        raise NumberError(f"not an E.164 number: {raw!r}")
    return e164


def e164_digits(raw: str, *, country: str = "DE") -> str:
    """Like to_e164 without the "+" (what prefix tables match on)."""
    return to_e164(raw, country=country)[1:]


def normalize_or_raw(raw: str, *, country: str = "DE") -> str:
    """E.164 when possible, else the stripped raw text (CDRs keep what was seen)."""
    try:
        return to_e164(raw, country=country)
    except NumberError:
        return strip_uri(raw)


# -- the fast path -------------------------------------------------------------------


class _Rules:
    """What phonenumbers.parse consults of one region's (or calling code's) metadata.
    Built once per region and calling code: a plain class (a dataclass's __init__ is
    interpreted even compiled)."""

    __slots__ = (
        "country_code",
        "general",
        "idd",
        "idd_literal",
        "lengths",
        "local_lengths",
        "trunk",
        "trunk_literal",
        "trunk_simple",
    )

    def __init__(
        self,
        country_code: str,
        idd: re.Pattern[str] | None,  # international prefix ("00", "011", "00[1-9]" ...)
        trunk: re.Pattern[str] | None,  # national prefix for parsing ("0", "1", ...)
        trunk_simple: bool,  # a literal prefix, no carrier code, no transform rule
        general: re.Pattern[str] | None,  # the region's national number pattern
        lengths: tuple[int, ...],  # possible lengths of a national number
        local_lengths: tuple[int, ...],  # lengths dialable only locally
    ) -> None:
        self.country_code: Final = country_code
        self.idd: Final = idd
        self.trunk: Final = trunk
        self.trunk_simple: Final = trunk_simple
        self.general: Final = general
        self.lengths: Final = lengths
        self.local_lengths: Final = local_lengths
        # A pattern of digits only matches what starts with those digits: startswith
        # instead of the regular expression ("" when the pattern is not that simple).
        self.idd_literal: Final = _literal(idd)
        self.trunk_literal: Final = _literal(trunk)


def _literal(pattern: re.Pattern[str] | None) -> str:
    if pattern is None or not _LITERAL_DIGITS.fullmatch(pattern.pattern):
        return ""
    return pattern.pattern


def _rules_of(meta: PhoneMetadata) -> _Rules:
    general = meta.general_desc
    pattern = general.national_number_pattern if general is not None else None
    trunk = meta.national_prefix_for_parsing or None
    return _Rules(
        country_code=str(meta.country_code),
        idd=re.compile(meta.international_prefix) if meta.international_prefix else None,
        trunk=re.compile(trunk) if trunk else None,
        trunk_simple=bool(trunk and _LITERAL_DIGITS.fullmatch(trunk))
        and not meta.national_prefix_transform_rule,
        general=re.compile(pattern) if pattern else None,
        lengths=tuple(general.possible_length or ()) if general is not None else (),
        local_lengths=tuple(general.possible_length_local_only or ())
        if general is not None
        else (),
    )


# Rules by region and by calling code, filled on first use (plain dicts: a lookup per
# number, where an lru_cache wrapper cost a call with an argument tuple).
_RULES_MAX: Final = 1024  # more is no region: asked for, not remembered
_by_region: Final[dict[str, _Rules | None]] = {}
_by_code: Final[dict[str, _Rules | None]] = {}
# Calling codes as the digits that start an international number ("1", "44", "358").
_CODES: Final = frozenset(str(code) for code in COUNTRY_CODE_TO_REGION_CODE)


def _region_rules(region: str) -> _Rules | None:
    known = _by_region.get(region)
    if known is not None or region in _by_region:
        return known
    meta = PhoneMetadata.metadata_for_region(region, None)
    rules = None if meta is None else _rules_of(meta)
    if len(_by_region) < _RULES_MAX:
        _by_region[region] = rules
    return rules


def _calling_code_rules(code: str) -> _Rules | None:
    known = _by_code.get(code)
    if known is not None or code in _by_code:
        return known
    calling_code = int(code)
    regions = COUNTRY_CODE_TO_REGION_CODE.get(calling_code)
    meta = (
        PhoneMetadata.metadata_for_region_or_calling_code(calling_code, regions[0])
        if regions
        else None
    )
    rules = None if meta is None else _rules_of(meta)
    _by_code[code] = rules  # at most the calling codes: _CODES
    return rules


def _fast_e164(digits: str, country: str) -> str | None:
    """E.164 of a digit string as phonenumbers.parse would give it; None: ask phonenumbers.

    Handles "+"/IDD + country code + national number, and national numbers (with or
    without a literal trunk prefix) that do not start with the region's own country
    code. A None never means "invalid", only "not simple".
    """
    if digits.startswith("+"):
        return _international(digits[1:])
    region = _region_rules(country)
    if region is None:
        return None
    idd = region.idd_literal
    if idd:
        rest = digits[len(idd) :] if digits.startswith(idd) else None
    else:
        match = region.idd.match(digits) if region.idd is not None else None
        rest = digits[match.end() :] if match is not None else None
    if rest is not None and rest[:1] != "0":
        # phonenumbers: no country code starts with 0, IDD not taken
        return _international(rest)
    if digits.startswith(region.country_code):
        return None  # phonenumbers then weighs both readings by the number patterns
    return _national(digits, region)


def _international(digits: str) -> str | None:
    """After "+" or an IDD: the country code (1-3 digits), then the national number."""
    if len(digits) <= _MIN_NSN or digits[0] == "0":
        return None
    for size in range(1, 4):
        code = digits[:size]
        if code in _CODES:
            rules = _calling_code_rules(code)
            return None if rules is None else _national(digits[size:], rules)
    return None


def _national(number: str, rules: _Rules) -> str | None:
    """Strip a trunk prefix the way phonenumbers does (only when the result is still a
    possible number of the region), then prefix the country code."""
    if len(number) < _MIN_NSN:
        return None
    trunk = rules.trunk_literal
    if trunk and rules.trunk_simple:
        if number.startswith(trunk):
            kept = _strip_trunk(number, number[len(trunk) :], rules)
            if kept is None:
                return None
            number = kept
    elif rules.trunk is not None:
        match = rules.trunk.match(number)
        if match is not None:
            if not rules.trunk_simple:
                return None
            kept = _strip_trunk(number, number[match.end() :], rules)
            if kept is None:
                return None
            number = kept
    if not _MIN_NSN <= len(number) <= _MAX_NSN:
        return None
    return "+" + rules.country_code + number


def _strip_trunk(number: str, stripped: str, rules: _Rules) -> str | None:
    """phonenumbers' _maybe_strip_national_prefix_carrier_code, then its length test
    (_test_number_length): the stripped number unless too short, local-only or of a
    length the region does not have. None: no length data, ask phonenumbers."""
    general = rules.general
    if general is not None and general.fullmatch(number) and not general.fullmatch(stripped):
        return number  # the prefix is part of a valid number, not a trunk prefix
    lengths = rules.lengths
    if not lengths:
        return None
    size = len(stripped)
    if size in rules.local_lengths or size < lengths[0]:
        return number
    if size == lengths[0] or size > lengths[-1] or size in lengths:
        return stripped  # possible, or too long (phonenumbers strips those too)
    return number
