"""Kamailio's dialog-based CDRs: the acc_cdrs table exported as CSV with a header row.

With ``modparam("acc", "cdr_enable", 1)`` the acc module writes one row per dialog
(acc_cdr.c) when it ends: start_time, end_time, duration (float seconds, "125.000000")
and the ``cdr_extra`` columns (callid, src_user, dst_user...: named by the operator).
Times are DATETIME in the database's local time (acc_time_mode = 4: UTC): the
source's time_zone says which.

There is no answer time. start_time is set when the dialog is created (the INVITE)
and, with ``cdr_start_on_confirmed = 1``, set again when it is confirmed (the 200
OK): the source's ``cdr_start`` says which, because it decides what is billed:

* ``confirmed``: start_time is the answer; the duration is the talk time.
* ``created`` (Kamailio's default): start_time is the INVITE; the duration runs from
  the INVITE and includes the ringing, which Kamailio cannot tell apart: it is billed.

A dialog that failed (``cdr_on_failed = 1``) is written with end = start and duration
0: an unanswered call (its cause from a ``sip_code`` cdr_extra column, if any). A
dialog that expired (``cdr_expired_dlg_enable = 1``: no BYE seen) ends at the dialog
timeout: such a call is billed to its timeout (nothing in the row tells it apart).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator

from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.causes import NORMAL_CLEARING
from chargingd.mediation.formats.kamailio import log_message
from chargingd.mediation.formats.tables import Columns, Header, Row, rows, seconds, whole_seconds
from chargingd.mediation.records import (
    Parsed,
    RawCall,
    RawTime,
    Reject,
    RowError,
    opt_int,
    parse_stamp,
)

# Kamailio's defaults for cdr_start_id, cdr_end_id, cdr_duration_id (mapping renames).
_FIXED = {"start": ("start_time",), "end": ("end_time",), "duration": ("duration",),
          "id": ("id",)}  # fmt: skip


def parse(lines: Iterable[str], source: SourceConfig) -> Iterator[Parsed]:
    """Yield the calls of an acc_cdrs export, or of the CDR lines the acc module logs
    (``cdr_log_enable``, on by default): a file whose first line is one is read so."""
    it = iter(lines)
    head: list[str] = []
    start, end = _key(source, "start"), _key(source, "end")
    logged = False
    for line in it:
        head.append(line)
        if f"{start}=" in line and f"{end}=" in line:
            logged = True  # a CDR log line (a syslog's other lines may come first)
            break
        if line.strip() and (len(head) > _LOG_LOOKAHEAD or start in _fields(line, source)):
            break  # a table's header (or a table without one: its rows are rejects)
    if logged:
        yield from _parse_log(itertools.chain(head, it), source)
    else:
        yield from _parse_table(itertools.chain(head, it), source)


_LOG_LOOKAHEAD = 1000  # syslog lines read before a CDR line decides the file is a log


def _fields(line: str, source: SourceConfig) -> list[str]:
    return [f.strip().strip('"') for f in line.rstrip("\r\n").split(source.delimiter)]


def _key(source: SourceConfig, field: str) -> str:
    """The name of a core CDR attribute (cdr_start_id...: the source's mapping)."""
    named = source.mapping.get(field)
    return named if isinstance(named, str) else _FIXED[field][0]


def _parse_log(lines: Iterable[str], source: SourceConfig) -> Iterator[Parsed]:
    """acc_cdr.c log_write_cdr: one syslog line per dialog, "start_time=<epoch.usec>;
    end_time=<epoch.usec>; duration=<sec.usec>; <cdr_extra>=<value>..." (pairs joined
    by "; "). The times are the dialog's own, UTC to the microsecond."""
    start_key = _key(source, "start")
    marker = f"{start_key}="
    known: dict[tuple[str, ...], Columns] = {}
    for line_no, line in enumerate(lines, start=1):
        at = line.find(marker)
        if at < 0:
            continue  # another log line
        raw = line.rstrip("\r\n")
        text = log_message(raw)  # the message of a JSON log engine line
        at = text.find(marker)
        if at < 0:
            continue
        values: dict[str, str] = {}
        for item in text[at:].split("; "):
            key, eq, value = item.partition("=")
            if eq:
                values[key.strip()] = value.strip()
        names = tuple(values)
        columns = known.get(names)
        if columns is None:
            columns = known[names] = Columns(list(names), source.mapping, _FIXED)
        try:
            yield line_no, _call(columns, Row(list(names), raw, values), source.cdr_start,
                                 _epoch)  # fmt: skip
        except RowError as exc:
            yield line_no, Reject(str(exc), raw)


def _epoch(text: str, name: str) -> RawTime:
    """An epoch time with microseconds ("1773219605.900000"), UTC; "" is None."""
    if not text:
        return None
    ms = int(seconds(text, name) * 1000)
    if not 0 < ms < _EPOCH_MS_MAX:
        raise RowError(f"{name} is not an epoch time: {text!r}")
    return ms


_EPOCH_MS_MAX = 32_503_680_000_000  # year 3000: a corrupt field


def _parse_table(lines: Iterable[str], source: SourceConfig) -> Iterator[Parsed]:
    """The acc_cdrs table exported as CSV with a header."""
    columns: Columns | None = None
    problem = ""
    for line_no, row in rows(lines, source.delimiter):
        if isinstance(row, Reject):
            yield line_no, row
            continue
        if isinstance(row, Header):
            columns = Columns(row.names, source.mapping, _FIXED)
            problem = _header_problem(columns)
            if problem:  # the header line too: a file without one has a call there
                yield line_no, Reject(problem, row.raw)
            continue
        if problem or columns is None:
            yield line_no, Reject(problem, row.raw)
            continue
        try:
            yield line_no, _call(columns, row, source.cdr_start)
        except RowError as exc:
            yield line_no, Reject(str(exc), row.raw)


def _header_problem(columns: Columns) -> str:
    missing = columns.missing()
    if missing:
        return f"the header has no column {', '.join(missing)} (see the source's mapping)"
    for field, what in (("start", "cdr_start_id"), ("end", "cdr_end_id"),
                        ("duration", "cdr_duration_id")):  # fmt: skip
        if field not in columns.column:
            return f"the header has no {field} column ({what}; mapping.{field} names it)"
    if "callee" not in columns.column:
        return "the header has no callee column (cdr_extra dst_user=$rU; mapping.callee)"
    return ""


def _call(
    columns: Columns,
    row: Row,
    cdr_start: str,
    when: Callable[[str, str], RawTime] = parse_stamp,
) -> RawCall:
    get = columns.get
    start = when(get(row, "start"), "start_time")
    end = when(get(row, "end"), "end_time")
    if start is None or end is None:
        raise RowError("no start_time or end_time")
    text = get(row, "duration")
    exact = seconds(text, "duration")
    duration = whole_seconds(exact)
    answered = exact > 0  # a failed dialog is written with duration 0
    call_id = get(row, "call_id")
    if not call_id:
        row_id = get(row, "id")
        if not row_id:
            raise RowError("no callid (cdr_extra callid=$ci) and no id")
        call_id = f"acc_cdrs:{row_id}"
    extra = {"cdr_start": cdr_start, "duration": text}
    return RawCall(
        call_id=call_id,
        caller=get(row, "caller"),
        callee=get(row, "callee"),
        start=start,
        # acc_cdrs has no answer time: with cdr_start = "created" the start (INVITE) is
        # the only time there is, and the duration billed runs from it.
        answer=start if answered else None,
        end=end,
        talk_s=duration,
        total_s=duration if cdr_start == "created" else None,
        # A confirmed dialog ends with a BYE (or its timeout): normal clearing, unless
        # a sip_code column says otherwise.
        q850=NORMAL_CLEARING if answered and not get(row, "sip_code") else None,
        sip_code=opt_int(get(row, "sip_code"), "sip_code"),
        account=get(row, "account"),
        gateway=get(row, "gateway"),
        extra=extra,
        raw=row.raw,
    )
