"""Kamailio cut by chargingd: credit_mode own_timer and cut_backend kamailio_jsonrpc.

Real Kamailio 5.6 (the repository's kamailio.cfg), real SIP phones (tests/sipua.py),
`chargingd serve`. Kamailio sends no Interim: chargingd renews each call's grant on
its own timer and, when the money runs out, ends the call through Kamailio's
JSON-RPC (dlg.list_match + dlg.end_dlg); Kamailio's BYEs are accounted as the Stop
(Acct-Terminate-Cause Admin-Reset). Short grants keep every call a few seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from kamailio_daemon import account, running_daemon, switch_in_front, wait_cdr, with_log
from kamailio_harness import KamailioPorts, Switch, missing_reason
from radius_e2e_harness import MICROS_PER_S, Daemon, write_setup

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason())),
]

# Grants of 2 s renewed on chargingd's timer; Kamailio's own Session-Timeout stays
# the backstop (what all the money available at authorize pays for).
SESSIONS = {
    "interim_interval_s": 10,
    "grant_margin_s": 0,
    "first_grant_s": 2,
    "max_grant_s": 10,
    "stale_factor": 2,
}


@pytest.fixture(scope="module")
def kamailio_ports() -> KamailioPorts:
    return KamailioPorts.reserve()


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, kamailio_ports: KamailioPorts
) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("kamailio-cut")
    client = f"""
flavour = "generic"
require_message_authenticator = false
credit_mode = "own_timer"
cut_backend = "kamailio_jsonrpc"
jsonrpc_url = "{kamailio_ports.rpc_url}"
"""
    setup = write_setup(tmp, extra=client, session_options=SESSIONS)
    with running_daemon(setup, tmp / "daemon.log") as d:
        yield d


@pytest.fixture
def daemon(shared: Daemon) -> Iterator[Daemon]:
    yield from with_log(shared)


@pytest.fixture
async def switch(
    daemon: Daemon, tmp_path: Path, kamailio_ports: KamailioPorts
) -> AsyncIterator[Switch]:
    async with switch_in_front(daemon, tmp_path, kamailio_ports) as sw:
        yield sw


def rpc_counters(daemon: Daemon) -> dict[str, Any]:
    status = daemon.call("server.status")
    found = _find(status, "kamailio_rpc")
    assert found is not None, status
    return found


def _find(tree: Any, key: str) -> Any:
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        tree = list(tree.values())
    if isinstance(tree, list):
        for item in tree:
            found = _find(item, key)
            if found is not None:
                return found
    return None


async def test_concurrent_calls_are_cut_at_their_paid_second_through_kamailio(
    daemon: Daemon, switch: Switch
) -> None:
    """Two calls of one prepaid account, 0.10 EUR between them: Kamailio is told
    Session-Timeouts from the same money (10 s and 8 s), chargingd's timer shares
    the money out and cuts each call over JSON-RPC where its share ends: 0.00."""
    daemon.create_account("kam-cut", "0.10")  # 10 s at 0.01/s
    calls = await asyncio.gather(switch.call("kam-cut"), switch.call("kam-cut"))
    assert [c.final_status for c in calls] == [200, 200]
    await asyncio.wait_for(asyncio.gather(*(c.ended.wait() for c in calls)), 15)
    assert [c.ended_by for c in calls] == ["remote", "remote"]  # Kamailio's BYEs
    talked = [c.ended_at - c.answered_at for c in calls]
    assert sum(talked) <= 10 + 2 * 1.5, talked  # well before either Session-Timeout

    cdrs = [await wait_cdr(daemon, c.call_id) for c in calls]
    for cdr in cdrs:
        assert cdr.status == "credit_cut", cdr
        assert cdr.extra["cut_confirmed"] == "1"
        assert cdr.extra["terminate_cause"] == "Admin-Reset"  # ended over JSON-RPC
    # Each cut at its paid second (or within the cut tolerance past it): all the money
    # and not a micro more.
    assert sum(c.charged_micros for c in cdrs) == 10 * MICROS_PER_S
    assert all(c.cost_micros >= c.charged_micros for c in cdrs)
    acc = account(daemon, "kam-cut")
    assert (acc["balance"], acc["reserved"], acc["live_sessions"]) == ("0.00", "0.00", 0)
    # The Stop of a cut call can reach chargingd before Kamailio's answer to the
    # end_dlg that caused it: the counter follows within moments.
    for _ in range(50):
        counters = rpc_counters(daemon)
        if counters["ended"] >= 2:
            break
        await asyncio.sleep(0.1)
    assert counters["ended"] >= 2 and counters["errors"] == 0, counters


async def test_an_operator_kill_goes_through_kamailio_and_is_confirmed(
    daemon: Daemon, switch: Switch
) -> None:
    daemon.create_account("kam-kill", "10.00")
    dialog = await switch.call("kam-kill")
    assert dialog.final_status == 200
    await asyncio.sleep(1.2)
    answer = await asyncio.to_thread(daemon.call, "session.kill", {"id": dialog.call_id})
    assert answer["disconnected"] is True
    await asyncio.wait_for(dialog.ended.wait(), 5)
    assert dialog.ended_by == "remote"
    cdr = await wait_cdr(daemon, dialog.call_id)
    assert (cdr.status, cdr.extra["cut_confirmed"]) == ("killed", "1")
    assert cdr.extra["terminate_cause"] == "Admin-Reset"
    assert cdr.duration_s >= 1 and cdr.charged_micros == cdr.duration_s * MICROS_PER_S
    assert account(daemon, "kam-kill")["reserved"] == "0.00"
