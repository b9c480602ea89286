r"""Cisco Unified Communications Manager CDR flat files.

Line 1 names the fields, line 2 gives their SQL types (INTEGER, VARCHAR(n),
UNIQUEIDENTIFIER ...), then one quoted record per line (CUCM CDR Analysis and Reporting
guide, "CDR field descriptions"). Only cdrRecordType 1 rows are call records (0 is a
start record, 2 a CMR). Times are epoch seconds UTC, dateTimeConnect is 0 for an
unanswered call; *IpAddr fields are signed 32-bit integers of the address's
little-endian octets; origCause_value / destCause_value are Q.850 causes. Directory
numbers in E.164 form are written ``\+4420...`` (CUCM escapes the plus): the normaliser
reads them as E.164.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

from chargingd.mediation.formats.csvlines import records
from chargingd.mediation.records import Parsed, RawCall, RecordIds, Reject, RowError, int_field

REQUIRED = (
    "cdrRecordType",
    "globalCallID_callManagerId",
    "globalCallID_callId",
    "dateTimeOrigination",
    "dateTimeConnect",
    "dateTimeDisconnect",
    "callingPartyNumber",
    "finalCalledPartyNumber",
    "origCause_value",
    "destCause_value",
    "duration",
)
_END_OF_CALL = "1"
_NO_CALL = ("0", "2")  # a start record (not used), a CMR: no call
# CUCM writes its call management records (diagnostics: packets, jitter, MOS) to files
# of their own (cmr_<cluster>_<node>_<time>_<seq>, beside the cdr_ ones), same layout:
# names, types, records of cdrRecordType 2. Their header has none of a CDR's times and
# numbers but these (CDR guide, "CMR field descriptions"); the v15 guide's example
# names the first column cmrRecordType.
_RECORD_TYPE = ("cdrRecordType", "cmrRecordType")
_CMR_FIELDS = ("numberPacketsSent", "numberPacketsLost", "jitter", "varVQMetrics")
# Cisco-specific cause codes (CDR guide, "Cisco-Specific Call Termination Cause
# Codes") are no Q.850 values: a leg a feature ended (262144 conference drop any party,
# 393216 call split by a transfer) cleared normally; any other is unknown (0), its
# value kept in extra ``cucm_cause``.
_FEATURE_ENDED = {262144, 393216}
_Q850_MAX = 127


def ip_from_int(value: int) -> str:
    """Dotted quad of a CUCM address: a signed int whose little-endian bytes are the octets."""
    if not -(2**31) <= value < 2**31:
        raise RowError(f"IP address integer out of range: {value}")
    return ".".join(str(b) for b in struct.pack("<i", value))


def _skip(text: str) -> bool:
    return not text.strip() or text.startswith("#")


def parse(lines: Iterable[str]) -> Iterator[Parsed]:
    """Yield the end-of-call records of a CUCM CDR flat file."""
    header: list[str] = []
    problem = ""  # what the header lacks: every record is rejected for it
    cmr = False  # the header is a CMR file's
    ids = RecordIds()
    # Rows may lack trailing empty columns: any closed line stands alone.
    for rec in records(lines, skip=_skip):
        if rec.fields is None:
            yield rec.line_no, Reject(rec.error, rec.raw)
            continue
        row = rec.fields
        if not header or row[0].strip() in _RECORD_TYPE:
            # The first line; or a header again further down (files joined with cat).
            header = [name.strip() for name in row]
            cmr = _is_cmr(header)
            problem = "" if cmr else _lacks(header)
            if problem:  # the header line too: a file without one has a call there
                yield rec.line_no, Reject(problem, rec.raw)
            continue
        if not row[0].isdigit() and row[0].startswith(("INTEGER", "VARCHAR", "UNIQUE")):
            continue  # the types line
        if cmr:
            # A CMR file: its records are no calls (their call's CDR is in a cdr_ file).
            if row[0].strip() not in _NO_CALL:
                reason = f"cdrRecordType {row[0]!r} in a CMR file (its records are 2)"
                yield rec.line_no, Reject(reason, rec.raw)
            continue
        if problem:
            yield rec.line_no, Reject(problem, rec.raw)
            continue
        try:
            call = _call(header, row)
        except RowError as exc:
            yield rec.line_no, Reject(str(exc), rec.raw)
            continue
        if call is not None:
            call.raw = rec.raw
            # A transferred or conferenced call has a CDR per leg pair, all with its
            # globalCallID: the records a join made (joinOnBehalfOf: 10 transfer, 4
            # conference...) are told apart by their legs, in any file.
            legs = f"{call.extra.get('orig_leg', '')}-{call.extra.get('dest_leg', '')}"
            joined = call.extra.get("joinOnBehalfOf", "0") not in ("", "0")
            call.call_id = ids(call.call_id, rec.raw, "" if legs == "-" else legs, not joined)
            yield rec.line_no, call


def _is_cmr(header: list[str]) -> bool:
    """A CMR file's header: a record type and CMR fields, no CDR times."""
    return "dateTimeOrigination" not in header and any(name in header for name in _CMR_FIELDS)


