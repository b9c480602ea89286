"""A cut sent while Kamailio is stalled (SIGSTOP of its processes): the CDR says the
cut's cause once Kamailio, resumed, ends the call.

The Kamailio cut backend (radius/kamailio_rpc.py) retries its JSON-RPC requests
within one cut attempt (`[radius] coa_timeout_s`, doubling, `coa_retries` times: 18 s
with the defaults). Kamailio answers the request in flight when it resumes, ends the
dialog and accounts the Stop (its `tm:local-request` route) before the RPC's answer
reaches chargingd, so the Stop is closed while the cut is not confirmed yet: it was
read as "ended at the cut" only when it ended within `cut_tolerance_s` + 1 of the cut
attempt's start. A stall of more than ~3 s (the tolerance, 2 s, + 1) made a kill's CDR
`normal` (money right, label wrong).

Its own daemon: coa_timeout_s 0.5 and coa_retries 3 (one attempt lasts ~10 s, the
stall ends within it, as it does with the default 1.0 s and 3 retries).
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest
from kamailio_daemon import account, own_timer_client, running_daemon, wait_cdr
from kamailio_harness import KamailioPorts, Switch, missing_reason
from radius_e2e_harness import MICROS_PER_S, Daemon, write_setup

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason())),
]

SESSIONS = {"interim_interval_s": 10, "max_session_s": 60}
STALL_S = 4.0


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, kamailio_ports: KamailioPorts
) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("kamailio-stall")
    client = own_timer_client(kamailio_ports)
    setup = write_setup(
        tmp,
        extra=client,
        session_options=SESSIONS,
        radius_options={"coa_timeout_s": 0.5, "coa_retries": 3},
    )
    with running_daemon(setup, tmp / "daemon.log") as d:
        yield d


async def test_a_kill_during_a_kamailio_stall_is_labelled_killed(
    daemon: Daemon, switch: Switch
) -> None:
    daemon.create_account("kam-stall", "10.00")
    dialog = await switch.call("kam-stall")
    assert dialog.final_status == 200
    await asyncio.sleep(1.2)
    kamailio = switch.kamailio.proc
    assert kamailio is not None
    os.killpg(kamailio.pid, signal.SIGSTOP)  # every Kamailio process: RPC, SIP, timer
    try:
        kill = asyncio.create_task(
            asyncio.to_thread(daemon.call, "session.kill", {"id": dialog.call_id})
        )
        await asyncio.sleep(STALL_S)
    finally:
        os.killpg(kamailio.pid, signal.SIGCONT)
    answer = await asyncio.wait_for(kill, 10)
    assert answer["disconnected"] is True  # the attempt in flight got through
    await asyncio.wait_for(dialog.ended.wait(), 5)
    assert dialog.ended_by == "remote"  # Kamailio's BYE
    cdr = await wait_cdr(daemon, dialog.call_id)
    assert cdr.extra["terminate_cause"] == "Admin-Reset", cdr
    assert (cdr.status, cdr.extra["cut_confirmed"]) == ("killed", "1"), cdr
    # money as before: what the call talked, nothing held
    assert cdr.duration_s >= 1 + STALL_S - 1, cdr
    assert cdr.charged_micros == cdr.duration_s * MICROS_PER_S, cdr
    assert account(daemon, "kam-stall")["reserved"] == "0.00"
