"""End to end with a real switch: Kamailio 5.6 (radcli) in front of `chargingd serve`.

Two SIP phones (tests/sipua.py) call through the repository's own kamailio.cfg, the
one docs/kamailio.md documents: misc_radius authorizes each INVITE (Acct-Session-Id =
Call-ID), the dialog module enforces Session-Timeout, acc_radius accounts Start, Stop
and Failed. One daemon for the module, a fresh Kamailio and phones per test, an account
per test. The client is exempted from Message-Authenticator: radcli 1.2 (Debian 12)
never sends one (test_kamailio_message_authenticator.py shows what happens otherwise).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from kamailio_daemon import account, running_daemon, wait_cdr
from kamailio_harness import KamailioPorts, RpcError, Switch, missing_reason
from radius_e2e_harness import MICROS_PER_S, SECRET, Daemon, write_setup
from sipua import Answer

from chargingd.core.money import parse_amount

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason())),
]

KAMAILIO_CLIENT = """
flavour = "generic"
# radcli < 1.5 sends no Message-Authenticator (docs/kamailio.md).
require_message_authenticator = false
"""


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("kamailio-e2e")
    with running_daemon(write_setup(tmp, extra=KAMAILIO_CLIENT), tmp / "daemon.log") as d:
        yield d


async def test_normal_call_is_charged_exactly(daemon: Daemon, switch: Switch) -> None:
    daemon.create_account("kam-normal", "10.00")
    dialog = await switch.call("kam-normal")
    assert dialog.final_status == 200, dialog.final_reason
    await asyncio.sleep(2.3)  # the conversation
    bye = await switch.caller.hangup(dialog)
    assert bye is not None and bye.status == 200
    talked_s = dialog.ended_at - dialog.answered_at

    cdr = await wait_cdr(daemon, dialog.call_id)
    assert cdr.status == "normal"
    assert cdr.extra["terminate_cause"] == "User-Request"
    # Kamailio measures answer to BYE itself (kamailio.cfg, Acct-Session-Time rounded):
    # from the 200 it relayed to the BYE it received, so never less than the phone saw,
    # and more only by the relay delays of a loaded machine.
    assert round(talked_s) <= cdr.duration_s <= round(talked_s + 1.0), (cdr, talked_s)
    assert cdr.cost_micros == cdr.duration_s * MICROS_PER_S
    # Whole-second Event-Timestamps never put the answer before the start.
    assert cdr.start_ms <= cdr.answer_ms <= cdr.end_ms
    acc = account(daemon, "kam-normal")
    assert parse_amount(acc["balance"]) == 10_000_000 - cdr.cost_micros
    assert acc["reserved"] == "0.00" and acc["live_sessions"] == 0


async def test_unknown_caller_is_rejected_with_the_reason(daemon: Daemon, switch: Switch) -> None:
    dialog = await switch.call("kam-nobody")
    assert (dialog.final_status, dialog.final_reason) == (403, "unknown account")
    assert switch.gateway.dialogs == {}  # never reached the far end
    await asyncio.sleep(0.3)  # nothing may follow: no accounting for a refused call
    assert [c for c in daemon.cdrs() if c.call_id == dialog.call_id] == []
    sessions = daemon.call("session.list")["sessions"]
    assert all(s["session_id"] != dialog.call_id for s in sessions)


async def test_session_timeout_is_enforced_and_its_bye_accounted(
    daemon: Daemon, switch: Switch
) -> None:
    daemon.create_account("kam-timeout", "0.04")  # 4 s at 0.01/s
    dialog = await switch.call("kam-timeout")
    assert dialog.final_status == 200
    await asyncio.wait_for(dialog.ended.wait(), 15)
    # Kamailio's dialog timer ticks once a second: the BYE comes within about a second
    # of the granted 4 s, from Kamailio, to both phones (up to 2.5 s late on a machine
    # loaded by parallel suites: the timer process and the phones wait for a core; what
    # is charged is Kamailio's own Acct-Session-Time, checked on the CDR below).
    assert dialog.ended_by == "remote"
    assert 3.0 <= dialog.ended_at - dialog.answered_at <= 6.5
    far_end = switch.gateway.dialogs[dialog.call_id]
    try:
        await asyncio.wait_for(far_end.ended.wait(), 10)
    except TimeoutError:
        # Kamailio's own race, not chargingd's: under load its dialog timer's second BYE
        # can meet the first one's reply ("inconsistent dlg timer data"), and it then
        # refuses to send it ("terminating non-confirmed dialogs not supported"; seen once
        # in a clean-clone CI run, 2026-12-06). What chargingd is asked, the Stop with
        # Kamailio's own Session-Timeout cause, is checked below either way; any other
        # missing BYE fails here.
        if "terminating non-confirmed dialogs not supported" not in switch.kamailio.log():
            raise

    cdr = await wait_cdr(daemon, dialog.call_id)
    assert cdr.extra["terminate_cause"] == "Session-Timeout"  # the Stop Kamailio sent itself
    assert cdr.duration_s in (3, 4, 5)
    acc = account(daemon, "kam-timeout")
    assert acc["reserved"] == "0.00" and acc["live_sessions"] == 0


async def test_failed_call_releases_its_hold_at_once_and_the_redial_goes_through(
    daemon: Daemon, switch: Switch
) -> None:
    daemon.create_account("kam-busy", "0.50")  # less than a first grant: all of it held
    switch.gateway.answer = lambda _invite: Answer(486, "Busy Here")
    busy = await switch.call("kam-busy")
    assert (busy.final_status, busy.final_reason) == (486, "Busy Here")
    # acc_radius accounts it as Acct-Status-Type Failed (15), Sip-Response-Code 486.
    cdr = await wait_cdr(daemon, busy.call_id)
    assert (cdr.status, cdr.cost_micros, cdr.extra["sip_code"]) == ("unanswered", 0, "486")
    acc = account(daemon, "kam-busy")
    assert (acc["balance"], acc["reserved"], acc["live_sessions"]) == ("0.50", "0.00", 0)

    switch.gateway.answer = lambda _invite: Answer()
    redial = await switch.call("kam-busy")
    assert redial.final_status == 200, redial.final_reason
    await asyncio.sleep(1.2)
    await switch.caller.hangup(redial)
    assert (await wait_cdr(daemon, redial.call_id)).status == "normal"


async def test_stop_without_session_time_is_charged_from_the_event_timestamps(
    daemon: Daemon, tmp_path: Path, kamailio_ports: KamailioPorts
) -> None:
    """Kamailio as the issue's operator ran it: acc_radius events, no duration."""

    def events_only(cfg: str) -> str:
        assert "Acct-Session-Time=$avp(acc_time);" in cfg
        return cfg.replace("Acct-Session-Time=$avp(acc_time);", "")

    setup = daemon.setup
    switch = await Switch.open(
        tmp_path,
        auth_port=setup.auth_port,
        acct_port=setup.acct_port,
        secret=SECRET.decode(),
        edit_cfg=events_only,
        ports=kamailio_ports,
    )
    try:
        daemon.create_account("kam-events", "10.00")
        dialog = await switch.call("kam-events")
        assert dialog.final_status == 200
        await asyncio.sleep(2.3)
        await switch.caller.hangup(dialog)
        talked_s = dialog.ended_at - dialog.answered_at
        cdr = await wait_cdr(daemon, dialog.call_id)
    finally:
        switch.close()
        print(switch.report())
    assert cdr.status == "normal"
    assert cdr.extra["usage_from"] == "event_timestamps"
    # Start and Stop Event-Timestamps are whole seconds: within a second of the talk.
    assert int(talked_s) <= cdr.duration_s <= int(talked_s) + 2, (cdr, talked_s)
    assert cdr.cost_micros == cdr.duration_s * MICROS_PER_S
    acc = account(daemon, "kam-events")
    assert parse_amount(acc["balance"]) == 10_000_000 - cdr.cost_micros
    assert acc["reserved"] == "0.00"


