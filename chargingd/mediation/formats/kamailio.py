"""Kamailio acc module records: syslog lines and acc table rows (CSV export).

The acc module writes one record per transaction, not per call (acc.c
acc_log_request): the INVITE's 200 OK ("transaction answered") and later the BYE.
A call is its INVITE paired with its BYE by Call-ID and the dialog tags (a BYE from
the callee has From/To tags swapped, RFC 3261 §12.2.1.1); duration = BYE time -
INVITE time. A failed INVITE ("call missed", code >= 300) is an unanswered call,
unless an answered INVITE of the same Call-ID follows (a failed branch of serial
forking): the unanswered calls are yielded at the end of the file.
An INVITE still without its BYE at the end of the file, or a BYE without its INVITE,
is a ``Half``: the file was rotated during the call, and the mediation keeps it
pending until the other half comes in a later file (pipeline.py).

Syslog: ``ACC: transaction answered: timestamp=<epoch>;method=INVITE;from_tag=..;
to_tag=..;call_id=..;code=200;reason=OK`` then the ``log_extra`` pairs
(src_user, dst_user). DB rows: id, method, from_tag, to_tag, callid, sip_code,
sip_reason, time (local "YYYY-MM-DD HH:MM:SS") and the db_extra columns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from chargingd.mediation.formats.csvlines import records
from chargingd.mediation.formats.tables import CANDIDATES, sql_values
from chargingd.mediation.records import (
    Half,
    Parsed,
    RawCall,
    RawTime,
    Reject,
    RowError,
    int_field,
    parse_stamp,
)

_MARKER = "ACC: "
_DB_NEEDED = ("method", "callid", "sip_code", "time")  # acc table columns read
# acc_log_request(): "ACC: <text>: " then key=value pairs joined by ";" (the
# log_extra values may themselves hold ";" only if unescaped, which acc does not do).


@dataclass(slots=True)
class _Event:
    line_no: int
    method: str
    from_tag: str
    to_tag: str
    call_id: str
    code: int
    when: RawTime
    pairs: dict[str, str]
    raw: str


class _Pairer:
    """Matches INVITEs with their BYEs; yields calls, unanswered calls and rejects.

    A failed INVITE is held back: with serial forking each failed branch is logged
    "call missed" (acc docs, log_missed_flag set again in failure_route), and the
    branch answered next has the same Call-ID: that is the call. A Call-ID never
    answered is one unanswered call, ended by its last failure, yielded once the file
    has moved ``MISSED_WINDOW`` past it (no INVITE transaction lasts that long: memory
    stays bounded on long files) or at the end of the file."""

    def __init__(self) -> None:
        self.head = ""  # a table's header line: a Half is read again after it
        self.open: dict[str, _Event] = {}
        self.missed: dict[str, _Event] = {}  # oldest first

    def feed(self, ev: _Event) -> Iterator[Parsed]:
        yield from self._expire(ev.when)
        if ev.method == "INVITE":
            if ev.call_id in self.open:
                # A re-INVITE within the open dialog (RFC 3261 §14), answered or failed
                # (491, 488: the dialog lives on, §14.1): part of the same call.
                pass
            elif ev.code >= 300:
                self.missed.pop(ev.call_id, None)
                self.missed[ev.call_id] = ev  # the call's latest failed branch
            else:
                self.missed.pop(ev.call_id, None)  # a failed branch of this call
                self.open[ev.call_id] = ev
        elif ev.method == "BYE":
            invite = self.open.get(ev.call_id)
            if invite is None:  # its INVITE may be in the file before (rotated)
                yield ev.line_no, self._half(ev, "BYE without an answered INVITE", 1)
            elif {ev.from_tag, ev.to_tag} != {invite.from_tag, invite.to_tag}:
                yield ev.line_no, Reject("BYE tags do not match the INVITE dialog", ev.raw)
            else:
                del self.open[ev.call_id]
                yield invite.line_no, _call(invite, ev)
        # Other methods (ACK, CANCEL, re-INVITE within the dialog...) carry no call.

    def _expire(self, now: RawTime) -> Iterator[Parsed]:
        while self.missed:
            ev = next(iter(self.missed.values()))
            if not _older(ev.when, now):
                return
            del self.missed[ev.call_id]
            yield ev.line_no, _call(ev, None)

    def finish(self) -> Iterator[Parsed]:
        missed = sorted(self.missed.values(), key=lambda ev: ev.line_no)
        self.missed.clear()
        for ev in missed:
            yield ev.line_no, _call(ev, None)
        for ev in self.open.values():  # its BYE may be in the next file (rotated)
            yield ev.line_no, self._half(ev, "incomplete: INVITE without BYE at end of file", 0)
        self.open.clear()

    def _half(self, ev: _Event, reason: str, order: int) -> Half:
        return Half(reason, ev.raw, key=ev.call_id, kind=ev.method, order=order, head=self.head)


MISSED_WINDOW = timedelta(hours=1)


def _older(then: RawTime, now: RawTime) -> bool:
    """``then`` is more than MISSED_WINDOW before ``now`` (epoch ms, or local times)."""
    if isinstance(then, int) and isinstance(now, int):
        return now - then > MISSED_WINDOW.total_seconds() * 1000
    if isinstance(then, datetime) and isinstance(now, datetime):
        if (then.tzinfo is None) != (now.tzinfo is None):
            return False  # one with a UTC offset ("...+01"), one without: not comparable
        return now - then > MISSED_WINDOW
    return False


def _call(invite: _Event, bye: _Event | None) -> RawCall:
    pairs = invite.pairs
    extra = {"from_tag": invite.from_tag, "to_tag": invite.to_tag}
    if bye is not None:
        extra["bye_line"] = str(bye.line_no)
    raw = invite.raw if bye is None else f"{invite.raw}\n{bye.raw}"
    return RawCall(
        call_id=invite.call_id,
        # The extra names the table formats and OpenSIPS's "call ended" lines read
        # (src_user first): one acc config's extras name the caller the same way in
        # every line it writes (before, only src_user/dst_user: an OpenSIPS "call
        # missed" line beside a readable "call ended" one was rejected, no callee).
        caller=_first(pairs, CANDIDATES["caller"]),
        callee=_first(pairs, CANDIDATES["callee"]),
        start=invite.when,
        answer=invite.when if bye is not None else None,
        end=bye.when if bye is not None else invite.when,
        sip_code=invite.code if bye is None else 200,
        cause_text=pairs.get("reason", ""),
        gateway=_first(pairs, CANDIDATES["gateway"]),
        extra=extra,
        raw=raw,
    )


def _first(pairs: dict[str, str], names: tuple[str, ...]) -> str:
    """The first of ``names`` with a value in ``pairs``; "" when none has one."""
    return next((pairs[n] for n in names if pairs.get(n)), "")


def log_message(line: str) -> str:
    """The log text of one log line: the line itself, or, for Kamailio's JSON log
    engine (``--log-engine=json``, core docs "Log Engine CLI Parameter": a JSON document
    a line, after a syslog header or "@cee: " if syslog wrote it), its ``message``
    field, unescaped and without the end of line the engine keeps in it (no M flag).
    Read as it stood, the document's closing '"}' ended the last pair: every call's
    dst_user was '4989987654\\n" }', no number, the file's calls all rejected."""
    if '"message"' not in line:
        return line
    brace = line.find("{")
    try:
        doc = json.loads(line[brace:])
    except ValueError:
        return line  # a plain line (a log_prefix may hold braces)
    message = doc.get("message") if isinstance(doc, dict) else None
    return message.rstrip("\r\n") if isinstance(message, str) else line


