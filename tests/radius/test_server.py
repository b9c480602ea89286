"""The RADIUS frontend over real UDP on 127.0.0.1, with pyrad-built packets."""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pyrad.packet import AcctPacket, AuthPacket, Packet
from radius_peer import DICT, RecordingCredit, TestGateway, UdpPeer, wait_until

from chargingd.core.config import config_from_dict
from chargingd.radius import codec as rc
from chargingd.radius.accesslog import AccessLog
from chargingd.radius.clients import ClientTable
from chargingd.radius.dynauth import DynamicAuthClient
from chargingd.radius.intake import IntakeQueue, cache_key
from chargingd.radius.server import DuplicateCache, RadiusFrontend, start_radius
from chargingd.sessions.ccapi import (
    Authorized,
    CallInfo,
    RefusalCode,
    Refused,
    SessionRef,
    UsageKind,
)

SECRET = "gw-secret"
CLIENTS: list[dict[str, Any]] = [
    {"name": "cisco-gw", "address": "127.0.0.1", "secret": SECRET, "default_account": "trunk-1"},
    {
        "name": "generic-sbc",
        "address": "127.0.0.2/32",
        "secret": SECRET,
        "flavour": "generic",
        "lookup": ["ani"],
    },
    {
        "name": "legacy",
        "address": "127.0.0.4",
        "secret": SECRET,
        "require_message_authenticator": False,
    },
]


def radius_config(**overrides: Any) -> Any:
    raw = {"bind": "127.0.0.1", "auth_port": 0, "acct_port": 0, "clients": CLIENTS}
    raw.update(overrides)
    return config_from_dict({"radius": raw}).radius


class Harness:
    def __init__(self, frontend: RadiusFrontend, credit: RecordingCredit) -> None:
        self.frontend = frontend
        self.credit = credit
        self.peers: dict[str, UdpPeer] = {}

    @property
    def counters(self) -> Any:
        return self.frontend.counters

    async def peer(self, host: str = "127.0.0.1") -> UdpPeer:
        if host not in self.peers:
            self.peers[host] = await UdpPeer.open(host)
        return self.peers[host]

    async def auth(
        self, raw: bytes, host: str = "127.0.0.1", timeout_s: float = 2.0
    ) -> bytes | None:
        peer = await self.peer(host)
        peer.send(raw, self.frontend.auth_port)
        return await peer.recv(timeout_s)

    async def acct(
        self, raw: bytes, host: str = "127.0.0.1", timeout_s: float = 2.0
    ) -> bytes | None:
        peer = await self.peer(host)
        peer.send(raw, self.frontend.acct_port)
        return await peer.recv(timeout_s)


async def start(credit: RecordingCredit | None = None, **overrides: Any) -> Harness:
    credit = credit or RecordingCredit()
    frontend = RadiusFrontend(radius_config(**overrides), credit)
    await frontend.start()
    return Harness(frontend, credit)


@pytest.fixture
async def h() -> AsyncIterator[Harness]:
    harness = await start()
    yield harness
    await stop(harness)


async def stop(harness: Harness) -> None:
    for peer in harness.peers.values():
        peer.close()
    await harness.frontend.stop()


def access_request(
    ident: int = 1, with_ma: bool = True, secret: str = SECRET, **attrs: Any
) -> AuthPacket:
    req = AuthPacket(code=rc.ACCESS_REQUEST, id=ident, secret=secret.encode(), dict=DICT)
    values = {
        "User-Name": "alice",
        "Calling-Station-Id": "+441234567",
        "Called-Station-Id": "0049301234",
        "NAS-IP-Address": "192.0.2.10",
        "h323-conf-id": "h323-conf-id=CONF 1",
    }
    values.update({k.replace("_", "-"): v for k, v in attrs.items()})
    for key, value in values.items():
        req[key] = value
    if with_ma:
        req.add_message_authenticator()
    return req


def accounting_request(
    status: str, ident: int = 1, secret: str = SECRET, **attrs: Any
) -> AcctPacket:
    req = AcctPacket(id=ident, secret=secret.encode(), dict=DICT)
    req["Acct-Status-Type"] = status
    req["NAS-IP-Address"] = "192.0.2.10"
    for key, value in attrs.items():
        req[key.replace("_", "-")] = value
    return req


def verified(req: Packet, raw: bytes | None) -> Packet:
    assert raw is not None, "no reply"
    reply = Packet(packet=raw, secret=req.secret, dict=DICT)
    assert req.VerifyReply(reply, raw, enforce_ma=req.code == rc.ACCESS_REQUEST)
    return reply