async def test_bye_answered_481_still_ends_and_charges_the_call(
    daemon: Daemon, switch: Switch
) -> None:
    """The far end had already dropped the call: its 481 to the BYE is accounted as
    the Stop (Sip-Response-Code 481) of an answered call, charged for its talk."""
    daemon.create_account("kam-481", "10.00")
    switch.gateway.bye_answer = (481, "Call/Transaction Does Not Exist")
    dialog = await switch.call("kam-481")
    assert dialog.final_status == 200
    await asyncio.sleep(1.2)
    bye = await switch.caller.hangup(dialog)
    assert bye is not None and bye.status == 481
    cdr = await wait_cdr(daemon, dialog.call_id)
    assert (cdr.status, cdr.extra["sip_code"]) == ("normal", "481")
    assert cdr.duration_s >= 1 and cdr.cost_micros == cdr.duration_s * MICROS_PER_S
    assert account(daemon, "kam-481")["reserved"] == "0.00"


async def test_one_call_at_a_time_keeps_a_prepaid_account_behind_kamailio_whole(
    daemon: Daemon, switch: Switch
) -> None:
    """An account limited to one call (max_calls = 1) behind Kamailio: the second call
    is refused with the reason (the credit modes are test_kamailio_hold_all.py's and
    test_kamailio_cut.py's)."""
    daemon.create_account("kam-one", "0.20", max_calls=1)
    first = await switch.call("kam-one")
    assert first.final_status == 200
    second = await switch.call("kam-one")
    assert (second.final_status, second.final_reason) == (403, "too many calls")
    await asyncio.sleep(1.2)
    await switch.caller.hangup(first)
    assert (await wait_cdr(daemon, first.call_id)).status == "normal"
    assert account(daemon, "kam-one")["reserved"] == "0.00"


