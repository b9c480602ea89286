"""Interop: FreeRADIUS's `radclient` (freeradius-utils) talks to the RADIUS frontend.

radclient reads only our config/dictionary (-D and -d), signs its requests itself,
and verifies our replies (Response Authenticator and Message-Authenticator).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator

import pytest
from paths import REPO
from radius_peer import RecordingCredit

from chargingd.core.config import config_from_dict
from chargingd.radius.server import RadiusFrontend
from chargingd.sessions.ccapi import RefusalCode, Refused, UsageKind

RADCLIENT = shutil.which("radclient")
pytestmark = pytest.mark.skipif(
    RADCLIENT is None, reason="radclient not installed (Debian package freeradius-utils)"
)
DICT_DIR = str(REPO / "config")
SECRET = "interop-secret"


@pytest.fixture
async def frontend() -> AsyncIterator[RadiusFrontend]:
    cfg = config_from_dict(
        {
            "radius": {
                "bind": "127.0.0.1",
                "auth_port": 0,
                "acct_port": 0,
                "clients": [{"name": "radclient", "address": "127.0.0.1", "secret": SECRET}],
            }
        }
    ).radius

    def decide(call: object) -> object:
        from chargingd.sessions.ccapi import Authorized

        if getattr(call, "user_name", "") == "nobody":
            return Refused(RefusalCode.UNKNOWN_ACCOUNT, "unknown account")
        return Authorized("acc", 240, 30, 3_000_000, "USD")

    front = RadiusFrontend(cfg, RecordingCredit(decide))  # type: ignore[arg-type]
    await front.start()
    yield front
    await front.stop()


async def radclient(port: int, command: str, packets: str, *, status: int = 0) -> str:
    """Run radclient -x on the packets (blank-line separated); return its output."""
    assert RADCLIENT is not None
    proc = await asyncio.create_subprocess_exec(
        RADCLIENT, "-x", "-D", DICT_DIR, "-d", DICT_DIR, "-r", "2", "-t", "2",
        f"127.0.0.1:{port}", command, SECRET,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(packets.encode()), 20)
    text = out.decode()
    assert proc.returncode == status, text  # radclient exits 1 on Access-Reject
    return text


CALL = (
    'User-Name = "alice", Calling-Station-Id = "+15551234", Called-Station-Id = "0044207946",'
    ' NAS-IP-Address = 127.0.0.1, Acct-Session-Id = "rc-1",'
    ' h323-conf-id = "h323-conf-id=RC 1", Message-Authenticator = 0x00'
)


async def test_radclient_access_accept(frontend: RadiusFrontend) -> None:
    out = await radclient(frontend.auth_port, "auth", CALL + "\n")
    assert "Received Access-Accept" in out
    assert "Session-Timeout = 240" in out
    assert "Acct-Interim-Interval = 30" in out
    assert 'h323-credit-time = "h323-credit-time=240"' in out
    assert 'h323-credit-amount = "h323-credit-amount=3.00"' in out
    assert frontend.counters.accepted == 1


async def test_radclient_access_reject(frontend: RadiusFrontend) -> None:
    out = await radclient(
        frontend.auth_port, "auth", 'User-Name = "nobody", Message-Authenticator = 0x00\n', status=1
    )
    assert "Received Access-Reject" in out
    assert 'Reply-Message = "unknown account"' in out
    assert 'h323-return-code = "h323-return-code=1"' in out


async def test_radclient_wrong_secret_gets_no_answer(frontend: RadiusFrontend) -> None:
    assert RADCLIENT is not None
    proc = await asyncio.create_subprocess_exec(
        RADCLIENT, "-D", DICT_DIR, "-d", DICT_DIR, "-r", "1", "-t", "0.3",
        f"127.0.0.1:{frontend.auth_port}", "auth", "wrong-secret",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate((CALL + "\n").encode()), 20)
    assert proc.returncode != 0
    assert b"Received" not in out
    assert frontend.counters.bad_authenticator >= 1


async def test_radclient_accounting_call(frontend: RadiusFrontend) -> None:
    base = 'Acct-Session-Id = "rc-2", User-Name = "alice", NAS-IP-Address = 127.0.0.1'
    packets = "\n".join(
        [
            f"Acct-Status-Type = Start, {base}",
            "",
            f"Acct-Status-Type = Interim-Update, Acct-Session-Time = 30, {base}",
            "",
            f"Acct-Status-Type = Interim-Update, Acct-Session-Time = 60, {base}",
            "",
            f"Acct-Status-Type = Stop, Acct-Session-Time = 75, Acct-Terminate-Cause = User-Request,"
            f' h323-disconnect-cause = "h323-disconnect-cause=10", {base}',
            "",
            "Acct-Status-Type = Accounting-On, NAS-IP-Address = 127.0.0.1",
            "",
        ]
    )
    out = await radclient(frontend.acct_port, "acct", packets)
    assert out.count("Received Accounting-Response") == 5
    credit = frontend.credit
    assert isinstance(credit, RecordingCredit)
    reports = sorted(credit.reports, key=lambda r: r.usage_s)
    assert [(r.kind, r.usage_s) for r in reports] == [
        (UsageKind.START, 0),
        (UsageKind.INTERIM, 30),
        (UsageKind.INTERIM, 60),
        (UsageKind.STOP, 75),
    ]
    assert (reports[-1].terminate_cause, reports[-1].disconnect_cause) == ("User-Request", 16)
    assert credit.restarts == [("127.0.0.1", "radclient")]
