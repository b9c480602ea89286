"""Cisco IOS voice gateway RADIUS accounting, as a FreeRADIUS ``detail`` file.

A record is a timestamp line followed by indented ``Attribute = value`` lines and a
blank line. A gateway call has two legs, each with Start and Stop records: the
``answer`` leg (incoming, often Telephony) and the ``originate`` leg (outgoing, VoIP);
both carry the same ``h323-conf-id`` (Cisco "RADIUS VSA Voice Implementation Guide").
Cisco VSA values repeat their name ("h323-setup-time=..."). h323-disconnect-cause is a
Q.850 cause in HEX on IOS (decimal on some other vendors: ``radius_cause_radix``).
Times look like "*13:00:01.123 UTC Mon Nov 16 2026"; a leading ``*`` (clock not
authoritative) or ``.`` (NTP sync lost) is stripped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from chargingd.mediation.records import Parsed, RawCall, RawTime, Reject, RowError, int_field

_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_UTC_NAMES = ("UTC", "GMT", "Z")


def cisco_time(text: str, name: str) -> RawTime:
    """ "*13:00:01.123 UTC Mon Nov 16 2026" -> aware UTC datetime (naive if not UTC/GMT)."""
    parts = text.lstrip("*.").split()
    if len(parts) != 5 and len(parts) != 6:
        raise RowError(f"{name} is not a Cisco time: {text!r}")
    clock, zone, month, day, year = parts[0], parts[1], parts[-3], parts[-2], parts[-1]
    try:
        hms, _, frac = clock.partition(".")
        hour, minute, second = (int(x) for x in hms.split(":"))
        micros = int((frac + "000000")[:6]) if frac else 0
        when = datetime(int(year), _MONTHS[month], int(day), hour, minute, second, micros)
    except (ValueError, KeyError):
        raise RowError(f"{name} is not a Cisco time: {text!r}") from None
    return when.replace(tzinfo=UTC) if zone in _UTC_NAMES else when


@dataclass(slots=True)
class _Conf:
    """The records seen so far of one h323-conf-id."""

    line_no: int
    started: set[str] = field(default_factory=set)
    stops: dict[str, tuple[int, dict[str, str]]] = field(default_factory=dict)

    def complete(self) -> bool:
        return bool(self.stops) and self.started <= set(self.stops)


def records(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line of the timestamp, attributes) for each block of a detail file."""
    attrs: dict[str, str] = {}
    first = 0
    for line_no, line in enumerate(lines, start=1):
        text = line.rstrip("\r\n")
        if not text.strip():
            if attrs:
                yield first, attrs
            attrs = {}
        elif text.startswith("#"):
            continue
        elif text[0] in " \t":
            name, eq, value = text.strip().partition(" = ")
            if eq:
                attrs[name] = _value(name, value)
        else:
            if attrs:
                yield first, attrs
            attrs, first = {}, line_no
    if attrs:
        yield first, attrs


def _value(name: str, value: str) -> str:
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        value = value[1:-1]
    prefix = name + "="
    return value[len(prefix) :] if value.startswith(prefix) else value


def parse(lines: Iterable[str], cause_radix: int = 16) -> Iterator[Parsed]:
    """Yield one call per h323-conf-id once every started leg has stopped."""
    confs: dict[str, _Conf] = {}
    for line_no, attrs in records(lines):
        conf_id = attrs.get("h323-conf-id", "").replace(" ", "").upper()
        status = attrs.get("Acct-Status-Type", "")
        if not conf_id:
            yield line_no, Reject("record without h323-conf-id", _raw(attrs))
            continue
        if status not in ("Start", "Stop"):
            continue  # Interim-Update, Accounting-On/Off: no call data
        conf = confs.setdefault(conf_id, _Conf(line_no))
        leg = attrs.get("h323-call-origin", "") or attrs.get("Acct-Session-Id", "")
        if status == "Start":
            conf.started.add(leg)
        else:
            conf.stops[leg] = (line_no, attrs)
        if conf.complete():
            del confs[conf_id]
            yield _emit(conf_id, conf, cause_radix)
    for conf_id, conf in confs.items():
        if conf.stops:
            yield _emit(conf_id, conf, cause_radix)  # a leg lost its Stop: use what we have
        else:
            yield conf.line_no, Reject("incomplete: Start without Stop at end of file", conf_id)


def _raw(attrs: dict[str, str]) -> str:
    return ";".join(f"{k}={v}" for k, v in attrs.items())


def _emit(conf_id: str, conf: _Conf, cause_radix: int) -> Parsed:
    # The answer leg is the caller's side of the call; the originate leg says where it went.
    leg = "answer" if "answer" in conf.stops else next(iter(conf.stops))
    line_no, attrs = conf.stops[leg]
    try:
        return line_no, _call(conf_id, attrs, conf, cause_radix)
    except RowError as exc:
        return line_no, Reject(str(exc), _raw(attrs))


def _call(conf_id: str, attrs: dict[str, str], conf: _Conf, cause_radix: int) -> RawCall:
    remote = ""
    for _, other in conf.stops.values():
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
    return RawCall(
        call_id=conf_id,
        caller=attrs.get("Calling-Station-Id", ""),
        callee=attrs.get("Called-Station-Id", ""),
        start=cisco_time(attrs["h323-setup-time"], "h323-setup-time")
        if "h323-setup-time" in attrs
        else None,
        answer=cisco_time(connect, "h323-connect-time") if connect else None,
        end=cisco_time(attrs.get("h323-disconnect-time", ""), "h323-disconnect-time"),
        talk_s=int_field(session_time, "Acct-Session-Time") if session_time else None,
        q850=q850,
        gateway=attrs.get("NAS-IP-Address", ""),
        extra=extra,
    )
