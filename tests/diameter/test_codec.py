"""The Diameter codec on bytes alone, against messages built and read by python-diameter."""

from __future__ import annotations

import contextlib
import struct

import pytest
from diameter.message import Message as PdMessage
from diameter.message.avp.grouped import (
    MultipleServicesCreditControl,
    SubscriptionId,
    UsedServiceUnit,
)
from diameter.message.commands import CreditControlAnswer, CreditControlRequest
from hypothesis import given, settings
from hypothesis import strategies as st

from chargingd.diameter import codec as dc
from chargingd.diameter.dictionary import VENDOR_3GPP, A, G


def pd_ccr() -> bytes:
    """A CCR-U encoded by python-diameter (an independent encoder)."""
    ccr = CreditControlRequest()
    ccr.header.application_id = 4  # python-diameter leaves it 0
    ccr.header.hop_by_hop_identifier = 0x11223344
    ccr.header.end_to_end_identifier = 0x55667788
    ccr.session_id = "gw.example.net;1;2;call-7"
    ccr.origin_host = b"gw.example.net"
    ccr.origin_realm = b"example.net"
    ccr.destination_realm = b"charging.example.net"
    ccr.auth_application_id = 4
    ccr.service_context_id = "32260@3gpp.org"
    ccr.cc_request_type = 2
    ccr.cc_request_number = 3
    ccr.subscription_id = [SubscriptionId(subscription_id_type=0, subscription_id_data="4930123")]
    ccr.multiple_services_credit_control = [
        MultipleServicesCreditControl(
            used_service_unit=[UsedServiceUnit(cc_time=47)], rating_group=100
        )
    ]
    data: bytes = ccr.as_bytes()
    return data


def test_decodes_what_python_diameter_encodes() -> None:
    msg = dc.decode(pd_ccr())
    assert (msg.command, msg.app_id, msg.is_request) == (272, 4, True)
    assert (msg.hop_by_hop, msg.end_to_end) == (0x11223344, 0x55667788)
    assert msg.get(A.SESSION_ID).text() == "gw.example.net;1;2;call-7"  # type: ignore[union-attr]
    assert msg.get(A.CC_REQUEST_NUMBER).u32() == 3  # type: ignore[union-attr]
    mscc = msg.get(A.MULTIPLE_SERVICES_CREDIT_CONTROL).group()  # type: ignore[union-attr]
    usu = dc.find(mscc, A.USED_SERVICE_UNIT).group()  # type: ignore[union-attr]
    assert dc.find(usu, A.CC_TIME).u32() == 47  # type: ignore[union-attr]
    assert dc.find(mscc, A.RATING_GROUP).u32() == 100  # type: ignore[union-attr]


def test_python_diameter_reads_what_we_encode() -> None:
    body = b"".join(
        [
            dc.utf8(A.SESSION_ID, "s;1"),
            dc.u32(A.RESULT_CODE, 2001),
            dc.utf8(A.ORIGIN_HOST, "ocs.example.net"),
            dc.utf8(A.ORIGIN_REALM, "example.net"),
            dc.u32(A.AUTH_APPLICATION_ID, 4),
            dc.u32(A.CC_REQUEST_TYPE, 1),
            dc.u32(A.CC_REQUEST_NUMBER, 0),
            dc.grouped(
                A.MULTIPLE_SERVICES_CREDIT_CONTROL,
                dc.grouped(A.GRANTED_SERVICE_UNIT, dc.u32(A.CC_TIME, 90)),
                dc.u32(A.RATING_GROUP, 7),
                dc.u32(A.VALIDITY_TIME, 60),
                dc.u32(A.RESULT_CODE, 2001),
            ),
        ]
    )
    data = dc.encode(272, dc.FLAG_P, 4, 9, 10, body)
    cca = PdMessage.from_bytes(data)
    assert isinstance(cca, CreditControlAnswer)
    assert cca.result_code == 2001
    assert cca.session_id == "s;1"
    mscc = cca.multiple_services_credit_control[0]
    assert mscc.granted_service_unit.cc_time == 90
    assert (mscc.rating_group, mscc.validity_time, mscc.result_code) == (7, 60, 2001)
    again = dc.decode(cca.as_bytes())  # its own encoding of it reads the same here
    assert [(a.code, a.data) for a in again.avps] == [
        (a.code, a.data) for a in dc.decode(data).avps
    ]


def test_vendor_avp_with_m_bit_and_padding() -> None:
    raw = dc.utf8(G.CALLED_PARTY_ADDRESS, "tel:+4930", vendor=VENDOR_3GPP)
    # header 12 bytes (V set) + 9 bytes of text = 21, padded to 24
    assert len(raw) == 24 and raw[-3:] == b"\0\0\0"
    code, flags_len, vendor = struct.unpack("!III", raw[:12])
    assert (code, flags_len >> 24, flags_len & 0xFFFFFF, vendor) == (832, 0xC0, 21, 10415)
    (a,) = dc.decode_avps(raw, 0, len(raw))
    assert (a.code, a.vendor, a.mandatory, a.text()) == (832, 10415, True, "tel:+4930")


def test_address_avp() -> None:
    (a,) = dc.decode_avps(dc.address(A.HOST_IP_ADDRESS, "127.0.0.1"), 0, 16)
    assert a.data == b"\0\x01\x7f\0\0\x01" and a.address() == "127.0.0.1"
    (b,) = dc.decode_avps(dc.address(A.HOST_IP_ADDRESS, "::1"), 0, 28)
    assert b.address() == "::1"


