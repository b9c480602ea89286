"""One FreeSWITCH call leg's channel variables -> a raw call (mod_json_cdr, mod_xml_cdr).

Both modules write a document per call leg (``<uuid>.cdr.json`` / ``.cdr.xml``, an
``a_`` prefix on the A-leg with prefix-a-leg) holding the channel's ``variables``;
with encode-values (the default) every value is URL-encoded (switch_url_encode:
"%2B4930123456", "2019-03-11%2009%3A00%3A00") and is decoded here; a "+" stays a
plus (it is no form encoding).

A bridged call has two legs, and log-b-leg (the default) writes both: the B-leg (the
one with an ``originator`` caller profile, or ``originating_leg_uuid`` set) repeats
the call of its A-leg and is skipped, so a call is billed once, from its A-leg.

Times: ``*_uepoch`` (microseconds, UTC; "0" = never, e.g. an unanswered call's
answer), else ``*_epoch`` (seconds), else ``*_stamp`` (local "YYYY-MM-DD HH:MM:SS").
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import unquote

from chargingd.mediation.causes import freeswitch_q850
from chargingd.mediation.records import RawCall, RawTime, RowError, opt_int, parse_stamp


class Variables:
    """The ``variables`` of one leg, decoded on access."""

    def __init__(self, raw: Mapping[str, object], encoded: bool) -> None:
        self.raw = raw
        self.encoded = encoded

    def get(self, name: str) -> str:
        value = self.raw.get(name)
        if value is None:
            return ""
        text = value if isinstance(value, str) else str(value)
        return unquote(text, errors="strict") if self.encoded and "%" in text else text

    def label(self, name: str) -> str:
        """A descriptive value (a caller's display name): switch_url_encode encodes the
        bytes the channel holds, and a display name from a SIP UA or an ISDN display IE
        may be Latin-1 ("M%FCller"): read as Latin-1 when it is no UTF-8, never a reason
        to lose the call. Numbers and ids stay strict (``get``)."""
        try:
            return self.get(name)
        except UnicodeDecodeError:
            value = self.raw.get(name)
            return unquote(value if isinstance(value, str) else str(value), "latin-1")


def _time(v: Variables, stem: str) -> RawTime:
    us = v.get(f"{stem}_uepoch")
    if us:
        value = opt_int(us, f"{stem}_uepoch") or 0
        return value // 1000 or None
    sec = v.get(f"{stem}_epoch")
    if sec:
        return (opt_int(sec, f"{stem}_epoch") or 0) * 1000 or None
    return parse_stamp(v.get(f"{stem}_stamp"), f"{stem}_stamp")


def exact_billsec(billsec: int | None, billmsec: int | None, billusec: int | None) -> int | None:
    """The talk time in whole seconds, rounded half up from billusec / billmsec when the
    record has them. switch_channel.c sets billsec = hangup second - answer second (a
    difference of whole seconds: answered at .900, hung up 60.4 s later is 61), billmsec
    and billusec the exact time."""
    if billusec is not None:
        return (billusec + 500_000) // 1_000_000
    if billmsec is not None:
        return (billmsec + 500) // 1000
    return billsec


def profile_field(profile: Mapping[str, object] | None, name: str) -> str:
    """A field of the leg's current caller profile (the document's first callflow),
    written as the channel holds it (not URL-encoded)."""
    value = profile.get(name) if profile is not None else None
    return value.strip() if isinstance(value, str) else ""


def raw_call(v: Variables, raw: str, profile: Mapping[str, object] | None = None) -> RawCall:
    """The call of one leg's variables; RowError (the reject reason) when unreadable.

    caller_id_number and destination_number are caller profile fields: the
    ``variables`` object holds them only when the dialplan set them as variables, and
    the callflow's ``caller_profile`` always has them (cdr_csv's ${destination_number}
    reads the variable, else the profile field: the same order here), before the SIP
    headers' users (sip_to_user is the To header's, not the number the dialplan
    routed)."""
    try:
        call_id = v.get("uuid") or v.get("call_uuid")
        cause = v.get("hangup_cause")
        q850 = freeswitch_q850(opt_int(v.get("hangup_cause_q850"), "hangup_cause_q850"), cause)
        billsec = exact_billsec(
            opt_int(v.get("billsec"), "billsec"),
            opt_int(v.get("billmsec"), "billmsec"),
            opt_int(v.get("billusec"), "billusec"),
        )
        duration = opt_int(v.get("duration"), "duration")
        start, answer, end = (_time(v, stem) for stem in ("start", "answer", "end"))
        caller = (
            v.get("caller_id_number")
            or profile_field(profile, "caller_id_number")
            or v.get("sip_from_user")
            or v.get("ani")
        )
        callee = (
            v.get("destination_number")
            or profile_field(profile, "destination_number")
            or v.get("sip_to_user")
            or v.get("sip_req_user")
        )
        sip_code = opt_int(v.get("sip_term_status"), "sip_term_status")
        account = v.get("accountcode")
        gateway = v.get("sip_network_ip") or v.get("network_addr")
        extra = {"hangup_cause": cause} if cause else {}
        for name in ("caller_id_name", "bleg_uuid", "sip_gateway_name", "context"):
            value = v.label(name)
            if value:
                extra[name] = value
    except UnicodeDecodeError:
        raise RowError("a value is not URL-encoded UTF-8 (encode-values?)") from None
    if not call_id:
        raise RowError("no uuid variable")
    return RawCall(
        call_id=call_id,
        caller=caller,
        callee=callee,
        start=start,
        answer=answer,
        end=end,
        talk_s=billsec,
        q850=q850,
        sip_code=sip_code,
        cause_text=cause,
        account=account,
        gateway=gateway,
        extra=extra,
        total_s=duration,
        raw=raw,
    )
