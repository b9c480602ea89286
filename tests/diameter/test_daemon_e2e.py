"""End to end: Diameter Credit-Control in the real `chargingd serve` (a subprocess),
next to RADIUS in the same daemon, on the same Sessions.

- The Erlang/OTP peer does a whole call; the ledger moves exactly what
  `chargingd rate` prices for it, and one CDR is written.
- The same call scenarios through RADIUS and through Diameter give the same money
  and the same CDRs (but for the protocol's own fields: source, ids, gateway).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ports
import pytest
from diameter_client import open_client
from diameter_peer import ErlangPeer, compile_dictionaries, erlang_missing
from radius_e2e_harness import BIN, Call, Daemon, GatewaySocket, serving, write_setup

from chargingd.billing.cdr import CDR
from chargingd.core.money import parse_amount
from chargingd.diameter import client as cl
from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PEER_HOST, PEER_REALM = "scscf.ims.test", "ims.test"
UK = "+442079460000"  # the e2e tariff: 0.60 EUR/min per second to +44


def free_tcp_port() -> int:
    return ports.free_port(socket.SOCK_STREAM)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("diameter-e2e")
    port = free_tcp_port()
    setup = write_setup(
        tmp,
        extra=f"""
[diameter]
enabled = true
bind = "127.0.0.1"
port = {port}
origin_host = "ocs.chargingd.test"
origin_realm = "chargingd.test"
credit_control_failure_handling = "terminate"
request_timeout_s = 1.0

