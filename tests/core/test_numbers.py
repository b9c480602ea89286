"""Number normalisation: national, international (00 / 011), trunk prefix, URIs -> E.164."""

from __future__ import annotations

import pytest

from chargingd.core.numbers import NumberError, e164_digits, normalize_or_raw, strip_uri, to_e164


@pytest.mark.parametrize(
    ("raw", "country", "expected"),
    [
        ("+4930123456", "DE", "+4930123456"),
        ("004930123456", "DE", "+4930123456"),  # DE international prefix 00
        ("030123456", "DE", "+4930123456"),  # DE trunk prefix 0
        ("30123456", "DE", "+4930123456"),  # national significant number
        ("01149301234567", "US", "+49301234567"),  # NANP international prefix 011
        ("2125551234", "US", "+12125551234"),
        ("12125551234", "US", "+12125551234"),  # NANP trunk prefix 1
        ("00441134960000", "DE", "+441134960000"),
        ("01134960000", "GB", "+441134960000"),  # Leeds: 011 is a GB area code, not IDD
        ("sip:+4930123456@10.0.0.1;user=phone", "DE", "+4930123456"),
        ("<tel:030-123 456>", "DE", "+4930123456"),
        ("(030) 123.456", "de", "+4930123456"),
    ],
)
def test_to_e164(raw: str, country: str, expected: str) -> None:
    assert to_e164(raw, country=country) == expected
    assert e164_digits(raw, country=country) == expected[1:]


@pytest.mark.parametrize(
    "raw", ["", "   ", "abc", "sip:alice@example.com", "+", "0", "+999", "12a4"]
)
def test_bad_numbers_raise_typed_error(raw: str) -> None:
    with pytest.raises(NumberError) as err:
        to_e164(raw, country="DE")
    assert err.value.code == "bad_number"


def test_normalize_or_raw_keeps_what_it_cannot_read() -> None:
    assert normalize_or_raw("030123456", country="DE") == "+4930123456"
    assert normalize_or_raw("sip:alice@example.com", country="DE") == "alice"
    assert strip_uri("sips:+49301@gw") == "+49301"
