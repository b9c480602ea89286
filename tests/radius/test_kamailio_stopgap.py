"""Kamailio sends no Interim-Update: the stopgap docs/kamailio.md gives until chargingd
has a credit mode for such gateways.

With the default [sessions] interim_interval_s = 60, a call is reaped as stale after
stale_factor x 60 s = 3 min of silence (charged 0), and two concurrent calls get
Session-Timeouts from the same money. A daemon that serves only Kamailio can set
interim_interval_s = 3600 (and max_grant_s = 10800): the first grant (interim + margin)
then holds all the money a call may use, so a second call cannot be promised it, and
the stale window (3 h) covers max_session_s.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kamailio_harness import Switch, missing_reason
from radius_e2e_harness import SECRET, Daemon, write_setup

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason())),
]

KAMAILIO_CLIENT = 'flavour = "generic"\nrequire_message_authenticator = false\ncoa_port = 0\n'


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    setup = write_setup(
        tmp_path, extra=KAMAILIO_CLIENT, sessions="interim_interval_s = 3600\nmax_grant_s = 10800"
    )
    # write_setup gives the client a coa_port of its own: Kamailio has none.
    setup.config.write_text(setup.config.read_text().replace(f"coa_port = {setup.coa_port}\n", ""))
    d = Daemon(setup, tmp_path / "daemon.log")
    d.start()
    try:
        d.wait_ready()
        yield d
    finally:
        d.kill()
        print(f"---- daemon log ----\n{d.log()}")


@pytest.fixture
async def switch(daemon: Daemon, tmp_path: Path) -> AsyncIterator[Switch]:
    setup = daemon.setup
    sw = await Switch.open(
        tmp_path, auth_port=setup.auth_port, acct_port=setup.acct_port, secret=SECRET.decode()
    )
    try:
        yield sw
    finally:
        sw.close()
        print(sw.report())


async def test_the_first_call_holds_all_it_may_use_so_a_second_is_not_promised_it(
    daemon: Daemon, switch: Switch
) -> None:
    daemon.create_account("kam-hold", "0.20")  # 20 s at 0.01/s
    first = await switch.call("kam-hold")
    assert first.final_status == 200
    acc = daemon.call("account.get", {"id": "kam-hold"})
    assert (acc["reserved"], acc["available"]) == ("0.20", "0.00")
    second = await switch.call("kam-hold")
    assert (second.final_status, second.final_reason) == (403, "insufficient credit")
    await asyncio.sleep(1.2)
    await switch.caller.hangup(first)
    for _ in range(100):
        acc = daemon.call("account.get", {"id": "kam-hold"})
        if acc["live_sessions"] == 0:
            break
        await asyncio.sleep(0.05)
    assert acc["reserved"] == "0.00" and acc["live_sessions"] == 0
    assert acc["balance"] in ("0.19", "0.18")  # 1 or 2 s, as Kamailio measured