[[diameter.peers]]
name = "ims1"
origin_host = "{PEER_HOST}"
realm = "{PEER_REALM}"
addresses = ["127.0.0.1"]
""",
    )
    with serving(setup, tmp / "daemon.log") as d:
        d.diameter_port = port  # type: ignore[attr-defined]
        yield d


def port_of(daemon: Daemon) -> int:
    port: int = daemon.diameter_port  # type: ignore[attr-defined]
    return port


@pytest.fixture(scope="module")
def dict_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if erlang_missing():
        pytest.skip(erlang_missing())
    return compile_dictionaries(tmp_path_factory.mktemp("otp-dicts"))


@pytest.fixture
async def peer(dict_dir: Path) -> AsyncIterator[ErlangPeer]:
    p = ErlangPeer(dict_dir)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()
        print("erlang peer events:", *p.events, sep="\n  ")


def cdrs_of(daemon: Daemon, account_id: str) -> list[CDR]:
    return [c for c in daemon.cdrs() if c.account_id == account_id]


async def wait_cdrs(daemon: Daemon, account_id: str, count: int) -> list[CDR]:
    for _ in range(250):
        found = cdrs_of(daemon, account_id)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"{account_id}: expected {count} CDRs, have {cdrs_of(daemon, account_id)}")


def chargingd_rate(daemon: Daemon, subject: str, start_ms: int, usage: str) -> int:
    """What `chargingd rate` prices for the call (its own process, its own tariff load)."""
    start = datetime.fromtimestamp(start_ms / 1000, tz=UTC).isoformat()
    tariff = daemon.setup.config.parent / "tariff.toml"
    out = subprocess.run(
        [str(BIN), "rate", "--plan", str(tariff), "--subject", subject,
         "--destination", UK, "--start", start, "--usage", usage],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    micros: int = json.loads(out.stdout)["cost_micros"]
    return micros


async def test_erlang_peer_full_call_debits_what_chargingd_rate_prices(
    daemon: Daemon, peer: ErlangPeer
) -> None:
    daemon.create_account("otp", "10.00", identities=["ani:+4930555000"])
    up = await peer.connect(port_of(daemon), origin_host=PEER_HOST, realm=PEER_REALM)
    assert up["event"] == "up"
    sid = f"{PEER_HOST};1;e2e-otp"
    i = await peer.ccr("i", sid, 1, 0, calling="+4930555000", called=f"tel:{UK}",
                       requested=60, rating_group=1)  # fmt: skip
    assert (i["result"], i["mscc_result"], i["fui"], i["failure_handling"]) == (
        2001,
        2001,
        False,
        0,
    )
    u = await peer.ccr("u", sid, 2, 1, used=30, requested=60, rating_group=1)
    assert (u["result"], u["mscc_result"]) == (2001, 2001)
    t = await peer.ccr("t", sid, 3, 2, used=17, rating_group=1)
    assert t["result"] == 2001
    (cdr,) = await wait_cdrs(daemon, "otp", 1)
    rated = chargingd_rate(daemon, "otp", cdr.answer_ms, "47s")
    assert rated == 470_000
    assert (cdr.source, cdr.call_id, cdr.status, cdr.duration_s, cdr.cost_micros) == (
        "diameter",
        sid,
        "normal",
        47,
        rated,
    )
    acc = daemon.call("account.get", {"id": "otp"})
    assert parse_amount(acc["debits"]) == rated
    assert parse_amount(acc["balance"]) == parse_amount("10.00") - rated
    assert parse_amount(acc["reserved"]) == 0
    status = daemon.call("server.status")
    assert status["diameter"]["frontend"]["received"] >= 4
    assert status["diameter"]["cc_unrated"] == 0  # a CC-Time call: nothing refused
    shown = subprocess.run([str(BIN), "ctl", "--config", str(daemon.setup.config), "status"],
                           capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    assert "diameter" in shown.stdout and "peers_open=" in shown.stdout
    assert "cc_unrated=0" in shown.stdout


# -- the same scenarios through both frontends ------------------------------------

# (name, balance, [(step, cumulative usage)]); a step is start|interim|stop.
SCENARIOS: list[tuple[str, str, list[tuple[str, int]]]] = [
    ("normal", "10.00", [("start", 0), ("interim", 30), ("interim", 60), ("stop", 75)]),
    ("short", "10.00", [("start", 0), ("stop", 5)]),
    ("unanswered", "10.00", [("start", 0), ("stop", 0)]),
    ("no_money", "0.00", [("start", 0)]),
]


async def run_radius(daemon: Daemon, account: str, steps: list[tuple[str, int]]) -> bool:
    """The call through RADIUS; False when the Access-Request was rejected."""
    sock = await GatewaySocket.open()
    call = Call(f"cmp-{account}", account, called="0044" + UK[3:])
    setup = daemon.setup
    try:
        for step, usage_s in steps:
            if step == "start":
                reply = await sock.ask(call.access_request(), setup.auth_port)
                if reply.code != rc.ACCESS_ACCEPT:
                    return False
                status = rc.STATUS_START
            else:
                status = rc.STATUS_INTERIM if step == "interim" else rc.STATUS_STOP
            answer = await sock.ask(call.accounting(status, usage_s), setup.acct_port)
            assert answer.code == rc.ACCOUNTING_RESPONSE
        return True
    finally:
        sock.close()


async def run_diameter(daemon: Daemon, account: str, steps: list[tuple[str, int]]) -> bool:
    """The call through Diameter (CCR-I / U / T); False when CCR-I was refused."""
    client = await open_client(port_of(daemon))
    call = cl.Call(f"{PEER_HOST};cmp-{account}", calling="+4930111111", called=f"tel:{UK}",
                   user_name=account)  # fmt: skip
    reported = 0
    try:
        for number, (step, usage_s) in enumerate(steps):
            if step == "start":
                answer = await client.ccr(call, 1, number, requested_s=60)
                if answer.result != 2001:
                    assert answer.result == 4012  # CREDIT_LIMIT_REACHED
                    return False
                continue
            kind = 2 if step == "interim" else 3
            answer = await client.ccr(call, kind, number, used_s=usage_s - reported)
            reported = usage_s
            assert answer.result == 2001
        return True
    finally:
        await client.close()


def comparable(cdr: CDR) -> dict[str, Any]:
    """A CDR without what only names the protocol (source, ids, gateway, client)."""
    return {
        "status": cdr.status,
        "duration_s": cdr.duration_s,
        "billed_s": cdr.billed_s,
        "cost_micros": cdr.cost_micros,
        "charged_micros": cdr.charged_micros,
        "charge": cdr.charge,
        "currency": cdr.currency,
        "callee": cdr.callee,
        "caller": cdr.caller,
        "destination": cdr.destination,
        "tariff": cdr.tariff,
        "answered": cdr.answer_ms > 0,
    }


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s[0] for s in SCENARIOS])
async def test_same_call_through_radius_and_diameter_same_money_same_cdrs(
    daemon: Daemon, scenario: tuple[str, str, list[tuple[str, int]]]
) -> None:
    name, balance, steps = scenario
    outcome: dict[str, Any] = {}
    for proto, run in (("radius", run_radius), ("diameter", run_diameter)):
        account = f"{name}-{proto}"
        daemon.create_account(account, balance)
        accepted = await run(daemon, account, steps)
        ends = any(step == "stop" for step, _ in steps) and accepted
        cdrs = await wait_cdrs(daemon, account, 1) if ends else cdrs_of(daemon, account)
        acc = daemon.call("account.get", {"id": account})
        outcome[proto] = {
            "accepted": accepted,
            "money": (acc["balance"], acc["debits"], acc["reserved"]),
            "cdrs": [comparable(c) for c in cdrs],
            "sources": {c.source for c in cdrs},
        }
    radius, diameter = outcome["radius"], outcome["diameter"]
    assert radius["sources"] <= {"radius"} and diameter["sources"] <= {"diameter"}
    for key in ("accepted", "money", "cdrs"):
        assert radius[key] == diameter[key], (key, radius[key], diameter[key])
    last = steps[-1][1]
    if radius["accepted"] and steps[-1][0] == "stop":
        (cdr,) = radius["cdrs"]
        assert cdr["cost_micros"] == last * 10_000 and cdr["duration_s"] == last


@pytest.fixture(scope="module")
def daemon_with_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("diameter-workers")
    port = free_tcp_port()
    setup = write_setup(
        tmp,
        workers=2,
        extra=f"""
