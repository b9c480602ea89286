"""Raw switch calls -> one normalised call: E.164 numbers, UTC epoch ms, Q.850 causes.

Pure: no I/O, no clock. One Normaliser per source holds its caches (the same numbers
and the same hours come back on every row of a file).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import phonenumbers

from chargingd.billing.cdr import CdrStatus
from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.causes import sip_to_q850
from chargingd.mediation.localtime import LocalClock
from chargingd.mediation.records import InternalCallError, RawCall, RawTime, RowError

_E164_MAX_DIGITS = 15  # ITU-T E.164 §6: at most 15 digits including the country code
_SEPARATORS = re.compile(r"[\s\-./()]")
_NUMBER_CACHE_MAX = 500_000
_EPOCH = datetime(1970, 1, 1)
_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)
# Times outside 1970 .. 3000 are a corrupt field, never a call (a CUCM epoch of 14
# digits, a FreeSWITCH *_uepoch read as seconds): rejected, not rated or stored.
_LATEST_MS = 32_503_680_000_000  # 3000-01-01 UTC
# A call longer than a year is a corrupt time (a BYE stamp in 2999), never a call:
# rejected before it is rated and debited (a 974-year call cost 25.6 million EUR, then
# failed the store: its duration is no PostgreSQL integer, exit 70, no CDR for the debit).
_LONGEST_MS = 366 * 86_400_000
_LAST_Q850 = 127  # Q.850 cause values are 0..127 (interworking, unspecified)
# How far a switch's talk time may exceed end - answer: its own whole-second
# rounding (acc_cdrs duration 125.8 s between stamps cut to the second: 126 vs 125).
_TALK_SLACK_S = 2
# Caller IDs switches log for a withheld or missing CLI (RFC 3323 "anonymous" URIs,
# FreeSWITCH's 0000000000 default): the call has no caller number.
WITHHELD_CALLERS = frozenset(
    ("anonymous", "restricted", "private", "unknown", "unavailable", "withheld", "0000000000")
)


@dataclass(slots=True)
class Call:
    """A normalised, not yet rated call."""

    source: str
    call_id: str
    caller: str  # E.164 "+4930123456", "" when the switch gave none (anonymous)
    callee: str
    start_ms: int
    answer_ms: int  # 0 when unanswered
    end_ms: int
    duration_s: int  # talk time; 0 when unanswered
    cause: int  # Q.850, 0 unknown
    gateway: str
    account: str  # the row's account code ("" when none)
    status: str  # CdrStatus.NORMAL or CdrStatus.UNANSWERED
    extra: dict[str, str] = field(default_factory=dict)
    raw: str = ""  # the record as the file holds it (for a reject after normalising)
    leg: str = ""  # RawCall.leg: a FreeSWITCH line whose other leg may be in another file


def strip_uri(raw: str) -> str:
    """The user part of a SIP/tel URI or a display form ("sip:+4930@gw;user=phone" -> "+4930")."""
    text = raw.strip()
    if "<" in text and text.endswith(">"):
        text = text[text.index("<") + 1 : -1]
    for scheme in ("sip:", "sips:", "tel:"):
        if text[:5].lower().startswith(scheme):
            text = text[len(scheme) :]
            break
    return text.split("@", 1)[0].split(";", 1)[0]


class Normaliser:
    """Normalises the raw calls of one source (its zone, country and prefixes)."""

    def __init__(self, name: str, source: SourceConfig) -> None:
        self.name = name
        self.source = source
        self.clock = LocalClock(source.time_zone)
        # A csv mapping without an end column: the end is start + duration, else
        # answer (or start) + billsec, in UTC (never wall-clock time across a DST change).
        self._end_computed = source.format == "csv" and "end" not in source.mapping
        self._answer = "answer" in source.mapping
        self._country_code = ""
        if source.default_country:
            code = phonenumbers.country_code_for_region(source.default_country.upper())
            if not code:
                raise ValueError(f"unknown default_country {source.default_country!r}")
            self._country_code = str(code)
        self._numbers: dict[str, str] = {}
        self._possible: dict[tuple[str, int], bool] = {}
        # PBX options (access_codes, internal_max_digits): the callee's reading per raw
        # callee, (E.164, the access code stripped); ("", "") an internal extension.
        self._codes = sorted(source.access_codes, key=len, reverse=True)  # longest first
        self._pbx = bool(self._codes or source.internal_max_digits)
        self._callees: dict[str, tuple[str, str]] = {}
        # What a format's parser keeps across the files of one run (kept with the
        # normaliser, one per Mediator): CUCM's call legs, for its conference records.
        self.shared: dict[str, object] = {}

    def call(self, raw: RawCall) -> Call:
        """The normalised call; RowError (the reject reason) when it cannot be."""
        if not raw.call_id:
            raise RowError("no call id")
        # Local times of a fall-back night's repeated hour are read from the row's own
        # evidence: order, billsec, duration (localtime.py).
        start_ms, answer_ms, end_ms = self.clock.resolve(
            raw.start, raw.answer, raw.end, talk_s=raw.talk_s, total_s=raw.total_s
        )
        if not end_ms and self._end_computed:
            start_ms, answer_ms, end_ms = _computed_end(raw, start_ms, answer_ms, self._answer)
        if not end_ms:
            raise RowError("no end time")
        start_ms = start_ms or answer_ms or end_ms
        if end_ms < start_ms:
            raise RowError("end time before start time")
        if answer_ms and not start_ms <= answer_ms <= end_ms:
            raise RowError("answer time outside start..end")
        for what, ms in (("start", start_ms), ("answer", answer_ms), ("end", end_ms)):
            if ms and not 0 < ms < _LATEST_MS:
                raise RowError(f"{what} time out of range (1970-3000): {raw_time(ms)}")
        if end_ms - start_ms > _LONGEST_MS:
            raise RowError(
                f"call of {(end_ms - start_ms) // 1000} s ({raw_time(start_ms)} to"
                f" {raw_time(end_ms)}) is longer than a year: a corrupt time?"
            )
        duration_s = self._talk_s(raw, answer_ms, end_ms)
        # The callee first: an internal call is skipped before its caller (an
        # extension too) could reject it.
        if not answer_ms and not raw.callee.strip():
            # Nothing dialled, nobody answered: an abandoned call (CUCM's off hook, on
            # hook: "Abandoned Calls", logged with CdrLogCallsWithZeroDurationFlag).
            # Stored unanswered, no callee: nothing to bill (it was a reject).
            callee = ""
        else:
            callee = self.callee(raw) if self._pbx else self.number(raw.callee, "callee")
        return Call(
            source=self.name,
            call_id=raw.call_id,
            caller=self.caller(raw),
            callee=callee,
            start_ms=start_ms,
            answer_ms=answer_ms,
            end_ms=end_ms,
            duration_s=duration_s,
            cause=self.cause(raw),
            gateway=raw.gateway or self.source.gateway,
            account=raw.account,
            status=CdrStatus.NORMAL if answer_ms else CdrStatus.UNANSWERED,
            extra=raw.extra,
            raw=raw.raw,
            leg=raw.leg,
        )

    def caller(self, raw: RawCall) -> str:
        """E.164 caller, "" when withheld. Under the ``ani`` rule the caller is who pays,
        so a caller that is no number is a reject; otherwise (a PBX extension, a name)
        the call is kept and the switch's text goes to extra ``caller_raw``."""
        if not raw.caller or strip_uri(raw.caller).lower() in WITHHELD_CALLERS:
            return ""
        try:
            return self.number(raw.caller, "caller")
        except RowError:
            if self.source.account_rule == "ani":
                raise
            raw.extra["caller_raw"] = raw.caller
            return ""

    @staticmethod
    def _talk_s(raw: RawCall, answer_ms: int, end_ms: int) -> int:
        if not answer_ms:
            return 0  # unanswered: nothing billable, whatever the switch counted
        if raw.talk_s is not None:
            if raw.talk_s < 0:
                raise RowError(f"negative talk time {raw.talk_s}")
            # A talk time the call's own times cannot hold is a corrupt field (and
            # rating it would take forever: billsec 999999999999 on a 2-minute call).
            if raw.talk_s > (end_ms - answer_ms) // 1000 + _TALK_SLACK_S:
                raise RowError(
                    f"talk time {raw.talk_s} s is longer than answer to end"
                    f" ({(end_ms - answer_ms) // 1000} s)"
                )
            return raw.talk_s
        return (end_ms - answer_ms + 500) // 1000

    def cause(self, raw: RawCall) -> int:
        """Q.850 cause: the source's cause_map, the switch's own value, then its SIP code."""
        if raw.cause_text and raw.cause_text in self.source.cause_map:
            return self.source.cause_map[raw.cause_text]
        q850 = raw.q850
        if q850 is not None and 0 <= q850 <= _LAST_Q850:
            return q850
        if q850 is not None and 100 <= q850 <= 699:
            # No Q.850 value (1..127): a SIP response code in the cause column (billing
            # exports write one there) is read as one, RFC 3398.
            return sip_to_q850(q850)
        # Any other number (a corrupt field) is no cause: the SIP code says, else 0.
        # Stored as it was, 486 was a Q.850 cause Q.850 does not have, and a number past
        # the database's integer failed the run (exit 70) after the calls were debited.
        if raw.sip_code is not None:
            return sip_to_q850(raw.sip_code)
        return 0

    def time_ms(self, value: RawTime) -> int:
        """UTC epoch ms of one raw time; a naive one in the source's zone (the first
        reading of a repeated hour: a whole call is read with Normaliser.call)."""
        readings = self.clock.readings(value)
        return readings[0] if readings else 0

    def number(self, raw: str, what: str) -> str:
        """E.164 ("+4930123456") of a number as the switch's users dialled it."""
        cached = self._numbers.get(raw)
        if cached is not None:
            return cached
        result = self._e164(raw, what)
        if len(self._numbers) >= _NUMBER_CACHE_MAX:
            self._numbers.clear()
        self._numbers[raw] = result
        return result

    def callee(self, raw: RawCall) -> str:
        """E.164 of the callee of a source with PBX options: an outside-line access code
        stripped (the digits as dialled to extra ``dialled``); InternalCallError for an
        internal extension (docs/mediation.md, "Access codes and internal calls")."""
        found = self._callees.get(raw.callee)
        if found is None:
            found = self._read_callee(raw.callee)
            if len(self._callees) >= _NUMBER_CACHE_MAX:
                self._callees.clear()
            self._callees[raw.callee] = found
        e164, code = found
        if not e164:
            raise InternalCallError(
                f"internal call: callee {raw.callee!r} is an extension"
                f" (internal_max_digits = {self.source.internal_max_digits})"
            )
        if code:
            raw.extra["dialled"] = raw.callee
            raw.extra["access_code"] = code
        return e164

    def _read_callee(self, raw: str) -> tuple[str, str]:
        """(E.164, access code stripped or ""); ("", "") for an internal extension. The
        extension length counts the digits as dialled (an access code included): a
        callee that short is no E.164 number anyway."""
        text = _number_text(raw)
        limit = self.source.internal_max_digits
        if text.isascii() and text.isdigit() and len(text) <= limit:
            return "", ""
        # An access code is stripped whenever the rest is a possible number, also when
        # the whole would be one too: "9 1 212 555 1234" read whole is India (+91 212...),
        # "0 0201 234567" (Essen) Egypt (+20 1234567). The whole is read only when no
        # reading without a code is possible (a route pattern that discarded the code).
        for code in self._codes:
            if text.startswith(code) and len(text) > len(code):
                try:
                    return self._read(text[len(code) :], raw, "callee"), code
                except RowError:
                    continue
        return self.number(raw, "callee"), ""

    def _e164(self, raw: str, what: str) -> str:
        return self._read(_number_text(raw), raw, what)

    def _read(self, text: str, raw: str, what: str) -> str:
        """E.164 of ``text`` (a number as dialled, separators gone); RowError naming
        ``raw`` when it is none."""
        digits = self._international_digits(text, raw, what)
        if not (digits.isascii() and digits.isdigit()) or not 2 <= len(digits) <= _E164_MAX_DIGITS:
            raise RowError(f"{what} {raw!r} is not a telephone number")
        if "(0)" in raw:
            digits = _without_bracketed_trunk(digits)
        # ITU-T E.164 country codes are prefix-free: the first known 1-3 digit head is it.
        for cc_len in (1, 2, 3):
            if int(digits[:cc_len]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
                break
        else:
            raise RowError(f"{what} {raw!r} is not a telephone number (no country code)")
        # Whether a number is possible depends only on its country code and length
        # (phonenumbers' _test_number_length): ask phonenumbers once per pair.
        key = (digits[:cc_len], len(digits) - cc_len)
        possible = self._possible.get(key)
        if possible is None:
            possible = self._possible[key] = _is_possible("+" + digits)
        if not possible:
            raise RowError(f"{what} {raw!r} is not a possible E.164 number")
        return "+" + digits

    def _international_digits(self, text: str, raw: str, what: str) -> str:
        src = self.source
        if text.startswith("+"):
            return text[1:]
        # The international prefix ("00") first: it starts with the trunk prefix ("0").
        if src.international_prefix and text.startswith(src.international_prefix):
            return text[len(src.international_prefix) :]
        if src.trunk_prefix and text.startswith(src.trunk_prefix):
            if not self._country_code:
                raise RowError(f"{what} {raw!r} is national but the source has no default_country")
            return self._country_code + text[len(src.trunk_prefix) :]
        if src.unprefixed == "national":
            return self._country_code + text
        return text


def _number_text(raw: str) -> str:
    """A number as dialled, without URI, separators and end-of-dialling key."""
    # CUCM writes E.164 directory numbers with an escaped plus: "\+442079460000".
    text = _SEPARATORS.sub("", strip_uri(raw)).replace("\\+", "+")
    # A "#" ending the digits is the caller's end-of-dialling key, no digit: CUCM
    # writes it as dialled ("902087569174#", CDR definition, "Partitions and
    # Numbers"), gateways pass it in Called-Station-Id.
    return text.rstrip("#")


def _without_bracketed_trunk(digits: str) -> str:
    """The digits of "+49 (0)30 1234567" (a country code, then the national trunk
    prefix in brackets: a common way to print a number for callers at home and abroad)
    without that "0" where the country dials it only nationally (+49, +44: 4930...), and
    with it where it belongs to the number (+39: 3906...), as phonenumbers reads them
    and the live path (core.numbers) does; unchanged when phonenumbers reads none."""
    try:
        parsed = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return digits
    e164: str = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return e164[1:]


def _is_possible(e164: str) -> bool:
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_possible_number(parsed))


