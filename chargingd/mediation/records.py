"""What a format parser yields: a raw call as the switch wrote it, or a reject.

Parsers know their file's layout, not numbering plans or time zones: times are
either epoch milliseconds (UTC already) or naive ``datetime`` in the switch's zone,
numbers are as dialled, causes as the switch named them. normalise.py does the rest.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

# A point in time as a parser found it: epoch ms UTC, naive local datetime, or unset.
RawTime = int | datetime | None


@dataclass(slots=True)
class RawCall:
    call_id: str
    caller: str
    callee: str
    start: RawTime
    answer: RawTime
    end: RawTime
    talk_s: int | None = None  # billsec as the switch reported it; None: end - answer
    q850: int | None = None  # a Q.850 cause when the switch wrote one
    sip_code: int | None = None  # a final SIP response code (RFC 3398 maps it)
    cause_text: str = ""  # FreeSWITCH cause name, Asterisk disposition, ...
    account: str = ""  # accountcode column, when the switch has one
    gateway: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    total_s: int | None = None  # the switch's whole duration (end - start), when it has one
    raw: str = ""  # the record as the file holds it (its line or lines), for rejects
    # FreeSWITCH cdr_csv with legs = "ab" (formats/freeswitch.py): what its file says of
    # the line's other leg. "" nothing to settle (no legs, or both legs in the file);
    # LONE: no line of the file names its uuid and it names none (a call of its own, or a
    # B-leg whose A-leg is in another file); TAIL: a LONE line at the end of its file
    # (its A-leg may come first in the next file); DANGLING: an A-leg whose bleg_uuid
    # names no line of its file (its B-leg is in another file).
    leg: str = ""


LONE = "lone"
TAIL = "tail"
DANGLING = "dangling"
# CUCM: a conference bridge leg whose participant's leg no record of the run had (the
# call that brought it in is in an earlier run's file): the mediation decides it with
# the stored calls (Mediator._bridged). Its caller is "", its callee the participant.
BRIDGE = "bridge"


@dataclass(frozen=True, slots=True)
class Reject:
    reason: str
    raw: str = ""


@dataclass(frozen=True, slots=True)
class Half(Reject):
    """One half of a call whose other half this file does not hold: a Kamailio INVITE
    without its BYE (or a BYE without its INVITE), a Cisco Start without a Stop. The
    file was rotated between them; the mediation keeps it pending (pipeline, store)
    until its other half comes in a later file, or rejects it, for ``reason``, once it
    waited too long. Read as a Reject (normalised(), a dry run), it is one.

    ``key``: what pairs the halves (the call id); ``kind``: INVITE, BYE, Start;
    ``order``: the halves are read again in this order, as one file (``head`` first:
    the lines a format needs before a record, a table's header line)."""

    key: str = ""
    kind: str = ""
    order: int = 0
    head: str = ""


@dataclass(frozen=True, slots=True)
class Internal(Reject):
    """A call to one of the PBX's own extensions (the source's internal_max_digits):
    nothing to bill. The mediation skips it and counts it ``internal``; read as a Reject
    (a caller of normalised() that knows no better), it is one, never lost."""


@dataclass(frozen=True, slots=True)
class BLeg(Reject):
    """The B-leg of a bridged call whose A-leg bills it (FreeSWITCH cdr_csv with
    legs = "ab" writes a line per leg): the mediation skips it and counts it ``b-legs``;
    read as a Reject (a caller of normalised() that knows no better), it is one."""


@dataclass(frozen=True, slots=True)
class Conference(Reject):
    """A CUCM conference bridge leg that bills nothing: a participant's own side of a
    call it placed (the controller's phone, an inbound caller), or a link between two
    bridges. The mediation skips it and counts it ``conference``; read as a Reject (a
    caller of normalised() that knows no better), it is one."""


Parsed = tuple[int, RawCall | Reject]


class Parser(Protocol):
    def __call__(self, lines: Iterable[str]) -> Iterator[Parsed]:
        """Yield (line number, call or reject) for each record of the file's lines."""
        ...


class RowError(ValueError):
    """A field that cannot be read; the message is the reject reason."""


class InternalCallError(RowError):
    """The callee is an internal extension: the call is skipped, not rejected
    (normalise.Normaliser.call raises it; a caller that does not catch it rejects the
    call with its message, so no call is ever dropped unaccounted)."""


def int_field(text: str, name: str) -> int:
    """An integer column; a clear RowError naming the column otherwise."""
    try:
        return int(text)
    except ValueError:
        raise RowError(f"{name} is not an integer: {text!r}") from None


def opt_int(text: str, name: str) -> int | None:
    """An optional integer column ("" is None); FreeSWITCH quotes its integers."""
    return int_field(text, name) if text else None


def shifted(when: RawTime, ms: int, name: str) -> RawTime:
    """``when`` (epoch ms or a local time) moved by ``ms``; a RowError naming ``name``
    when a damaged value takes it past what a datetime holds (it raised
    OverflowError: a crash that lost the rest of the file)."""
    if when is None or isinstance(when, int):
        return None if when is None else when + ms
    try:
        return when + timedelta(milliseconds=ms)
    except OverflowError:
        raise RowError(f"{name} is out of range: {ms // 1000} s from {when}") from None


def parse_stamp(text: str, name: str) -> datetime | None:
    """A "YYYY-MM-DD HH:MM:SS[.ffffff]" local time (ISO 8601); "" is None (unanswered)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)  # C-implemented: ~0.3 us a stamp
    except ValueError:
        raise RowError(f"{name} is not a time: {text!r}") from None


class RecordIds:
    """Call ids for a switch that writes several records under one id (Asterisk: a CDR
    per dial attempt, all with Party A's uniqueid; CUCM: a CDR per leg pair of a
    transferred or conferenced call, one globalCallID). The first record of an id
    keeps it; another record (other text) gets ``id#label`` (its own key: dstchannel,
    legs), or ``id#<digest of its text>`` when that label is taken too. The same text
    again keeps its id: a duplicate. Ids are remembered for the last ``cap`` ones (a
    switch writes a call's records together)."""

    def __init__(self, cap: int = 100_000) -> None:
        self.cap = cap
        # id -> digest of the record that has it, in two generations: when the newer
        # holds cap/2 ids the older is dropped (O(1); deleting a dict's oldest keys
        # one by one makes iterating it from the front quadratic).
        self._seen: dict[str, str] = {}
        self._older: dict[str, str] = {}

    def __call__(self, call_id: str, raw: str, label: str = "", plain: bool = True) -> str:
        """The record's id; ``plain = False``: the switch says it is not the call's first
        record (it never takes the plain id, whatever file it is in)."""
        digest = hashlib.blake2b(raw.encode(), digest_size=6).hexdigest()
        candidates = [call_id] if plain else []
        if label:
            candidates.append(f"{call_id}#{label}")
        for candidate in [*candidates, f"{call_id}#{digest}"]:
            seen = self._seen.get(candidate) or self._older.get(candidate)
            if seen is None:
                if len(self._seen) >= self.cap // 2:
                    self._older, self._seen = self._seen, {}
                self._seen[candidate] = digest
                return candidate
            if seen == digest:
                return candidate
        return f"{call_id}#{digest}"