[diameter]
enabled = true
bind = "127.0.0.1"
port = {port}
request_timeout_s = 1.0

[[diameter.peers]]
name = "ims1"
origin_host = "{PEER_HOST}"
realm = "{PEER_REALM}"
addresses = ["127.0.0.1"]
""",
    )
    with serving(setup, tmp / "daemon.log") as d:
        d.diameter_port = port  # type: ignore[attr-defined]
        yield d


async def test_cuts_claimed_by_a_worker_reach_the_peer_as_asr(daemon_with_workers: Daemon) -> None:
    """With workers, any process may claim a deadline; the ASR still leaves on the
    main process's connection to the peer (relayed through Redis when needed)."""
    daemon = daemon_with_workers
    client = await open_client(port_of(daemon))
    calls = []
    try:
        for n in range(6):
            account = f"cut-w{n}"
            daemon.create_account(account, "0.03")  # 3 s at 0.01/s
            c = cl.Call(f"{PEER_HOST};wcut-{n}", called=f"tel:{UK}", user_name=account)
            answer = await client.ccr(c, 1, 0, requested_s=60)
            assert (answer.result, answer.granted, answer.fui) == (2001, 3, True)
            calls.append(c)
        wanted = {c.session_id for c in calls}

        def aborted() -> set[str]:
            # Two processes may both claim a deadline re-set by the cutter's own
            # re-check (sessions/cutter): a session can get a second ASR, harmless.
            return {m.get(263).text() for m in client.server_requests}  # type: ignore[union-attr]

        for _ in range(300):
            if aborted() >= wanted:
                break
            await asyncio.sleep(0.05)
        assert aborted() == wanted
        for c in calls:
            assert (await client.ccr(c, 3, 1, used_s=3)).result == 2001
    finally:
        await client.close()
    for n in range(6):
        (cdr,) = await wait_cdrs(daemon, f"cut-w{n}", 1)
        assert (cdr.status, cdr.cost_micros) == ("credit_cut", 30_000)
    status = daemon.call("server.status")
    print("diameter status:", status["diameter"])


async def test_operator_story_sip_subscriber_and_a_service_change_mid_call(
    daemon: Daemon,
) -> None:
    """The operator adds the subscriber as the IMS core shows it (upper-case scheme and
    host); the S-CSCF names it in another case; mid-call the service changes from RG 100
    to RG 200 (RG 100's last report in the CCR that asks quota for RG 200). The real
    daemon finds the account and charges both services' time: 30 + 20 + 25 + 15 s."""
    from chargingd.diameter import codec as dc
    from chargingd.diameter.dictionary import A

    made = daemon.create_account("erin", "10.00", identities=["user:SIP:Erin@Example.NET"])
    assert made["identities"] == ["user:Erin@example.net"]

    def mscc(rg: int, used_s: int | None = None, requested_s: int | None = None) -> bytes:
        parts = []
        if requested_s is not None:
            parts.append(dc.grouped(A.REQUESTED_SERVICE_UNIT, dc.u32(A.CC_TIME, requested_s)))
        if used_s is not None:
            parts.append(dc.grouped(A.USED_SERVICE_UNIT, dc.u32(A.CC_TIME, used_s)))
        return dc.grouped(A.MULTIPLE_SERVICES_CREDIT_CONTROL, *parts, dc.u32(A.RATING_GROUP, rg))

    client = await open_client(port_of(daemon))
    call = cl.Call(f"{PEER_HOST};svc-change", sip_uri="sip:Erin@EXAMPLE.NET;transport=tcp",
                   called=f"tel:{UK}", rating_group=None)  # fmt: skip
    steps = [
        (1, mscc(100, requested_s=60)),
        (2, mscc(100, used_s=30, requested_s=60)),
        (2, mscc(100, used_s=20) + mscc(200, requested_s=60)),
        (2, mscc(200, used_s=25, requested_s=60)),
        (3, mscc(200, used_s=15)),
    ]
    try:
        for number, (kind, extra) in enumerate(steps):
            assert (await client.ccr(call, kind, number, extra=extra)).result == 2001, number
    finally:
        await client.close()
    [cdr] = await wait_cdrs(daemon, "erin", 1)
    assert (cdr.duration_s, cdr.charged_micros) == (90, 90 * 10_000)
    account = daemon.call("account.get", {"id": "erin"})
    assert (account["debits"], account["reserved"]) == ("0.90", "0.00")