async def test_accept_with_cisco_vsas(h: Harness) -> None:
    req = access_request(Acct_Session_Id="leg-1")
    reply = verified(req, await h.auth(req.RequestPacket()))
    assert reply.code == rc.ACCESS_ACCEPT
    assert reply["Session-Timeout"] == [360]
    assert reply["Acct-Interim-Interval"] == [60]  # sessions' ([sessions] interim_interval_s)
    assert reply["h323-credit-time"] == ["h323-credit-time=360"]
    assert reply["h323-credit-amount"] == ["h323-credit-amount=12.50"]
    assert reply["h323-currency"] == ["h323-currency=EUR"]
    assert h.credit.calls == [
        CallInfo(
            session_id="CONF 1",  # cisco: the h323-conf-id all legs share
            user_name="alice",
            calling="+441234567",
            called="0049301234",
            gateway="192.0.2.10",
            client="cisco-gw",
            default_account="trunk-1",
            conf_id="CONF 1",
            lookup=("user", "ani", "default"),
            nas_session_id="leg-1",  # the gateway's own id: a Disconnect-Request matches it
        )
    ]
    assert h.counters.accepted == 1


@pytest.mark.parametrize(("postpaid", "model"), [(False, 1), (True, 0)])
async def test_accept_billing_model_follows_the_account_mode(postpaid: bool, model: int) -> None:
    """Cisco h323-billing-model: 0 credit (postpaid), 1 debit (prepaid)."""
    decision = Authorized("acc-1", 360, 60, 12_500_000, "EUR", postpaid=postpaid)
    h = await start(RecordingCredit(lambda call: decision))
    try:
        req = access_request(Acct_Session_Id="leg-1")
        reply = verified(req, await h.auth(req.RequestPacket()))
        assert reply["h323-billing-model"] == [f"h323-billing-model={model}"]
    finally:
        await stop(h)


def _refuse(code: RefusalCode) -> RecordingCredit:
    return RecordingCredit(lambda call: Refused(code, f"refused: {code.value}"))


@pytest.mark.parametrize(
    ("code", "return_code"),
    [
        (RefusalCode.UNKNOWN_ACCOUNT, 1),
        (RefusalCode.SUSPENDED, 7),
        (RefusalCode.INSUFFICIENT_CREDIT, 4),
        (RefusalCode.DESTINATION_NOT_ALLOWED, 9),
        (RefusalCode.TOO_MANY_CALLS, 3),
        (RefusalCode.SYSTEM_ERROR, 8),
    ],
)
async def test_refusals_map_to_reject_and_return_code(code: RefusalCode, return_code: int) -> None:
    h = await start(_refuse(code))
    try:
        req = access_request()
        reply = verified(req, await h.auth(req.RequestPacket()))
        assert reply.code == rc.ACCESS_REJECT
        assert reply["Reply-Message"] == [f"refused: {code.value}"]
        assert reply["h323-return-code"] == [f"h323-return-code={return_code}"]
        assert h.counters.rejected == 1
    finally:
        await stop(h)


async def test_return_code_mapping_is_configurable() -> None:
    h = await start(
        _refuse(RefusalCode.INSUFFICIENT_CREDIT), h323_return_codes={"insufficient_credit": 12}
    )
    try:
        req = access_request()
        reply = verified(req, await h.auth(req.RequestPacket()))
        assert reply["h323-return-code"] == ["h323-return-code=12"]
    finally:
        await stop(h)


async def test_generic_client_gets_no_vsas_and_its_lookup(h: Harness) -> None:
    req = access_request(User_Name="bob")
    reply = verified(req, await h.auth(req.RequestPacket(), host="127.0.0.2"))
    assert reply.code == rc.ACCESS_ACCEPT
    assert "h323-credit-time" not in reply
    assert reply["Session-Timeout"] == [360]
    call = h.credit.calls[0]
    assert (call.client, call.lookup, call.default_account) == ("generic-sbc", ("ani",), "")
    assert call.session_id == "CONF 1"  # no Acct-Session-Id: the h323-conf-id


async def test_retransmission_gets_cached_reply_without_second_call(h: Harness) -> None:
    raw = access_request(ident=9).RequestPacket()
    first = await h.auth(raw)
    second = await h.auth(raw)
    assert first is not None and first == second
    assert len(h.credit.calls) == 1
    assert h.counters.duplicates == 1


async def test_retransmission_while_in_progress_is_not_worked_twice(h: Harness) -> None:
    h.credit.gate.clear()
    raw = access_request(ident=10).RequestPacket()
    peer = await h.peer()
    peer.send(raw, h.frontend.auth_port)
    await wait_until(lambda: len(h.credit.calls) == 1)
    peer.send(raw, h.frontend.auth_port)
    await wait_until(lambda: h.counters.duplicates_in_progress == 1)
    h.credit.gate.set()
    assert await peer.recv() is not None
    assert await peer.recv(0.1) is None
    assert len(h.credit.calls) == 1


async def test_unknown_client_is_dropped_and_counted(h: Harness) -> None:
    assert await h.auth(access_request().RequestPacket(), host="127.0.0.3", timeout_s=0.2) is None
    assert h.counters.unknown_client == 1
    assert h.credit.calls == []


