"""Cisco IOS voice gateway RADIUS accounting, as a FreeRADIUS ``detail`` file.

A record is a timestamp line followed by indented ``Attribute = value`` lines and a
blank line. A gateway call has two legs, each with Start and Stop records: the
``answer`` leg (incoming, often Telephony) and the ``originate`` leg (outgoing, VoIP);
both carry the same ``h323-conf-id`` (Cisco "RADIUS VSA Voice Implementation Guide").
Cisco VSA values repeat their name ("h323-setup-time=..."). h323-disconnect-cause is a
Q.850 cause in HEX on IOS (decimal on some other vendors: ``radius_cause_radix``).
Times look like "*13:00:01.123 UTC Mon Nov 16 2026" (h323-setup-time and friends:
"hh:mm:ss.mmm ZON DDD MMM ## YYYY"); a leading ``*`` (clock not authoritative) or
``.`` (NTP sync lost) is stripped. ZON is the label the gateway's ``clock timezone`` /
``clock summer-time`` gave: it says the offset (Clock.aware), so a time in the
repeated hour of a fall-back night is read right.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.records import (
    Half,
    Parsed,
    RawCall,
    RawTime,
    Reject,
    RowError,
    int_field,
    shifted,
)

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_UTC_NAMES = ("UTC", "GMT", "Z")
# RFC 2866 section 5.1 Acct-Status-Type values that carry no call (by name, as
# FreeRADIUS writes them, or the number a dictionary-less server writes).
_NO_CALL = frozenset(("Interim-Update", "Alive", "Accounting-On", "Accounting-Off", "3", "7", "8"))
_STATUS_NUMBERS = {"1": "Start", "2": "Stop"}


class Clock:
    """Reads a gateway's time stamps: the zone label says which offset applies."""

    def __init__(self, source: SourceConfig) -> None:
        self.zone = zoneinfo.ZoneInfo(source.time_zone)
        self.zone_name = source.time_zone
        self.labels = {k: _offset(v) for k, v in source.zone_labels.items()}

    def read(self, text: str, name: str) -> RawTime:
        """ "*13:00:01.123 UTC Mon Nov 16 2026" -> an aware datetime (see Clock.aware)."""
        parts = text.lstrip("*.").split()
        if len(parts) != 5 and len(parts) != 6:
            raise RowError(f"{name} is not a Cisco time: {text!r}")
        clock, label, month, day, year = parts[0], parts[1], parts[-3], parts[-2], parts[-1]
        try:
            hms, _, frac = clock.partition(".")
            hour, minute, second = (int(x) for x in hms.split(":"))
            micros = int((frac + "000000")[:6]) if frac else 0
            when = datetime(int(year), _MONTHS[month], int(day), hour, minute, second, micros)
        except (ValueError, KeyError):
            raise RowError(f"{name} is not a Cisco time: {text!r}") from None
        return self.aware(when, label, name)

    def aware(self, when: datetime, label: str, name: str) -> datetime:
        """The zone label decides the offset: UTC/GMT; the source's zone_labels; or the
        name time_zone gives its standard or summer time at that moment (CET / CEST),
        which also tells the two occurrences of a fall-back hour apart. Any other label
        is refused: a guessed offset would bill the call at the wrong time."""
        if label in _UTC_NAMES:
            return when.replace(tzinfo=UTC)
        offset = self.labels.get(label)
        if offset is not None:
            return when.replace(tzinfo=timezone(offset))
        for fold in (0, 1):
            local = when.replace(tzinfo=self.zone, fold=fold)
            if local.tzname() == label:
                return local
        raise RowError(
            f"{name}: zone label {label!r} is not UTC, not in zone_labels and not a name of"
            f" time_zone {self.zone_name} then"
        )


def _offset(text: str) -> timedelta:
    sign = -1 if text[0] == "-" else 1
    hours, minutes = (int(x) for x in text[1:].split(":"))
    return sign * timedelta(hours=hours, minutes=minutes)


def cisco_time(text: str, name: str, source: SourceConfig | None = None) -> RawTime:
    """One Cisco time stamp read with a source's clock settings (default: UTC only)."""
    return Clock(source or SourceConfig(format="cisco_radius")).read(text, name)


# A call leg: (NAS-IP-Address, h323-call-origin). A call through two gateways has four
# legs with one h323-conf-id (Cisco CDR guide, "Voice Call Legs": answer telephony and
# originate VoIP on the originating gateway, answer VoIP and originate telephony on the
# terminating one): the legs of one gateway never stand for the other's.
_Leg = tuple[str, str]


