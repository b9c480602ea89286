"""A kill that could not be sent is never confirmed by the call's Stop (issue 10, item 5).

A gateway chargingd has no way to cut (`coa_port = 0`, no cut backend: the
`hold_all` Kamailio of docs/kamailio.md, many SBCs), or a Kamailio cut backend whose
JSON-RPC listener does not answer, gets nothing from `session kill`: the call runs on.
Its Stop, a second or two later (the caller hung up), used to be read as "ended at the
cut" (the cut attempts' times counted as if something had gone out): the CDR said
`killed`, `cut_confirmed = 1`, for a call nobody cut. Only an attempt that sent
something (a Disconnect-Request, Kamailio's `dlg.end_dlg`) can be confirmed by a Stop.
"""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import pytest
from kamailio_harness import free_port
from radius_e2e_harness import Call, Daemon, GatewaySocket, serving, write_setup

from chargingd.billing.cdr import CDR
from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]


async def _kill_then_hang_up(daemon: Daemon, session_id: str) -> CDR:
    """A call answered now, killed after 1 s (nothing can reach its gateway), hung up
    by its caller 1 s after the kill: its one CDR."""
    daemon.create_account(f"acc-{session_id}", "5.00")
    setup = daemon.setup
    call = Call(session_id, f"acc-{session_id}")
    gw = await GatewaySocket.open()
    try:
        accept = await gw.ask(call.access_request(), setup.auth_port)
        assert accept.code == rc.ACCESS_ACCEPT
        await gw.ask(call.accounting(rc.STATUS_START, 0), setup.acct_port)
        answered = time.monotonic()
        await asyncio.sleep(1.0)
        answer = await asyncio.to_thread(daemon.call, "session.kill", {"id": session_id})
        assert answer["disconnected"] is False  # nothing confirmed it: the call runs on
        await asyncio.sleep(1.0)
        usage_s = math.ceil(time.monotonic() - answered)  # to the second it hung up
        await gw.ask(call.accounting(rc.STATUS_STOP, usage_s), setup.acct_port)
    finally:
        gw.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = [c for c in daemon.cdrs() if c.call_id == session_id]
        if found:
            assert len(found) == 1, found
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no CDR for {session_id}")


def _assert_not_killed(cdr: CDR, daemon: Daemon) -> None:
    assert cdr.status == "normal", cdr
    assert (cdr.extra["cut_reason"], cdr.extra["cut_confirmed"]) == ("killed", "0")
    assert cdr.charged_micros == cdr.cost_micros > 0  # it ran: charged what it ran
    acc = daemon.call("account.get", {"id": cdr.account_id})
    assert (acc["reserved"], acc["live_sessions"]) == ("0.00", 0)


async def test_a_kill_with_no_route_to_the_gateway_is_not_confirmed_by_the_stop(
    tmp_path: Path,
) -> None:
    setup = write_setup(tmp_path, extra='credit_mode = "hold_all"\n')
    text = setup.config.read_text()
    setup.config.write_text(text.replace(f"coa_port = {setup.coa_port}\n", "coa_port = 0\n"))
    with serving(setup, tmp_path / "daemon.log") as daemon:
        cdr = await _kill_then_hang_up(daemon, "no-route-1")
        _assert_not_killed(cdr, daemon)
        assert "no Disconnect/CoA route to client 'gw'" in daemon.log()


async def test_a_kill_kamailio_never_heard_is_not_confirmed_by_the_stop(
    tmp_path: Path,
) -> None:
    # Kamailio's JSON-RPC listener is down (nothing listens on the port): the look-up
    # (dlg.list_match) fails, dlg.end_dlg never goes out. One attempt, so the Stop
    # comes after it is over.
    setup = write_setup(
        tmp_path,
        extra=(
            'credit_mode = "own_timer"\ncut_backend = "kamailio_jsonrpc"\n'
            f'jsonrpc_url = "http://127.0.0.1:{free_port()}/RPC"\n'
        ),
        session_options={"disconnect_retries": 1},
        radius_options={"coa_timeout_s": 0.2, "coa_retries": 1},
    )
    with serving(setup, tmp_path / "daemon.log") as daemon:
        cdr = await _kill_then_hang_up(daemon, "rpc-down-1")
        _assert_not_killed(cdr, daemon)
        assert "did not answer" in daemon.log()
