"""Call quality read from a RADIUS Stop's bytes (Cisco VSAs, Cisco-AVPair)."""

from __future__ import annotations

from chargingd.radius import codec as rc
from chargingd.radius.quality import call_quality

SECRET = b"s"


def stop(*vsas: bytes, input_packets: int | None = None) -> rc.Packet:
    attrs = rc.attr_u32(rc.ACCT_STATUS_TYPE, rc.STATUS_STOP) + b"".join(vsas)
    if input_packets is not None:
        attrs += rc.attr_u32(47, input_packets)
    return rc.decode(rc.encode_request(rc.ACCOUNTING_REQUEST, 1, attrs, SECRET))


def avpair(text: str) -> bytes:
    return rc.cisco_vsa(1, text.encode())


def test_cisco_setup_and_alert_times_give_the_pdd() -> None:
    packet = stop(
        rc.cisco_vsa(25, b"h323-setup-time=*15:39:54.343 UTC Tue Nov 23 2010"),
        avpair("alert-time=*15:39:56.843 UTC Tue Nov 23 2010"),
        avpair("lost-packets=10"),
        input_packets=990,
    )
    assert dict(call_quality(packet)) == {"pdd_ms": "2500", "loss_pct": "1.000"}


def test_direct_pairs_and_every_avpair_is_read() -> None:
    packet = stop(
        avpair("h323-ivr-out=x:y"), avpair("mos=4.1"), avpair("jitter=12"),
        avpair("packet-loss=0.5"), avpair("pdd=1800"),
    )  # fmt: skip
    assert dict(call_quality(packet)) == {
        "mos": "4.1", "jitter_ms": "12", "loss_pct": "0.5", "pdd_ms": "1800"
    }  # fmt: skip


def test_nonsense_is_left_out() -> None:
    packet = stop(
        rc.cisco_vsa(25, b"h323-setup-time=*15:39:54.343 UTC Tue Nov 23 2010"),
        avpair("alert-time=*15:39:50.000 CET Tue Nov 23 2010"),  # another zone
        avpair("mos=excellent"),
        avpair("lost-packets=5"),  # no Acct-Input-Packets: no ratio
    )
    assert call_quality(packet) == ()
    assert call_quality(stop()) == ()