def parse_syslog(lines: Iterable[str]) -> Iterator[Parsed]:
    """Yield the calls of acc syslog lines (other log lines are skipped)."""
    pairer = _Pairer()
    for line_no, line in enumerate(lines, start=1):
        at = line.find(_MARKER)
        if at < 0:
            continue
        raw = line.rstrip("\r\n")  # the line as the file holds it, for rejects
        text = log_message(raw)
        if text is not raw:
            at = text.find(_MARKER)
            if at < 0:
                continue
        try:
            pairs = _syslog_pairs(text, at)
            if _ENDED in pairs:  # OpenSIPS "call ended": the whole call in one line
                call = _ended_call(pairs, raw)
                pairer.missed.pop(call.call_id, None)  # a failed branch of this call
                yield line_no, call
                continue
            ev = _syslog_event(line_no, pairs, raw)
        except RowError as exc:
            yield line_no, Reject(str(exc), raw)
            continue
        yield from pairer.feed(ev)
    yield from pairer.finish()


def _syslog_pairs(text: str, at: int) -> dict[str, str]:
    body = text[at + len(_MARKER) :]
    _, sep, kv = body.partition(": ")
    if not sep:
        raise RowError("ACC line without key=value pairs")
    pairs: dict[str, str] = {}
    for item in kv.split(";"):
        key, eq, value = item.partition("=")
        if eq:
            pairs[key.strip()] = value
    return pairs