def _length(data: bytes, length: int) -> bytes:
    return data[:1] + length.to_bytes(3, "big") + data[4:]


def _ccr_bytes() -> bytes:
    return pd_ccr()


@pytest.mark.parametrize(
    ("mutate", "code", "fatal"),
    [
        (lambda d: d[:12], dc.INVALID_MESSAGE_LENGTH, True),  # truncated header
        (lambda d: b"\x02" + d[1:], dc.UNSUPPORTED_VERSION, True),  # version 2
        (
            lambda d: d[:1] + (len(d) + 4).to_bytes(3, "big") + d[4:],
            dc.INVALID_MESSAGE_LENGTH,
            True,
        ),
        (
            lambda d: d[:1] + (len(d) - 1).to_bytes(3, "big") + d[4:],
            dc.INVALID_MESSAGE_LENGTH,
            True,
        ),
        (lambda d: d[:1] + (16).to_bytes(3, "big") + d[4:], dc.INVALID_MESSAGE_LENGTH, True),
        # the first AVP claims 4 kB: it overruns the message
        (lambda d: d[:25] + b"\x00\x10\x00" + d[28:], dc.INVALID_AVP_LENGTH, False),
        # the first AVP claims 3 bytes: shorter than its own header
        (lambda d: d[:25] + b"\x00\x00\x03" + d[28:], dc.INVALID_AVP_LENGTH, False),
        (lambda d: d[:4] + bytes([d[4] | 0x01]) + d[5:], dc.INVALID_BIT_IN_HEADER, False),
        (lambda d: d[:4] + bytes([d[4] | 0x20]) + d[5:], dc.INVALID_BIT_IN_HEADER, False),  # E+R
        (lambda d: d[:24] + bytes([d[24] | 0x01]) + d[25:], dc.INVALID_AVP_BITS, False),
    ],
    ids=[
        "truncated-header",
        "version",
        "length-too-long",
        "length-not-multiple-of-4",
        "length-below-header",
        "avp-overruns-message",
        "avp-shorter-than-header",
        "reserved-command-flag",
        "error-bit-on-request",
        "reserved-avp-flag",
    ],
)
def test_malformed_messages(mutate: object, code: int, fatal: bool) -> None:
    data = mutate(_ccr_bytes())  # type: ignore[operator]
    with pytest.raises(dc.Malformed) as info:
        dc.decode(data)
    assert info.value.result_code == code
    assert info.value.fatal is fatal


def test_failed_avp_of_an_overrunning_avp_is_its_header_with_zero_payload() -> None:
    data = _ccr_bytes()
    bad = data[:25] + b"\x00\x10\x00" + data[28:]
    with pytest.raises(dc.Malformed) as info:
        dc.decode(bad)
    # RFC 6733 §7.5: the offending AVP's header, a minimal zero payload.
    assert info.value.failed_avp == struct.pack("!IB", 263, 0x40) + b"\x00\x00\x0c" + bytes(4)


def test_padding_running_past_the_end_is_malformed() -> None:
    avp = dc.utf8(A.USER_NAME, "abcde")  # 13 bytes + 3 padding
    with pytest.raises(dc.Malformed):
        dc.decode_avps(avp[:13], 0, 13)


def test_typed_reads_check_sizes() -> None:
    (a,) = dc.decode_avps(dc.avp(A.CC_TIME, b"\0\0\0"), 0, 12)
    with pytest.raises(dc.Malformed) as info:
        a.u32()
    assert info.value.result_code == dc.INVALID_AVP_LENGTH
    (b,) = dc.decode_avps(dc.avp(A.USER_NAME, b"\xff\xfe"), 0, 12)
    with pytest.raises(dc.Malformed) as info2:
        b.text()
    assert info2.value.result_code == dc.INVALID_AVP_VALUE


def test_framer_cuts_a_stream_at_any_boundary() -> None:
    one, two = _ccr_bytes(), dc.encode(280, dc.FLAG_R, 0, 1, 2, dc.u32(A.ORIGIN_STATE_ID, 5))
    stream = one + two + one
    for cut in range(1, len(stream)):
        framer = dc.Framer(65536)
        got = framer.feed(stream[:cut]) + framer.feed(stream[cut:])
        assert got == [one, two, one]
        assert len(framer) == 0


def test_framer_refuses_an_oversized_message() -> None:
    framer = dc.Framer(1024)
    with pytest.raises(dc.Malformed) as info:
        framer.feed(b"\x01\x00\x08\x00" + bytes(16))
    assert info.value.fatal


VALID = _ccr_bytes()


@settings(max_examples=400, deadline=None)
@given(
    st.binary(max_size=200)
    | st.builds(
        lambda i, b: VALID[:i] + bytes([b]) + VALID[i + 1 :],
        st.integers(0, len(VALID) - 1),
        st.integers(0, 255),
    )
    | st.builds(lambda n: VALID[:n], st.integers(0, len(VALID)))
)
def test_any_bytes_decode_or_raise_malformed(data: bytes) -> None:
    try:
        msg = dc.decode(data)
    except dc.Malformed:
        return
    # What decodes re-encodes to the same message (padding bytes are ignored on
    # receipt, RFC 6733 §4), and every Grouped AVP parses or raises Malformed.
    again = dc.decode(dc.encode_message(msg))
    assert len(dc.encode_message(msg)) == len(data)
    assert [(a.code, a.flags, a.vendor, a.data) for a in again.avps] == [
        (a.code, a.flags, a.vendor, a.data) for a in msg.avps
    ]
    for a in msg.avps:
        with contextlib.suppress(dc.Malformed):
            a.group()