@dataclass(slots=True)
class _Conf:
    """The records seen so far of one h323-conf-id."""

    line_no: int
    started: dict[_Leg, None] = field(default_factory=dict)  # in the order they started
    stops: dict[_Leg, tuple[int, dict[str, str], str]] = field(default_factory=dict)
    raws: list[str] = field(default_factory=list)  # every record of the call, as written

    def complete(self) -> bool:
        """Every started leg has stopped; without Starts (stop-only accounting, or the
        Starts in an earlier file), an answer leg has: its Stop is the call's, and an
        originate leg's Stop often comes first."""
        if not self.stops:
            return False
        if self.started:
            return self.started.keys() <= self.stops.keys()
        return any(origin == "answer" for _, origin in self.stops)

    def call_leg(self) -> _Leg:
        """The leg whose Stop is the call: the answer leg that started first (the
        originating gateway's, where the caller's call came in), else the first answer
        leg to stop, else the first leg to stop."""
        for leg in self.started:
            if leg[1] == "answer" and leg in self.stops:
                return leg
        return next((leg for leg in self.stops if leg[1] == "answer"), next(iter(self.stops)))


class _Done:
    """The conf ids of the calls emitted, the last ``cap`` or more of them (two
    generations: O(1), memory bounded on long files; a call's legs stop together)."""

    def __init__(self, cap: int = 100_000) -> None:
        self.cap = cap
        self._new: set[str] = set()
        self._old: set[str] = set()

    def __contains__(self, conf_id: str) -> bool:
        return conf_id in self._new or conf_id in self._old

    def add(self, conf_id: str) -> None:
        if len(self._new) >= self.cap:
            self._old, self._new = self._new, set()
        self._new.add(conf_id)


def records(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, str], str]]:
    """(line of the timestamp, attributes, the block as written) for each block."""
    attrs: dict[str, str] = {}
    block: list[str] = []
    first = 0
    for line_no, line in enumerate(lines, start=1):
        text = line.rstrip("\r\n")
        if not text.strip():
            if attrs:
                yield first, attrs, "\n".join(block)
            attrs, block = {}, []
        elif text.startswith("#"):
            continue
        elif text[0] in " \t":
            block.append(text)
            _attribute(attrs, text.strip())
        elif " = " in text:
            # radclient's input syntax (the records radclient sends, as written to test
            # a server or replay accounting): no timestamp line, no indent, attributes
            # separated by commas (a line each or several on one), records by a blank
            # line. Was: each line read as a timestamp, the records dropped unaccounted.
            if not block:
                first = line_no
            block.append(text)
            for pair in _RADCLIENT_PAIRS.split(text.strip().rstrip(",")):
                _attribute(attrs, pair.strip())
        else:
            if attrs:
                yield first, attrs, "\n".join(block)
            attrs, first, block = {}, line_no, [text]
    if attrs:
        yield first, attrs, "\n".join(block)


# radclient: "A = 1, B = "x"": a comma outside quotes before the next attribute name.
_RADCLIENT_PAIRS = re.compile(r',\s*(?=[A-Za-z][\w-]*\s+=\s)(?=(?:[^"]*"[^"]*")*[^"]*$)')


def _attribute(attrs: dict[str, str], text: str) -> None:
    """Read one ``Name = value`` into ``attrs``."""
    name, eq, value = text.partition(" = ")
    if not eq:
        return
    attrs[name] = _value(name, value)
    if name == "Cisco-AVPair":
        # Gateways that pack the voice VSAs into Cisco-AVPair ("h323-disconnect-
        # cause=10", several such lines): each counts as its own attribute.
        packed, eq, inner = attrs[name].partition("=")
        if eq and packed.startswith("h323-"):
            attrs.setdefault(packed, inner)


def _value(name: str, value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1]
    prefix = name + "="
    return value[len(prefix) :] if value.startswith(prefix) else value


