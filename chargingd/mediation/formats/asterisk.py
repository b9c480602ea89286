"""Asterisk cdr_csv ``Master.csv``.

Column order of cdr_csv.c ``build_csv_record``: accountcode, src, dst, dcontext, clid,
channel, dstchannel, lastapp, lastdata, start, answer, end, duration, billsec,
disposition, amaflags, then uniqueid (loguniqueid=yes), userfield (loguserfield=yes),
then peeraccount, linkedid, sequence (newcdrcolumns=yes). Which optional groups are
present is told by the column count. Times are local "YYYY-MM-DD HH:MM:SS"; an
unanswered call has an empty answer field.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

from chargingd.mediation.causes import ASTERISK_DISPOSITIONS
from chargingd.mediation.records import (
    Parsed,
    RawCall,
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


def _layout(count: int, row: list[str]) -> tuple[str, ...] | None:
    """Column names for a row of ``count`` columns, None if no layout has that many."""
    if count == 16:
        return BASE
    if count == 18:
        return (*BASE, "uniqueid", "userfield")
    if count == 19:
        return BASE + NEW_COLUMNS
    if count == 21:
        return (*BASE, "uniqueid", "userfield", *NEW_COLUMNS)
    if count in (17, 20):
        # One of uniqueid / userfield: a uniqueid is "<epoch>.<seq>" (channel.c).
        optional = "uniqueid" if _looks_like_uniqueid(row[16]) else "userfield"
        return (*BASE, optional) + (NEW_COLUMNS if count == 20 else ())
    return None


def _looks_like_uniqueid(text: str) -> bool:
    head, dot, tail = text.partition(".")
    return bool(dot) and head.isdigit() and tail.isdigit()


def parse(lines: Iterable[str]) -> Iterator[Parsed]:
    """Yield the calls of a Master.csv file."""
    reader = csv.reader(lines)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield reader.line_num, Reject(f"unreadable CSV: {exc}")
            continue
        if not row:
            continue
        try:
            yield reader.line_num, _call(row)
        except RowError as exc:
            yield reader.line_num, Reject(str(exc), ",".join(row))


def _call(row: list[str]) -> RawCall:
    names = _layout(len(row), row)
    if names is None:
        raise RowError(f"{len(row)} columns; Master.csv has 16 to 21")
    rec = dict(zip(names, row, strict=True))
    start = parse_stamp(rec["start"], "start")
    # Without loguniqueid the row has no id of its own: channel + start is unique per call.
    call_id = rec.get("uniqueid") or f"{rec['channel']}@{rec['start']}"
    extra = {"channel": rec["channel"], "dstchannel": rec["dstchannel"]}
    if rec.get("userfield"):
        extra["userfield"] = rec["userfield"]
    if rec.get("linkedid"):
        extra["linkedid"] = rec["linkedid"]
    disposition = rec["disposition"]
    return RawCall(
        call_id=call_id,
        caller=rec["src"],
        callee=rec["dst"],
        start=start,
        answer=parse_stamp(rec["answer"], "answer"),
        end=parse_stamp(rec["end"], "end"),
        talk_s=int_field(rec["billsec"], "billsec"),
        q850=ASTERISK_DISPOSITIONS.get(disposition),
        cause_text=disposition,
        account=rec["accountcode"],
        gateway=_gateway(rec["dstchannel"]),
        extra=extra,
    )


def _gateway(dstchannel: str) -> str:
    """The trunk of "PJSIP/trunk-00000002" ("PJSIP/trunk"): technology and peer name."""
    return dstchannel.rsplit("-", 1)[0] if "-" in dstchannel else dstchannel
