"""numtypes.fast (the destination rules' number types without phonenumbers' parser)
agrees with phonenumbers itself: every region's example number of every type, and
random digit strings after every calling code and after no valid one; its prefix
tables hold the first digits of every number each pattern matches."""

from __future__ import annotations

import gc
import importlib
import itertools
import random
import re
from typing import Any

import phonenumbers
from phonenumbers import PhoneNumberType
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

from chargingd.core.config.fraud import NUMBER_TYPES
from chargingd.fraud import numtypes
from chargingd.fraud.destinations import Classifier, Destination, region_and_type
from chargingd.fraud.numtypes import fast
from chargingd.fraud.plan import member_hash

TYPES = [getattr(PhoneNumberType, n) for n in dir(PhoneNumberType) if n.isupper()]


def reference(number: str) -> tuple[str, int] | None:
    """phonenumbers' own answer (None: its parser refuses the number)."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    region = phonenumbers.region_code_for_number(parsed) or ""
    return region, phonenumbers.number_type(parsed)


def check(numbers: list[str]) -> tuple[int, list[tuple[str, object, object]]]:
    """How many the fast path answered, and where it disagreed with phonenumbers."""
    answered = 0
    wrong: list[tuple[str, object, object]] = []
    for number in numbers:
        got = fast(number)
        if got is None:
            continue
        answered += 1
        expected = reference(number)
        if got != expected:
            wrong.append((number, got, expected))
    return answered, wrong


def example_numbers() -> list[str]:
    out = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in TYPES:
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                out.append(phonenumbers.format_number(number, 0))
    for cc in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        number = phonenumbers.example_number_for_non_geo_entity(cc)
        if number is not None:
            out.append(phonenumbers.format_number(number, 0))
    return out


def test_every_example_number_of_every_type_and_region() -> None:
    numbers = example_numbers()
    assert len(numbers) > 1300
    answered, wrong = check(numbers)
    assert wrong == []
    assert answered > 0.9 * len(numbers)  # the shortcut is the common path


def test_example_numbers_one_digit_shorter_longer_and_changed() -> None:
    """Neighbours of real ranges: the edges of lengths and patterns."""
    rnd = random.Random(13)
    numbers = []
    for number in example_numbers():
        numbers += [number[:-1], number + str(rnd.randrange(10)), number + "00"]
        for _ in range(4):
            at = rnd.randrange(2, len(number))
            numbers.append(number[:at] + str(rnd.randrange(10)) + number[at + 1 :])
    answered, wrong = check(numbers)
    assert wrong == []
    assert answered > 0.5 * len(numbers)


def test_random_digits_after_every_calling_code() -> None:
    rnd = random.Random(7)
    numbers = []
    for cc in sorted(COUNTRY_CODE_TO_REGION_CODE):
        for _ in range(150):
            rest = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(1, 17)))
            numbers.append(f"+{cc}{rest}")
    for _ in range(20_000):  # any digits, valid calling code or not
        numbers.append("+" + "".join(rnd.choice("0123456789") for _ in range(rnd.randint(1, 19))))
    answered, wrong = check(numbers)
    assert wrong == []
    assert answered > 0.5 * len(numbers)


def test_what_it_does_not_read_goes_to_phonenumbers() -> None:
    for number in ("", "+", "+4", "+44", "442079460000", "+44 20 7946 0000", "+0442079460000",
                   "+44020794600", "+999123456", "+44" + "1" * 18, "+٤٤2079460000"):  # fmt: skip
        assert fast(number) is None, number
    # region_and_type answers those through phonenumbers as before
    assert region_and_type("+44 20 7946 0000") == ("GB", "fixed_line")
    assert region_and_type("+999123456") == ("", "")
    assert region_and_type("+447400123456") == ("GB", "mobile")
    assert region_and_type("+80012345678") == ("", "toll_free")


# -- the types the rules match only (numtypes.fast_wanted, Classifier.kind) -------------

WANTED_SETS = [
    frozenset({PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST}),  # the default
    frozenset({PhoneNumberType.SHARED_COST}),
    frozenset({PhoneNumberType.VOIP, PhoneNumberType.UAN}),
    numtypes.SPECIAL,
]


def broad_sample() -> list[str]:
    """Every example number, neighbours of them, random digits after every calling code."""
    rnd = random.Random(29)
    numbers = example_numbers()
    for number in list(numbers):
        for _ in range(3):
            at = rnd.randrange(2, len(number))
            numbers.append(number[:at] + str(rnd.randrange(10)) + number[at + 1 :])
        numbers += [number[:-1], number + str(rnd.randrange(10))]
    for cc in sorted(COUNTRY_CODE_TO_REGION_CODE):
        for _ in range(60):
            rest = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(1, 17)))
            numbers.append(f"+{cc}{rest}")
    return numbers


def test_wanted_types_equal_phonenumbers_number_type() -> None:
    """fast_wanted gives phonenumbers' region, and its type exactly when that type is
    one of the wanted ones (else OTHER), for every set of wanted types."""
    numbers = broad_sample()
    assert len(numbers) > 20_000
    refs = {n: reference(n) for n in numbers}
    answered = 0
    premium_or_shared = 0
    for wanted in WANTED_SETS:
        wrong = []
        for number in numbers:
            got = numtypes.fast_wanted(number, wanted)
            if got is None:
                assert fast(number) is None, number  # the same numbers go to phonenumbers
                continue
            answered += 1
            expected = refs[number]
            assert expected is not None
            region, kind = expected
            want = (region, kind if kind in wanted else numtypes.OTHER)
            if got != want:
                wrong.append((number, got, want))
            if kind in (PhoneNumberType.PREMIUM_RATE, PhoneNumberType.SHARED_COST):
                premium_or_shared += 1
        assert wrong == [], (sorted(wanted), wrong[:10])
    assert answered > 0.5 * len(numbers) * len(WANTED_SETS)
    assert premium_or_shared > 500  # the sample holds many of the types the rules match


def test_classifier_kind_is_the_type_when_a_rule_matches_it() -> None:
    """A destination's kind is its full type when the classifier's types name it, else
    ""; its number_type (alerts) is the full type, as before."""
    numbers = [*broad_sample()[::3], "+44 20 7946 0000", "+999123456", "+80012345678"]
    for types in (("premium_rate", "shared_cost"), ("toll_free",), NUMBER_TYPES):
        classifier = Classifier((), (), types)
        for number in numbers:
            dest = classifier.classify(number)
            full = region_and_type(number)
            assert (dest.country, dest.number_type) == full, number
            assert dest.kind == (full[1] if full[1] in types else ""), number


# -- the prefix tables (numtypes.starts: no pattern test where no wanted type can match) --

_sre = importlib.import_module("re._parser")
_op = importlib.import_module("re._constants")


def sample_match(items: Any, rnd: random.Random) -> str:
    """A random digit string the parsed pattern ``items`` fully matches (a walk of its
    branches, repeats and classes)."""
    out = []
    for op, av in items:
        if op in (_op.LITERAL, _op.NOT_LITERAL, _op.ANY, _op.IN):
            chars = numtypes._chars(op, av)
            assert chars, (op, av)
            out.append(rnd.choice(sorted(chars)))
        elif op is _op.SUBPATTERN:
            out.append(sample_match(av[-1], rnd))
        elif op is _op.BRANCH:
            out.append(sample_match(rnd.choice(av[1]), rnd))
        elif op in (_op.MAX_REPEAT, _op.MIN_REPEAT, _op.POSSESSIVE_REPEAT):
            low, high, sub = av
            times = rnd.randint(low, min(high, low + 3))
            out += [sample_match(sub, rnd) for _ in range(times)]
        else:
            assert op is _op.AT, op
    return "".join(out)


def test_prefix_tables_are_the_first_digits_of_what_a_pattern_matches() -> None:
    """Small patterns of every construct phonenumbers uses: the table is exactly the
    first digits of every string they match (all digit strings up to 6 tried)."""
    patterns = [
        r"(?:8(?:4[2-5]|7[0-3])|9(?:[01]\d|8[2-49]))\d{2}",
        r"1\d{0,2}",
        r"(12)?3",
        r"[^5]\d?",
        r"(?:1|2)*",
        r"[2-9]\d{1,5}",
        r"(?:0[1-3]|7)(?:5\d|6)?\d",
        r"00|9",
    ]
    for depth in (1, 2, 4):
        for pattern in patterns:
            compiled = re.compile(pattern)
            exact = {
                s[:depth]
                for size in range(7)
                for s in map("".join, itertools.product("0123456789", repeat=size))
                if compiled.fullmatch(s)
            }
            assert numtypes.starts(pattern, depth) == exact, (pattern, depth)
    assert numtypes.starts(r"\w\d") is None  # a construct it does not read: no table


def test_every_number_a_type_pattern_matches_starts_as_its_table_says() -> None:
    """Every pattern of every region (the types the rules match and the others): 200
    random numbers it matches each, and every sample number it matches, start with a
    prefix of its table; so the table never hides a number of a wanted type."""
    rnd = random.Random(31)
    sample = broad_sample()
    patterns = 0
    for cc in sorted(COUNTRY_CODE_TO_REGION_CODE):
        code = numtypes._calling_code(cc)
        if code is None:
            continue
        split = (numtypes._split(n) for n in sample if n.startswith(f"+{cc}"))
        nns = [found[1] for found in split if found is not None]
        for _, region in code.regions:
            if region is None:
                continue
            descs = [region.general, region.fixed, region.mobile, *(d for _, d in region.types)]
            for desc in descs:
                if desc is None or desc[1] is None:
                    continue
                pattern = desc[1]
                table = numtypes.starts(pattern.pattern)
                assert table is not None, pattern.pattern  # every one is read
                patterns += 1
                parsed = _sre.parse(pattern.pattern)
                for _ in range(200):
                    nn = sample_match(parsed, rnd)
                    assert pattern.fullmatch(nn), (pattern.pattern, nn)
                    assert nn[: numtypes.PREFIX_DIGITS] in table, (pattern.pattern, nn)
                for nn in nns:
                    if pattern.fullmatch(nn):
                        assert nn[: numtypes.PREFIX_DIGITS] in table, (pattern.pattern, nn)
    assert patterns > 1000


# -- the answer kept by the prefix that decides it (numtypes.prefix_decides) ------------


def test_automaton_tells_all_none_or_some_as_re_matches_them() -> None:
    """Automaton.outcome against re itself: for every pattern of every region (and the
    national prefix and leading digits patterns, matched from the start as re.match),
    heads of numbers it matches and random heads, each completion by 0-3 digits tried."""
    rnd = random.Random(41)
    patterns: set[tuple[str, bool]] = set()
    for cc in sorted(COUNTRY_CODE_TO_REGION_CODE):
        code = numtypes._calling_code(cc)
        if code is None:
            continue
        if code.national_prefix is not None:
            patterns.add((code.national_prefix.pattern, False))
        for _, region in code.regions:
            if region is None:
                continue
            if region.leading is not None:
                patterns.add((region.leading.pattern, False))
            for desc in (
                region.general,
                region.fixed,
                region.mobile,
                *(d for _, d in region.types),
            ):
                if desc is not None and desc[1] is not None:
                    patterns.add((desc[1].pattern, True))
    patterns |= {(r"([24-9]\d{6})$|0", False), (r"1\d{0,2}$", True), (r"(?:1|2)*3", True)}
    seen = {numtypes.ALL: 0, numtypes.NONE: 0, numtypes.MIXED: 0}
    for pattern, full in sorted(patterns):
        automaton = numtypes.Automaton(pattern)  # every one is read
        compiled = re.compile(pattern)
        test = compiled.fullmatch if full else compiled.match
        parsed = _sre.parse(pattern)
        for i in range(8):
            if i % 2:
                head = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(0, 6)))
            else:
                whole = sample_match(parsed, rnd)
                head = whole[: rnd.randint(0, len(whole))]
            rest = rnd.randint(0, 3)
            got = {
                bool(test(head + "".join(t))) for t in itertools.product("0123456789", repeat=rest)
            }
            want = (
                numtypes.MIXED if len(got) == 2 else numtypes.ALL if True in got else numtypes.NONE
            )
            assert automaton.outcome(head, rest, full=full) == want, (pattern, full, head, rest)
            seen[want] += 1
    assert min(seen.values()) > 100, seen
    assert numtypes._automaton(r"\w\d") is None  # a construct it does not read: none


def test_classifier_by_prefix_answers_each_number_as_its_own_lookup() -> None:
    """Every sample number and 3 neighbours each (its last 3 digits random), in order
    (neighbours share their prefix): the classifier that keeps answers by prefix gives
    each number the country and kind phonenumbers gives it, for three sets of types,
    with most numbers answered by a kept prefix; the kept prefixes stay bounded."""
    rnd = random.Random(43)
    numbers = broad_sample()
    for number in numbers[::4]:
        for _ in range(3):
            numbers.append(number[:-3] + "".join(rnd.choice("0123456789") for _ in range(3)))
    numbers.sort()
    refs = {n: region_and_type(n) for n in numbers}
    for types in (("premium_rate", "shared_cost"), ("toll_free",), NUMBER_TYPES):
        classifier = Classifier(("CU", "LR"), ("+882",), types)
        learnt = 0
        for number in numbers:
            before = len(classifier._by_prefix)
            dest = classifier._classify(number)  # (not its per-number cache)
            learnt += len(classifier._by_prefix) - before
            country, full = refs[number]
            assert (dest.country, dest.kind) == (country, full if full in types else ""), number
            assert dest.high_risk_country == (country in ("CU", "LR"))
            made = Destination(
                number, dest.country, dest.kind, dest.high_risk_country,
                "+882" if number.startswith("+882") else "", member_hash(number),
            )  # fmt: skip
            assert type(dest) is Destination and dest == made, number
        assert learnt < len(numbers) * 0.6, learnt  # the others answered by a kept prefix
        assert sum(1 for kept in classifier._by_prefix.values() if kept[2]) > 10_000
    small = Classifier((), (), prefix_cache=100, cache_size=50)
    for number in numbers[:5000]:
        assert small.classify(number) == small._classify(number)
        assert small.classify(number) is small.classify(number)  # kept per number
    assert len(small._by_prefix) == 100 and len(small._numbers) == 50
    small.cache_clear()
    assert not small._numbers and len(small._by_prefix) == 100


def test_automata_hold_nothing_for_the_collector_to_walk() -> None:
    """The automata are kept for the process's life (one per pattern met): their tables
    and what they learnt are tuples of strings and numbers, untracked by the collector
    once it has looked at them (sets or lists would stay tracked, each walked by every
    full collection)."""
    # A daemon started in this test process before (serve's freeze_after_start) froze
    # the automata made until then: frozen objects are never walked, and never looked
    # at to be untracked either. Their tuples' untracking is what is checked here.
    gc.unfreeze()
    classifier = Classifier((), ())
    for number in ("+442079460000", "+447400123456", "+12015550123", "+4930123456"):
        classifier.classify(number)
    for _ in range(4):  # a nested tuple once its contents are (a collection each)
        gc.collect()
    automata = [a for a in numtypes._AUTOMATA.values() if a is not None]
    assert len(automata) > 20
    for automaton in automata:
        held: list[object] = [automaton.edges, automaton.eps]
        for table in (automaton._closures, automaton._steps, automaton._memo):
            held += [*table.keys(), *table.values()]
        assert not any(gc.is_tracked(x) for x in held)
    kept = classifier._by_prefix
    assert not any(gc.is_tracked(x) for x in (*kept.keys(), *kept.values()))