def raw_time(ms: int) -> str:
    """Epoch ms as the reject reason shows it: ISO UTC when datetime can hold it."""
    try:
        return (_EPOCH_UTC + timedelta(milliseconds=ms)).isoformat(timespec="seconds")
    except OverflowError:
        return f"{ms} ms since 1970"


def utc_datetime(ms: int) -> datetime:
    """An aware UTC datetime for epoch ms (what the rating engine takes)."""
    return _EPOCH_UTC + timedelta(milliseconds=ms)


def _computed_end(
    raw: RawCall, start_ms: int, answer_ms: int, has_answer: bool
) -> tuple[int, int, int]:
    """(start, answer, end) of a csv row whose mapping has no end column.

    The end is start + duration (the whole call), else answer + billsec, else (no
    answer: an unanswered call, or a mapping without an answer column) start +
    billsec. Without an answer column, a call with billsec > 0 was answered billsec
    before its end, as for a row with an end column: at its start when there is no
    duration either."""
    if start_ms and raw.total_s is not None:
        end_ms = start_ms + raw.total_s * 1000
    elif raw.talk_s is not None and (answer_ms or start_ms):
        end_ms = (answer_ms or start_ms) + raw.talk_s * 1000
    else:
        return start_ms, answer_ms, 0
    if not has_answer and raw.talk_s:
        answer_ms = end_ms - raw.talk_s * 1000
    return start_ms, answer_ms, end_ms