async def test_bad_message_authenticator_is_dropped(h: Harness) -> None:
    raw = access_request(secret="not-the-secret").RequestPacket()
    assert await h.auth(raw, timeout_s=0.2) is None
    assert h.counters.bad_authenticator == 1
    assert h.credit.calls == []


async def test_missing_message_authenticator_dropped_when_required(h: Harness) -> None:
    raw = access_request(with_ma=False).RequestPacket()
    assert await h.auth(raw, timeout_s=0.2) is None
    assert h.counters.missing_message_authenticator == 1
    # The legacy client is exempted by its own setting.
    req = access_request(ident=2, with_ma=False)
    assert (
        verified(req, await h.auth(req.RequestPacket(), host="127.0.0.4")).code == rc.ACCESS_ACCEPT
    )
    assert [c.client for c in h.credit.calls] == ["legacy"]


def _set_length(raw: bytes, length: int) -> bytes:
    return raw[:2] + struct.pack("!H", length) + raw[4:]


async def test_malformed_packets_are_dropped_and_counted(h: Harness) -> None:
    good = access_request().RequestPacket()
    bad_attr = bytearray(good)
    bad_attr[20 + 18 + 1] = 1  # the attribute after Message-Authenticator: length 1
    for raw in (good[:15], _set_length(good, len(good) + 10), bytes(bad_attr), good[:20] + b"\x01"):
        assert await h.auth(raw, timeout_s=0.05) is None
    await wait_until(lambda: h.counters.malformed == 4)
    assert h.credit.calls == []
    # The server still works.
    req = access_request(ident=3)
    assert verified(req, await h.auth(req.RequestPacket())).code == rc.ACCESS_ACCEPT


async def test_overload_is_shed_and_counted() -> None:
    h = await start(queue_size=2, worker_tasks=1)
    try:
        h.credit.gate.clear()
        peer = await h.peer()
        peer.send(access_request(ident=0).RequestPacket(), h.frontend.auth_port)
        await wait_until(lambda: len(h.credit.calls) == 1)  # the worker is busy
        for ident in range(1, 10):
            peer.send(access_request(ident=ident).RequestPacket(), h.frontend.auth_port)
        await wait_until(lambda: h.counters.received == 10)
        assert h.counters.dropped_overload == 7  # 1 in the worker, 2 queued
        h.credit.gate.set()
        replies = [await peer.recv() for _ in range(3)]
        assert all(r is not None for r in replies)
        assert await peer.recv(0.1) is None
        assert len(h.credit.calls) == 3
    finally:
        await stop(h)


async def test_requests_that_waited_too_long_are_shed_unanswered() -> None:
    h = await start(worker_tasks=1, max_wait_ms=50)
    loop = asyncio.get_running_loop()
    try:
        h.credit.gate.clear()
        peer = await h.peer()
        peer.send(access_request(ident=0).RequestPacket(), h.frontend.auth_port)
        await wait_until(lambda: len(h.credit.calls) == 1)  # the only worker is busy
        for ident in range(1, 6):
            peer.send(access_request(ident=ident).RequestPacket(), h.frontend.auth_port)
        await wait_until(lambda: h.counters.received == 6)
        queued_at = loop.time()
        await wait_until(lambda: loop.time() - queued_at > 0.1)  # past max_wait_ms
        h.credit.gate.set()
        first = await peer.recv()
        assert first is not None and first[1] == 0  # the one already being worked on
        await wait_until(lambda: h.counters.shed_stale == 5)
        assert await peer.recv(0.1) is None  # the 5 stale ones: no answer
        assert len(h.credit.calls) == 1  # and no work spent on them
        fresh = access_request(ident=9)
        assert verified(fresh, await h.auth(fresh.RequestPacket())).code == rc.ACCESS_ACCEPT
        assert h.counters.shed_stale == 5  # recovered at once: fresh requests answered
    finally:
        await stop(h)


async def test_requests_that_waited_in_the_socket_buffer_are_shed_unread() -> None:
    # A busy event loop leaves datagrams in the kernel's buffer; their age counts from
    # the kernel's receive time (SO_TIMESTAMPNS), not from when the loop read them.
    import sys
    import time

    if sys.platform != "linux":
        pytest.skip("kernel receive timestamps are read on Linux only")
    h = await start(max_wait_ms=50)
    try:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for ident in range(4):
            sender.sendto(
                access_request(ident=ident).RequestPacket(), ("127.0.0.1", h.frontend.auth_port)
            )
        time.sleep(0.12)  # the loop is stuck (on purpose) while they wait in the buffer
        await wait_until(lambda: h.counters.received == 4)
        assert h.counters.shed_stale == 4
        assert h.credit.calls == []  # no work spent on them
        fresh = access_request(ident=9)
        assert verified(fresh, await h.auth(fresh.RequestPacket())).code == rc.ACCESS_ACCEPT
        sender.close()
    finally:
        await stop(h)