async def test_a_cut_over_json_rpc_ends_the_call_and_its_stop_is_accounted(
    daemon: Daemon, switch: Switch
) -> None:
    """The JSON-RPC calls the Kamailio cut backend relies on (test_kamailio_cut.py runs
    the backend itself): find the dialog by Call-ID, end it. Kamailio's BYEs pass no
    request route; the cfg accounts their Stop."""
    daemon.create_account("kam-rpc", "10.00")
    dialog = await switch.call("kam-rpc")
    assert dialog.final_status == 200
    await asyncio.sleep(1.2)
    (found,) = switch.kamailio.rpc("dlg.list_match", "callid", "eq", dialog.call_id)
    assert found["state"] == 4  # confirmed
    tags = (found["caller"]["tag"], found["callee"]["tag"])
    assert tags == (dialog.local_tag, dialog.remote_tag)
    assert switch.kamailio.rpc("dlg.terminate_dlg", dialog.call_id, *tags) == {}
    await asyncio.wait_for(dialog.ended.wait(), 10)
    assert dialog.ended_by == "remote"
    await asyncio.wait_for(switch.gateway.dialogs[dialog.call_id].ended.wait(), 10)

    cdr = await wait_cdr(daemon, dialog.call_id)
    assert (cdr.status, cdr.extra["terminate_cause"]) == ("normal", "Admin-Reset")
    assert cdr.duration_s >= 1 and cdr.cost_micros == cdr.duration_s * MICROS_PER_S
    assert account(daemon, "kam-rpc")["reserved"] == "0.00"
    # The dialog is gone: a second cut is refused, which a backend reads as "already ended".
    with pytest.raises(RpcError) as gone:
        switch.kamailio.rpc("dlg.terminate_dlg", dialog.call_id, *tags)
    assert gone.value.status == 500 and "find" in gone.value.message
