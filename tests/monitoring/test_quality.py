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


def test_ciscos_own_alert_timepoint_gives_the_pdd() -> None:
    """Cisco IOS names the alert time "alert-timepoint" (its Cisco-AVPair list; Sippy's
    B2BUA sends the same): the PDD of real gateways' Stops. It wins over "alert-time"."""
    setup = rc.cisco_vsa(25, b"h323-setup-time=*09:40:00.100 UTC Mon Dec 7 2026")
    packet = stop(setup, avpair("alert-timepoint=*09:40:03.600 UTC Mon Dec 7 2026"))
    assert dict(call_quality(packet)) == {"pdd_ms": "3500"}
    both = stop(
        setup,
        avpair("alert-time=*09:40:01.100 UTC Mon Dec 7 2026"),
        avpair("alert-timepoint=.09:40:02.100 UTC Mon Dec 7 2026"),
    )
    assert dict(call_quality(both)) == {"pdd_ms": "2000"}


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


def _before(packet: rc.Packet) -> tuple[tuple[str, str], ...]:
    """call_quality as it was before round 17b (every name through the regex)."""
    from chargingd.radius import quality as q

    pairs, setup = q.cisco_pairs(packet.raw)
    if not pairs:
        return ()
    out: dict[str, str] = {}
    for name, extra in q._DIRECT.items():
        value = pairs.get(name, "")
        if q._NUMBER.match(value):
            out[extra] = value
    alert = pairs.get("alert-timepoint") or pairs.get("alert-time")
    if "pdd_ms" not in out and setup and alert is not None:
        pdd = q._pdd_ms(setup.decode("utf-8", "replace").partition("=")[2], alert)
        if pdd is not None:
            out["pdd_ms"] = str(pdd)
    if "loss_pct" not in out and pairs.get("lost-packets", "").isdigit():
        loss = q._loss_pct(int(pairs["lost-packets"]), packet.attrs.get(47))
        if loss is not None:
            out["loss_pct"] = loss
    return tuple(sorted(out.items()))


def test_random_stops_read_as_before() -> None:
    """A name the Stop does not carry skips the number check (round 17b): random Stops
    (the kit's h323-conf-id alone, the quality names with numbers, empty, padded or
    odd values, in any case, repeated) read as they did."""
    import random

    rng = random.Random(23)
    names = ["pdd", "mos", "jitter", "packet-loss", "PDD", " Mos ", "lost-packets",
             "alert-time", "alert-timepoint", "h323-conf-id", "other"]  # fmt: skip
    values = ["", "0", "12", "4.1", " 7 ", "1.1234567", "1234567890", "x", "-1", "3.",
              "*15:39:56.843 UTC Tue Nov 23 2010", "=", "12.5"]  # fmt: skip
    checked = 0
    for _ in range(3000):
        vsas = [
            avpair(f"{rng.choice(names)}={rng.choice(values)}") for _ in range(rng.randrange(6))
        ]
        if rng.randrange(3) == 0:
            vsas.append(rc.cisco_vsa(25, b"h323-setup-time=*15:39:54.343 UTC Tue Nov 23 2010"))
        if rng.randrange(4) == 0:
            vsas.append(avpair("noseparator"))
        rng.shuffle(vsas)
        packet = stop(*vsas, input_packets=rng.choice([None, 0, 990]))
        assert call_quality(packet) == _before(packet), vsas
        checked += bool(call_quality(packet))
    assert checked > 500
    kit = stop(avpair("h323-conf-id=a-00000001-DEADBEEF-0001"))
    assert call_quality(kit) == _before(kit) == ()
