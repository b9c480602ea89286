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

import re
import struct
from collections.abc import Iterable, Iterator

from chargingd.mediation.formats.csvlines import records
from chargingd.mediation.records import (
    BRIDGE,
    Conference,
    Parsed,
    RawCall,
    RecordIds,
    Reject,
    RowError,
    int_field,
)

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


# A conference bridge port's number (CDR guide, "Conference Calls", "Meet-Me
# Conferences": "a special number in the form b0019901001").
_BRIDGE = re.compile(r"[bB]\d+")
_CALLED = "dest"  # the leg was the called party of its record
_CALLING = "orig"  # the leg placed the call of its record


def is_bridge(number: str) -> bool:
    """A conference bridge port's number (``b0029901001``)."""
    return _BRIDGE.fullmatch(number.strip()) is not None


class Legs:
    """The call legs the records of one run named, by leg id (origLegCallIdentifier,
    destLegIdentifier: "unique within a cluster", constant across the records of a leg,
    the CDR guide says; a setup call has a globalCallID of its own): whether the leg was
    the called or the calling party of its record, and that record's parties.
    A conference bridge leg is read with it (see ``parse``). Kept across the files of a
    run (the original and setup calls of a conference end when it is made, its bridge
    legs when it ends: often a file later), for the last ``cap`` legs."""

    def __init__(self, cap: int = 400_000) -> None:
        self.cap = cap
        self._new: dict[str, tuple[str, str, str, str]] = {}
        self._old: dict[str, tuple[str, str, str, str]] = {}

    def get(self, leg: str) -> tuple[str, str, str, str] | None:
        """(role, caller, callee, call id) of the record that had the leg, or None."""
        return self._new.get(leg) or self._old.get(leg)

    def note(self, call: RawCall) -> None:
        """Remember the legs of a call record (not a bridge leg)."""
        for role, leg in (
            (_CALLED, call.extra.get("dest_leg", "")),
            (_CALLING, call.extra.get("orig_leg", "")),
        ):
            if not leg or leg == "0":
                continue
            known = self.get(leg)
            if known is not None and known[0] == _CALLED:
                continue  # a leg that was ever called was called: its first record says by whom
            if len(self._new) >= self.cap // 2:
                self._old, self._new = self._new, {}
            self._new[leg] = (role, call.caller, call.callee, call.call_id)


def _controller(comment: str) -> str:
    """The conference controller's DN in a CDR comment (the last one: a call in several
    conferences lists each controller; "ConfControllerDN=1000;ConfControllerDeviceName=
    SEP0003E333FEBD"), or ""."""
    found = ""
    for part in comment.split(";"):
        key, _, value = part.partition("=")
        if key.strip().lower() == "confcontrollerdn":
            found = value.strip()
    return found


def ip_from_int(value: int) -> str:
    """Dotted quad of a CUCM address: a signed int whose little-endian bytes are the octets."""
    if not -(2**31) <= value < 2**31:
        raise RowError(f"IP address integer out of range: {value}")
    return ".".join(str(b) for b in struct.pack("<i", value))


def _skip(text: str) -> bool:
    return not text.strip() or text.startswith("#")


def parse(lines: Iterable[str], legs: Legs | None = None) -> Iterator[Parsed]:
    """Yield the end-of-call records of a CUCM CDR flat file.

    A record to a conference bridge port (finalCalledPartyNumber ``b0029901001``) is one
    participant's time on the bridge: CUCM writes every one as a call *into* the bridge,
    whatever its direction ("by examining the setup call CDRs, you can determine the
    original direction of each call"). Its origLegCallIdentifier is the participant's
    leg, which the original or a setup call (in this file or
    an earlier one of the run: ``legs``; leg ids are unique in a cluster) had:

    * as its **called** leg: the participant was called by that call's caller, who pays
      for the participant's time on the bridge too: billed as that caller -> that
      callee (the number as dialled), with the bridge leg's times and duration;
    * as its **calling** leg: the participant's own side of a call it placed (the
      controller's phone, an inbound caller): nothing to bill, a ``Conference`` skip.

    A bridge leg no call of the run names: a Meet-Me participant (no join: joinOnBehalfOf
    0, originalCalledPartyNumber the number dialled, not a bridge) is billed as caller ->
    that number; the conference
    controller's own leg (the comment's ConfControllerDN) and a bridge-to-bridge link are
    skipped; any other is yielded with ``leg`` BRIDGE, the participant as its callee,
    for the mediation to decide with the stored calls (an earlier run stored the call
    that brought the participant in).
    """
    legs = legs if legs is not None else Legs()
    held: list[tuple[int, RawCall, str]] = []  # bridge legs whose call came later
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
        item = _record(header, row, rec.raw, legs, ids)
        if isinstance(item, RawCall) and item.extra.get("held"):
            del item.extra["held"]  # a bridge leg whose call is not read yet: at the end
            held.append((rec.line_no, item, item.call_id))
        elif item is not None:
            yield rec.line_no, item
    for line_no, call, gcid in held:
        item = _bridge_leg(call, gcid, legs, final=True)
        assert item is not None
        yield line_no, _identified(item, ids, gcid)


