"""Dunning through the real daemon: an invoice overdue past its grace suspends the
postpaid account (its live call is cut by Disconnect-Request, a new call is refused
with the reason), and paying it (`ctl payment add`) reactivates the account.

`chargingd serve` runs as a subprocess with RADIUS on loopback, its dunning loop on,
and the session's PostgreSQL as its billing database; the invoice is issued by
`chargingd invoice run` and the operator acts with `chargingd ctl`, as in production.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from radius_e2e_harness import SECRET, Call, Daemon, GatewaySocket, Setup, cli, serving, write_setup
from radius_peer import TestGateway, UdpPeer, wait_until

from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _months_ago(n: int) -> str:
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 - n
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


@pytest.fixture
def daemon(tmp_path: Path, pg_url: str) -> Iterator[Daemon]:
    setup = write_setup(
        tmp_path,
        invoicing="\n".join(
            (
                "dunning_in_serve = true",
                "dunning_interval_s = 0.2",
                "payment_terms_days = 0",  # due when issued: overdue at once, grace 0
                "dunning_grace_days = 0",
                "settle_delay_s = 0",
                'default_vat_rate = "19"',
            )
        ),
        billing=f'db_url = "{pg_url}"',
    )
    with serving(setup, tmp_path / "daemon.log") as d:
        yield d


@pytest.fixture
async def gateway(daemon: Daemon) -> AsyncIterator[TestGateway]:
    peer = await UdpPeer.open("127.0.0.1", daemon.setup.coa_port)
    gw = TestGateway(peer, SECRET)
    yield gw
    await gw.close()


def cli_json(setup: Setup, *args: str) -> Any:
    done = cli(setup, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


async def test_overdue_suspends_cuts_and_payment_reactivates(
    daemon: Daemon, gateway: TestGateway
) -> None:
    setup = daemon.setup
    daemon.call(
        "account.create",
        {"id": "debtor", "mode": "postpaid", "currency": "EUR", "credit_limit": "500.00",
         "identities": ["user:debtor"]},
    )  # fmt: skip
    period = _months_ago(2)
    done = await asyncio.to_thread(
        cli, setup, "ctl", "--json", "charge", "add", "debtor", "50.00",
        "--description", "Setup fee", "--date", f"{period}-10", "--ref", "setup-debtor",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    sock = await GatewaySocket.open()
    live = Call("dun-1", "debtor")
    try:
        accept = await sock.ask(live.access_request(), setup.auth_port)
        assert accept.code == rc.ACCESS_ACCEPT
        await sock.ask(live.accounting(rc.STATUS_START, 0), setup.acct_port)
        run = await asyncio.to_thread(
            cli_json, setup, "invoice", "run", "--period", period, "--account", "debtor", "--json"
        )
        (invoice,) = run["issued"]
        assert invoice["total"] == "59.50" and invoice["status"] == "open"
        # The dunning loop finds it overdue: the account is suspended, its call cut.
        await wait_until(lambda: len(gateway.requests) >= 1, timeout_s=10.0)
        (disconnect,) = gateway.requests
        assert disconnect.code == rc.DISCONNECT_REQUEST
        assert disconnect["Acct-Session-Id"][0] == "dun-1"
        acc = daemon.call("account.get", {"id": "debtor"})
        assert (acc["status"], acc["status_reason"]) == ("suspended", "overdue")
        await sock.ask(live.accounting(rc.STATUS_STOP, 5), setup.acct_port)
        refused = await sock.ask(Call("dun-2", "debtor").access_request(), setup.auth_port)
        assert refused.code == rc.ACCESS_REJECT
        assert refused.text(rc.REPLY_MESSAGE) == "account suspended: overdue"
        # Paying it reactivates the account at once; the same payment again changes nothing.
        pay = ("ctl", "--json", "payment", "add", "debtor", "59.50", "--invoice",
               invoice["number"], "--ref", "BANK-2026-0001")  # fmt: skip
        paid = await asyncio.to_thread(cli_json, setup, *pay)
        assert (paid["created"], paid["invoice_status"], paid["account_status"]) == (
            True,
            "paid",
            "active",
        )
        again = await asyncio.to_thread(cli_json, setup, *pay)
        assert not again["created"] and again["balance"] == paid["balance"]
        accept = await sock.ask(Call("dun-3", "debtor").access_request(), setup.auth_port)
        assert accept.code == rc.ACCESS_ACCEPT
    finally:
        sock.close()
    events = daemon.call("server.status")["components"]["dunning"]
    assert events["suspended"] == 1 and events["passes"] >= 1
