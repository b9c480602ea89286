"""End to end: RADIUS credit control in the real `chargingd serve` (a subprocess).

One daemon for the module (embedded Redis, RADIUS on free ports of 127.0.0.1, a flat
0.01/s tariff); every test uses its own account. The gateway is the test: codec-built
Access/Accounting-Requests from real UDP sockets, and a Disconnect/CoA listener on the
client's coa_port that answers ACK (radius_peer.TestGateway, pyrad).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from radius_e2e_harness import (
    BIN,
    MICROS_PER_S,
    SECRET,
    Call,
    Daemon,
    GatewaySocket,
    Setup,
    serving,
    write_setup,
)
from radius_peer import TestGateway, UdpPeer, wait_until

from chargingd.billing.cdr import CDR
from chargingd.core.money import parse_amount
from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("radius-e2e")
    setup = write_setup(tmp)
    with serving(setup, tmp / "daemon.log") as daemon:
        yield daemon


@pytest.fixture
def daemon(shared: Daemon) -> Iterator[Daemon]:
    yield shared
    print(f"---- daemon log ----\n{shared.log()}")  # shown only when the test fails


@pytest.fixture
async def gateway(daemon: Daemon) -> AsyncIterator[TestGateway]:
    peer = await UdpPeer.open("127.0.0.1", daemon.setup.coa_port)
    gw = TestGateway(peer, SECRET)
    yield gw
    await gw.close()


def ctl(setup: Setup, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), "ctl", "--config", str(setup.config), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def cdrs_of(daemon: Daemon, account_id: str) -> list[CDR]:
    return [c for c in daemon.cdrs() if c.account_id == account_id]


async def wait_cdrs(daemon: Daemon, account_id: str, count: int) -> list[CDR]:
    for _ in range(200):
        found = cdrs_of(daemon, account_id)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"{account_id}: expected {count} CDRs, have {cdrs_of(daemon, account_id)}")


async def start_call(daemon: Daemon, sock: GatewaySocket, call: Call) -> rc.Packet:
    """Access-Request (must be accepted) then Accounting Start."""
    accept = await sock.ask(call.access_request(), daemon.setup.auth_port)
    assert accept.code == rc.ACCESS_ACCEPT, accept
    answer = await sock.ask(call.accounting(rc.STATUS_START, 0), daemon.setup.acct_port)
    assert answer.code == rc.ACCOUNTING_RESPONSE
    return accept


async def test_call_authorize_interims_stop_one_cdr_exact_debit(daemon: Daemon) -> None:
    daemon.create_account("carol", "10.00")
    sock = await GatewaySocket.open()
    call = Call("e2e-carol-1", "carol")
    try:
        accept = await start_call(daemon, sock, call)
        # 10.00 at 0.01/s pays 1000 s (held + available, RFC 2865 §5.27 Session-Timeout).
        assert accept.integer(rc.SESSION_TIMEOUT) == 1000
        assert accept.cisco_value(rc.H323_CREDIT_TIME) == "1000"
        assert accept.cisco_value(rc.H323_RETURN_CODE) == "0"
        assert parse_amount(accept.cisco_value(rc.H323_CREDIT_AMOUNT)) == parse_amount("10.00")
        for usage_s in (30, 60):
            answer = await sock.ask(
                call.accounting(rc.STATUS_INTERIM, usage_s), daemon.setup.acct_port
            )
            assert answer.code == rc.ACCOUNTING_RESPONSE
        mid = daemon.call("account.get", {"id": "carol"})
        assert parse_amount(mid["debits"]) == 60 * MICROS_PER_S  # interims commit as they go
        answer = await sock.ask(call.accounting(rc.STATUS_STOP, 75), daemon.setup.acct_port)
        assert answer.code == rc.ACCOUNTING_RESPONSE
    finally:
        sock.close()
    (cdr,) = await wait_cdrs(daemon, "carol", 1)
    assert (cdr.call_id, cdr.status, cdr.duration_s, cdr.billed_s) == (
        "e2e-carol-1",
        "normal",
        75,
        75,
    )
    assert cdr.cost_micros == 75 * MICROS_PER_S
    assert cdr.callee == "+442079460000"
    acc = daemon.call("account.get", {"id": "carol"})
    assert parse_amount(acc["balance"]) == parse_amount("10.00") - cdr.cost_micros
    assert parse_amount(acc["debits"]) == cdr.cost_micros
    assert parse_amount(acc["reserved"]) == 0
    assert acc["live_sessions"] == 0
    status = daemon.call("server.status")
    local = status["radius"]["local"]  # this process's counters, live
    assert local["role"] == "main" and local["auth_port"] == daemon.setup.auth_port
    assert local["frontend"]["accepted"] >= 1 and local["frontend"]["accounted"] >= 4
    assert [p["pid"] for p in status["radius"]["processes"]] == [status["pid"]]


async def test_call_without_money_is_cut_by_disconnect_request(
    daemon: Daemon, gateway: TestGateway
) -> None:
    daemon.create_account("dave", "0.02")  # pays 2 seconds
    sock = await GatewaySocket.open()
    call = Call("e2e-dave-1", "dave")
    try:
        accept = await start_call(daemon, sock, call)
        assert accept.integer(rc.SESSION_TIMEOUT) == 2
        await wait_until(lambda: len(gateway.requests) >= 1, timeout_s=10.0)
        (request,) = gateway.requests
        assert request.code == rc.DISCONNECT_REQUEST
        assert request["Acct-Session-Id"] == ["e2e-dave-1"]
        # The gateway acknowledged and hangs up: its Stop closes the call.
        answer = await sock.ask(call.accounting(rc.STATUS_STOP, 2), daemon.setup.acct_port)
        assert answer.code == rc.ACCOUNTING_RESPONSE
    finally:
        sock.close()
    (cdr,) = await wait_cdrs(daemon, "dave", 1)
    assert (cdr.status, cdr.cost_micros) == ("credit_cut", 2 * MICROS_PER_S)
    acc = daemon.call("account.get", {"id": "dave"})
    assert parse_amount(acc["balance"]) == 0 and parse_amount(acc["reserved"]) == 0


async def test_operator_kill_through_ctl_sends_disconnect(
    daemon: Daemon, gateway: TestGateway
) -> None:
    daemon.create_account("erin", "10.00")
    sock = await GatewaySocket.open()
    call = Call("e2e-erin-1", "erin")
    try:
        await start_call(daemon, sock, call)
        listed = await asyncio.to_thread(
            ctl, daemon.setup, "--json", "session", "list", "--account", "erin"
        )
        assert listed.returncode == 0, listed.stderr
        assert '"session_id": "e2e-erin-1"' in listed.stdout
        assert not gateway.requests
        # ctl blocks until the gateway answered: run it off the loop the gateway runs on.
        killed = await asyncio.to_thread(ctl, daemon.setup, "session", "kill", "e2e-erin-1")
        assert killed.returncode == 0, killed.stderr
        assert "disconnected" in killed.stdout
        (request,) = gateway.requests
        assert request.code == rc.DISCONNECT_REQUEST
        assert request["Acct-Session-Id"] == ["e2e-erin-1"]
        answer = await sock.ask(call.accounting(rc.STATUS_STOP, 12), daemon.setup.acct_port)
        assert answer.code == rc.ACCOUNTING_RESPONSE
    finally:
        sock.close()
    (cdr,) = await wait_cdrs(daemon, "erin", 1)
    assert (cdr.status, cdr.cost_micros) == ("killed", 12 * MICROS_PER_S)
    unknown = await asyncio.to_thread(ctl, daemon.setup, "session", "kill", "no-such-call")
    assert unknown.returncode == 1
    assert "no live session" in unknown.stderr
    # A mistyped account listed no live calls with exit 0, as if it had none.
    nobody = await asyncio.to_thread(ctl, daemon.setup, "session", "list", "--account", "erni")
    assert (nobody.returncode, nobody.stdout) == (1, "")
    assert "no account 'erni'" in nobody.stderr


async def test_suspending_an_account_cuts_its_live_calls(
    daemon: Daemon, gateway: TestGateway
) -> None:
    daemon.create_account("frank", "10.00")
    socks = [await GatewaySocket.open() for _ in range(2)]
    calls = [Call(f"e2e-frank-{i}", "frank") for i in range(2)]
    try:
        for sock, call in zip(socks, calls, strict=True):
            await start_call(daemon, sock, call)
        listed = await asyncio.to_thread(daemon.call, "session.list", {"account": "frank"})
        assert sorted(s["session_id"] for s in listed["sessions"]) == ["e2e-frank-0", "e2e-frank-1"]
        done = await asyncio.to_thread(ctl, daemon.setup, "account", "suspend", "frank")
        assert done.returncode == 0, done.stderr

        # Only frank's: a module that runs the silent-gateway test earlier (the cluster
        # e2e imports these tests in name order) still has its retries in flight here.
        def franks() -> list[str]:
            ids = (r["Acct-Session-Id"][0] for r in gateway.requests)
            return sorted(i for i in ids if i.startswith("e2e-frank-"))

        await wait_until(lambda: len(franks()) >= 2, timeout_s=5.0)
        assert franks() == ["e2e-frank-0", "e2e-frank-1"]
        for sock, call in zip(socks, calls, strict=True):
            await sock.ask(call.accounting(rc.STATUS_STOP, 5), daemon.setup.acct_port)
        # A suspended account gets no new call.
        refused = await socks[0].ask(
            Call("e2e-frank-2", "frank").access_request(), daemon.setup.auth_port
        )
        assert refused.code == rc.ACCESS_REJECT
    finally:
        for sock in socks:
            sock.close()
    cdrs = await wait_cdrs(daemon, "frank", 2)
    assert sorted(c.status for c in cdrs) == ["killed", "killed"]
    acc = daemon.call("account.get", {"id": "frank"})
    assert parse_amount(acc["debits"]) == 10 * MICROS_PER_S


async def test_topup_moves_the_deadline_of_a_limited_call(
    daemon: Daemon, gateway: TestGateway
) -> None:
    daemon.create_account("gina", "0.03")
    sock = await GatewaySocket.open()
    call = Call("e2e-gina-1", "gina")
    try:
        await start_call(daemon, sock, call)
        topped: Any = await asyncio.to_thread(
            daemon.call, "account.topup", {"id": "gina", "amount": "10.00", "txn_id": "t-gina"}
        )
        assert parse_amount(topped["balance"]) == parse_amount("10.03")
        # on_topup: the deadline moved and the gateway hears the new Session-Timeout
        # (CoA-Request, RFC 5176 §3.2) well before the old 3 s deadline.
        await wait_until(lambda: len(gateway.requests) >= 1, timeout_s=2.0)
        (coa,) = gateway.requests
        assert coa.code == rc.COA_REQUEST
        assert coa["Session-Timeout"][0] > 900
        await asyncio.sleep(3.5)  # past the old deadline: no cut
        assert [r.code for r in gateway.requests] == [rc.COA_REQUEST]
        await sock.ask(call.accounting(rc.STATUS_STOP, 4), daemon.setup.acct_port)
    finally:
        sock.close()
    (cdr,) = await wait_cdrs(daemon, "gina", 1)
    assert (cdr.status, cdr.cost_micros) == ("normal", 4 * MICROS_PER_S)


async def test_silent_gateway_does_not_hold_up_the_admin_socket(
    daemon: Daemon, gateway: TestGateway
) -> None:
    """Suspend answers at once while the Disconnect-Request waits for the gateway;
    session.kill answers within its bound with disconnected = false.
    (Last of the shared-daemon tests: late retransmissions reach no other test.)"""
    gateway.mode = "silent"
    daemon.create_account("hank", "10.00")
    daemon.create_account("ivan", "10.00")
    socks = [await GatewaySocket.open() for _ in range(2)]
    calls = [Call("e2e-hank-1", "hank"), Call("e2e-ivan-1", "ivan")]
    try:
        for sock, call in zip(socks, calls, strict=True):
            await start_call(daemon, sock, call)
        started = time.monotonic()
        await asyncio.to_thread(daemon.call, "account.suspend", {"id": "hank"})
        assert time.monotonic() - started < 0.5  # the coa timeout alone is 0.5 s
        await wait_until(lambda: len(gateway.requests) >= 1, timeout_s=2.0)
        started = time.monotonic()
        answer = await asyncio.to_thread(daemon.call, "session.kill", {"id": "e2e-ivan-1"})
        assert answer == {"session_id": "e2e-ivan-1", "disconnected": False}
        assert time.monotonic() - started < 6.0
        ids = {r["Acct-Session-Id"][0] for r in gateway.requests}
        assert ids == {"e2e-hank-1", "e2e-ivan-1"}
        for sock, call in zip(socks, calls, strict=True):
            await sock.ask(call.accounting(rc.STATUS_STOP, 3), daemon.setup.acct_port)
    finally:
        for sock in socks:
            sock.close()
    assert sorted(c.status for c in await wait_cdrs(daemon, "hank", 1)) == ["killed"]
    assert sorted(c.status for c in await wait_cdrs(daemon, "ivan", 1)) == ["killed"]


def test_serve_stops_cleanly_with_radius(tmp_path: Path) -> None:
    setup = write_setup(tmp_path)
    daemon = Daemon(setup, tmp_path / "d.log")
    daemon.start()
    try:
        daemon.wait_ready()
        assert daemon.terminate() == 0
        log = daemon.log()
        assert f"RADIUS auth on 127.0.0.1:{setup.auth_port}" in log
        assert "chargingd stopped" in log
    finally:
        daemon.kill()
        print(daemon.log())


def test_radius_disabled_serves_no_sessions(tmp_path: Path) -> None:
    setup = write_setup(tmp_path, radius=False)
    daemon = Daemon(setup, tmp_path / "d.log")
    daemon.start()
    try:
        status = daemon.wait_ready()
        assert "radius" not in status and "workers" not in status
        listed = ctl(setup, "session", "list")
        assert listed.returncode == 1
        assert "[radius] enabled = false" in listed.stderr
        assert "RADIUS auth" not in daemon.log()
    finally:
        daemon.kill()
        print(daemon.log())