def _record(
    header: list[str], row: list[str], raw: str, legs: Legs, ids: RecordIds
) -> RawCall | Reject | None:
    """A call record with its id, its legs noted; a bridge leg decided (extra ``held``:
    its call is not known yet); a reject; None: no call (a start record, a CMR)."""
    try:
        call = _call(header, row)
    except RowError as exc:
        return Reject(str(exc), raw)
    if call is None:
        return None
    call.raw = raw
    gcid = call.call_id
    if is_bridge(call.callee):
        item = _bridge_leg(call, gcid, legs, final=False)
        if item is None:
            call.extra["held"] = "1"
            return call
        return _identified(item, ids, gcid)
    _identified(call, ids, gcid)
    legs.note(call)
    return call


def _identified(item: RawCall | Reject, ids: RecordIds, gcid: str) -> RawCall | Reject:
    """The call with its record id. A transferred or conferenced call has a CDR per leg
    pair, all with its globalCallID: the records a join made (joinOnBehalfOf: 10
    transfer, 4 conference...) are told apart by their legs, in any file."""
    if isinstance(item, RawCall):
        legs = f"{item.extra.get('orig_leg', '')}-{item.extra.get('dest_leg', '')}"
        joined = item.extra.get("joinOnBehalfOf", "0") not in ("", "0")
        joined = joined or "conference" in item.extra or item.leg == BRIDGE
        item.call_id = ids(gcid, item.raw, "" if legs == "-" else legs, not joined)
    return item


def _bridge_leg(call: RawCall, gcid: str, legs: Legs, final: bool) -> RawCall | Reject | None:
    """A conference bridge leg as the call it bills, a skip, or a reject (``parse``);
    None: its call is not known yet and ``final`` is false."""
    participant = call.caller.strip()
    leg = call.extra.get("orig_leg", "")
    bridge = call.callee.strip()
    call.extra["bridge"] = bridge
    call.extra["participant"] = participant
    where = (
        f"conference bridge leg of {participant or '(no number)'} (leg {leg or '?'}, to {bridge})"
    )
    if is_bridge(participant):  # two bridges linked (Ad Hoc Conference Linking)
        return Conference(
            f"{where}: a link between two conference bridges, nothing to bill", call.raw
        )
    found = legs.get(leg) if leg else None
    if found is not None:
        role, caller, callee, via = found
        if role == _CALLING:
            reason = f"{where}: its own side of call {via}, which it placed; nothing to bill"
            return Conference(reason, call.raw)
        call.caller, call.callee = caller, callee
        call.extra["conference"] = "ad hoc"
        call.extra["conference_call"] = via
        return call
    if not final:
        return None
    dialled = call.extra.get("originalCalledPartyNumber", "").strip()
    joined = call.extra.get("joinOnBehalfOf", "0") not in ("", "0")  # ad hoc: 4
    if not joined and dialled and not is_bridge(dialled) and dialled != participant:
        # Meet-Me: the participant dialled the conference number, forwarded to a bridge
        # port (the guide: "calls to the conference bridge appear as forwarded calls").
        call.callee = dialled
        call.extra["conference"] = "meet-me"
        return call
    if participant and participant == _controller(call.extra.get("comment", "")):
        reason = f"{where}: the conference controller's own leg; nothing to bill"
        return Conference(reason, call.raw)
    # Decided with the stored calls (Mediator._bridged): the participant as callee, so
    # an internal extension is skipped as internal whatever the direction.
    call.caller, call.callee = "", participant
    call.leg = BRIDGE
    return call


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
            "comment",
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