async def test_error_in_credit_control_rejects_and_the_server_goes_on(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h.credit.fail = True
    req = access_request(ident=5, User_Password="pin-4711")
    reply = verified(req, await h.auth(req.RequestPacket()))
    assert reply.code == rc.ACCESS_REJECT
    assert reply["h323-return-code"] == ["h323-return-code=8"]
    assert h.counters.errors == 1
    assert "authorize failed for client cisco-gw" in caplog.text
    assert SECRET not in caplog.text and "pin-4711" not in caplog.text  # never logged
    h.credit.fail = False
    again = await h.auth(req.RequestPacket())  # not cached: asked again
    assert verified(req, again).code == rc.ACCESS_ACCEPT


async def test_accounting_start_interim_stop(h: Harness) -> None:
    common = {"Acct_Session_Id": "leg-7", "User_Name": "alice", "Called_Station_Id": "0049301234"}
    flows = [
        accounting_request("Start", 1, Event_Timestamp=1_700_000_000, **common),
        accounting_request(
            "Interim-Update",
            2,
            Acct_Session_Time=60,
            Acct_Delay_Time=2,
            Event_Timestamp=1_700_000_062,
            **common,
        ),
        accounting_request(
            "Stop",
            3,
            Acct_Session_Time=95,
            Acct_Terminate_Cause="User-Request",
            h323_disconnect_cause="h323-disconnect-cause=10",
            Event_Timestamp=1_700_000_095,
            **common,
        ),
    ]
    for req in flows:
        assert verified(req, await h.acct(req.RequestPacket())).code == rc.ACCOUNTING_RESPONSE
    kinds = [(r.kind, r.usage_s, r.event_ms) for r in h.credit.reports]
    assert kinds == [
        (UsageKind.START, 0, 1_700_000_000_000),
        (UsageKind.INTERIM, 60, 1_700_000_062_000),  # Event-Timestamp wins over the delay
        (UsageKind.STOP, 95, 1_700_000_095_000),
    ]
    stop_report = h.credit.reports[-1]
    assert (stop_report.terminate_cause, stop_report.disconnect_cause) == ("User-Request", 16)
    assert stop_report.call.session_id == "leg-7"
    assert stop_report.call.gateway == "192.0.2.10"
    assert h.counters.accounted == 3


async def test_accounting_retransmission_and_bad_authenticator(h: Harness) -> None:
    raw = accounting_request("Start", 4, Acct_Session_Id="leg-8").RequestPacket()
    first = await h.acct(raw)
    assert first is not None and await h.acct(raw) == first
    assert len(h.credit.reports) == 1
    forged = accounting_request("Stop", 5, secret="wrong", Acct_Session_Id="leg-8").RequestPacket()
    assert await h.acct(forged, timeout_s=0.2) is None
    assert h.counters.bad_authenticator == 1
    assert len(h.credit.reports) == 1


async def test_accounting_failure_is_not_acknowledged_then_retried(h: Harness) -> None:
    h.credit.fail = True
    raw = accounting_request(
        "Stop", 6, Acct_Session_Id="leg-9", Acct_Session_Time=10
    ).RequestPacket()
    assert await h.acct(raw, timeout_s=0.2) is None
    assert h.counters.errors == 1
    h.credit.fail = False
    assert await h.acct(raw) is not None
    assert len(h.credit.reports) == 2


async def test_accounting_on_closes_the_gateway(h: Harness) -> None:
    for ident, status in ((1, "Accounting-On"), (2, "Accounting-Off")):
        req = accounting_request(status, ident)
        assert verified(req, await h.acct(req.RequestPacket())).code == rc.ACCOUNTING_RESPONSE
    assert h.credit.restarts == [("192.0.2.10", "cisco-gw"), ("192.0.2.10", "cisco-gw")]
    assert h.credit.reports == []


async def test_auth_packet_on_accounting_port_is_dropped(h: Harness) -> None:
    assert await h.acct(access_request().RequestPacket(), timeout_s=0.1) is None
    assert h.counters.unexpected_code == 1


def test_secret_never_in_repr() -> None:
    cfg = radius_config()
    assert SECRET not in repr(cfg)
    frontend = RadiusFrontend(cfg, RecordingCredit())
    client = frontend.clients.match("127.0.0.1")
    assert client is not None and SECRET not in repr(client)


def test_cidr_clients_match_longest_prefix() -> None:
    clients = [
        {"name": "wide", "address": "10.0.0.0/8", "secret": "a"},
        {"name": "narrow", "address": "10.1.2.0/24", "secret": "b"},
    ]
    table = RadiusFrontend(radius_config(clients=clients), RecordingCredit()).clients
    assert table.match("10.1.2.3").name == "narrow"  # type: ignore[union-attr]
    assert table.match("10.9.9.9").name == "wide"  # type: ignore[union-attr]
    assert table.match("11.0.0.1") is None
    assert table.match("not-an-ip") is None


async def test_authorized_interim_from_sessions_wins() -> None:
    h = await start(RecordingCredit(lambda call: Authorized("a", 30, 15, 0, "")))
    try:
        req = access_request()
        reply = verified(req, await h.auth(req.RequestPacket()))
        assert reply["Acct-Interim-Interval"] == [15]
        assert reply["h323-credit-amount"] == ["h323-credit-amount=0.00"]
        assert "h323-currency" not in reply
    finally:
        await stop(h)


# -- Disconnect / CoA client (RFC 5176) against a test gateway ---------------------


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[TestGateway, DynamicAuthClient]]:
    peer = await UdpPeer.open()
    gw = TestGateway(peer, SECRET.encode())
    clients = [dict(CLIENTS[0], coa_port=peer.port), {"name": "no-dm", "address": "127.0.0.9",
               "secret": "x", "coa_port": 0}, dict(CLIENTS[1], name="generic-dm",
               coa_port=peer.port)]  # fmt: skip
    table = ClientTable.from_config(radius_config(clients=clients))
    client = DynamicAuthClient(table, timeout_s=0.05, retries=2, clock=lambda: 1_700_000_123.4)
    await client.start()
    yield gw, client
    await client.close()
    await gw.close()


