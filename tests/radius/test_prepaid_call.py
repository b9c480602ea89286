"""One prepaid call end to end: RADIUS packets over UDP -> aaa -> sessions -> ledger,
the cut as a real RFC 5176 Disconnect-Request to a test gateway, the CDR in Redis."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from pyrad.packet import AcctPacket, AuthPacket, Packet
from radius_peer import DICT, TestGateway, UdpPeer
from sessions_harness import EUR, Clock, add_account, make_ledger, make_sessions, read_cdrs

from chargingd.core.config import config_from_dict
from chargingd.radius import codec as rc
from chargingd.radius.server import start_radius

SECRET = "gw-secret"


def _access_request(session_id: str) -> AuthPacket:
    req = AuthPacket(code=rc.ACCESS_REQUEST, id=1, secret=SECRET.encode(), dict=DICT)
    for key, value in {
        "User-Name": "alice",
        "Calling-Station-Id": "+4940555666",
        "Called-Station-Id": "030123456",
        "NAS-IP-Address": "127.0.0.1",
        "Acct-Session-Id": session_id,
    }.items():
        req[key] = value
    req.add_message_authenticator()
    return req


def _accounting(ident: int, status: str, session_id: str, usage_s: int, when_s: int) -> AcctPacket:
    req = AcctPacket(id=ident, secret=SECRET.encode(), dict=DICT)
    values: dict[str, Any] = {
        "Acct-Status-Type": status,
        "NAS-IP-Address": "127.0.0.1",
        "Acct-Session-Id": session_id,
        "User-Name": "alice",
        "Calling-Station-Id": "+4940555666",
        "Called-Station-Id": "030123456",
        "Acct-Session-Time": usage_s,
        "Event-Timestamp": when_s,
    }
    for key, value in values.items():
        req[key] = value
    return req


async def test_prepaid_call_through_radius_is_cut_and_rated(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    coa = await UdpPeer.open()
    gateway = TestGateway(coa, SECRET.encode())
    clients = [{"name": "gw", "address": "127.0.0.1", "secret": SECRET, "coa_port": coa.port}]
    radius = config_from_dict(
        {"radius": {"bind": "127.0.0.1", "auth_port": 0, "acct_port": 0, "clients": clients}}
    ).radius
    t0_s = int(time.time())
    clock = Clock(t0_s * 1000)
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    frontend, dm = await start_radius(radius, sessions)
    sessions.attach_call_cutter(dm)
    nas = await UdpPeer.open()
    try:
        await add_account(ledger, balance_micros=1 * EUR)  # 100 s at 0.60 EUR a minute
        req = _access_request("leg-1")
        nas.send(req.RequestPacket(), frontend.auth_port)
        raw = await nas.recv()
        assert raw is not None
        reply = Packet(packet=raw, secret=SECRET.encode(), dict=DICT)
        assert reply.code == rc.ACCESS_ACCEPT
        assert reply["Session-Timeout"] == [100]
        assert reply["Acct-Interim-Interval"] == [60]

        for ident, status, usage_s in ((2, "Start", 0), (3, "Interim-Update", 60)):
            clock.now_ms = (t0_s + usage_s) * 1000
            acct = _accounting(ident, status, "leg-1", usage_s, t0_s + usage_s)
            nas.send(acct.RequestPacket(), frontend.acct_port)
            assert await nas.recv() is not None  # Accounting-Response: safely recorded

        clock.now_ms = (t0_s + 100) * 1000  # the money runs out
        assert await sessions.cutter.run_once() == 1
        (request,) = gateway.requests
        assert request.code == rc.DISCONNECT_REQUEST
        assert request["Acct-Session-Id"] == ["leg-1"]

        stop = _accounting(4, "Stop", "leg-1", 100, t0_s + 100)
        nas.send(stop.RequestPacket(), frontend.acct_port)
        assert await nas.recv() is not None
        (cdr,) = await read_cdrs(redis)
        assert (cdr.call_id, cdr.status, cdr.duration_s) == ("leg-1", "credit_cut", 100)
        assert (cdr.caller, cdr.callee, cdr.cost_micros) == ("+4940555666", "+4930123456", EUR)
        assert (cdr.answer_ms, cdr.gateway) == (t0_s * 1000, "127.0.0.1")
        account = await ledger.get_account("acc1")
        assert (account.balance_micros, account.reserved_micros) == (0, 0)
    finally:
        nas.close()
        await frontend.stop()
        await dm.close()
        await gateway.close()