# OpenSIPS acc, CDR mode to the log (do_accounting("log", "cdr"); acc.c acc_log_cdrs):
# "ACC: call ended: created=<s>;call_start_time=<s>;duration=<s>;ms_duration=<ms>;
# setuptime=<s>;method=INVITE;from_tag=..;to_tag=..;call_id=..;code=..;reason=..;<extra>".
_ENDED = "call_start_time"


def _ended_call(pairs: dict[str, str], raw: str) -> RawCall:
    """The call of an OpenSIPS "call ended" line: created (the INVITE), call_start_time
    (the answer), ms_duration (exact; duration is a difference of whole seconds)."""
    call_id = pairs.get("call_id", "")
    if not call_id:
        raise RowError("no call_id")
    method = pairs.get("method", "").strip().upper()
    if not is_method(method):
        raise RowError(f"method is not a SIP method: {method!r}")
    answer = _epoch_s(pairs.get(_ENDED, ""), _ENDED)
    created = pairs.get("created", "")
    start = _epoch_s(created, "created") if created else answer
    duration = int_field(pairs.get("duration", ""), "duration")
    ms_text = pairs.get("ms_duration", "")
    ms = int_field(ms_text, "ms_duration") if ms_text else duration * 1000
    if duration < 0 or ms < 0:
        raise RowError(f"negative duration {duration} or ms_duration {ms}")

    return RawCall(
        call_id=call_id,
        caller=_first(pairs, CANDIDATES["caller"]),
        callee=_first(pairs, CANDIDATES["callee"]),
        start=start,
        answer=answer,
        end=answer + ms,
        talk_s=(ms + 500) // 1000,
        sip_code=int_field(pairs.get("code", ""), "code"),
        cause_text=pairs.get("reason", ""),
        gateway=_first(pairs, CANDIDATES["gateway"]),
        extra={
            "setuptime_s": pairs.get("setuptime", ""),
            "from_tag": pairs.get("from_tag", ""),
            "to_tag": pairs.get("to_tag", ""),
        },
        raw=raw,
    )


def _epoch_s(text: str, name: str) -> int:
    """Epoch seconds (UTC) as ms; a RowError naming the field otherwise."""
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) * 1000 < _EPOCH_MS_MAX:
        raise RowError(f"{name} is not an epoch: {text!r}")
    return int(text) * 1000


def _syslog_event(line_no: int, pairs: dict[str, str], raw: str) -> _Event:
    stamp = pairs.get("timestamp")
    if not stamp:
        raise RowError("ACC line without timestamp (acc_time_mode=0 writes one)")
    # Decimal, not float: float epoch seconds lose the millisecond (….123 -> ….122).
    when = int(Decimal(stamp) * 1000) if _is_number(stamp) else None
    if when is None or not 0 < when < 32_503_680_000_000:  # year 3000: corrupt field
        raise RowError(f"timestamp is not an epoch: {stamp!r}")
    return _event(line_no, pairs, _precise(pairs, when), raw, "call_id", "code")


# acc_time_mode (acc docs; acc.c acc_log_request / acc_db_request): 1 adds the
# microseconds as time_exten (the acc table: time_attr = the seconds, time_exten), 2 the
# time with milliseconds as time_attr ("1773219605.915"); 3 and 4 a formatted time_attr.
_EXTEN, _ATTR = "time_exten", "time_attr"
_EPOCH_MS_MAX = 32_503_680_000_000  # year 3000: a corrupt field


