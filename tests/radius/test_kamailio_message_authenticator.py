"""Kamailio's radcli (< 1.5) sends no Message-Authenticator: what an operator sees.

chargingd requires Message-Authenticator on Access-Request by default (RFC 3579 §3.2,
BlastRADIUS) and drops a request without one, unanswered. Kamailio then answers the
caller 503 after radcli's timeouts. The drop must be findable: a rate-limited warning
that names the client and the option, and the count in plain `chargingd ctl status`.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kamailio_harness import Switch, missing_reason
from radius_e2e_harness import BIN, SECRET, Daemon, serving, write_setup

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(missing_reason() is not None, reason=str(missing_reason())),
]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    # The default: [radius] require_message_authenticator = true, no client override.
    with serving(
        write_setup(tmp_path, extra='flavour = "generic"\n'), tmp_path / "daemon.log"
    ) as d:
        yield d


@pytest.fixture
async def switch(daemon: Daemon, tmp_path: Path) -> AsyncIterator[Switch]:
    setup = daemon.setup
    sw = await Switch.open(
        tmp_path,
        auth_port=setup.auth_port,
        acct_port=setup.acct_port,
        secret=SECRET.decode(),
        radius_timeout_s=1,
    )
    try:
        yield sw
    finally:
        sw.close()
        print(sw.report())


def drop_warnings(daemon: Daemon) -> list[str]:
    return [line for line in daemon.log().splitlines() if "without Message-Authenticator" in line]


async def test_radcli_drop_is_logged_once_per_interval_and_shown_in_ctl_status(
    daemon: Daemon, switch: Switch
) -> None:
    daemon.create_account("kam-ma", "10.00")
    first = await switch.call("kam-ma")
    # No answer from chargingd: radcli gives up after its two tries, Kamailio says so.
    assert (first.final_status, first.final_reason) == (503, "Charging Unavailable")
    second = await switch.call("kam-ma")
    assert second.final_status == 503

    frontend = daemon.call("server.status")["radius"]["local"]["frontend"]
    assert frontend["missing_message_authenticator"] == 4  # 2 calls x 2 radcli tries
    assert frontend["accepted"] == 0
    warnings = drop_warnings(daemon)
    assert len(warnings) == 1, warnings  # rate-limited: one line for the four drops
    assert "client 'gw' (127.0.0.1)" in warnings[0]
    assert "require_message_authenticator = false" in warnings[0]

    status = subprocess.run(
        [str(BIN), "ctl", "--config", str(daemon.setup.config), "status"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "missing_message_authenticator=4 (client gw=4)" in status
    assert "require_message_authenticator = false" in status
