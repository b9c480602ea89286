"""Clients with ``echo_class``: the Access-Accept carries Class = the account (RFC 2865
§5.25), the gateway echoes it in its Accounting-Requests, and no session locator
(a ``sess:locs:N`` field) is written for the call. Real UDP packets (pyrad) to the real
frontend, a real Redis, on the fused path and the step-by-step (Redis Cluster) path.
Each accounting packet is handled as by another daemon (the process's own memory of
the call is dropped first): the account comes from Class, or, for a Stop the gateway
sent without it, from the identity lookup, which finds the same record (one CDR,
charged once). An operator kill by session id finds the call without a locator.
Clients without ``echo_class`` get no Class and keep the locator.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from pyrad.packet import AcctPacket, AuthPacket, Packet
from radius_peer import DICT, TestGateway, UdpPeer
from sessions_harness import EUR, Clock, add_account, make_ledger, make_sessions, read_cdrs

from chargingd.core.config import config_from_dict
from chargingd.radius import codec as rc
from chargingd.radius.server import start_radius
from chargingd.sessions.shards import locator_key
from chargingd.sessions.store import loc_key, record_key

SECRET = "gw-secret"
PER_S = 10_000  # Berlin: 0.60 EUR a minute, per second


def _access_request(ident: int, session_id: str) -> AuthPacket:
    req = AuthPacket(code=rc.ACCESS_REQUEST, id=ident, secret=SECRET.encode(), dict=DICT)
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


def _accounting(
    ident: int,
    status: str,
    session_id: str,
    usage_s: int,
    when_s: int,
    klass: bytes | None,
    user: str = "alice",
) -> AcctPacket:
    req = AcctPacket(id=ident, secret=SECRET.encode(), dict=DICT)
    values: dict[str, Any] = {
        "Acct-Status-Type": status,
        "NAS-IP-Address": "127.0.0.1",
        "Acct-Session-Id": session_id,
        "User-Name": user,
        "Calling-Station-Id": "+4940555666",
        "Called-Station-Id": "030123456",
        "Acct-Session-Time": usage_s,
        "Event-Timestamp": when_s,
    }
    if klass is not None:
        values["Class"] = klass
    for key, value in values.items():
        req[key] = value
    return req


@pytest.mark.parametrize("path", ["fused", "stepwise"])
@pytest.mark.parametrize("echo", [True, False])
async def test_account_in_class_instead_of_the_locator(
    redis: aioredis.Redis, tmp_path: Path, path: str, echo: bool
) -> None:
    coa = await UdpPeer.open()
    gateway = TestGateway(coa, SECRET.encode())
    client = {"name": "gw1", "address": "127.0.0.1", "secret": SECRET, "coa_port": coa.port}
    client["echo_class"] = echo
    radius = config_from_dict(
        {"radius": {"bind": "127.0.0.1", "auth_port": 0, "acct_port": 0, "clients": [client]}}
    ).radius
    t0_s = int(time.time())
    clock = Clock(t0_s * 1000)
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path, echo_class=("gw1",) if echo else ())
    if path == "stepwise":
        sessions.step_by_step()
    frontend, dm = await start_radius(radius, sessions)
    sessions.attach_call_cutter(dm)
    nas = await UdpPeer.open()
    ident = 0

    async def send(packet: Packet, port: int) -> Packet:
        nonlocal ident
        sessions.store._located.clear()  # as on another daemon: nothing remembered
        nas.send(packet.RequestPacket(), port)
        raw = await nas.recv()
        assert raw is not None
        return Packet(packet=raw, secret=SECRET.encode(), dict=DICT)

    def account(
        status: str, sid: str, usage_s: int, klass: bytes | None, user: str = "alice"
    ) -> AcctPacket:
        nonlocal ident
        ident += 1
        return _accounting(ident, status, sid, usage_s, t0_s + usage_s, klass, user)

    try:
        await add_account(ledger, balance_micros=10 * EUR)
        await add_account(ledger, "acc2", balance_micros=10 * EUR, identities=("user:bob",))
        klass: bytes | None = None
        for n, sid in enumerate(("leg-1", "leg-2")):
            reply = await send(_access_request(100 + n, sid), frontend.auth_port)
            assert reply.code == rc.ACCESS_ACCEPT
            if echo:
                assert reply["Class"] == [b"chargingd:acc1"]
                klass = reply["Class"][0]
                assert await redis.exists(loc_key(sid)) == 0
                assert await redis.hexists(locator_key(sid), sid) == 0
            else:
                assert "Class" not in reply
                assert await redis.hget(locator_key(sid), sid) == b"acc1"
            assert await redis.exists(record_key("acc1", sid)) == 1
        # A retransmitted Access-Request is answered the same (Class too).
        again = await send(_access_request(100, "leg-1"), frontend.auth_port)
        assert again.code == rc.ACCESS_ACCEPT
        assert ("Class" in again) == echo

        for status, usage_s in (("Start", 0), ("Interim-Update", 60)):
            clock.now_ms = (t0_s + usage_s) * 1000
            await send(account(status, "leg-1", usage_s, klass), frontend.acct_port)
        rec = await sessions.store.get("acc1", "leg-1")
        assert rec is not None and rec.last_usage_s == 60 and rec.answer_ms == t0_s * 1000
        # Found through Class: no locator written.
        assert await redis.hexists(locator_key("leg-1"), "leg-1") == (not echo)
        # A Class naming another account (no such call there): found all the same.
        clock.now_ms = (t0_s + 70) * 1000
        await send(account("Interim-Update", "leg-1", 70, b"chargingd:acc2"), frontend.acct_port)
        # A Class naming no account at all, and one that is not ours: the same.
        for usage_s, bad in ((75, b"chargingd:nosuch"), (80, b"\xff\x00not-ours")):
            clock.now_ms = (t0_s + usage_s) * 1000
            reply = await send(account("Interim-Update", "leg-1", usage_s, bad), frontend.acct_port)
            assert reply.code == rc.ACCOUNTING_RESPONSE
        assert await redis.exists(record_key("nosuch", "leg-1")) == 0
        # The Stop without Class (the gateway forgot it), its User-Name now bob's
        # (acc2): found in the gateway's last-seen zset, charged once, to acc1.
        clock.now_ms = (t0_s + 90) * 1000
        await send(account("Stop", "leg-1", 90, None, user="bob"), frontend.acct_port)
        await send(account("Stop", "leg-1", 90, klass), frontend.acct_port)  # retransmitted

        # The operator kills the other call by its id alone.
        await send(account("Start", "leg-2", 0, klass), frontend.acct_port)
        sessions.store._located.clear()
        assert await sessions.kill_session("leg-2")
        (request,) = gateway.requests
        assert (request.code, request["Acct-Session-Id"]) == (rc.DISCONNECT_REQUEST, ["leg-2"])
        await send(account("Stop", "leg-2", 5, klass), frontend.acct_port)

        cdrs = {c.call_id: c for c in await read_cdrs(redis)}
        assert sorted(cdrs) == ["leg-1", "leg-2"]
        assert len(await read_cdrs(redis)) == 2
        assert (cdrs["leg-1"].status, cdrs["leg-1"].duration_s) == ("normal", 90)
        assert cdrs["leg-1"].charged_micros == 90 * PER_S
        assert "adopted" not in cdrs["leg-1"].extra
        assert (cdrs["leg-2"].status, cdrs["leg-2"].duration_s) == ("killed", 5)
        acc1 = await ledger.get_account("acc1")
        assert acc1.balance_micros == 10 * EUR - 95 * PER_S and acc1.reserved_micros == 0
        acc2 = await ledger.get_account("acc2")
        assert (acc2.balance_micros, acc2.reserved_micros) == (10 * EUR, 0)
        assert await sessions.list_sessions() == []
        if echo:  # never a locator for the calls of this client
            assert await redis.exists(loc_key("leg-1"), loc_key("leg-2")) == 0
        else:  # closed: the closed calls' locators, as long as their records
            for sid in ("leg-1", "leg-2"):
                assert await redis.get(loc_key(sid)) == b"acc1"
                assert 0 < await redis.ttl(loc_key(sid)) <= 172800
        for sid in ("leg-1", "leg-2"):  # no live locator left
            assert await redis.hexists(locator_key(sid), sid) == 0
    finally:
        nas.close()
        await frontend.stop()
        await dm.close()
        await gateway.close()


async def test_diameter_peers_keep_their_locator(redis: aioredis.Redis, tmp_path: Path) -> None:
    """A Diameter peer named like an echo_class RADIUS client: its calls keep the
    locator (CCRs carry no Class)."""
    clock = Clock(int(time.time()) * 1000)
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path, echo_class=("gw1", "peer1"))
    sessions.name_source(["peer1"], "diameter")
    assert sessions.store.echo_class == frozenset({"gw1"})
