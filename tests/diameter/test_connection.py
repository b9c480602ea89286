"""The peer state machine on bytes alone: CER/CEA, DWR, DPR, errors, before-CER."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chargingd.diameter import client as cl
from chargingd.diameter import codec as dc
from chargingd.diameter.connection import Connection, Counters, State
from chargingd.diameter.dictionary import VENDOR_3GPP, A, Cmd, Result
from chargingd.diameter.messages import Identity, result_code
from chargingd.diameter.peers import Peer, PeerTable, networks_of

IDENT = Identity("ocs.test", "test", ("127.0.0.1",), origin_state_id=1234567)
PEERS = PeerTable([Peer("gw1", "gw1.test", "test", networks_of(["127.0.0.0/8"]))])
ME = cl.ClientIdentity("gw1.test", "test")
CALL = cl.Call("gw1.test;1;sess", calling="+4930123", called="tel:+441234")


def fresh(ip: str = "127.0.0.1") -> Connection:
    return Connection(IDENT, PEERS, ip, Counters())


def opened() -> Connection:
    conn = fresh()
    out = conn.receive(cl.cer(ME, 1, 1))
    assert result_code(dc.decode(out.send[0])) == Result.SUCCESS
    return conn


def one_answer(conn: Connection, data: bytes) -> dc.Message:
    out = conn.receive(data)
    assert len(out.send) == 1 and not out.requests
    return dc.decode(out.send[0])


def test_cer_known_peer_gets_cea_with_identity_and_state_id() -> None:
    conn = fresh()
    cea = one_answer(conn, cl.cer(ME, 7, 8))
    assert (cea.command, cea.is_request, cea.hop_by_hop, cea.end_to_end) == (257, False, 7, 8)
    assert result_code(cea) == Result.SUCCESS
    assert cea.get(A.ORIGIN_HOST).text() == "ocs.test"  # type: ignore[union-attr]
    assert cea.get(A.ORIGIN_STATE_ID).u32() == 1234567  # type: ignore[union-attr]
    assert cea.get(A.HOST_IP_ADDRESS).address() == "127.0.0.1"  # type: ignore[union-attr]
    assert cea.get(A.AUTH_APPLICATION_ID).u32() == 4  # type: ignore[union-attr]
    assert conn.state is State.OPEN and conn.peer is not None and conn.peer.name == "gw1"


def test_cer_with_application_inside_vendor_specific_application_id() -> None:
    # Interop: many 3GPP clients name Credit-Control only inside the group.
    conn = fresh()
    cea = one_answer(conn, cl.cer(ME, 1, 1, vsai_vendor=VENDOR_3GPP))
    assert result_code(cea) == Result.SUCCESS
    group = cea.get(A.VENDOR_SPECIFIC_APPLICATION_ID)
    assert group is not None, "the CEA answers in the form the peer used"
    inner = group.group()
    assert dc.find(inner, A.VENDOR_ID).u32() == VENDOR_3GPP  # type: ignore[union-attr]
    assert dc.find(inner, A.AUTH_APPLICATION_ID).u32() == 4  # type: ignore[union-attr]


def test_origin_state_id_is_the_same_on_every_connection() -> None:
    ids = {one_answer(fresh(), cl.cer(ME, 1, 1)).get(A.ORIGIN_STATE_ID).u32() for _ in range(3)}  # type: ignore[union-attr]
    assert ids == {1234567}


@pytest.mark.parametrize(
    ("origin", "ip"), [("stranger.test", "127.0.0.1"), ("gw1.test", "10.9.9.9")]
)
def test_unknown_peer_or_wrong_address_refused_at_cer(origin: str, ip: str) -> None:
    conn = fresh(ip)
    out = conn.receive(cl.cer(cl.ClientIdentity(origin, "test"), 1, 1))
    cea = dc.decode(out.send[0])
    assert result_code(cea) == Result.UNKNOWN_PEER and cea.is_error
    assert out.close and conn.state is State.CLOSED
    assert conn.counters.unknown_peer == 1


def test_no_common_application() -> None:
    conn = fresh()
    out = conn.receive(cl.cer(ME, 1, 1, app=16777238))  # Gx only
    assert result_code(dc.decode(out.send[0])) == Result.NO_COMMON_APPLICATION
    assert out.close


def test_ccr_before_cer_is_refused_and_closed() -> None:
    conn = fresh()
    out = conn.receive(cl.ccr(ME, CALL, 1, 0, 5, 5))
    assert not out.requests, "nothing reaches Credit-Control before CER"
    assert result_code(dc.decode(out.send[0])) == Result.UNKNOWN_PEER
    assert out.close and conn.counters.before_cer == 1


def test_dwr_dwa_and_dpr_dpa() -> None:
    conn = opened()
    dwa = one_answer(conn, cl.dwr(ME, 3, 4))
    assert (dwa.command, result_code(dwa)) == (Cmd.DEVICE_WATCHDOG, Result.SUCCESS)
    assert dwa.get(A.ORIGIN_STATE_ID).u32() == 1234567  # type: ignore[union-attr]
    out = conn.receive(cl.dpr(ME, 5, 6))
    assert result_code(dc.decode(out.send[0])) == Result.SUCCESS
    assert out.close and conn.state is State.CLOSING


def test_ccr_of_an_open_peer_is_handed_on() -> None:
    conn = opened()
    out = conn.receive(cl.ccr(ME, CALL, 1, 0, 5, 5))
    assert not out.send and len(out.requests) == 1
    assert out.requests[0].get(A.SESSION_ID).text() == CALL.session_id  # type: ignore[union-attr]


def test_unknown_command_answered_3001_with_e_bit() -> None:
    conn = opened()
    req = dc.encode(8388620, dc.FLAG_R, 4, 9, 9, ME.origin())
    ans = one_answer(conn, req)
    assert result_code(ans) == Result.COMMAND_UNSUPPORTED and ans.is_error
    assert ans.command == 8388620 and ans.hop_by_hop == 9


def test_ccr_under_another_application_id() -> None:
    conn = opened()
    data = bytearray(cl.ccr(ME, CALL, 1, 0, 5, 5))
    data[8:12] = (16777238).to_bytes(4, "big")
    assert result_code(one_answer(conn, bytes(data))) == Result.APPLICATION_UNSUPPORTED


def test_unknown_mandatory_avp_answered_5001_with_failed_avp() -> None:
    conn = opened()
    stranger = dc.u32(99999, 1, vendor=12345)  # M bit set by default
    ans = one_answer(conn, cl.ccr(ME, CALL, 1, 0, 5, 5, extra=stranger))
    assert result_code(ans) == Result.AVP_UNSUPPORTED
    failed = ans.get(A.FAILED_AVP).group()  # type: ignore[union-attr]
    assert [(a.code, a.vendor) for a in failed] == [(99999, 12345)]
    assert ans.get(A.SESSION_ID).text() == CALL.session_id  # type: ignore[union-attr]


def test_unknown_mandatory_avp_inside_mscc_is_found_too() -> None:
    conn = opened()
    call = cl.Call("s;mscc", calling="+4930123", rating_group=None)
    mscc = dc.grouped(
        A.MULTIPLE_SERVICES_CREDIT_CONTROL, dc.u32(A.RATING_GROUP, 1), dc.u32(77777, 1)
    )
    ans = one_answer(conn, cl.ccr(ME, call, 1, 0, 5, 5, extra=mscc))
    assert result_code(ans) == Result.AVP_UNSUPPORTED


def test_unknown_avp_without_m_bit_is_ignored_and_3gpp_m_bit_avps_are_known() -> None:
    conn = opened()
    optional = dc.u32(99999, 1, vendor=12345, flags=0)
    # CALL carries Service-Information/IMS-Information/Called-Party-Address with V+M.
    out = conn.receive(cl.ccr(ME, CALL, 1, 0, 5, 5, extra=optional))
    assert not out.send and len(out.requests) == 1


def test_avp_overrunning_its_message_answered_5014() -> None:
    conn = opened()
    data = bytearray(cl.ccr(ME, CALL, 1, 0, 5, 5))
    data[25:28] = (4000).to_bytes(3, "big")  # Session-Id claims 4000 bytes
    out = conn.receive(bytes(data))
    ans = dc.decode(out.send[0])
    assert result_code(ans) == Result.INVALID_AVP_LENGTH and not out.requests
    assert ans.get(A.FAILED_AVP) is not None and not out.close


def test_wrong_message_length_closes_the_connection() -> None:
    conn = opened()
    data = bytearray(cl.ccr(ME, CALL, 1, 0, 5, 5))
    data[1:4] = (len(data) + 2).to_bytes(3, "big")  # not a multiple of 4
    out = conn.receive(bytes(data))
    assert out.close and not out.requests and conn.counters.framing_lost == 1


def test_truncated_header_waits_for_more_bytes() -> None:
    conn = opened()
    data = cl.ccr(ME, CALL, 1, 0, 5, 5)
    assert conn.receive(data[:10]).requests == []
    assert len(conn.receive(data[10:]).requests) == 1


def test_second_cer_on_an_open_connection_is_refused() -> None:
    conn = opened()
    ans = one_answer(conn, cl.cer(ME, 2, 2))
    assert result_code(ans) == Result.UNABLE_TO_COMPLY and conn.state is State.OPEN


def test_requests_of_ours_carry_fresh_ids_and_answers_come_back() -> None:
    conn = opened()
    hbh1, dwr1 = conn.watchdog()
    hbh2, _ = conn.watchdog()
    assert hbh1 != hbh2
    req = dc.decode(dwr1)
    dwa = dc.encode(
        Cmd.DEVICE_WATCHDOG,
        0,
        0,
        req.hop_by_hop,
        req.end_to_end,
        dc.u32(A.RESULT_CODE, 2001) + ME.origin(),
    )
    out = conn.receive(dwa)
    assert [m.hop_by_hop for m in out.answers] == [hbh1]


VALID_FRAMES = [cl.ccr(ME, CALL, 1, 0, 5, 5, requested_s=60), cl.dwr(ME, 6, 6), cl.cer(ME, 7, 7)]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.binary(max_size=80)
        | st.builds(
            lambda f, i, b: f[: i % len(f)] + bytes([b]) + f[i % len(f) + 1 :],
            st.sampled_from(VALID_FRAMES),
            st.integers(0, 400),
            st.integers(0, 255),
        ),
        max_size=6,
    ),
    st.booleans(),
)
def test_any_bytes_to_a_connection_never_raise(chunks: list[bytes], cer_first: bool) -> None:
    """Fuzz the state machine like the RADIUS codec fuzz: whatever arrives, receive()
    returns an Outcome (answers that decode, requests that decoded), never raises."""
    conn = opened() if cer_first else fresh()
    for chunk in chunks:
        out = conn.receive(chunk)
        for data in out.send:
            assert not dc.decode(data).is_request
        for req in out.requests:
            assert req.command == Cmd.CREDIT_CONTROL and conn.state is State.OPEN
        if out.close:
            break
