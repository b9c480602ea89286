"""Short numbers and PBX extensions over RADIUS, through the real daemon: a gateway in
Germany (`[sessions] default_country = "DE"`) sends the digits as dialled, `4711` (an
extension), `112` (emergency), `0471 123456` (a Bremerhaven number). The daemon reads
them as +494711, +49112, +49471123456; the tariff names the extension as a whole
number (`[numbers]`), matched exactly, so the extension is free and the real number
beginning with the same digits is still charged; 112 is free through a prefix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from radius_e2e_harness import Call, Daemon, GatewaySocket, serving, write_setup
from radius_peer import wait_until

from chargingd.billing.cdr import CDR
from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

TARIFF = """
[tariff]
id = "short"
currency = "EUR"
timezone = "UTC"
decimals = 4

[destinations]
DE = ["49"]
DE_EMERGENCY = ["49110", "49112"]

[numbers]
PBX = ["+494711", "+494712"]

[rates.NATIONAL]
rate = "0.60"
unit = "60s"
increment = "1s"

[rates.FREE]
rate = "0"
unit = "60s"
increment = "60s"

[plans.P]
[[plans.P.rates]]
destinations = ["DE"]
rate = "NATIONAL"
[[plans.P.rates]]
destinations = ["DE_EMERGENCY", "PBX"]
rate = "FREE"

[[profiles]]
subject = "*any"
plan = "P"
from = 2020-01-01T00:00:00Z
"""


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    setup = write_setup(tmp_path, tariff_text=TARIFF, session_options={"default_country": "DE"})
    with serving(setup, tmp_path / "daemon.log") as d:
        yield d


async def _call(daemon: Daemon, sock: GatewaySocket, call: Call, usage_s: int) -> rc.Packet:
    accept = await sock.ask(call.access_request(), daemon.setup.auth_port)
    assert accept.code == rc.ACCESS_ACCEPT, accept.text(rc.REPLY_MESSAGE)
    for status, used in ((rc.STATUS_START, 0), (rc.STATUS_STOP, usage_s)):
        answer = await sock.ask(call.accounting(status, used), daemon.setup.acct_port)
        assert answer.code == rc.ACCOUNTING_RESPONSE
    return accept


async def test_an_extension_is_rated_as_a_whole_number_apart_from_longer_real_numbers(
    daemon: Daemon,
) -> None:
    daemon.create_account("pbx", "1.00")  # 100 s at 0.01 EUR a second
    sock = await GatewaySocket.open()
    try:
        # The extension first: its rating must not be taken for the real number's.
        await _call(daemon, sock, Call("ext-1", "pbx", called="4711"), 30)
        real = await _call(daemon, sock, Call("real-1", "pbx", called="0471123456"), 30)
        assert real.integer(rc.SESSION_TIMEOUT) == 100
        await _call(daemon, sock, Call("sos-1", "pbx", called="112"), 30)
        await _call(daemon, sock, Call("ext-2", "pbx", called="4712"), 30)
    finally:
        sock.close()

    def cdrs() -> list[CDR]:
        return [c for c in daemon.cdrs() if c.account_id == "pbx"]

    await wait_until(lambda: len(cdrs()) == 4, timeout_s=10.0)
    got = {c.call_id: (c.callee, c.destination, c.cost_micros) for c in cdrs()}
    assert got == {
        "ext-1": ("+494711", "PBX", 0),
        "real-1": ("+49471123456", "DE", 300_000),
        "sos-1": ("+49112", "DE_EMERGENCY", 0),
        "ext-2": ("+494712", "PBX", 0),
    }
    acc = daemon.call("account.get", {"id": "pbx"})
    assert acc["balance"].startswith("0.70")
