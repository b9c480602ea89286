"""Any CSV file, through the source's ``mapping`` (field -> column name or index).

Times are read with the source's ``time_format`` (strptime), or as epoch seconds when
``time_format = "epoch"``; ``duration``/``billsec`` are whole seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal, InvalidOperation

from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.formats.csvlines import records
from chargingd.mediation.formats.tables import header_again
from chargingd.mediation.records import (
    Parsed,
    RawCall,
    RawTime,
    Reject,
    RowError,
    opt_int,
    parse_stamp,
    shifted,
)

_ISO_FORMAT = "%Y-%m-%d %H:%M:%S"


class _Columns:
    """Resolves the mapping to column indexes once the header (if any) is read."""

    def __init__(self, source: SourceConfig, header: list[str] | None) -> None:
        self.index: dict[str, int] = {}
        for name, column in source.mapping.items():
            if isinstance(column, int):
                self.index[name] = column
            elif header is not None and column in header:
                self.index[name] = header.index(column)
            else:
                raise RowError(f"mapping {name} = {column!r}: no such column in the header")
        self.width = max(self.index.values()) + 1

    def get(self, row: list[str], name: str) -> str:
        at = self.index.get(name)
        return row[at].strip() if at is not None else ""


def parse(lines: Iterable[str], source: SourceConfig) -> Iterator[Parsed]:
    """Yield the calls of a CSV file read through the source's mapping."""
    columns: _Columns | None = None
    if not source.header:
        columns = _Columns(source, None)
    width: list[int | None] = [None]  # a header fixes how many columns a record has
    header: list[str] = []  # the header's names (source.header)
    problem = ""  # a mapped column the header lacks: every record is rejected for it
    for rec in records(lines, delimiter=source.delimiter, width=lambda: width[0]):
        if rec.fields is None:
            yield rec.line_no, Reject(rec.error, rec.raw)
            continue
        row = rec.fields
        if not row or row == [""]:
            continue
        if source.header and (columns is None or header_again(row, header)):
            # The header; or a header again further down (exports joined with cat, the
            # export's columns changed): the mapping read from it from here on.
            header = [c.strip() for c in row]
            width[0] = len(row)
            try:
                columns, problem = _Columns(source, header), ""
            except RowError as exc:  # the header line too: it may be a call
                problem = str(exc)
                yield rec.line_no, Reject(problem, rec.raw)
            continue
        if problem or columns is None:
            yield rec.line_no, Reject(problem, rec.raw)
            continue
        if header and len(row) > len(header):
            # A row of another layout (a column added in its middle, no new header):
            # read by the header's positions its values would be shifted.
            yield rec.line_no, Reject(f"{len(row)} columns; the header has {len(header)}", rec.raw)
            continue
        try:
            call = _call(columns, row, source.time_format)
        except RowError as exc:
            yield rec.line_no, Reject(str(exc), rec.raw)
            continue
        call.raw = rec.raw
        yield rec.line_no, call


# Year 3000: anything later is a corrupt field, not a call.
_EPOCH_MS_MAX = 32_503_680_000_000


def _time(text: str, name: str, time_format: str) -> RawTime:
    if not text or text == "0":
        return None
    if time_format == "epoch":
        try:
            # Decimal, not float: exact to the millisecond whatever the digits.
            epoch_ms = int(Decimal(text.strip()) * 1000)
        except (InvalidOperation, ValueError, OverflowError):
            raise RowError(f"{name} is not an epoch time: {text!r}") from None
        if not 0 < epoch_ms < _EPOCH_MS_MAX:
            raise RowError(f"{name} is not an epoch time: {text!r}")
        return epoch_ms
    if time_format == _ISO_FORMAT:
        return parse_stamp(text, name)
    try:
        return datetime.strptime(text, time_format)
    except ValueError:
        raise RowError(f"{name} {text!r} does not match {time_format!r}") from None


def _call(columns: _Columns, row: list[str], time_format: str) -> RawCall:
    if len(row) < columns.width:
        raise RowError(f"{len(row)} columns; the mapping needs {columns.width}")
    get = columns.get
    cause = get(row, "cause")
    q850 = int(cause) if cause.isascii() and cause.isdigit() else None  # not "²"
    billsec = opt_int(get(row, "billsec"), "billsec")
    if billsec is not None and billsec < 0:
        raise RowError(f"negative talk time {billsec}")
    answer = _time(get(row, "answer"), "answer", time_format)
    end = _time(get(row, "end"), "end", time_format)
    start = _time(get(row, "start"), "start", time_format)
    duration = opt_int(get(row, "duration"), "duration")
    if answer is None and "answer" not in columns.index and billsec:
        answer = _minus(end, billsec)  # no answer column: talk time ends at the end
    if start is None and "start" not in columns.index:
        start = _minus(end, duration or billsec or 0)
    call_id = get(row, "call_id") or f"{get(row, 'caller')}>{get(row, 'callee')}@{start}"
    return RawCall(
        call_id=call_id,
        caller=get(row, "caller"),
        callee=get(row, "callee"),
        start=start,
        answer=answer,
        end=end,
        talk_s=billsec,
        q850=q850,
        sip_code=opt_int(get(row, "sip_code"), "sip_code"),
        cause_text=cause if q850 is None else "",
        account=get(row, "account"),
        gateway=get(row, "gateway"),
        total_s=duration,
    )


def _minus(when: RawTime, seconds: int) -> RawTime:
    return shifted(when, -seconds * 1000, "billsec or duration")