REF = SessionRef(session_id="leg-1", user_name="alice", gateway="127.0.0.1", client="cisco-gw")


async def test_disconnect_ack(gateway: tuple[TestGateway, DynamicAuthClient]) -> None:
    gw, client = gateway
    assert await client.disconnect(REF, "credit exhausted")
    request = gw.requests[0]
    assert request.code == rc.DISCONNECT_REQUEST
    assert request["Acct-Session-Id"] == ["leg-1"]
    assert request["User-Name"] == ["alice"]
    assert request["NAS-IP-Address"] == ["127.0.0.1"]
    assert rc.decode(request.raw_packet).integer(rc.EVENT_TIMESTAMP) == 1_700_000_123
    assert client.counters.acked == 1


async def test_disconnect_of_a_cisco_call_names_the_gateways_own_leg(
    gateway: tuple[TestGateway, DynamicAuthClient],
) -> None:
    """Keyed by the h323-conf-id, the call is cut by what a Cisco POD handler matches:
    the leg's own Acct-Session-Id, the conf-id and call-origin VSAs as the gateway
    sent them, User-Name, NAS-IP-Address."""
    gw, client = gateway
    ref = SessionRef(
        "3A3F5C1E 2A1B11D0", "alice", "127.0.0.1", "cisco-gw",
        nas_session_id="0000AB12", conf_id="3A3F5C1E 2A1B11D0", call_origin="originate",
    )  # fmt: skip
    assert await client.disconnect(ref, "credit exhausted")
    request = gw.requests[0]
    assert request["Acct-Session-Id"] == ["0000AB12"]
    assert request["h323-conf-id"] == ["h323-conf-id=3A3F5C1E 2A1B11D0"]
    assert request["h323-call-origin"] == ["h323-call-origin=originate"]
    assert (request["User-Name"], request["NAS-IP-Address"]) == (["alice"], ["127.0.0.1"])
    # Another NAS gets no Cisco VSA (RFC 5176 §3.5: an unsupported attribute is a NAK).
    other = SessionRef("sbc-1", "alice", "127.0.0.1", "generic-dm", conf_id="x", call_origin="y")
    assert await client.disconnect(other, "credit exhausted")
    assert "h323-conf-id" not in gw.requests[1] and "h323-call-origin" not in gw.requests[1]
    assert gw.requests[1]["Acct-Session-Id"] == ["sbc-1"]


async def test_disconnect_nak_503_counts_as_done(
    gateway: tuple[TestGateway, DynamicAuthClient],
) -> None:
    gw, client = gateway
    gw.mode = "nak503"
    assert await client.disconnect(REF, "operator kill")
    gw.mode = "nak501"  # Administratively-Prohibited: the call is still up
    assert not await client.disconnect(REF, "operator kill")
    assert (client.counters.session_not_found, client.counters.nacked) == (1, 1)


async def test_disconnect_without_answer_retries_then_fails(
    gateway: tuple[TestGateway, DynamicAuthClient],
) -> None:
    gw, client = gateway
    gw.mode = "silent"
    assert not await client.disconnect(REF, "credit exhausted")
    assert len(gw.requests) == 3  # first try + 2 retries, same packet each time
    assert len({r.raw_packet for r in gw.requests}) == 1
    assert (client.counters.retransmitted, client.counters.timed_out) == (2, 1)


