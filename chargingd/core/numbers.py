"""Telephone number normalisation: whatever a gateway sends -> E.164 ("+4930123456").

Gateways send Calling/Called-Station-Id in national or international dialling
form ("030123456", "004930123456", "01149301234" from a US trunk, "+4930123456"),
sometimes wrapped in a SIP or tel URI. The per-client default country tells the
``phonenumbers`` library which international prefix (IDD: "00" in Europe, "011" in
NANP) and which trunk prefix ("0") apply, so the same digits mean the same number
whichever gateway sent them.
"""

from __future__ import annotations

import functools
import re

import phonenumbers

_E164_MAX_DIGITS = 15  # ITU-T E.164 §6: at most 15 digits after the country code sign
_SEPARATORS = re.compile(r"[\s\-./()]")
_URI_SCHEMES = ("sip:", "sips:", "tel:")


class NumberError(ValueError):
    """A number that cannot be read as a telephone number; ``code`` is stable."""

    code = "bad_number"


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


def to_e164(raw: str, *, country: str = "DE") -> str:
    """Normalise ``raw`` to E.164 with a leading "+", dialled from ``country``.

    Raises NumberError when the text holds no plausible number. Results are cached
    (phonenumbers costs ~50 us a number; callers and callees repeat).
    """
    return _to_e164(raw, country.upper())


@functools.lru_cache(maxsize=65_536)
def _to_e164(raw: str, country: str) -> str:
    text = _SEPARATORS.sub("", strip_uri(raw))
    if not text:
        raise NumberError("empty number")
    body = text[1:] if text.startswith("+") else text
    if not body.isdigit():
        raise NumberError(f"not a telephone number: {raw!r}")
    try:
        parsed = phonenumbers.parse(text, None if text.startswith("+") else country)
    except phonenumbers.NumberParseException as exc:
        raise NumberError(f"not a telephone number: {raw!r} ({exc})") from None
    e164: str = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
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
