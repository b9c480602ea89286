"""radius_codec on bytes alone, against packets built and checked by pyrad."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paths import REPO
from pyrad.dictionary import Dictionary
from pyrad.packet import AcctPacket, AuthPacket, CoAPacket, Packet

from chargingd.radius import codec as rc

DICT = Dictionary(str(REPO / "config" / "dictionary"))
SECRET = b"s3cret-shared"


def access_request(*, with_ma: bool = True, ident: int = 7, **attrs: object) -> AuthPacket:
    req = AuthPacket(code=rc.ACCESS_REQUEST, id=ident, secret=SECRET, dict=DICT)
    for key, value in attrs.items():
        req[key.replace("_", "-")] = value
    if with_ma:
        req.add_message_authenticator()
    return req


CALL: dict[str, Any] = {
    "User_Name": "alice",
    "Calling_Station_Id": "+441234567",
    "Called_Station_Id": "0049301234",
    "NAS_IP_Address": "192.0.2.10",
    "Acct_Session_Id": "sess-1",
    "h323_conf_id": "h323-conf-id=ABCD 1234",
}


def test_decode_access_request_from_pyrad() -> None:
    raw = access_request(**CALL).RequestPacket()
    packet = rc.decode(raw)
    assert (packet.code, packet.identifier) == (rc.ACCESS_REQUEST, 7)
    assert packet.text(rc.USER_NAME) == "alice"
    assert packet.text(rc.CALLING_STATION_ID) == "+441234567"
    assert packet.text(rc.CALLED_STATION_ID) == "0049301234"
    assert packet.attrs[rc.NAS_IP_ADDRESS] == bytes([192, 0, 2, 10])
    assert packet.cisco_value(rc.H323_CONF_ID) == "ABCD 1234"
    assert packet.text(rc.REPLY_MESSAGE) == ""
    assert raw[20] == rc.MESSAGE_AUTHENTICATOR  # pyrad puts it first too
    assert rc.verify_message_authenticator(packet, SECRET, packet.authenticator)


def test_message_authenticator_rejects_wrong_secret_and_tampering() -> None:
    raw = access_request(**CALL).RequestPacket()
    assert not rc.verify_message_authenticator(rc.decode(raw), b"other", raw[4:20])
    tampered = raw.replace(b"alice", b"alicf")
    packet = rc.decode(tampered)
    assert packet.text(rc.USER_NAME) == "alicf"
    assert not rc.verify_message_authenticator(packet, SECRET, packet.authenticator)


def test_without_message_authenticator() -> None:
    packet = rc.decode(access_request(with_ma=False, User_Name="bob").RequestPacket())
    assert packet.ma_offset == -1
    assert not rc.verify_message_authenticator(packet, SECRET, packet.authenticator)


def test_padding_after_length_is_ignored() -> None:
    raw = access_request(**CALL).RequestPacket()
    packet = rc.decode(raw + b"\x00" * 9)
    assert packet.raw == raw
    assert rc.verify_message_authenticator(packet, SECRET, packet.authenticator)


def _with_length(raw: bytes, length: int) -> bytes:
    return raw[:2] + struct.pack("!H", length) + raw[4:]


# A fixed authenticator: the packets are test ids, the same in every process (pytest-xdist).
GOOD = AuthPacket(
    code=1, id=1, secret=SECRET, authenticator=bytes(range(16)), dict=DICT, User_Name="x"
).RequestPacket()
HEADER = GOOD[:20]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (GOOD[:19], "shorter than a RADIUS header"),
        (_with_length(GOOD, 19), "bad Length"),
        (_with_length(GOOD, 5000), "bad Length"),
        (_with_length(GOOD, len(GOOD) + 1), "truncated"),
        (_with_length(HEADER + b"\x01\x00abc", 25), "bad length 0"),
        (_with_length(HEADER + b"\x01\x01abc", 25), "bad length 1"),
        (_with_length(HEADER + b"\x01\x09abc", 25), "bad length 9"),
        (_with_length(HEADER + b"\x01", 21), "attribute header past the end"),
        (_with_length(HEADER + b"\x1a\x05\x00\x00\x00", 25), "shorter than its Vendor-Id"),
        (_with_length(HEADER + b"\x1a\x0a\x00\x00\x00\x09\x18\x09ab", 30), "bad length"),
        (_with_length(HEADER + b"\x50\x04ab", 24), "Message-Authenticator"),
        (_with_length(HEADER + (b"\x50\x12" + bytes(16)) * 2, 56), "Message-Authenticator"),
    ],
)
def test_malformed_packets_raise(data: bytes, reason: str) -> None:
    with pytest.raises(rc.MalformedPacket, match=reason):
        rc.decode(data)


def test_integer_attribute_of_wrong_size_is_malformed() -> None:
    packet = rc.decode(_with_length(HEADER + b"\x28\x05abc", 25))
    with pytest.raises(rc.MalformedPacket):
        packet.integer(rc.ACCT_STATUS_TYPE)
    assert packet.integer(rc.ACCT_SESSION_TIME, 9) == 9


def accounting_request(status: str, *, with_ma: bool = False, **attrs: object) -> AcctPacket:
    req = AcctPacket(id=3, secret=SECRET, dict=DICT)
    req["Acct-Status-Type"] = status
    for key, value in attrs.items():
        req[key.replace("_", "-")] = value
    if with_ma:
        req.add_message_authenticator()
    return req


@pytest.mark.parametrize("with_ma", [False, True])
def test_accounting_request_authenticator(with_ma: bool) -> None:
    req = accounting_request(
        "Stop", with_ma=with_ma, Acct_Session_Time=61, Acct_Terminate_Cause="Idle-Timeout"
    )
    raw = req.RequestPacket()
    packet = rc.decode(raw)
    assert packet.integer(rc.ACCT_STATUS_TYPE) == rc.STATUS_STOP
    assert packet.integer(rc.ACCT_SESSION_TIME) == 61
    assert packet.integer(rc.ACCT_TERMINATE_CAUSE) == 4
    assert rc.verify_request_authenticator(packet, SECRET)
    assert not rc.verify_request_authenticator(packet, b"wrong")
    if with_ma:
        assert rc.verify_message_authenticator(packet, SECRET, rc.ZERO16)
    tampered = rc.decode(raw[:-1] + bytes([raw[-1] ^ 1]))
    assert not rc.verify_request_authenticator(tampered, SECRET)


@pytest.mark.parametrize(
    "password", ["1", "0123456789abcdef", "a much longer PIN of 40 characters......"]
)
def test_password_decryption(password: str) -> None:
    req = access_request(User_Name="u")
    encrypted = req.PwCrypt(password)
    assert rc.decrypt_password(encrypted, SECRET, req.authenticator) == password.encode()


def test_password_of_bad_length_is_malformed() -> None:
    with pytest.raises(rc.MalformedPacket):
        rc.decrypt_password(b"x" * 15, SECRET, bytes(16))


def _pyrad_reply(raw: bytes) -> Packet:
    return Packet(packet=raw, secret=SECRET, dict=DICT)


def test_access_accept_cisco_verified_by_pyrad() -> None:
    req = access_request(**CALL)
    req.RequestPacket()
    attrs = rc.accept_attributes(360, 60, True, credit_micros=12_345_678, currency="EUR")
    raw = rc.encode_reply(rc.ACCESS_ACCEPT, req.id, req.authenticator, attrs, SECRET)
    reply = _pyrad_reply(raw)
    assert req.VerifyReply(reply, raw, enforce_ma=True)
    assert raw[20] == rc.MESSAGE_AUTHENTICATOR  # first attribute (BlastRADIUS)
    assert reply.code == rc.ACCESS_ACCEPT
    assert reply["Session-Timeout"] == [360]
    assert reply["Acct-Interim-Interval"] == [60]
    assert reply["h323-credit-time"] == ["h323-credit-time=360"]
    assert reply["h323-credit-amount"] == ["h323-credit-amount=12.34"]
    assert reply["h323-return-code"] == ["h323-return-code=0"]
    assert reply["h323-billing-model"] == ["h323-billing-model=1"]
    assert reply["h323-currency"] == ["h323-currency=EUR"]


def test_access_accept_generic_has_no_vsa() -> None:
    req = access_request(User_Name="u")
    req.RequestPacket()
    raw = rc.encode_reply(
        rc.ACCESS_ACCEPT, req.id, req.authenticator, rc.accept_attributes(90, 30, False), SECRET
    )
    reply = _pyrad_reply(raw)
    assert req.VerifyReply(reply, raw, enforce_ma=True)
    assert sorted(reply.keys()) == [
        "Acct-Interim-Interval",
        "Message-Authenticator",
        "Session-Timeout",
    ]


def test_access_reject_with_reply_message_and_return_code() -> None:
    req = access_request(User_Name="u")
    req.RequestPacket()
    attrs = rc.reject_attributes("insufficient credit", 4)
    raw = rc.encode_reply(rc.ACCESS_REJECT, req.id, req.authenticator, attrs, SECRET)
    reply = _pyrad_reply(raw)
    assert req.VerifyReply(reply, raw, enforce_ma=True)
    assert reply.code == rc.ACCESS_REJECT
    assert reply["Reply-Message"] == ["insufficient credit"]
    assert reply["h323-return-code"] == ["h323-return-code=4"]
    # A reply signed with another secret fails pyrad's check.
    forged = rc.encode_reply(rc.ACCESS_ACCEPT, req.id, req.authenticator, b"", b"other")
    assert not req.VerifyReply(_pyrad_reply(forged), forged)


def test_accounting_response_verified_by_pyrad() -> None:
    req = accounting_request("Start", Acct_Session_Id="s1")
    req.RequestPacket()
    raw = rc.encode_accounting_response(req.id, req.authenticator, SECRET)
    reply = _pyrad_reply(raw)
    assert reply.code == rc.ACCOUNTING_RESPONSE
    assert req.VerifyReply(reply, raw)


def test_disconnect_request_verified_by_pyrad() -> None:
    attrs = rc.dm_attributes("sess-9", "alice", "192.0.2.10", 1_700_000_000)
    raw = rc.encode_request(rc.DISCONNECT_REQUEST, 42, attrs, SECRET)
    req = CoAPacket(packet=raw, secret=SECRET, dict=DICT)
    assert req.code == rc.DISCONNECT_REQUEST
    assert req.VerifyCoARequest()
    assert req.verify_message_authenticator()
    assert raw[20] == rc.MESSAGE_AUTHENTICATOR
    assert req["Acct-Session-Id"] == ["sess-9"]
    assert req["User-Name"] == ["alice"]
    assert req["NAS-IP-Address"] == ["192.0.2.10"]
    assert rc.decode(raw).integer(rc.EVENT_TIMESTAMP) == 1_700_000_000


def test_coa_request_carries_session_timeout_and_skips_non_ipv4_nas() -> None:
    attrs = rc.dm_attributes("s", "", "gw.example", 1, session_timeout_s=120)
    req = CoAPacket(
        packet=rc.encode_request(rc.COA_REQUEST, 1, attrs, SECRET), secret=SECRET, dict=DICT
    )
    assert req.VerifyCoARequest()
    assert req["Session-Timeout"] == [120]
    assert "NAS-IP-Address" not in req
    assert "User-Name" not in req


@pytest.mark.parametrize(
    ("code", "cause"), [(rc.DISCONNECT_ACK, 0), (rc.DISCONNECT_NAK, 503), (rc.COA_NAK, 404)]
)
def test_dm_answer_built_by_pyrad(code: int, cause: int) -> None:
    raw_req = rc.encode_request(
        rc.DISCONNECT_REQUEST, 9, rc.dm_attributes("s", "u", "10.0.0.1", 5), SECRET
    )
    req = CoAPacket(packet=raw_req, secret=SECRET, dict=DICT)
    answer = req.CreateReply()
    answer.code = code
    if cause:
        answer["Error-Cause"] = cause
    answer.add_message_authenticator()
    raw = answer.ReplyPacket()
    decoded = rc.decode_dm_answer(raw, SECRET, raw_req[4:20])
    assert decoded == rc.DmAnswer(code, 9, cause)
    with pytest.raises(rc.MalformedPacket, match="Response Authenticator"):
        rc.decode_dm_answer(raw, b"wrong", raw_req[4:20])
    with pytest.raises(rc.MalformedPacket, match="not a Disconnect/CoA answer"):
        rc.decode_dm_answer(raw_req, SECRET, raw_req[4:20])


def test_amounts_and_integers() -> None:
    assert rc.format_credit_amount(12_345_678) == b"12.34"
    assert rc.format_credit_amount(999) == b"0.00"
    assert rc.format_credit_amount(-5_000_000) == b"0.00"
    assert rc.format_credit_amount(1_059_999) == b"1.05"
    assert rc.format_credit_amount(10**20 + 990_000) == b"100000000000000.99"
    # in the currency's minor unit, rounded down: JPY 0 decimals, KWD 3, CLF 4
    assert rc.format_credit_amount(1_500_999_999, 0) == b"1500"
    assert rc.format_credit_amount(-1, 0) == b"0"
    assert rc.format_credit_amount(12_345_678, 3) == b"12.345"
    assert rc.format_credit_amount(5_999, 3) == b"0.005"
    assert rc.format_credit_amount(-5_000_000, 3) == b"0.000"
    assert rc.format_credit_amount(12_345_678, 4) == b"12.3456"
    for currency, text in (("JPY", b"=1500"), ("KWD", b"=1500.999"), ("XAU", b"=1500.99")):
        for attrs in (
            rc.accept_attributes(60, 30, True, 1_500_999_999, currency),
            rc.authentication_attributes(1_500_999_999, currency, 1),
        ):
            assert b"h323-credit-amount" + text + b"\x1a" in attrs
            assert attrs.endswith(b"h323-currency=" + currency.encode())
    # no currency: 2 decimals and no h323-currency
    assert b"h323-currency" not in rc.accept_attributes(60, 30, True, 1_000_000, "")
    assert rc.attr_u32(rc.SESSION_TIMEOUT, -3) == b"\x1b\x06\x00\x00\x00\x00"
    assert rc.attr_u32(rc.SESSION_TIMEOUT, 2**40)[2:] == b"\xff\xff\xff\xff"
    assert len(rc.attr_bytes(rc.REPLY_MESSAGE, b"x" * 400)) == 255


def test_access_request_encoder_verified_by_pyrad() -> None:
    attrs = rc.attr_bytes(rc.USER_NAME, b"alice") + rc.cisco_vsa(rc.H323_CONF_ID, b"h323-conf-id=X")
    raw = rc.encode_access_request(5, bytes(range(16)), attrs, SECRET)
    req = AuthPacket(packet=raw, secret=SECRET, dict=DICT)
    assert req.verify_message_authenticator()
    assert req["User-Name"] == ["alice"]
    assert req["h323-conf-id"] == ["h323-conf-id=X"]
    assert raw[20] == rc.MESSAGE_AUTHENTICATOR
    with pytest.raises(ValueError):
        rc.encode_access_request(5, b"short", attrs, SECRET)


VALID = access_request(**CALL).RequestPacket()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120) | st.builds(lambda i, b: VALID[:i] + bytes([b]) + VALID[i + 1 :],
       st.integers(0, len(VALID) - 1), st.integers(0, 255)))  # fmt: skip
def test_any_bytes_decode_or_raise_malformed(data: bytes) -> None:
    """Invariant 6: bad input is a typed error, never another exception."""
    try:
        packet = rc.decode(data)
    except rc.MalformedPacket:
        return
    packet.text(rc.USER_NAME)
    packet.cisco_value(rc.H323_CONF_ID)
    rc.verify_message_authenticator(packet, SECRET, packet.authenticator)
    with contextlib.suppress(rc.MalformedPacket):
        packet.integer(rc.ACCT_STATUS_TYPE)


@pytest.mark.parametrize("size", [0, 1, 16, 63, 64, 65, 200])
def test_hmac_md5_is_rfc_2104(size: int) -> None:
    import hmac
    import os

    secret = os.urandom(size)
    for message in (b"", b"x", os.urandom(100), os.urandom(4096)):
        assert rc.hmac_md5(secret, message) == hmac.digest(secret, message, "md5")
        assert rc.hmac_md5(secret, message) == hmac.digest(secret, message, "md5")  # cached


def test_text_vendor_and_cisco_values_by_octets() -> None:
    # round 9a: strict UTF-8 first (replacement when invalid), the Cisco Vendor-Id by its
    # octets (0x109 and 0x09000000 are other vendors), the value after the first "="
    bad = b"\xff\xfeal"
    cisco = rc.cisco_vsa(rc.H323_CONF_ID, b"h323-conf-id=a=b") + rc.cisco_vsa(101, b"noeq")
    others = b"".join(
        struct.pack("!BBI", rc.VENDOR_SPECIFIC, 12, vendor) + bytes((24, 6)) + b"x=yz"
        for vendor in (0x109, 0x09000000, 0x00090000)
    )
    attrs = rc.attr_bytes(rc.USER_NAME, bad) + others + cisco
    packet = rc.decode(rc.encode_access_request(1, bytes(16), attrs, SECRET))
    assert packet.text(rc.USER_NAME) == bad.decode("utf-8", "replace") == "\ufffd\ufffdal"
    assert packet.cisco == {rc.H323_CONF_ID: b"h323-conf-id=a=b", 101: b"noeq"}
    assert (packet.cisco_value(rc.H323_CONF_ID), packet.cisco_value(101)) == ("a=b", "noeq")
    amount = rc.accept_attributes(60, 30, True, 12_345_670_000, "EUR")
    assert b"h323-credit-amount=12345.67" in amount and b"h323-credit-time=60" in amount


def test_a_damaged_freeswitch_vsa_names_no_cause_and_keeps_the_packet() -> None:
    # Freeswitch-Hangupcause (27880/13) is read for the CDR's cause only: a damaged
    # FreeSWITCH sub-attribute ends the look, the Stop itself is still decoded.
    good = struct.pack("!BBIBBI", 26, 12, 27880, 13, 6, 17)
    damaged = struct.pack("!BBIBBI", 26, 12, 27880, 13, 9, 17)  # sub-length past the VSA
    for vsa, cause in ((good, b"\0\0\0\x11"), (damaged, None)):
        attrs = bytes((rc.ACCT_STATUS_TYPE, 6)) + struct.pack("!I", 2) + vsa
        raw = struct.pack("!BBH", 4, 1, 20 + len(attrs)) + bytes(16) + attrs
        packet = rc.decode(raw)
        assert packet.integer(rc.ACCT_STATUS_TYPE) == 2
        assert packet.attrs.get(rc.FS_HANGUPCAUSE_KEY) == cause
