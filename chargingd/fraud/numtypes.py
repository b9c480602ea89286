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

The rules need less than the full type: ``fast_wanted`` answers the region and the
type only when it is one of the types the rules match (premium rate, shared cost by
default), else OTHER. phonenumbers tries the types in a fixed order and the first
pattern that matches wins, so a number is of a wanted type T when T's pattern matches,
its general pattern does, and no type tried before T does: for most numbers two
pattern tests (the wanted types', each behind its lengths) instead of eleven. The
region of a shared calling code only needs "is it of any type" (fixed line and mobile
tried first: most numbers are).

Most numbers are of no wanted type, and a prefix table tells so without a pattern test:
each region's wanted types' patterns are read once (re's parser) into the set of the
first PREFIX_DIGITS digits of every number they can match (``starts``); a number
whose first digits are in none of them is of no wanted type. The table may hold more
than the patterns match, never less (a construct it does not read: no table, the
patterns decide), so it only skips tests that could not match.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import Any

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumberType
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

NON_GEO = "001"  # phonenumbers' region of non-geographic numbers
OTHER = -1  # fast_wanted: a type the rules do not match (or none)
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

PREFIX_DIGITS = 4  # the prefix tables' depth
_ANY = frozenset({-2})  # Region.tables' key of the table of every type (Region.known)
_sre: Any = importlib.import_module("re._parser")  # re's own parser (no stubs)
_op: Any = importlib.import_module("re._constants")
_DIGITS = frozenset("0123456789")


def _chars(op: Any, av: Any) -> frozenset[str] | None:
    """The digits one parsed item matches; None: not a one-character item."""
    if op is _op.LITERAL:
        return _DIGITS & {chr(av)}
    if op is _op.NOT_LITERAL:
        return _DIGITS - {chr(av)}
    if op is _op.ANY:
        return _DIGITS
    if op is not _op.IN:
        return None
    found: set[str] = set()
    negate = False
    for kind, arg in av:
        if kind is _op.NEGATE:
            negate = True
        elif kind is _op.LITERAL:
            found.add(chr(arg))
        elif kind is _op.RANGE:
            found.update(chr(c) for c in range(arg[0], arg[1] + 1))
        elif kind is _op.CATEGORY and arg is _op.CATEGORY_DIGIT:
            found.update(_DIGITS)
        else:
            raise ValueError(f"class item {kind}")
    return _DIGITS - found if negate else _DIGITS & found


def _extend(heads: set[str], items: Any, depth: int) -> set[str]:
    """``heads`` (the first ``depth`` digits of what matched so far, whole when
    shorter) followed by a match of ``items``; ValueError: a construct not read."""
    for op, av in items:
        chars = _chars(op, av)
        if chars is not None:
            heads = {h if len(h) >= depth else h + c for h in heads for c in chars}
        elif op is _op.AT:  # anchors: fullmatch makes them no-ops (more, never less)
            continue
        elif op is _op.SUBPATTERN:
            heads = _extend(heads, av[-1], depth)
        elif op is _op.ATOMIC_GROUP:
            heads = _extend(heads, av, depth)
        elif op is _op.BRANCH:
            heads = set().union(*(_extend(heads, alt, depth) for alt in av[1]))
        elif op in (_op.MAX_REPEAT, _op.MIN_REPEAT, _op.POSSESSIVE_REPEAT):
            low, high, sub = av
            found = set(heads) if low == 0 else set()
            times = 0
            while times < high:
                after = _extend(heads, sub, depth)
                times += 1
                if after == heads:  # so is every later count: the count `low` too
                    found |= heads
                    break
                heads = after
                if times >= low:
                    found |= heads
                if times > low + depth + 1:
                    raise ValueError("repeat does not settle")
            heads = found
        else:
            raise ValueError(f"item {op}")
    return heads


def starts(pattern: str, depth: int = PREFIX_DIGITS) -> frozenset[str] | None:
    """The first ``depth`` digits of every digit string ``pattern`` fully matches (a
    shorter one whole); None: a construct this does not read."""
    try:
        return frozenset(_extend({""}, _sre.parse(pattern), depth))
    except ValueError:
        return None


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
    # wanted types -> the prefix table of their patterns (None: none to be had)
    tables: dict[frozenset[int], frozenset[str] | None] = field(default_factory=dict)

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

    def known(self, nn: str) -> bool:
        """number_type(nn) != UNKNOWN, the likeliest patterns tried first (none when
        no type's pattern matches a number starting so: another region's number of a
        shared calling code, e.g. Canada's after the US's)."""
        table = self.tables[_ANY] if _ANY in self.tables else self.table(_ANY)
        if table is not None and nn[:PREFIX_DIGITS] not in table:
            return False
        if not _matches(nn, self.general):
            return False
        if _matches(nn, self.fixed) or _matches(nn, self.mobile):
            return True  # (same_fixed_mobile: the mobile pattern is the fixed one)
        return any(_matches(nn, desc) for _, desc in self.types)

    def table(self, wanted: frozenset[int]) -> frozenset[str] | None:
        """The first PREFIX_DIGITS digits of every number a ``wanted`` type's pattern
        matches (``_ANY``: any type's, fixed line and mobile too; None: a pattern not
        read, its tests decide)."""
        if wanted in self.tables:
            return self.tables[wanted]
        heads: set[str] | None = set()
        descs = [*self.types, (0, self.fixed), (0, self.mobile)] if wanted is _ANY else self.types
        for kind, desc in descs:
            wants = wanted is _ANY or kind in wanted
            if wants and desc is not None and desc[1] is not None and heads is not None:
                found = starts(desc[1].pattern)
                heads = None if found is None else heads | found
        table = self.tables[wanted] = None if heads is None else frozenset(heads)
        return table

    def wanted_type(self, nn: str, wanted: frozenset[int]) -> int:
        """number_type(nn) when it is in ``wanted`` (special types only), else OTHER."""
        table = self.tables.get(wanted) if wanted in self.tables else self.table(wanted)
        if table is not None and nn[:PREFIX_DIGITS] not in table:
            return OTHER  # no wanted type's pattern matches a number starting so
        for i, (kind, desc) in enumerate(self.types):
            if kind in wanted and _matches(nn, desc):
                # the first type that matches wins, and only within the general pattern
                if not _matches(nn, self.general):
                    return OTHER
                for _, earlier in self.types[:i]:
                    if _matches(nn, earlier):  # not wanted (else found first)
                        return OTHER
                return kind
        return OTHER


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
_CC_TEXT = {str(cc): cc for cc in COUNTRY_CODE_TO_REGION_CODE}


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


def _split(number: str) -> tuple[CallingCode, str] | None:
    """A number's calling code (compiled) and national number, as phonenumbers' parser
    reads them; None: anything its parser would treat specially."""
    if _E164.fullmatch(number) is None:
        return None
    digits = number[1:]
    for size in (1, 2, 3):  # (the first digit is not 0: its text is the code's)
        cc = _CC_TEXT.get(digits[:size], 0)
        if cc:
            break
    else:
        return None
    nn = digits[size:]
    if not _MIN_NSN <= len(nn) <= _MAX_NSN or nn[0] == "0":
        return None
    code = _calling_code(cc)
    if code is None or (code.national_prefix is not None and code.national_prefix.match(nn)):
        return None
    return code, nn


def fast(number: str) -> tuple[str, int] | None:
    """(region or "", PhoneNumberType) as phonenumbers gives them; None: this number
    needs phonenumbers' own parser."""
    found = _split(number)
    if found is None:
        return None
    code, nn = found
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


SPECIAL = frozenset(kind for _, kind in _ORDER)


def fast_wanted(number: str, wanted: frozenset[int]) -> tuple[str, int] | None:
    """As ``fast``, with the type only when it is in ``wanted`` (a subset of the types
    tried before fixed line and mobile: SPECIAL), else OTHER: (region or "", type or
    OTHER); None: this number needs phonenumbers' own parser."""
    found = _split(number)
    if found is None:
        return None
    code, nn = found
    regions = code.regions
    if len(regions) == 1:
        name, region = regions[0]
        return name, (OTHER if region is None else region.wanted_type(nn, wanted))
    for name, region in regions:  # _region_code_for_number_from_list
        if region is None:
            continue
        if region.leading is not None:
            if region.leading.match(nn):
                return name, region.wanted_type(nn, wanted)
        elif region.known(nn):
            return name, region.wanted_type(nn, wanted)
    return "", OTHER


# -- which numbers share an answer: a prefix and a length that decide it ---------------

ALL, NONE, MIXED = 1, 0, -1  # Automaton.outcome: of every number of a class
_END = "$"  # the symbol an AT_END ("$") reads: only at the end of the input


States = tuple[int, ...]  # a set of an automaton's states, sorted


class Automaton:
    """A pattern as a nondeterministic automaton over digits, exact for what it matches
    (re's fullmatch and match of digit strings: its branches, groups, classes, repeats
    and "$"); ValueError on any other construct (the caller then decides nothing).
    ``outcome`` tells whether every digit string with a given head and length matches,
    none does, or some do (MIXED). Kept for the process's life: its tables are tuples
    of strings and numbers, which the collector stops tracking (no sets, no lists)."""

    def __init__(self, pattern: str) -> None:
        self._edges_made: list[list[tuple[str, int]]] = []
        self._eps_made: list[list[int]] = []
        self.start = self._state()
        self.accept = self._build(_sre.parse(pattern), self.start)
        # state -> (the digits it reads as a string, the state after)...; its empty moves
        self.edges = tuple(tuple(e) for e in self._edges_made)
        self.eps = tuple(tuple(e) for e in self._eps_made)
        self._edges_made, self._eps_made = [], []
        self._closures: dict[int, States] = {}
        self._steps: dict[tuple[States, str], States] = {}
        self._memo: dict[tuple[States, int, bool], int] = {}

    def _state(self) -> int:
        self._edges_made.append([])
        self._eps_made.append([])
        return len(self._edges_made) - 1

    def _build(self, items: Any, at: int) -> int:
        for op, av in items:
            chars = _chars(op, av)
            if chars is not None:
                to = self._state()
                self._edges_made[at].append(("".join(sorted(chars)), to))
                at = to
            elif op is _op.AT and av is _op.AT_END:
                to = self._state()
                self._edges_made[at].append((_END, to))
                at = to
            elif op is _op.SUBPATTERN:
                at = self._build(av[-1], at)
            elif op is _op.BRANCH:
                end = self._state()
                for alt in av[1]:
                    self._eps_made[self._build(alt, at)].append(end)
                at = end
            elif op in (_op.MAX_REPEAT, _op.MIN_REPEAT):  # greedy or not: the same strings
                low, high, sub = av
                if low > 32 or (high is not _op.MAXREPEAT and high - low > 32):
                    raise ValueError("repeat too long")
                for _ in range(low):
                    at = self._build(sub, at)
                if high is _op.MAXREPEAT:
                    loop = self._state()
                    self._eps_made[at].append(loop)
                    self._eps_made[self._build(sub, loop)].append(loop)
                    at = loop
                else:
                    end = self._state()
                    for _ in range(high - low):
                        self._eps_made[at].append(end)
                        at = self._build(sub, at)
                    self._eps_made[at].append(end)
                    at = end
            else:
                raise ValueError(f"item {op}")
        return at

    def _closure(self, states: set[int]) -> States:
        out: set[int] = set()
        for s in states:
            found = self._closures.get(s)
            if found is None:
                seen = {s}
                todo = [s]
                while todo:
                    for t in self.eps[todo.pop()]:
                        if t not in seen:
                            seen.add(t)
                            todo.append(t)
                found = self._closures[s] = tuple(sorted(seen))
            out.update(found)
        return tuple(sorted(out))

    def _step(self, states: States, char: str) -> States:
        key = (states, char)
        found = self._steps.get(key)
        if found is None:
            to = {t for s in states for chars, t in self.edges[s] if char in chars}
            found = self._steps[key] = self._closure(to)
        return found

    def _at_end(self, states: States) -> bool:
        """Matched once the input ends (its "$" read there, any number of them)."""
        while self.accept not in states:
            more = tuple(sorted({*states, *self._step(states, _END)}))
            if more == states:
                return False
            states = more
        return True

    def outcome(self, head: str, rest: int, *, full: bool) -> int:
        """Of every digit string ``head`` + ``rest`` more digits: ALL fullmatch (``full``)
        or match (a match of some start of it, as re's match), NONE, or MIXED."""
        states = self._closure({self.start})
        for char in head:
            if not full and self.accept in states:
                return ALL
            states = self._step(states, char)
        return self._outcome(states, rest, full)

    def _outcome(self, states: States, rest: int, full: bool) -> int:
        if not full and self.accept in states:
            return ALL
        if rest == 0:
            return ALL if self._at_end(states) else NONE
        if not states:
            return NONE
        key = (states, rest, full)
        found = self._memo.get(key)
        if found is not None:
            return found
        out = -2
        for char in "0123456789":
            got = self._outcome(self._step(states, char), rest - 1, full)
            if got == MIXED or (out != -2 and got != out):
                out = MIXED
                break
            out = got
        self._memo[key] = out
        return out


_AUTOMATA: dict[str, Automaton | None] = {}


def _automaton(pattern: str) -> Automaton | None:
    if pattern in _AUTOMATA:
        return _AUTOMATA[pattern]
    try:
        found: Automaton | None = Automaton(pattern)
    except ValueError:
        found = None
    _AUTOMATA[pattern] = found
    return found


def _decided(pattern: re.Pattern[str] | None, head: str, rest: int, full: bool) -> bool:
    if pattern is None:
        return True
    automaton = _automaton(pattern.pattern)
    return automaton is not None and automaton.outcome(head, rest, full=full) != MIXED


def prefix_decides(number: str, size: int) -> bool:
    """Does every "+digits" number of ``number``'s length that starts with its first
    ``size`` characters get fast_wanted's answer for ``number`` (for any wanted
    types)? True when each test fast_wanted may run on such a number has one outcome
    for all of them: the calling code and the national number's first digit within
    the prefix, the length, and every pattern of the code's regions (national prefix,
    leading digits, general, fixed line, mobile, the special types) matching all of
    them or none (the prefix tables only skip tests that could not match)."""
    found = _split(number)
    if found is None:
        return False
    code, nn = found
    cut = size - (len(number) - len(nn))  # the national number's digits in the prefix
    if cut < 1:
        return False
    head, rest = nn[:cut], max(len(nn) - cut, 0)
    if not _decided(code.national_prefix, head, rest, False):
        return False
    for _, region in code.regions:
        if region is None:
            continue
        if not _decided(region.leading, head, rest, False):
            return False
        for desc in (region.general, region.fixed, region.mobile, *(d for _, d in region.types)):
            if desc is not None and not _decided(desc[1], head, rest, True):
                return False
    return True
