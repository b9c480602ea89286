"""phonenumbers' (region, number type) of an E.164 number, without its general parser.

phonenumbers.parse + region_code_for_number + number_type cost about 29 us for a
number seen the first time (callers dial ever new numbers, so a cache per number
helps little): the parser is lenient about any text, and the type is worked out
twice (once to pick the region of a shared calling code, once for the type), each
time through eleven metadata lookups and pattern compilations.

This module does the same steps on the same metadata for the one input authorize
has, "+" and digits (core.numbers.to_e164), with each region's patterns compiled
once: the calling code is read as phonenumbers reads it, and every case where its
parser would do more than split the calling code off goes to phonenumbers itself
(a national prefix its pattern could strip, a leading zero, a length out of its
bounds, anything but "+" and digits). tests/fraud/test_numtypes.py checks the
answers equal phonenumbers' on every region's example numbers of every type and on
random digit strings of every calling code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberType
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

NON_GEO = "001"  # phonenumbers' region of non-geographic numbers
_E164 = re.compile(r"\+[1-9][0-9]{2,}")
_MIN_NSN, _MAX_NSN = 2, 17  # phonenumbers' _MIN_LENGTH_FOR_NSN, _MAX_LENGTH_FOR_NSN
# The order phonenumbers' _number_type_helper tries the types before fixed/mobile.
_ORDER = (
    ("premium_rate", PhoneNumberType.PREMIUM_RATE),
    ("toll_free", PhoneNumberType.TOLL_FREE),
    ("shared_cost", PhoneNumberType.SHARED_COST),
    ("voip", PhoneNumberType.VOIP),
    ("personal_number", PhoneNumberType.PERSONAL_NUMBER),
    ("pager", PhoneNumberType.PAGER),
    ("uan", PhoneNumberType.UAN),
    ("voicemail", PhoneNumberType.VOICEMAIL),
)

# A number description: its possible lengths (empty: any) and its pattern (None: none).
Desc = tuple[frozenset[int], "re.Pattern[str] | None"] | None


def _desc(desc: object) -> Desc:
    if desc is None:
        return None
    pattern = getattr(desc, "national_number_pattern", None)
    lengths = frozenset(getattr(desc, "possible_length", None) or ())
    return lengths, (re.compile(pattern) if pattern else None)


def _matches(nn: str, desc: Desc) -> bool:
    """phonenumbers' _is_number_matching_desc."""
    if desc is None:
        return False
    lengths, pattern = desc
    if lengths and len(nn) not in lengths:
        return False
    return pattern is not None and pattern.fullmatch(nn) is not None


@dataclass(frozen=True)
class Region:
    """One region's metadata, compiled: what _number_type_helper reads."""

    general: Desc
    types: tuple[tuple[int, Desc], ...]
    fixed: Desc
    mobile: Desc
    same_fixed_mobile: bool
    leading: re.Pattern[str] | None

    def number_type(self, nn: str) -> int:
        """phonenumbers' _number_type_helper."""
        if not _matches(nn, self.general):
            return PhoneNumberType.UNKNOWN
        for kind, desc in self.types:
            if _matches(nn, desc):
                return kind
        if _matches(nn, self.fixed):
            if self.same_fixed_mobile or _matches(nn, self.mobile):
                return PhoneNumberType.FIXED_LINE_OR_MOBILE
            return PhoneNumberType.FIXED_LINE
        if not self.same_fixed_mobile and _matches(nn, self.mobile):
            return PhoneNumberType.MOBILE
        return PhoneNumberType.UNKNOWN


def _region(meta: PhoneMetadata) -> Region:
    return Region(
        general=_desc(meta.general_desc),
        types=tuple((kind, _desc(getattr(meta, attr))) for attr, kind in _ORDER),
        fixed=_desc(meta.fixed_line),
        mobile=_desc(meta.mobile),
        same_fixed_mobile=bool(meta.same_mobile_and_fixed_line_pattern),
        leading=re.compile(meta.leading_digits) if meta.leading_digits is not None else None,
    )


@dataclass(frozen=True)
class CallingCode:
    """A calling code's regions, compiled, and its parser's national prefix pattern."""

    regions: tuple[tuple[str, Region | None], ...]  # phonenumbers' order; None: no metadata
    national_prefix: re.Pattern[str] | None  # the number region's national prefix


_CODES: dict[int, CallingCode | None] = {}


def _calling_code(cc: int) -> CallingCode | None:
    if cc in _CODES:
        return _CODES[cc]
    names = COUNTRY_CODE_TO_REGION_CODE[cc]
    regions: list[tuple[str, Region | None]] = []
    for name in names:
        if name == NON_GEO:
            meta = PhoneMetadata.metadata_for_nongeo_region(cc, None)
        else:
            meta = PhoneMetadata.metadata_for_region(name.upper(), None)
        regions.append((name, None if meta is None else _region(meta)))
    # parse: the metadata of region_code_for_country_code (the first region)
    main = phonenumbers.region_code_for_country_code(cc)
    meta = PhoneMetadata.metadata_for_region_or_calling_code(cc, main)
    found: CallingCode | None = None
    if meta is not None:
        prefix = meta.national_prefix_for_parsing
        found = CallingCode(tuple(regions), re.compile(prefix) if prefix else None)
    _CODES[cc] = found
    return found


def fast(number: str) -> tuple[str, int] | None:
    """(region or "", PhoneNumberType) as phonenumbers gives them; None: this number
    needs phonenumbers' own parser."""
    if _E164.fullmatch(number) is None:
        return None
    digits = number[1:]
    for size in (1, 2, 3):
        cc = int(digits[:size])
        if cc in COUNTRY_CODE_TO_REGION_CODE:
            break
    else:
        return None
    nn = digits[size:]
    if not _MIN_NSN <= len(nn) <= _MAX_NSN or nn[0] == "0":
        return None
    code = _calling_code(cc)
    if code is None or (code.national_prefix is not None and code.national_prefix.match(nn)):
        return None
    regions = code.regions
    if len(regions) == 1:  # region_code_for_number
        name, region = regions[0]
        return name, (PhoneNumberType.UNKNOWN if region is None else region.number_type(nn))
    for name, region in regions:  # _region_code_for_number_from_list
        if region is None:
            continue
        if region.leading is not None:
            if region.leading.match(nn):
                return name, region.number_type(nn)
        else:
            kind = region.number_type(nn)
            if kind != PhoneNumberType.UNKNOWN:
                return name, kind
    return "", PhoneNumberType.UNKNOWN
