"""Calls as an operator's phones make them, through real Kamailio, checked for one
story about money: for each account, what the ledger moved equals the sum of its
CDRs' charged_micros, each call has exactly one CDR, and its duration is what the
phones did.

The recommended Kamailio setup (credit_mode own_timer, cut_backend kamailio_jsonrpc;
test_kamailio_cut.py runs its cut paths): CANCEL while ringing, a far end that
declines, the callee hanging up, a BYE retransmitted, a BYE crossing a re-INVITE, an
operator kill crossing the caller's BYE, an account that runs out on a billing
increment, Kamailio restarted mid-call, a CANCEL while chargingd authorizes, two phones
with one Call-ID, and a call whose Stop is lost. Each call
lasts a few seconds: max_session_s = 4.
"""

from __future__ import annotations

import asyncio
import os
import signal
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
from radius_e2e_harness import MICROS_PER_S, TARIFF, Daemon, write_setup
from sipua import Answer, SipPhone

from chargingd.admin.rpc import NOT_FOUND, RpcError
from chargingd.billing.cdr import CDR
from chargingd.core.money import parse_amount

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason())),
]

SESSIONS = {
    "interim_interval_s": 10,
    "grant_margin_s": 0,
    "first_grant_s": 2,
    "max_grant_s": 10,
    "stale_factor": 2,
    "max_session_s": 4,
    "reaper_interval_s": 0.2,
    "reap_grace_s": 1,
}
# UK as radius_e2e_harness's TARIFF (0.01 a second, 1 s increments); DE the same rate
# billed in 3 s increments.
DE_PER_3S = "00492079460000"
TARIFF_3S = TARIFF.replace('UK = ["44"]', 'UK = ["44"]\nDE = ["49"]').replace(
    "[[profiles]]",
    """[rates.THREE]
connect_fee = "0"
rate = "0.60"
unit = "60s"
increment = "3s"

[[plans.FLAT.rates]]
destinations = ["DE"]
rate = "THREE"

[[profiles]]""",
)


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, kamailio_ports: KamailioPorts
) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("kamailio-calls")
    client = own_timer_client(kamailio_ports)
    setup = write_setup(tmp, extra=client, session_options=SESSIONS, tariff_text=TARIFF_3S)
    with running_daemon(setup, tmp / "daemon.log") as d:
        yield d