def _lacks(header: list[str]) -> str:
    """What the header lacks (the reason every record is rejected), or ""."""
    missing = [name for name in REQUIRED if name not in header]
    return f"header lacks {', '.join(missing)}" if missing else ""


def _q850(orig: int, dest: int, extra: dict[str, str]) -> int:
    """The party that cleared carries the cause (the other side reports 0); a Q.850
    value of either side first, then a Cisco-specific one."""
    for cause in (orig, dest):
        if 0 < cause <= _Q850_MAX:
            return cause
    for cause in (orig, dest):
        if cause > _Q850_MAX:
            extra["cucm_cause"] = str(cause)
            return 16 if cause in _FEATURE_ENDED else 0
    return 0


def _call(header: list[str], row: list[str]) -> RawCall | None:
    if len(row) > len(header):
        raise RowError(f"{len(row)} columns; the header has {len(header)}")
    rec = dict(zip(header, row, strict=False))  # trailing empty columns may be cut
    kind = rec.get("cdrRecordType", "")
    if kind != _END_OF_CALL:
        if kind in _NO_CALL:
            return None
        # A damaged record (a line cut at its start, two records run together) is
        # no call of another type: it was dropped unaccounted.
        raise RowError(f"cdrRecordType {kind!r} is not 0, 1 or 2 (CDR guide)")
    if len(row) < len(REQUIRED) or any(name not in rec for name in REQUIRED):
        raise RowError(f"{len(row)} columns; too short for a CDR")
    connect_s = int_field(rec["dateTimeConnect"], "dateTimeConnect")
    orig_cause = int_field(rec["origCause_value"], "origCause_value")
    dest_cause = int_field(rec["destCause_value"], "destCause_value")
    extra = {
        k: rec[k]
        for k in (
            "pkid",
            "origDeviceName",
            "destDeviceName",
            "originalCalledPartyNumber",
            "joinOnBehalfOf",
        )
        if rec.get(k)
    }
    # The file's header names the destination leg "destLegIdentifier" (the CDR guide's
    # field list); some exports and older guides call it "destLegCallIdentifier".
    orig_leg = rec.get("origLegCallIdentifier")
    dest_leg = rec.get("destLegIdentifier") or rec.get("destLegCallIdentifier")
    if orig_leg:
        extra["orig_leg"] = orig_leg
    if dest_leg:
        extra["dest_leg"] = dest_leg
    if rec.get("origIpAddr", "") not in ("", "0"):
        extra["orig_ip"] = ip_from_int(int_field(rec["origIpAddr"], "origIpAddr"))
    gateway = ""
    if rec.get("destIpAddr", "") not in ("", "0"):  # 0: no destination device
        gateway = ip_from_int(int_field(rec["destIpAddr"], "destIpAddr"))
    return RawCall(
        # globalCallID_callId is unique per CUCM node only: qualify it with the node id.
        call_id=f"{rec['globalCallID_callManagerId']}-{rec['globalCallID_callId']}",
        caller=rec["callingPartyNumber"],
        callee=rec["finalCalledPartyNumber"],
        start=int_field(rec["dateTimeOrigination"], "dateTimeOrigination") * 1000,
        answer=connect_s * 1000 if connect_s else None,
        end=int_field(rec["dateTimeDisconnect"], "dateTimeDisconnect") * 1000,
        talk_s=int_field(rec["duration"], "duration"),
        q850=_q850(orig_cause, dest_cause, extra),
        gateway=gateway,
        extra=extra,
    )