async def test_coa_changes_session_timeout(gateway: tuple[TestGateway, DynamicAuthClient]) -> None:
    gw, client = gateway
    assert await client.change_timeout(REF, 900)
    assert gw.requests[0].code == rc.COA_REQUEST
    assert gw.requests[0]["Session-Timeout"] == [900]
    gw.mode = "nak503"
    assert not await client.change_timeout(REF, 900)


async def test_dm_to_unknown_or_disabled_client_is_false(
    gateway: tuple[TestGateway, DynamicAuthClient],
) -> None:
    gw, client = gateway
    assert not await client.disconnect(SessionRef("s", "", "127.0.0.1", "nosuch"), "x")
    assert not await client.disconnect(SessionRef("s", "", "127.0.0.9", "no-dm"), "x")
    assert not await client.disconnect(SessionRef("s", "", "gw.example", "cisco-gw"), "x")
    assert gw.requests == []
    assert client.counters.unroutable == 3


async def test_many_disconnects_in_parallel(gateway: tuple[TestGateway, DynamicAuthClient]) -> None:
    gw, quick = gateway
    # More than 256 at once: Identifiers are reused only after their answer came.
    client = DynamicAuthClient(quick.clients, timeout_s=1.0, retries=3)
    await client.start()
    refs = [SessionRef(f"leg-{i}", "u", "127.0.0.1", "cisco-gw") for i in range(300)]
    try:
        results = await asyncio.gather(*(client.disconnect(ref, "bulk") for ref in refs))
    finally:
        await client.close()
    assert all(results)
    # Under load some requests are retransmitted (same packet): each session at least once.
    assert {r["Acct-Session-Id"][0] for r in gw.requests} == {r.session_id for r in refs}


async def test_stop_lets_queued_requests_finish(h: Harness) -> None:
    h.credit.gate.clear()
    peer = await h.peer()
    peer.send(access_request(ident=1).RequestPacket(), h.frontend.auth_port)
    await wait_until(lambda: len(h.credit.calls) == 1)
    stopping = asyncio.create_task(h.frontend.stop(grace_s=2.0))
    await asyncio.sleep(0.01)
    assert not stopping.done()  # waiting for the request in progress
    h.credit.gate.set()
    await stopping
    assert await peer.recv() is not None  # it was answered before the workers went


async def test_two_processes_can_share_the_ports_and_start_radius_wires_a_cutter() -> None:
    credit = RecordingCredit()
    first, cutter = await start_radius(radius_config(), credit)
    try:
        cfg = radius_config(auth_port=first.auth_port, acct_port=first.acct_port)
        second = RadiusFrontend(cfg, credit)
        await second.start()  # SO_REUSEPORT: a second worker binds the same ports
        assert (second.auth_port, second.acct_port) == (first.auth_port, first.acct_port)
        await second.stop()
        assert isinstance(cutter, DynamicAuthClient)
        assert cutter.clients is first.clients
    finally:
        await first.stop()
        await cutter.close()


async def test_proxy_state_is_echoed_in_order(h: Harness) -> None:
    req = access_request(ident=11)
    req.AddAttribute("Proxy-State", b"hop-1")
    req.AddAttribute("Proxy-State", b"hop-2")
    reply = verified(req, await h.auth(req.RequestPacket()))  # pyrad checks the echo
    assert reply["Proxy-State"] == [b"hop-1", b"hop-2"]
    acct = accounting_request("Start", 12, Acct_Session_Id="p1")
    acct.AddAttribute("Proxy-State", b"hop-1")
    answer = verified(acct, await h.acct(acct.RequestPacket()))
    assert answer["Proxy-State"] == [b"hop-1"]


async def test_event_time_without_event_timestamp_is_arrival_minus_delay() -> None:
    credit = RecordingCredit()
    frontend = RadiusFrontend(radius_config(), credit, clock=lambda: 1_800_000_000.25)
    await frontend.start()
    h = Harness(frontend, credit)
    try:
        req = accounting_request("Stop", 1, Acct_Session_Id="d1", Acct_Delay_Time=5)
        assert verified(req, await h.acct(req.RequestPacket())).code == rc.ACCOUNTING_RESPONSE
        assert credit.reports[0].event_ms == 1_800_000_000_250 - 5_000
    finally:
        await stop(h)


async def test_cisco_legs_share_the_conf_id_and_only_the_charged_leg_is_passed_on(
    h: Harness,
) -> None:
    conf = {"h323_conf_id": "h323-conf-id=CONF 9", "Acct_Session_Time": 42}
    legs = [
        accounting_request("Stop", 1, Acct_Session_Id="in-leg",
                           h323_call_origin="h323-call-origin=answer", **conf),
        accounting_request("Stop", 2, Acct_Session_Id="out-leg",
                           h323_call_origin="h323-call-origin=originate", **conf),
    ]  # fmt: skip
    for req in legs:  # both acknowledged
        assert verified(req, await h.acct(req.RequestPacket())).code == rc.ACCOUNTING_RESPONSE
    assert [(r.call.session_id, r.usage_s) for r in h.credit.reports] == [("CONF 9", 42)]
    assert h.counters.accounting_ignored == 1
    # A generic client passes every record on, keyed by Acct-Session-Id.
    for req in legs:
        await h.acct(req.RequestPacket(), host="127.0.0.2")
    assert [r.call.session_id for r in h.credit.reports[1:]] == ["in-leg", "out-leg"]


