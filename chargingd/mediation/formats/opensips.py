"""OpenSIPS acc table in CDR mode, exported as CSV with a header row.

``do_accounting("db", "cdr")`` on the initial INVITE makes the acc module write one
row per call when its dialog ends (acc module, "CDRs accounting"): method INVITE,
from_tag, to_tag, callid, sip_code, sip_reason, time, duration, setuptime, created
and the ``extra_fields`` columns (caller/callee numbers: named by the operator).

* ``created``: when the INVITE came (the dialog's creation) -- the call's start;
* ``time``: when the call was answered, or for a failed call (sip_code >= 300,
  with the ``failed`` flag; duration 0) when it failed;
* ``setuptime``: seconds from created to time (post-dial delay and ringing);
* ``duration``: talk seconds, from time to the BYE, as a difference of whole seconds
  (acc.c: bye.tv_sec - start.tv_sec); ``ms_duration`` (OpenSIPS 2.2+, when the table
  has it) is the exact time in milliseconds and is the talk time then.

Times are DATETIME in the database's local time: the source's time_zone. A failed
call is stored unanswered, its SIP code mapped to Q.850 (RFC 3398) like kamailio_db,
unless the source's cause_map names its sip_reason. Rows of other methods (the same
table holds plain transaction accounting) are no call and are skipped. With
multi-leg accounting (leg_fields) a call has a row per leg: rows of the same caller
and callee are one call (the others are counted as duplicates); a row whose mapped
caller/callee differ (the mapping names the leg columns: B forwarding to C) is a
record of its own, ``callid#caller>callee``, billed to that leg's caller as the acc
docs say ("user B must pay for the call"). The missed_calls table (``cdr|missed``:
no duration column) is read too, each row an unanswered call.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.formats.kamailio import is_method
from chargingd.mediation.formats.tables import Columns, Header, Row, rows
from chargingd.mediation.records import (
    Parsed,
    RawCall,
    RawTime,
    RecordIds,
    Reject,
    RowError,
    int_field,
    opt_int,
    parse_stamp,
    shifted,
)

_NEEDED = ("method", "callid", "sip_code", "time", "duration", "setuptime", "created")
# The failed calls of do_accounting("db", "cdr|missed") go to the missed_calls table
# (db_table_missed_calls): the acc table's columns without duration and ms_duration
# (OpenSIPS DB schema, missed_calls version 5). Each of its rows is an unanswered call.


def parse(lines: Iterable[str], source: SourceConfig) -> Iterator[Parsed]:
    """Yield the calls of an OpenSIPS acc table export (CDR mode)."""
    columns: Columns | None = None
    problem = ""
    legs = RecordIds()
    for line_no, row in rows(lines, source.delimiter):
        if isinstance(row, Reject):
            yield line_no, row
            continue
        if isinstance(row, Header):
            columns = Columns(row.names, source.mapping)
            problem = _header_problem(columns)
            if problem:  # the header line too: a file without one has a call there
                yield line_no, Reject(problem, row.raw)
            continue
        if problem or columns is None:
            yield line_no, Reject(problem, row.raw)
            continue
        method = row.values["method"].strip().upper()
        if method != "INVITE":
            if not is_method(method):  # a damaged row, not another request's
                yield line_no, Reject(f"method is not a SIP method: {method!r}", row.raw)
            continue  # transaction accounting of another request: no call
        try:
            call = _call(columns, row)
        except RowError as exc:
            yield line_no, Reject(str(exc), row.raw)
            continue
        # Multi-leg accounting: a row per leg. A forwarded leg (B -> C, mapped to the
        # leg columns) is billed to its own caller; rows with the same parties are one.
        parties = f"{call.caller}>{call.callee}"
        call.call_id = legs(call.call_id, parties, parties)
        yield line_no, call


def _header_problem(columns: Columns) -> str:
    missing = columns.missing()
    if missing:
        return f"the header has no column {', '.join(missing)} (see the source's mapping)"
    absent = [c for c in _NEEDED if c not in columns.header]
    if absent == ["duration"]:
        absent = []  # the missed_calls table
    if absent:
        return (
            f"the header has no {', '.join(absent)} column: not an acc table in CDR mode"
            ' (do_accounting("db", "cdr"))'
        )
    if "callee" not in columns.column:
        return "the header has no callee column (extra_fields: dst_user, callee_id; mapping.callee)"
    return ""


def _call(columns: Columns, row: Row) -> RawCall:
    values = row.values
    call_id = values["callid"].strip()
    if not call_id:
        raise RowError("no callid")
    code = int_field(values["sip_code"].strip(), "sip_code")
    when = parse_stamp(values["time"].strip(), "time")
    if when is None:
        raise RowError("no time")
    if "duration" not in values and code < 300:
        raise RowError(f"sip_code {code} in a missed_calls table (a failed call's is >= 300)")
    duration = int_field(values.get("duration", "").strip() or "0", "duration")
    setup = int_field(values["setuptime"].strip() or "0", "setuptime")
    if duration < 0 or setup < 0:
        raise RowError(f"negative duration {duration} or setuptime {setup}")
    created = parse_stamp(values["created"].strip(), "created")
    start = created if created is not None else shifted(when, -setup * 1000, "setuptime")
    extra = {"setuptime_s": str(setup), "from_tag": values.get("from_tag", ""),
             "to_tag": values.get("to_tag", "")}  # fmt: skip
    end: RawTime = when
    if code >= 300:
        answer, talk = None, 0
    else:
        ms = opt_int(values.get("ms_duration", "").strip(), "ms_duration")
        # acc.c acc_db_cdrs: duration = bye.tv_sec - start.tv_sec, a difference of
        # whole seconds (05.900 to 66.300: 61); ms_duration = the exact milliseconds
        # (60400): the talk time, rounded half up like end - answer elsewhere.
        answer, talk = when, duration if ms is None else (ms + 500) // 1000
        end = shifted(when, ms if ms is not None else duration * 1000, "duration")
    return RawCall(
        call_id=call_id,
        caller=columns.get(row, "caller"),
        callee=columns.get(row, "callee"),
        start=start,
        answer=answer,
        end=end,
        talk_s=talk if answer is not None else None,
        sip_code=code,
        cause_text=values.get("sip_reason", "").strip(),
        account=columns.get(row, "account"),
        gateway=columns.get(row, "gateway"),
        extra=extra,
        raw=row.raw,
    )
