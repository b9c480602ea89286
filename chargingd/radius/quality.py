"""Call quality a gateway reports in its Accounting-Request Stop (pure, bytes in).

Read only from Stops, so the request path of Access-Requests and Interims pays
nothing. What is read (docs/monitoring.md lists it for operators):

- Cisco VSA 25 ``h323-setup-time`` and the Cisco-AVPair ``alert-timepoint`` (both
  Cisco's ``hh:mm:ss.mmm ZONE Day Mon dd yyyy``): post-dial delay = alert - setup.
  ``alert-timepoint`` is the name Cisco IOS gateways (and B2BUAs that speak Cisco's
  accounting, such as Sippy) send; ``alert-time``, which earlier versions read alone
  and which no gateway is known to send, is still read when the other is absent;
- Cisco-AVPair ``lost-packets`` with Acct-Input-Packets (RFC 2866 §5.8): RTP loss =
  lost / (lost + received);
- Cisco-AVPair ``pdd`` (ms), ``mos`` (1-5), ``jitter`` (ms), ``packet-loss`` (%):
  any switch that can add a name=value Cisco-AVPair (Kamailio with rtpengine's MOS
  and jitter variables, an SBC's accounting template) reports these directly.

The codec keeps one value per Cisco sub-type; Cisco-AVPair repeats, so this module
walks the packet's Vendor-Specific attributes itself.
"""

from __future__ import annotations

import re
import struct
from datetime import UTC, datetime

from chargingd.radius import codec as rc

CISCO_AVPAIR = 1
H323_SETUP_TIME = 25
ACCT_INPUT_PACKETS = 47

_U32 = struct.Struct("!I")
# "*15:39:54.343 UTC Tue Nov 23 2010": a leading "*" or "." says the clock was not
# (or loosely) synchronised; the time is still the gateway's own.
_CISCO_TIME = re.compile(
    r"^[*.]?(\d{1,2}:\d{2}:\d{2})\.(\d{3}) (\S+) [A-Za-z]{3} ([A-Za-z]{3} {1,2}\d{1,2} \d{4})$"
)
_DIRECT = {"pdd": "pdd_ms", "mos": "mos", "jitter": "jitter_ms", "packet-loss": "loss_pct"}
_NUMBER = re.compile(r"^\d{1,9}(\.\d{1,6})?$")
# every AVPair name call_quality reads
# the alert time's names, Cisco's own first
_ALERT = ("alert-timepoint", "alert-time")
_READ = frozenset((*_DIRECT, *_ALERT, "lost-packets"))


def cisco_pairs(raw: bytes) -> tuple[dict[str, str], bytes]:
    """Every Cisco-AVPair "name=value" (first of each name) and h323-setup-time."""
    pairs: dict[str, str] = {}
    setup = b""
    pos, end = rc.HEADER_LEN, len(raw)
    while pos + 2 <= end:
        attr_type, attr_len = raw[pos], raw[pos + 1]
        if attr_len < 2:
            break  # the codec has validated lengths; never loop on a zero length
        if (
            attr_type == rc.VENDOR_SPECIFIC
            and attr_len >= 8
            and _U32.unpack_from(raw, pos + 2)[0] == rc.CISCO_VENDOR
        ):
            setup = _sub_attributes(raw[pos + 6 : pos + attr_len], pairs) or setup
        pos += attr_len
    return pairs, setup


def _sub_attributes(body: bytes, pairs: dict[str, str]) -> bytes:
    setup = b""
    sub = 0
    while sub + 2 <= len(body):
        sub_type, sub_len = body[sub], body[sub + 1]
        if sub_len < 2:
            break
        value = body[sub + 2 : sub + sub_len]
        if sub_type == CISCO_AVPAIR:
            name, sep, text = value.decode("utf-8", "replace").partition("=")
            if sep:
                pairs.setdefault(name.strip().lower(), text.strip())
        elif sub_type == H323_SETUP_TIME:
            setup = value
        sub += sub_len
    return setup


def call_quality(packet: rc.Packet) -> tuple[tuple[str, str], ...]:
    """The quality figures of a Stop as CDR extras: pdd_ms, mos, jitter_ms, loss_pct."""
    pairs, setup = cisco_pairs(packet.raw)
    if _READ.isdisjoint(pairs):  # none of the names below (the kit's Stops: h323-conf-id)
        return ()
    out: dict[str, str] = {}
    for name, extra in _DIRECT.items():
        # (a name the Stop does not carry skips the regex: ~1,500 instructions each,
        # four per Stop whose only AVPair is h323-conf-id, the kit's; round 17b)
        value = pairs.get(name)
        if value is not None and _NUMBER.match(value):
            out[extra] = value
    if "pdd_ms" not in out and setup:
        alert = pairs.get(_ALERT[0]) or pairs.get(_ALERT[1])
        if alert is not None:
            pdd = _pdd_ms(setup.decode("utf-8", "replace").partition("=")[2], alert)
            if pdd is not None:
                out["pdd_ms"] = str(pdd)
    if "loss_pct" not in out and pairs.get("lost-packets", "").isdigit():
        loss = _loss_pct(int(pairs["lost-packets"]), packet.attrs.get(ACCT_INPUT_PACKETS))
        if loss is not None:
            out["loss_pct"] = loss
    return tuple(sorted(out.items()))


def _cisco_ms(text: str) -> tuple[str, int] | None:
    match = _CISCO_TIME.match(text.strip())
    if match is None:
        return None
    clock, millis, zone, date = match.groups()
    try:
        when = datetime.strptime(f"{date} {clock}", "%b %d %Y %H:%M:%S")
    except ValueError:
        return None
    # Both times come from one gateway in one zone: the difference needs no zone.
    return zone, int(when.replace(tzinfo=UTC).timestamp()) * 1000 + int(millis)


def _pdd_ms(setup: str, alert: str) -> int | None:
    start, ring = _cisco_ms(setup), _cisco_ms(alert)
    if start is None or ring is None or start[0] != ring[0]:
        return None
    pdd = ring[1] - start[1]
    return pdd if 0 <= pdd <= 120_000 else None


def _loss_pct(lost: int, received_raw: bytes | None) -> str | None:
    if received_raw is None or len(received_raw) != 4:
        return None
    total = lost + _U32.unpack(received_raw)[0]
    return f"{100 * lost / total:.3f}" if total else None