async def test_status_server_is_answered_on_both_ports(h: Harness) -> None:
    for port_kind, expected in (("auth", rc.ACCESS_ACCEPT), ("acct", rc.ACCOUNTING_RESPONSE)):
        probe = AuthPacket(code=rc.STATUS_SERVER, id=3, secret=SECRET.encode(), dict=DICT)
        probe.add_message_authenticator()
        raw = probe.RequestPacket()
        answer = await (h.auth(raw) if port_kind == "auth" else h.acct(raw))
        assert verified(probe, answer).code == expected
    unsigned = AuthPacket(code=rc.STATUS_SERVER, id=4, secret=SECRET.encode(), dict=DICT)
    assert await h.auth(unsigned.RequestPacket(), timeout_s=0.1) is None  # RFC 5997: MA required
    assert (h.counters.status_server, h.counters.bad_authenticator) == (2, 1)
    assert h.credit.calls == [] and h.credit.reports == []


def test_duplicate_cache_ttl_and_bound() -> None:
    now = [100.0]
    cache = DuplicateCache(ttl_s=5.0, max_entries=3, monotonic=lambda: now[0])
    a, b, c, d = (cache_key(("10.0.0.1", 1), bytes([i]) * 20) for i in range(4))
    cache.start(a)
    assert cache.get(a) == b""  # in progress
    cache.finish(a, b"reply-a")
    assert cache.get(a) == b"reply-a"
    for key in (b, c, d):
        cache.start(key)
    assert len(cache) == 3 and cache.get(a) is None  # the oldest went first
    now[0] += 5.1
    assert cache.get(b) is None  # expired
    cache.start(a)
    assert len(cache) <= 3
    cache.forget(a)
    assert cache.get(a) is None


def test_duplicate_cache_keys_tell_sources_apart() -> None:
    header = bytes(range(20))
    keys = {cache_key(addr, header) for addr in (("10.0.0.1", 1), ("10.0.0.1", 2),
                                                 ("10.0.0.11", 1), ("::1", 1))}  # fmt: skip
    assert len(keys) == 4 and cache_key(("10.0.0.1", 1), header) in keys
    assert cache_key(("10.0.0.1", 1), bytes(20)) not in keys


async def test_answered_requests_leave_nothing_for_the_collector(h: Harness) -> None:
    # docs/performance.md round 6c: tuples kept per request for the cache's TTL filled
    # the young generation; each collection then stalled every request in flight.
    raws = [access_request(ident=ident).RequestPacket() for ident in range(40)]
    enabled = gc.isenabled()
    gc.disable()  # a collection would untrack tuples of atoms and hide them
    try:
        answers = [await h.auth(raw) for raw in raws]
        entries = h.frontend.cache._entries
        assert not any(gc.is_tracked(k) or gc.is_tracked(v) for k, v in entries.items())
    finally:
        if enabled:
            gc.enable()
    assert None not in answers and len(entries) == 40
    assert await h.auth(raws[7]) == answers[7]  # a retransmission: still from the cache
    assert h.counters.duplicates == 1 and len(h.credit.calls) == 40


async def test_port_in_use_fails_start_and_releases_the_other_port() -> None:
    blocker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no SO_REUSEPORT: exclusive
    blocker.bind(("127.0.0.1", 0))
    try:
        frontend = RadiusFrontend(
            radius_config(acct_port=blocker.getsockname()[1]), RecordingCredit()
        )
        with pytest.raises(OSError):
            await frontend.start()
        assert frontend._ports == [] and frontend._tasks == []
    finally:
        blocker.close()


async def test_close_while_waiting_ends_as_not_confirmed(
    gateway: tuple[TestGateway, DynamicAuthClient],
) -> None:
    gw, client = gateway
    gw.mode = "silent"
    waiting = asyncio.create_task(client.disconnect(REF, "shutdown"))
    await wait_until(lambda: len(gw.requests) == 1)
    await client.close()
    assert await waiting is False


# -- the optional access log ----------------------------------------------------