async def settled(daemon: Daemon, account_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """The account once no call holds money any more (polled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        acc = account(daemon, account_id)
        if (acc["live_sessions"], acc["reserved"]) == (0, "0.00") or loop.time() > deadline:
            return acc
        await asyncio.sleep(0.05)


async def one_story(daemon: Daemon, account_id: str, initial: str, call_id: str) -> CDR:
    """The call's only CDR, once the account's balance moved by exactly its charge."""
    acc = await settled(daemon, account_id)
    assert (acc["reserved"], acc["live_sessions"]) == ("0.00", 0), acc
    # The CDR is written in the round trip after the Stop's ledger script (that order
    # is the design's: docs/credit-control.md), so a look right after the account
    # settled may come before it: polled, as the account is.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10.0
    cdrs = [c for c in daemon.cdrs() if c.account_id == account_id]
    while not cdrs and loop.time() < deadline:
        await asyncio.sleep(0.05)
        cdrs = [c for c in daemon.cdrs() if c.account_id == account_id]
    assert [(c.call_id, c.revision) for c in cdrs] == [(call_id, 0)], cdrs
    (cdr,) = cdrs
    assert parse_amount(initial) - parse_amount(acc["balance"]) == cdr.charged_micros, (acc, cdr)
    return cdr


async def test_cancel_while_ringing_is_one_unanswered_cdr_and_no_money(
    daemon: Daemon, switch: Switch
) -> None:
    daemon.create_account("kc-cancel", "0.50")
    switch.gateway.answer = lambda _invite: Answer(ring_s=5)
    dialog = await switch.caller.call(
        switch.kamailio.address, "00442079460000", from_user="kc-cancel"
    )
    await asyncio.sleep(0.5)
    cancelled = await switch.caller.cancel(dialog)
    assert cancelled is not None and cancelled.status == 200
    await asyncio.wait_for(dialog.finished.wait(), 5)
    assert dialog.final_status == 487
    cdr = await one_story(daemon, "kc-cancel", "0.50", dialog.call_id)
    assert (cdr.status, cdr.charged_micros, cdr.extra["sip_code"]) == ("unanswered", 0, "487")


async def test_a_cancel_while_chargingd_authorizes_releases_the_hold_at_once(
    daemon: Daemon, switch: Switch
) -> None:
    """The caller gives up while the Access-Request is answered slowly (chargingd
    paused for 0.9 s, under radcli's 2 s timeout): Kamailio's tm answers the CANCEL and
    the INVITE 487 itself, then gets the Accept. Before, nothing told chargingd: the
    call's Session-Timeout stayed held (up to max_session_s + reap_grace_s + the stale
    window: hours with the defaults, the caller refused "insufficient credit" meanwhile)
    and its CDR came from the reaper. The cfg now accounts it Failed 487."""
    daemon.create_account("kc-slow-cancel", "0.50")
    assert daemon.proc is not None
    os.kill(daemon.proc.pid, signal.SIGSTOP)
    try:
        dialog = await switch.caller.call(
            switch.kamailio.address, "00442079460000", from_user="kc-slow-cancel"
        )
        await asyncio.sleep(0.6)
        cancelled = await switch.caller.cancel(dialog)
        await asyncio.sleep(0.3)
    finally:
        os.kill(daemon.proc.pid, signal.SIGCONT)
    assert cancelled is not None and cancelled.status == 200
    await asyncio.wait_for(dialog.finished.wait(), 5)
    assert dialog.final_status == 487
    assert switch.gateway.received == []  # never relayed
    await wait_cdr(daemon, dialog.call_id)  # (the Accept comes after the 487)
    cdr = await one_story(daemon, "kc-slow-cancel", "0.50", dialog.call_id)
    assert (cdr.status, cdr.charged_micros, cdr.extra["sip_code"]) == ("unanswered", 0, "487")


async def test_a_declined_call_is_one_unanswered_cdr_and_no_money(
    daemon: Daemon, switch: Switch
) -> None:
    daemon.create_account("kc-603", "0.50")
    switch.gateway.answer = lambda _invite: Answer(603, "Decline", ring_s=0.3)
    dialog = await switch.call("kc-603")
    assert dialog.final_status == 603
    cdr = await one_story(daemon, "kc-603", "0.50", dialog.call_id)
    assert (cdr.status, cdr.charged_micros, cdr.extra["sip_code"]) == ("unanswered", 0, "603")


async def test_callee_hangs_up_and_its_bye_is_retransmitted(daemon: Daemon, switch: Switch) -> None:
    """The far end's BYE, then the same BYE three more times (its 200 lost): one Stop,
    one CDR, the talk charged once."""
    daemon.create_account("kc-callee", "0.50")
    dialog = await switch.call("kc-callee")
    assert dialog.final_status == 200
    await asyncio.sleep(1.2)
    far_end = switch.gateway.dialogs[dialog.call_id]
    bye = await switch.gateway.hangup(far_end)
    assert bye is not None and bye.status == 200
    for _ in range(3):
        switch.gateway.resend_bye(far_end)
        await asyncio.sleep(0.2)
    assert dialog.ended.is_set() and dialog.ended_by == "remote"
    talked_s = far_end.ended_at - far_end.answered_at
    cdr = await one_story(daemon, "kc-callee", "0.50", dialog.call_id)
    assert (cdr.status, cdr.extra["terminate_cause"]) == ("normal", "User-Request")
    assert round(talked_s) <= cdr.duration_s <= round(talked_s + 1.0), (cdr, talked_s)
    assert cdr.charged_micros == cdr.duration_s * MICROS_PER_S


async def test_a_bye_crossing_a_reinvite_ends_the_call_once(daemon: Daemon, switch: Switch) -> None:
    daemon.create_account("kc-reinvite", "0.50")
    dialog = await switch.call("kc-reinvite")
    assert dialog.final_status == 200
    await asyncio.sleep(0.6)
    refreshed = await switch.caller.reinvite(dialog)  # a session refresh
    assert refreshed is not None and refreshed.status == 200
    await asyncio.sleep(0.6)
    far_end = switch.gateway.dialogs[dialog.call_id]
    await asyncio.gather(switch.caller.reinvite(dialog), switch.gateway.hangup(far_end))
    talked_s = far_end.ended_at - far_end.answered_at
    cdr = await one_story(daemon, "kc-reinvite", "0.50", dialog.call_id)
    assert cdr.status == "normal"
    assert round(talked_s) <= cdr.duration_s <= round(talked_s + 1.0), (cdr, talked_s)
    assert cdr.charged_micros == cdr.duration_s * MICROS_PER_S


async def test_an_operator_kill_crossing_the_callers_bye_is_one_cdr(
    daemon: Daemon, switch: Switch
) -> None:
    daemon.create_account("kc-killbye", "0.50")
    dialog = await switch.call("kc-killbye")
    assert dialog.final_status == 200
    await asyncio.sleep(1.2)

    def kill() -> str:
        try:
            daemon.call("session.kill", {"id": dialog.call_id})
        except RpcError as exc:  # the BYE's Stop came first: nothing left to kill
            assert exc.code == NOT_FOUND, exc
            return "closed"
        return "killed"

    killed, _ = await asyncio.gather(asyncio.to_thread(kill), switch.caller.hangup(dialog))
    cdr = await one_story(daemon, "kc-killbye", "0.50", dialog.call_id)
    assert cdr.status in (("normal", "killed") if killed == "killed" else ("normal",)), cdr
    assert 1 <= cdr.duration_s <= 3 and cdr.charged_micros == cdr.duration_s * MICROS_PER_S


async def test_another_phones_call_with_a_live_calls_call_id_is_refused(
    daemon: Daemon, switch: Switch
) -> None:
    """Two phones, one Call-ID (a broken UA, or one that copies another's): chargingd
    knows a call by its Call-ID (Acct-Session-Id), so the second call is refused at
    Kamailio (403 Call-ID In Use) and the first is charged as it talked. Before, both
    were authorized: the first one's Stop closed the second account's call with the
    first one's usage (seen: 0.02 on the second account, for 2 s it never talked), the
    second one's Stop was never sent (Kamailio's Stop guard is per Call-ID), and the
    first account's call was reaped as never answered, 0.00; or, when its Start came
    first, renewed by the own timer until its whole balance was charged."""
    daemon.create_account("kc-dup-a", "0.50")
    daemon.create_account("kc-dup-b", "0.50")
    other = await SipPhone.open("other")
    try:
        first = await switch.call("kc-dup-a")
        assert first.final_status == 200
        second = await other.call(
            switch.kamailio.address, "00442079460000", from_user="kc-dup-b", call_id=first.call_id
        )
        await asyncio.wait_for(second.finished.wait(), 10)
        assert (second.final_status, second.final_reason) == (403, "Call-ID In Use")
        await asyncio.sleep(1.2)
        await switch.caller.hangup(first)
    finally:
        other.close()
    talked_s = first.ended_at - first.answered_at
    cdr = await one_story(daemon, "kc-dup-a", "0.50", first.call_id)
    assert cdr.status == "normal"
    assert round(talked_s) <= cdr.duration_s <= round(talked_s + 1.0), (cdr, talked_s)
    assert [c for c in daemon.cdrs() if c.account_id == "kc-dup-b"] == []
    acc_b = account(daemon, "kc-dup-b")
    assert (acc_b["balance"], acc_b["reserved"], acc_b["live_sessions"]) == ("0.50", "0.00", 0)


async def test_an_account_that_runs_out_on_an_increment_never_goes_below_zero(
    daemon: Daemon, switch: Switch
) -> None:
    """0.03 EUR on a destination billed in 3 s increments: Session-Timeout 3 s. The
    dialog timer (it counts from a whole-second answer time: up to a second early) or
    the own timer (JSON-RPC, Admin-Reset) ends the call near 3 s, reported 2, 3 or 4 s:
    billed 3 s, or 6 s a second late, which is within the cut tolerance: charged what
    was paid either way, the account at 0.00."""
    daemon.create_account("kc-boundary", "0.03")
    dialog = await switch.call("kc-boundary", DE_PER_3S)
    assert dialog.final_status == 200
    await asyncio.wait_for(dialog.ended.wait(), 8)
    assert dialog.ended_by == "remote"
    cdr = await one_story(daemon, "kc-boundary", "0.03", dialog.call_id)
    assert cdr.extra["terminate_cause"] in ("Session-Timeout", "Admin-Reset"), cdr
    assert cdr.status in ("normal", "credit_cut"), cdr
    assert cdr.duration_s in (2, 3, 4) and cdr.charged_micros == 3 * MICROS_PER_S, cdr
    assert account(daemon, "kc-boundary")["balance"] == "0.00"


async def test_a_bye_through_a_restarted_kamailio_charges_the_talk(
    daemon: Daemon, switch: Switch
) -> None:
    """Kamailio restarted mid-call forgets its dialogs (memory only): the phone's BYE
    still routes through it and is accounted, with no answer time to measure from. It
    is sent without Acct-Session-Time and charged Stop - Start Event-Timestamps
    (whole seconds). Before: Kamailio computed a duration from the missing answer time
    (1276237 s, overflowed), chargingd kept that Stop in cdr:orphans as invalid_usage,
    and the call stayed live, holding its money until the own timer and the reaper."""
    daemon.create_account("kc-restart", "0.50")
    dialog = await switch.call("kc-restart")
    assert dialog.final_status == 200
    await asyncio.sleep(1.0)
    switch.kamailio.stop()
    switch.kamailio.start()
    await asyncio.sleep(0.5)
    bye = await switch.caller.hangup(dialog)
    assert bye is not None and bye.status == 200
    talked_s = dialog.ended_at - dialog.answered_at
    cdr = await one_story(daemon, "kc-restart", "0.50", dialog.call_id)
    assert (cdr.status, cdr.extra["usage_from"]) == ("normal", "event_timestamps")
    assert int(talked_s) <= cdr.duration_s <= int(talked_s) + 2, (cdr, talked_s)
    assert cdr.charged_micros == cdr.duration_s * MICROS_PER_S
    with daemon.redis() as r:
        assert r.xlen("cdr:orphans") == 0


async def test_a_call_whose_stop_is_lost_is_cut_not_renewed_until_the_account_is_dry(
    daemon: Daemon, switch: Switch
) -> None:
    """Kamailio dies mid-call (no Stop, no BYE will ever come). The own timer renews
    once at the Session-Timeout (4 s: Kamailio's timer may be a second late), then
    cuts (unconfirmed: Kamailio is gone) and holds nothing more: at most 7 s (the 4 s,
    a 2 s grant, a second of the whole-second answer time); the reaper will charge it
    provisionally its 4 s Session-Timeout. Before, the own timer renewed it at every
    deadline until all 0.50 EUR were held, and the reaper charged all of it."""
    daemon.create_account("kc-lost", "0.50")
    dialog = await switch.call("kc-lost")
    assert dialog.final_status == 200
    await asyncio.sleep(0.3)
    switch.kamailio.stop()
    cut = f"cut of {dialog.call_id} (credit_cut) at 127.0.0.1 not confirmed (attempt 1"
    assert await asyncio.to_thread(daemon.wait_log, cut, 10.0)
    (live,) = [s for s in daemon.call("session.list")["sessions"] if s["account"] == "kc-lost"]
    assert live["paid_usage_s"] <= 7 and parse_amount(live["held"]) <= 7 * MICROS_PER_S, live
    await asyncio.sleep(1.0)  # the next deadlines: retries of the cut, never a renewal
    acc = account(daemon, "kc-lost")
    assert parse_amount(acc["reserved"]) <= 7 * MICROS_PER_S, acc
    assert acc["balance"] == "0.50"  # nothing charged yet: the reaper's (after 20 s)
