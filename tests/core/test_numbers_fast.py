"""The E.164 fast path gives exactly what phonenumbers gives, or steps aside.

Digit strings are generated the way gateways dial them (IDD, "+", trunk prefix, the
region's own country code, bare national numbers) for every region phonenumbers
knows, and each answer of the fast path is compared with phonenumbers.parse.
"""

from __future__ import annotations

import gc
import random

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import PhoneMetadata

from chargingd.core import numbers
from chargingd.core.numbers import NumberError, _fast_e164, to_e164

REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)


def _reference(digits: str, region: str) -> str | None:
    """phonenumbers' E.164 of a digit string, None when it refuses it."""
    try:
        parsed = phonenumbers.parse(digits, None if digits.startswith("+") else region)
    except phonenumbers.NumberParseException:
        return None
    e164: str = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return e164


def _prefixes(region: str) -> list[str]:
    meta = PhoneMetadata.metadata_for_region(region)
    assert meta is not None
    found = ["", "+", str(meta.country_code), "0", "1", "00", "011", "810"]
    for value in (
        meta.preferred_international_prefix,
        meta.international_prefix,
        meta.national_prefix,
        meta.national_prefix_for_parsing,
    ):
        if value and value.isdigit():
            found.append(value)
    return found


def _sample(rng: random.Random, region: str) -> str:
    prefix = rng.choice(_prefixes(region))
    body = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 16)))
    if prefix in ("+", "00", "011", "810") and rng.random() < 0.5:
        body = rng.choice(["44", "49", "1", "33", "39", "7", "86", "880", "998", "800"]) + body
    return prefix + body


def _agrees(digits: str, region: str) -> None:
    fast = _fast_e164(digits, region)
    if fast is not None:
        assert fast == _reference(digits, region), (digits, region)


def test_fast_path_matches_phonenumbers_in_every_region() -> None:
    rng = random.Random(15)
    taken = 0
    for region in REGIONS:
        for _ in range(60):
            digits = _sample(rng, region)
            _agrees(digits, region)
            taken += _fast_e164(digits, region) is not None
    # The fast path must actually carry most of this traffic, not step aside always.
    assert taken > 0.5 * 60 * len(REGIONS)


@settings(max_examples=400, deadline=None)
@given(
    region=st.sampled_from(REGIONS),
    prefix=st.sampled_from(["", "+", "0", "00", "011", "8", "810", "1", "49", "44"]),
    body=st.text(alphabet="0123456789", min_size=1, max_size=18),
)
def test_fast_path_property(region: str, prefix: str, body: str) -> None:
    _agrees(prefix + body, region)


@pytest.mark.parametrize(
    ("digits", "region", "expected"),
    [
        ("004420798123", "DE", "+4420798123"),  # IDD then country code
        ("030123456", "DE", "+4930123456"),  # trunk prefix stripped
        ("316123412345", "DE", "+49316123412345"),  # national significant number
        ("01149301234567", "US", "+49301234567"),  # NANP IDD 011
        ("+390612345678", "DE", "+390612345678"),  # Italian leading zero kept
    ],
)
def test_fast_path_takes_the_common_forms(digits: str, region: str, expected: str) -> None:
    assert _fast_e164(digits, region) == expected
    assert to_e164(digits, country=region) == expected


def test_fast_path_steps_aside_for_the_hard_cases() -> None:
    # The region's own country code without IDD: phonenumbers weighs both readings.
    assert _fast_e164("4930123456", "DE") is None
    assert to_e164("4930123456", country="DE") == _reference("4930123456", "DE")
    # Unknown region: only "+" numbers are read without it.
    assert _fast_e164("030123456", "XX") is None
    assert _fast_e164("+4930123456", "XX") == "+4930123456"


def test_cache_is_bounded_and_evicts() -> None:
    # What phonenumbers reads is cached (an LRU: evicts, never wipes); the fast path
    # is not (it costs less than the look-up), so plain digit strings leave it alone.
    numbers._to_e164.cache_clear()
    assert numbers._to_e164.cache_info().maxsize == numbers.CACHE_SIZE
    for n in range(2000):
        assert to_e164(f"0044207946{n:06d}", country="DE") == f"+44207946{n:06d}"
    assert numbers._to_e164.cache_info().currsize == 0
    slow = [f"+44 20 7946 {n:04d}" for n in range(5)]  # separators: phonenumbers' reading
    got = [to_e164(raw, country="DE") for raw in slow]
    assert got == [f"+44207946{n:04d}" for n in range(5)]
    info = numbers._to_e164.cache_info()
    assert (info.currsize, info.misses) == (5, 5)
    assert to_e164(slow[2], country="de") == got[2]  # region case: the same entry
    assert numbers._to_e164.cache_info().hits == info.hits + 1


def test_numbers_are_not_tracked_by_the_collector() -> None:
    # The fast path keeps nothing; a cached number is one str key: (raw, country) tuples
    # made the young generation fill with every new number (docs/performance.md 6c).
    numbers._to_e164.cache_clear()
    enabled = gc.isenabled()
    gc.disable()
    try:
        gc.collect()
        before = gc.get_count()[0]
        got = [to_e164(f"0044207946{n:06d}", country="gb") for n in range(2000)]
        got += [to_e164(f"0044 207946{n:06d}", country="gb") for n in range(100)]
        grown = gc.get_count()[0] - before
    finally:
        if enabled:
            gc.enable()
    assert grown < 200, grown
    assert got[5] == "+44207946000005" == to_e164("0044207946000005", country="GB")
    assert got[2005] == "+44207946000005"
    assert numbers._to_e164.cache_info().currsize == 100
    assert to_e164("030 1234567", country="de") == "+49301234567"  # region case: one entry
    assert to_e164("030 1234567", country="DE") == "+49301234567"
    assert numbers._to_e164.cache_info().currsize == 101


def test_fast_path_errors_are_typed() -> None:
    with pytest.raises(NumberError):
        to_e164("+1234567890123456789", country="DE")  # longer than E.164 allows