async def test_answered_requests_are_logged_in_one_batch(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "access.log"
    log = AccessLog(path, flush_s=3600)  # flushed by stop(), not by the timer
    credit = RecordingCredit(
        lambda call: (
            Refused(RefusalCode.INSUFFICIENT_CREDIT, "no money")
            if call.user_name == "bob"
            else RecordingCredit().decide(call)
        )
    )
    frontend = RadiusFrontend(radius_config(), credit, access_log=log)
    await frontend.start()
    peer = await UdpPeer.open("127.0.0.1")
    try:
        for ident, user in ((1, "alice"), (2, "bob")):
            req = access_request(ident=ident, User_Name=user)
            peer.send(req.RequestPacket(), frontend.auth_port)
            assert verified(req, await peer.recv()).code in (rc.ACCESS_ACCEPT, rc.ACCESS_REJECT)
        stop = accounting_request("Stop", ident=3, Acct_Session_Time=42)
        peer.send(stop.RequestPacket(), frontend.acct_port)
        assert await peer.recv() is not None
        await wait_until(lambda: frontend.counters.accounted == 1)
        assert not path.exists() or path.read_text() == ""  # buffered, nothing written yet
    finally:
        peer.close()
        await frontend.stop()
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and log.written == 3
    assert " auth cisco-gw sid=" in lines[0] and " user=alice accept " in lines[0]
    assert " user=bob insufficient_credit " in lines[1]
    assert " acct cisco-gw " in lines[2] and " stop " in lines[2]
    assert all(line.endswith("ms") and line[:4].isdigit() for line in lines)
    assert "gw-secret" not in path.read_text()  # no secrets, no packet contents


async def test_gateway_chosen_text_cannot_break_a_line(tmp_path: Path) -> None:
    log = AccessLog(tmp_path / "a.log")
    log.open()
    log.add("auth", "gw", "evil\nsid x", "", "accept", 0.0012)
    await log.close()
    (line,) = (tmp_path / "a.log").read_text().splitlines()
    assert "sid=evil_sid_x user=- accept 1.2ms" in line


async def test_intake_queue_behaves_as_asyncio_queue() -> None:
    # The compiled queue between a port and its workers (round 8b): FIFO, bounded,
    # getters woken in turn, a cancelled getter passes its wake-up on, task_done/join.
    queue = IntakeQueue(2, asyncio.get_running_loop())
    items = [(bytes([i]), ("10.0.0.1", i), float(i)) for i in range(4)]
    assert queue.take() is None and queue.qsize() == 0
    waiting = [asyncio.ensure_future(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    waiting[0].cancel()  # the first waiter leaves: the others still get their items
    await asyncio.sleep(0)
    queue.put_nowait(items[0])
    queue.put_nowait(items[1])
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(items[2])
    assert await asyncio.wait_for(asyncio.gather(*waiting[1:]), 1) == items[:2]
    queue.put_nowait(items[2])
    queue.put_nowait(items[3])
    assert queue.backlog() == 2  # no worker free to take them (the batcher's signal)
    assert (queue.qsize(), queue.take(), await queue.get()) == (2, items[2], items[3])
    idle = [asyncio.ensure_future(queue.get()) for _ in range(2)]
    await asyncio.sleep(0)
    queue.put_nowait(items[0])
    assert (queue.qsize(), queue.backlog()) == (1, 0)  # workers still free: no backlog
    assert await asyncio.wait_for(idle[0], 1) == items[0]
    idle[1].cancel()
    queue.task_done()
    joined = asyncio.ensure_future(queue.join())
    for _ in range(3):
        await asyncio.sleep(0)
        assert not joined.done()
        queue.task_done()
    queue.task_done()
    await asyncio.wait_for(joined, 1)
    with pytest.raises(ValueError):
        queue.task_done()


async def test_coa_address_routes_disconnects_of_a_gateway_behind_nat() -> None:
    """A gateway whose NAS-IP-Address chargingd cannot reach (behind NAT: 10.255.255.1
    here, never sent to) is cut at the client's coa_address; the request still names
    the gateway's own NAS-IP-Address, which its RFC 5176 handler matches."""
    peer = await UdpPeer.open()
    gw = TestGateway(peer, SECRET.encode())
    clients = [dict(CLIENTS[0], coa_port=peer.port, coa_address="127.0.0.1")]
    table = ClientTable.from_config(radius_config(clients=clients))
    client = DynamicAuthClient(table, timeout_s=0.05, retries=2)
    await client.start()
    try:
        ref = SessionRef("leg-9", "alice", "10.255.255.1", "cisco-gw")
        assert await client.disconnect(ref, "credit exhausted")
        assert gw.requests[0]["NAS-IP-Address"] == ["10.255.255.1"]
        assert gw.requests[0]["Acct-Session-Id"] == ["leg-9"]
        assert client.counters.unroutable == 0
    finally:
        await client.close()
        await gw.close()


def test_coa_address_must_be_an_ip_literal() -> None:
    with pytest.raises(ValueError, match="coa_address must be an IP literal"):
        radius_config(clients=[dict(CLIENTS[0], coa_address="sbc.example")])
