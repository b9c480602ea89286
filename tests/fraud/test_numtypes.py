"""numtypes.fast (the destination rules' number types without phonenumbers' parser)
agrees with phonenumbers itself: every region's example number of every type, and
random digit strings after every calling code and after no valid one."""

from __future__ import annotations

import random

import phonenumbers
from phonenumbers import PhoneNumberType
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

from chargingd.fraud.destinations import region_and_type
from chargingd.fraud.numtypes import fast

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