def parse(lines: Iterable[str], source: SourceConfig | None = None) -> Iterator[Parsed]:
    """Yield one call per h323-conf-id once every started leg has stopped (without
    Starts: once its answer leg has), or at the end of the file from the Stops seen."""
    source = source or SourceConfig(format="cisco_radius")
    clock = Clock(source)
    radix = source.radius_cause_radix
    confs: dict[str, _Conf] = {}
    done = _Done()
    for line_no, attrs, raw in records(lines):
        conf_id = attrs.get("h323-conf-id", "").replace(" ", "").upper()
        status = attrs.get("Acct-Status-Type", "")
        status = _STATUS_NUMBERS.get(status, status)
        if status in _NO_CALL:
            # RFC 2866 Acct-Status-Type: Interim-Update, and Accounting-On/Off (the
            # gateway starting or stopping accounting: no session, no h323-conf-id).
            continue
        if not conf_id:
            yield line_no, Reject("record without h323-conf-id", raw)
            continue
        if status not in ("Start", "Stop"):
            yield line_no, Reject(f"Acct-Status-Type {status!r} is not Start or Stop", raw)
            continue
        if conf_id in done:
            # Stop-only accounting: a leg that stops after the answer leg made the call
            # (the originate leg, the other gateway's legs) repeats that call: like a
            # FreeSWITCH B-leg, it is no call of its own (its number may be the one
            # its dial-peer rewrote: it would be a reject, or a second record).
            continue
        conf = confs.setdefault(conf_id, _Conf(line_no))
        conf.raws.append(raw)
        # "answer"/"originate" (Cisco); some gateways write "Answer"/"Originate".
        origin = attrs.get("h323-call-origin", "").lower() or attrs.get("Acct-Session-Id", "")
        leg = (attrs.get("NAS-IP-Address", ""), origin)
        if status == "Start":
            conf.started[leg] = None
        else:
            conf.stops[leg] = (line_no, attrs, raw)
        if conf.complete():
            del confs[conf_id]
            done.add(conf_id)
            yield _emit(conf_id, conf, radix, clock)
    for conf_id, conf in confs.items():
        if conf.stops:
            yield _emit(conf_id, conf, radix, clock)  # a leg lost its Stop: use what we have
        else:
            # Its Stop may be in the next file (rotated): that Stop alone is the call.
            raw = "\n\n".join(conf.raws)
            reason = "incomplete: Start without Stop at end of file"
            yield conf.line_no, Half(reason, raw, key=conf_id, kind="Start")


def _emit(conf_id: str, conf: _Conf, cause_radix: int, clock: Clock) -> Parsed:
    # The answer leg is the caller's side of the call; the originate leg says where it went.
    leg = conf.call_leg()
    line_no = conf.stops[leg][0]
    raw = "\n\n".join(conf.raws)
    try:
        call = _call(conf_id, leg, conf, cause_radix, clock)
    except RowError as exc:
        return line_no, Reject(str(exc), raw)
    call.raw = raw
    return line_no, call


def _call(conf_id: str, leg: _Leg, conf: _Conf, cause_radix: int, clock: Clock) -> RawCall:
    attrs = conf.stops[leg][1]
    remote = ""  # where the call went: the same gateway's originate leg first
    for other_leg, (_, other, _) in sorted(conf.stops.items(), key=lambda kv: kv[0][0] != leg[0]):
        if other_leg != leg:
            remote = remote or other.get("h323-remote-address", "")
    connect = attrs.get("h323-connect-time", "")
    cause = attrs.get("h323-disconnect-cause", "")
    try:
        q850 = int(cause, cause_radix) if cause else None
    except ValueError:
        raise RowError(f"h323-disconnect-cause is not base {cause_radix}: {cause!r}") from None
    session_time = attrs.get("Acct-Session-Time", "")
    extra: dict[str, str] = {k: attrs[k] for k in ("h323-gw-id", "Acct-Session-Id") if k in attrs}
    if remote:
        extra["remote_address"] = remote
    setup = attrs.get("h323-setup-time", "")
    talk_s = int_field(session_time, "Acct-Session-Time") if session_time else None
    answer = clock.read(connect, "h323-connect-time") if connect else None
    end = clock.read(attrs.get("h323-disconnect-time", ""), "h323-disconnect-time")
    if answer is None and talk_s and isinstance(end, datetime):
        # No h323-connect-time (a gateway that leaves it out), yet a session time:
        # RFC 2866 Acct-Session-Time is the time connected, so the call was answered.
        answer = shifted(end, -talk_s * 1000, "Acct-Session-Time")
        extra["answer_from"] = "Acct-Session-Time"
    return RawCall(
        call_id=conf_id,
        caller=attrs.get("Calling-Station-Id", ""),
        callee=attrs.get("Called-Station-Id", ""),
        start=clock.read(setup, "h323-setup-time") if setup else None,
        answer=answer,
        end=end,
        talk_s=talk_s,
        q850=q850,
        gateway=attrs.get("NAS-IP-Address", ""),
        extra=extra,
    )
