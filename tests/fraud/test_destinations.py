"""Destination classification: phonenumbers' own types (phonenumberslite carries the
full metadata), the configured lists, number ranges."""

from __future__ import annotations

import phonenumbers
import pytest
from phonenumbers import PhoneNumberType

from chargingd.fraud.destinations import Classifier, number_range, region_and_type

# phonenumbers' own names, lower case (UNKNOWN: no type).
NAMES = {
    getattr(PhoneNumberType, n): n.lower()
    for n in dir(PhoneNumberType)
    if n.isupper() and n != "UNKNOWN"
}
KINDS = [
    PhoneNumberType.PREMIUM_RATE,
    PhoneNumberType.SHARED_COST,
    PhoneNumberType.TOLL_FREE,
    PhoneNumberType.MOBILE,
]


def examples(kind: int) -> list[tuple[str, str]]:
    """(region, E.164) of phonenumbers' example number of ``kind``, every region."""
    out = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        number = phonenumbers.example_number_for_type(region, kind)
        if number is not None:
            out.append((region, phonenumbers.format_number(number, 0)))
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_every_regions_example_number_gets_its_type(kind: int) -> None:
    found = examples(kind)
    assert len(found) > 20  # the lite package carries the number types of the world
    wrong = []
    for region, number in found:
        parsed = phonenumbers.parse(number)
        # NANP and other shared codes: several regions give the same example number.
        expected_region = phonenumbers.region_code_for_number(parsed)
        expected = (expected_region, NAMES.get(phonenumbers.number_type(parsed), ""))
        if region_and_type(number) != expected:
            wrong.append((region, number, region_and_type(number)))
    assert wrong == []


def test_lists_and_non_geographic_numbers() -> None:
    c = Classifier(("LR", "CU"), ("+882", "+88213"))
    lr = c.classify(phonenumbers.format_number(
        phonenumbers.example_number_for_type("LR", PhoneNumberType.PREMIUM_RATE), 0))  # fmt: skip
    assert (lr.country, lr.number_type, lr.high_risk_country) == ("LR", "premium_rate", True)
    assert lr.reasons(("high_risk_country", "premium_rate", "shared_cost")) == [
        "high_risk_country",
        "premium_rate",
    ]
    sat = c.classify("+88213123456")
    assert (sat.country, sat.high_risk_prefix) == ("", "+88213")  # the longest prefix
    berlin = c.classify("+4930123456")
    assert berlin.reasons(("high_risk_country", "high_risk_prefix", "premium_rate")) == []
    assert c.classify("+999") == c.classify("+999")  # nonsense: no country, no type
    assert c.classify("+999").country == ""


def test_number_range() -> None:
    assert number_range("+4930123456", 3) == "+4930123"
    assert number_range("+4930123456", 0) == "+4930123456"
    assert number_range("+49", 5) == "+4"
