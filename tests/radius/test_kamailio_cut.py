"""Kamailio cut by chargingd: credit_mode own_timer and cut_backend kamailio_jsonrpc.

Real Kamailio 5.6 (the repository's kamailio.cfg), real SIP phones (tests/sipua.py),
`chargingd serve`. Kamailio sends no Interim and cannot be told a new Session-Timeout:
the money behind each call's Session-Timeout is held at authorize (never told to two
calls), chargingd's own timer re-checks at its end, and kills end the call through
Kamailio's JSON-RPC (dlg.list_match + dlg.end_dlg); Kamailio's BYEs are accounted as
the Stop (Acct-Terminate-Cause Admin-Reset). A short max_session_s keeps every call a
few seconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from kamailio_daemon import (
    account,
    own_timer_client,
    running_daemon,
    wait_cdr,
)
from kamailio_harness import KamailioPorts, Switch, missing_reason
from radius_e2e_harness import MICROS_PER_S, Daemon, write_setup

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason())),
]

# Session-Timeouts of at most 10 s, each held whole at authorize.
SESSIONS = {
    "interim_interval_s": 10,
    "grant_margin_s": 0,
    "first_grant_s": 2,
    "max_grant_s": 10,
    "stale_factor": 2,
    "max_session_s": 10,
}


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, kamailio_ports: KamailioPorts
) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("kamailio-cut")
    client = own_timer_client(kamailio_ports)
    setup = write_setup(tmp, extra=client, session_options=SESSIONS)
    with running_daemon(setup, tmp / "daemon.log") as d:
        yield d


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


async def test_concurrent_calls_are_told_only_their_own_money_and_end_within_it(
    daemon: Daemon, switch: Switch
) -> None:
    """Three calls of one prepaid account placed at once, 0.15 EUR: Kamailio is told
    Session-Timeouts from money no other call was told (10 s, the longest, and the
    5 s left; the third refused). Each ends there (Kamailio's dialog timeout, or
    chargingd's timer over JSON-RPC a moment after): all the money, 0.00, no debt."""
    daemon.create_account("kam-cut", "0.15")  # 15 s at 0.01/s
    calls = await asyncio.gather(*(switch.call("kam-cut") for _ in range(3)))
    assert sorted(c.final_status for c in calls) == [200, 200, 403]
    answered = [c for c in calls if c.final_status == 200]
    await asyncio.wait_for(asyncio.gather(*(c.ended.wait() for c in answered)), 20)
    assert [c.ended_by for c in answered] == ["remote", "remote"]  # Kamailio's BYEs
    talked = sorted(c.ended_at - c.answered_at for c in answered)
    assert talked[0] <= 5 + 1.5 and talked[1] <= 10 + 1.5, talked

    cdrs = [await wait_cdr(daemon, c.call_id) for c in answered]
    for cdr in cdrs:
        assert cdr.status in ("normal", "credit_cut"), cdr
        assert cdr.charge_reason in ("", "cut_tolerance"), cdr
    assert sum(c.charged_micros for c in cdrs) == 15 * MICROS_PER_S
    acc = account(daemon, "kam-cut")
    assert (acc["balance"], acc["reserved"], acc["live_sessions"]) == ("0.00", "0.00", 0)


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
    assert rpc_counters(daemon)["ended"] >= 1
