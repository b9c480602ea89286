"""Asterisk cdr_csv ``Master.csv``.

Column order of cdr_csv.c ``build_csv_record``: accountcode, src, dst, dcontext, clid,
channel, dstchannel, lastapp, lastdata, start, answer, end, duration, billsec,
disposition, amaflags, then uniqueid (``loguniqueid=yes``), userfield
(``loguserfield=yes``), then peeraccount, linkedid, sequence (``newcdrcolumns=yes``).
Which optional columns the file has is what the switch's cdr.conf ``[csv]`` section
says: a source that says it (``loguniqueid``, ``loguserfield``, ``newcdrcolumns``, any
of them; an unset one is no, as in Asterisk) fixes the columns, and a row with another
count is rejected, never guessed. A source that says none of them reads the columns
from the file's first row, by its count, where the count has one meaning: 16 (none),
18 (uniqueid, userfield: the sample cdr.conf's), 19 (newcdrcolumns), 21 (all three);
17 and 20 (uniqueid or userfield?) are rejected with a reason that asks the source to
say; the rest of the file must have the first row's count. A first row of 19 or more
whose 9th and 11th values are times is cdr_custom's sample mapping (``CUSTOM``), which
writes cdr-custom/Master.csv, with any columns the operator appended to it after.
A cdr_custom mapping of the operator's own is the source's ``fields`` (its CDR names in
order; unknown names are read past); its times may be ``${CDR(start,u)}`` epoch seconds.
Strings are quoted with inner quotes doubled (append_string), integers are
not, an unset time is an empty field; times are local "YYYY-MM-DD HH:MM:SS", or UTC
with ``usegmtime=yes``. A damaged line never swallows the next one (csvlines).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC

from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.causes import ASTERISK_DISPOSITIONS
from chargingd.mediation.formats.csvlines import records
from chargingd.mediation.records import (
    Parsed,
    RawCall,
    RawTime,
    RecordIds,
    Reject,
    RowError,
    int_field,
    parse_stamp,
)

BASE = (
    "accountcode",
    "src",
    "dst",
    "dcontext",
    "clid",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
)
NEW_COLUMNS = ("peeraccount", "linkedid", "sequence")
# cdr_custom's sample mapping (configs/samples/cdr_custom.conf.sample), which writes
# cdr-custom/Master.csv: every value CSV_QUOTEd, clid first, accountcode after
# amaflags, then uniqueid, userfield, sequence; its "High Resolution" variant writes
# duration and billsec with decimals (CDR(duration,f)). 19 columns, as cdr_csv with
# newcdrcolumns: the first row tells them apart (its 9th value is a time here).
CUSTOM = (
    "clid",
    "src",
    "dst",
    "dcontext",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
    "accountcode",
    "uniqueid",
    "userfield",
    "sequence",
)


def layout(source: SourceConfig) -> tuple[str, ...] | None:
    """The columns of the source's Master.csv, as its cdr.conf [csv] options make them
    (or, ``fields``, as its cdr_custom.conf mapping names them); None when the source
    says none of them (the file's first row says)."""
    if source.fields:
        return tuple(source.fields)
    options = (source.loguniqueid, source.loguserfield, source.newcdrcolumns)
    if all(option is None for option in options):
        return None
    names: tuple[str, ...] = BASE
    if source.loguniqueid:
        names += ("uniqueid",)
    if source.loguserfield:
        names += ("userfield",)
    if source.newcdrcolumns:
        names += NEW_COLUMNS
    return names


# A row's count -> the columns, where cdr_csv writes that count one way only.
BY_COUNT: dict[int, tuple[str, ...]] = {
    len(BASE): BASE,
    len(BASE) + 2: (*BASE, "uniqueid", "userfield"),
    len(BASE) + 3: (*BASE, *NEW_COLUMNS),
    len(BASE) + 5: (*BASE, "uniqueid", "userfield", *NEW_COLUMNS),
}


def _by_first_row(row: list[str]) -> tuple[str, ...]:
    """The columns of a file whose first row is ``row`` (cdr_csv by its count, or
    cdr_custom's sample mapping), or why they are unknown."""
    if len(row) >= len(CUSTOM) and _is_stamp(row[8]) and _is_stamp(row[10]):
        # cdr_csv's 9th and 11th columns are lastdata and answer. Columns after the
        # sample's are the operator's own, appended to its mapping (${CDR(callid)}...).
        return CUSTOM + tuple(f"column{i}" for i in range(len(CUSTOM) + 1, len(row) + 1))
    return _by_count(len(row))


def _is_stamp(text: str) -> bool:
    try:
        return parse_stamp(text, "") is not None
    except RowError:
        return False


def _by_count(count: int) -> tuple[str, ...]:
    """The columns of a file whose first row has ``count``, or why they are unknown."""
    names = BY_COUNT.get(count)
    if names is not None:
        return names
    if count in (len(BASE) + 1, len(BASE) + 4):
        raise RowError(
            f"{count} columns: a Master.csv with loguniqueid=yes or loguserfield=yes (one of"
            " them); say which in the source (loguniqueid = true or loguserfield = true)"
        )
    raise RowError(
        f"{count} columns; a Master.csv has 16 (cdr.conf [csv] defaults), 18 (loguniqueid,"
        " loguserfield), 19 (newcdrcolumns) or 21 (all three): set the source's loguniqueid,"
        " loguserfield, newcdrcolumns as the switch's cdr.conf says"
    )


def _options(names: tuple[str, ...]) -> str:
    said = [
        f"{option}={'yes' if column in names else 'no'}"
        for option, column in (
            ("loguniqueid", "uniqueid"),
            ("loguserfield", "userfield"),
            ("newcdrcolumns", "linkedid"),
        )
    ]
    return ", ".join(said)


def parse(lines: Iterable[str], source: SourceConfig | None = None) -> Iterator[Parsed]:
    """Yield the calls of a Master.csv file written with the source's options (or, when
    it says none, with the columns its first row's count stands for)."""
    source = source or SourceConfig(format="asterisk")
    said = layout(source)  # by the source, else (None) by the file's first row
    known = [said]  # the file's columns once known (read by records' width)
    ids = RecordIds()
    for rec in records(lines, width=lambda: None if known[0] is None else len(known[0])):
        if rec.fields is None:
            yield rec.line_no, Reject(rec.error, rec.raw)
            continue
        if not rec.fields or rec.fields == [""]:
            continue
        try:
            names = known[0]
            if names is None:
                names = known[0] = _by_first_row(rec.fields)
            if len(rec.fields) != len(names):
                layout_said = _described(names, source, said is not None)
                raise RowError(f"{len(rec.fields)} columns; {layout_said}")
            call = _call(names, rec.fields, rec.raw, source.usegmtime)
        except RowError as exc:
            yield rec.line_no, Reject(str(exc), rec.raw)
            continue
        # Asterisk 12+ writes a CDR per dial attempt (failover, parallel ring), each
        # with Party A's uniqueid: the others are told apart by their dstchannel.
        call.call_id = ids(call.call_id, rec.raw, call.extra["dstchannel"])
        yield rec.line_no, call


def _stamp(text: str, name: str, utc: bool) -> RawTime:
    whole, dot, frac = text.partition(".")
    if dot and len(frac) == 6 and whole.isdigit() and frac.isdigit() and whole.isascii():
        # ${CDR(start,u)} in a cdr_custom mapping: func_cdr's raw value "%ld.%06ld",
        # epoch seconds (UTC whatever usegmtime says; unset: "0.000000") -> epoch ms.
        return int(whole) * 1000 + int(frac[:3]) or None
    when = parse_stamp(text, name)
    return when.replace(tzinfo=UTC) if when is not None and utc else when


def _described(names: tuple[str, ...], source: SourceConfig, said: bool) -> str:
    """Whose layout a row of another count was read against, for its reject."""
    if source.fields:
        return f"the source's fields (its cdr_custom mapping) name {len(names)}"
    whose = "the source's Master.csv" if said else "this file's first row"
    custom = names[: len(CUSTOM)] == CUSTOM
    layout = "cdr_custom's sample mapping" if custom else _options(names)
    return f"{whose} has {len(names)} ({layout})"


def _call(names: tuple[str, ...], row: list[str], raw: str, utc: bool) -> RawCall:
    rec = dict(zip(names, row, strict=True))
    # Without loguniqueid the row has no id of its own: channel + start is unique per
    # call (a cdr_custom mapping without channel: the numbers and the start).
    channel = rec.get("channel", "")
    start = rec.get("start", "")
    call_id = rec.get("uniqueid") or (
        f"{channel}@{start}" if channel else f"{rec.get('src', '')}>{rec['dst']}@{start}"
    )
    dstchannel = rec.get("dstchannel", "")
    extra = {"channel": channel, "dstchannel": dstchannel}
    for name in ("userfield", "linkedid", "peeraccount"):
        if rec.get(name):
            extra[name] = rec[name]
    disposition = rec.get("disposition", "")
    billsec = rec.get("billsec")
    duration = rec.get("duration")
    return RawCall(
        call_id=call_id,
        caller=rec.get("src", ""),
        callee=rec["dst"],
        start=_stamp(start, "start", utc),
        answer=_stamp(rec.get("answer", ""), "answer", utc),
        end=_stamp(rec["end"], "end", utc),
        talk_s=None if billsec is None else _seconds(billsec, "billsec"),
        q850=ASTERISK_DISPOSITIONS.get(disposition),
        cause_text=disposition,
        account=rec.get("accountcode", ""),
        gateway=_gateway(dstchannel),
        extra=extra,
        total_s=None if duration is None else _seconds(duration, "duration"),
        raw=raw,
    )


def _seconds(text: str, name: str) -> int:
    """Whole seconds; cdr_custom's CDR(billsec,f) writes "124.6": rounded half up, as
    chargingd rounds end - answer."""
    if "." not in text:
        return int_field(text, name)
    whole, _, frac = text.partition(".")
    if not (whole.isascii() and whole.isdigit() and frac.isascii() and frac.isdigit()):
        raise RowError(f"{name} is not a number of seconds: {text!r}")
    return int(whole) + (1 if frac[0] >= "5" else 0)


def _gateway(dstchannel: str) -> str:
    """The trunk of "PJSIP/trunk-00000002" ("PJSIP/trunk"): technology and peer name."""
    return dstchannel.rsplit("-", 1)[0] if "-" in dstchannel else dstchannel
