"""A RADIUS User-Name written as a SIP URI or as user@HOST finds the account whose
identity names the same address (RFC 3261 §19.1.4: scheme and host without regard to
case, the user part exactly), over real UDP to the RADIUS frontend on a real Redis."""

from __future__ import annotations

import time
from pathlib import Path

import redis.asyncio as aioredis
from pyrad.packet import AuthPacket, Packet
from radius_peer import DICT, UdpPeer
from sessions_harness import EUR, Clock, add_account, make_ledger, make_sessions

from chargingd.core.config import config_from_dict
from chargingd.radius import codec as rc
from chargingd.radius.server import start_radius

SECRET = "gw-secret"


def access_request(ident: int, user_name: str) -> bytes:
    req = AuthPacket(code=rc.ACCESS_REQUEST, id=ident, secret=SECRET.encode(), dict=DICT)
    for key, value in {
        "User-Name": user_name,
        "Called-Station-Id": "030123456",
        "NAS-IP-Address": "127.0.0.1",
        "Acct-Session-Id": f"sip-user-{ident}",
    }.items():
        req[key] = value
    req.add_message_authenticator()
    raw: bytes = req.RequestPacket()
    return raw


async def test_user_name_as_sip_uri_or_upper_case_host_finds_the_account(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    clients = [{"name": "gw", "address": "127.0.0.1", "secret": SECRET, "lookup": ["user"]}]
    radius = config_from_dict(
        {"radius": {"bind": "127.0.0.1", "auth_port": 0, "acct_port": 0, "clients": clients}}
    ).radius
    clock = Clock(int(time.time()) * 1000)
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    frontend, dm = await start_radius(radius, sessions)
    nas = await UdpPeer.open()
    try:
        # The operator typed the SIP URI as the IMS core shows it: stored canonical.
        await add_account(
            ledger, balance_micros=10 * EUR, identities=("user:SIP:alice@EXAMPLE.COM",)
        )
        assert (await ledger.get_account("acc1")).identities == ("user:alice@example.com",)
        names = {
            "alice@example.com": rc.ACCESS_ACCEPT,
            "alice@EXAMPLE.COM": rc.ACCESS_ACCEPT,  # Kamailio's $fU@$fd as the UA wrote it
            "sip:alice@Example.Com;transport=udp": rc.ACCESS_ACCEPT,
            "<SIP:alice@example.com>": rc.ACCESS_ACCEPT,
            "Alice@example.com": rc.ACCESS_REJECT,  # the user part is case-sensitive
            "alice": rc.ACCESS_REJECT,
        }
        for ident, (name, code) in enumerate(names.items(), 1):
            nas.send(access_request(ident, name), frontend.auth_port)
            raw = await nas.recv()
            assert raw is not None
            assert Packet(packet=raw, secret=SECRET.encode(), dict=DICT).code == code, name
    finally:
        nas.close()
        await frontend.stop()
        await dm.close()