def _precise(pairs: dict[str, str], seconds_ms: int) -> int:
    """The event's time to the millisecond when acc_time_mode 1 or 2 logged it (a whole
    second is all ``timestamp`` says: durations off by up to a second each way)."""
    exten, attr = pairs.get(_EXTEN, ""), pairs.get(_ATTR, "")
    if exten and exten.isascii() and exten.isdigit() and int(exten) < 1_000_000:
        return seconds_ms + int(exten) // 1000
    if attr and _is_number(attr):
        ms = int(Decimal(attr) * 1000)
        if 0 <= ms - seconds_ms <= 1000:  # "%.3f" rounds .9996 up to the next second
            return ms
    return seconds_ms


def _db_precise(pairs: dict[str, str]) -> int | None:
    """Epoch ms of an acc row written with acc_time_mode 1 (time_attr seconds and
    time_exten microseconds) or 2 (time_attr seconds.milliseconds): UTC to the
    millisecond (the time column is local, to the second); None otherwise."""
    attr = pairs.get(_ATTR, "").strip()
    if not attr or not _is_number(attr):
        return None  # mode 0, or 3/4 (a formatted time_attr)
    ms = int(Decimal(attr) * 1000)
    if not 0 < ms < _EPOCH_MS_MAX:
        return None
    exten = pairs.get(_EXTEN, "").strip()
    if "." not in attr and exten.isascii() and exten.isdigit() and int(exten) < 1_000_000:
        ms += int(exten) // 1000
    return ms


def is_method(text: str) -> bool:
    """A SIP method name (RFC 3261 token; every method in use is ASCII letters)."""
    return text.isascii() and text.isalpha()


def _is_number(text: str) -> bool:
    # ASCII digits only: str.isdigit() is true for "²", which Decimal refuses.
    return text.isascii() and text.replace(".", "", 1).isdigit()


def _event(
    line_no: int, pairs: dict[str, str], when: RawTime, raw: str, id_key: str, code_key: str
) -> _Event:
    call_id = pairs.get(id_key, "")
    if not call_id:
        raise RowError(f"no {id_key}")
    method = pairs.get("method", "").strip().upper()
    if not is_method(method):
        # Other methods are no call and skipped: a damaged one must not be (unaccounted).
        raise RowError(f"method is not a SIP method: {method!r}")
    return _Event(
        line_no=line_no,
        method=method,
        from_tag=pairs.get("from_tag", ""),
        to_tag=pairs.get("to_tag", ""),
        call_id=call_id,
        code=int_field(pairs.get(code_key, ""), code_key),
        when=when,
        pairs=pairs,
        raw=raw,
    )


def parse_db(lines: Iterable[str], delimiter: str = ",") -> Iterator[Parsed]:
    """Yield the calls of an acc table exported as CSV with a header row."""
    header: list[str] = []
    problem = ""  # what the header lacks: every row is rejected for it
    pairer = _Pairer()
    width: list[int | None] = [None]  # the header's column count, once read
    for rec in records(lines, delimiter=delimiter, width=lambda: width[0]):
        line_no, raw = rec.line_no, rec.raw
        if rec.fields is None:
            yield line_no, Reject(rec.error, raw)
            continue
        row = rec.fields
        if not row or row == [""]:
            continue
        # A header line again (exports joined; a Half read again after its own export's
        # header: the table may have gained a column since): its columns from here on.
        if not header or all(name in {f.strip() for f in row} for name in _DB_NEEDED):
            header = [name.strip() for name in row]
            width[0] = len(header)
            pairer.head = raw
            missing = [name for name in _DB_NEEDED if name not in header]
            problem = ""
            if missing:  # the header line too: a file without one has a call there
                problem = f"the header has no {', '.join(missing)} column (acc table columns)"
                yield line_no, Reject(problem, raw)
            continue
        if problem:
            yield line_no, Reject(problem, raw)
            continue
        if len(row) != len(header):
            yield line_no, Reject(f"{len(row)} columns; the header has {len(header)}", raw)
            continue
        pairs = dict(zip(header, sql_values(row), strict=True))
        pairs["reason"] = pairs.get("sip_reason", "")
        try:
            when: RawTime = _db_precise(pairs) or parse_stamp(pairs.get("time", ""), "time")
            if when is None:
                raise RowError("no time")
            ev = _event(line_no, pairs, when, raw, "callid", "sip_code")
        except RowError as exc:
            yield line_no, Reject(str(exc), raw)
            continue
        yield from pairer.feed(ev)
    yield from pairer.finish()
