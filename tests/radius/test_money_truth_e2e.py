"""Money truth through the real daemon (issue 9 part A): RADIUS over loopback, the
embedded Redis, the CDR exporter writing to a real PostgreSQL.

- finding 1: a prepaid account cut at its paid second ends at zero, the CDR says
  credit_cut (charged what was paid, charge_reason cut_tolerance); a gateway past the
  tolerance overran (debt committed, flagged); a gateway without Interims stopping
  within its Session-Timeout is charged in full, no overrun.
- finding 2: a top-up during a limited call moves its deadline and tells the gateway
  (CoA); the silent gateway's call is reaped with a provisional charge; its Stop at
  200 s corrects the ledger and the billing database ends with one CDR (200 s).
- finding 13: a Stop meeting another closer's lease is kept (spooled) and closes the
  call with its own usage and cause once the lease is gone.

Times: the gateway's Event-Timestamps put the answer in the past, so a call "60 s
old" needs no 60 s of waiting; the reaper's window is the smallest the config allows
(2 x 10 s).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from radius_e2e_harness import (
    MICROS_PER_S,
    SECRET,
    TARIFF,
    Call,
    Daemon,
    GatewaySocket,
    serving,
    write_setup,
)
from radius_peer import TestGateway, UdpPeer, wait_until

from chargingd.billing.cdr import CDR
from chargingd.core.money import parse_amount
from chargingd.radius import codec as rc
from chargingd.sessions.store import fin_key

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

PREMIUM = "00449098790000"  # +44 909: 0.50 to connect, then 1.50 a minute per second
PREMIUM_TARIFF = (
    TARIFF.replace('UK = ["44"]', 'UK = ["44"]\nUK_PREMIUM = ["449"]')
    + """
[rates.PREMIUM]
connect_fee = "0.50"
rate = "1.50"
unit = "60s"
increment = "1s"

[[plans.FLAT.rates]]
destinations = ["UK_PREMIUM"]
rate = "PREMIUM"
"""
)
PREMIUM_PER_S = 25_000


@pytest.fixture(scope="module")
def billing_url(pg_server: str) -> str:
    """A database of its own on the session's PostgreSQL (the daemon migrates it)."""
    name = f"money_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(pg_server)._replace(path=f"/{name}"))


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, billing_url: str) -> Iterator[Daemon]:
    tmp = tmp_path_factory.mktemp("money-truth")
    setup = write_setup(
        tmp,
        session_options={
            "interim_interval_s": 10,
            "stale_factor": 2,
            "reaper_interval_s": 0.5,
            "first_grant_s": 75,  # the first hold (2.00 pays 60 s of it)
        },
        export="run_in_serve = true\nblock_ms = 100",
        billing=f'db_url = "{billing_url}"',
        tariff_text=PREMIUM_TARIFF,
    )
    with serving(setup, tmp / "daemon.log") as daemon:
        yield daemon


@pytest.fixture
def daemon(shared: Daemon) -> Iterator[Daemon]:
    yield shared
    print(f"---- daemon log ----\n{shared.log()}")  # shown only when the test fails


@pytest.fixture
async def gateway(daemon: Daemon) -> AsyncIterator[TestGateway]:
    peer = await UdpPeer.open("127.0.0.1", daemon.setup.coa_port)
    gw = TestGateway(peer, SECRET)
    yield gw
    await gw.close()


def balance(daemon: Daemon, account_id: str) -> tuple[int, int]:
    acc = daemon.call("account.get", {"id": account_id})
    return parse_amount(acc["balance"]), parse_amount(acc["reserved"])


async def cdrs_of(daemon: Daemon, account_id: str, count: int) -> list[CDR]:
    for _ in range(800):  # 40 s: a reaper window is 20 s
        found = [c for c in daemon.cdrs() if c.account_id == account_id]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"{account_id}: expected {count} CDRs")


async def stored_rows(url: str, account_id: str, count: int) -> list[tuple[Any, ...]]:
    """The account's rows in the billing database once the exporter wrote ``count``
    revisions in all (the sum of revisions + rows grows with each write)."""
    query = (
        "SELECT call_id, status, duration_s, cost_micros, charged_micros, charge_reason,"
        " revision FROM cdrs WHERE account_id = %s ORDER BY call_id"
    )
    for _ in range(300):
        async with await psycopg.AsyncConnection.connect(url) as conn:
            try:
                cur = await conn.execute(query, (account_id,))
            except psycopg.errors.UndefinedTable:  # the exporter has not migrated it yet
                rows = []
            else:
                rows = list(await cur.fetchall())
        if sum(1 + r[6] for r in rows) >= count:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"{account_id}: the exporter did not store {count} CDR writes")


async def answered(daemon: Daemon, sock: GatewaySocket, call: Call, age_s: int) -> int:
    """Accepted, then a Start whose Event-Timestamp says it was answered ``age_s``
    ago; returns the Access-Accept's Session-Timeout."""
    accept = await sock.ask(call.access_request(), daemon.setup.auth_port)
    assert accept.code == rc.ACCESS_ACCEPT, accept
    start = call.accounting(rc.STATUS_START, 0, event_s=int(time.time()) - age_s)
    assert (await sock.ask(start, daemon.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
    return accept.integer(rc.SESSION_TIMEOUT)


# -- finding 1 ------------------------------------------------------------------------


async def test_prepaid_cut_at_its_paid_second_ends_at_zero(
    daemon: Daemon, gateway: TestGateway
) -> None:
    """The issue's repro: 2.00 on a UK premium number pays 60 s; the
    Disconnect-Request leaves at the paid second; the Stop says 61 s."""
    daemon.create_account("cutp", "2.00")
    sock = await GatewaySocket.open()
    call = Call("mt-cut-1", "cutp", called=PREMIUM)
    try:
        assert await answered(daemon, sock, call, age_s=59) == 60
        await wait_until(lambda: len(gateway.requests) >= 1, timeout_s=10.0)
        assert gateway.requests[0].code == rc.DISCONNECT_REQUEST
        stop = call.accounting(rc.STATUS_STOP, 61, cause_hex="10")
        assert (await sock.ask(stop, daemon.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
    finally:
        sock.close()
    (cdr,) = await cdrs_of(daemon, "cutp", 1)
    assert (cdr.status, cdr.duration_s, cdr.disconnect_cause) == ("credit_cut", 61, 16)
    assert cdr.cost_micros == 500_000 + 61 * PREMIUM_PER_S
    assert (cdr.charged_micros, cdr.charge_reason) == (2_000_000, "cut_tolerance")
    assert balance(daemon, "cutp") == (0, 0)


async def test_gateway_past_the_tolerance_overran_and_owes_it(
    daemon: Daemon, gateway: TestGateway
) -> None:
    daemon.create_account("overp", "2.00")
    sock = await GatewaySocket.open()
    call = Call("mt-over-1", "overp", called=PREMIUM)
    try:
        assert await answered(daemon, sock, call, age_s=59) == 60
        await wait_until(lambda: len(gateway.requests) >= 1, timeout_s=10.0)
        stop = call.accounting(rc.STATUS_STOP, 64)  # ignored the cut for 4 s
        assert (await sock.ask(stop, daemon.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
    finally:
        sock.close()
    (cdr,) = await cdrs_of(daemon, "overp", 1)
    debt = 500_000 + 64 * PREMIUM_PER_S
    assert (cdr.status, cdr.charged_micros, cdr.charge_reason) == ("overrun", debt, "overrun")
    assert balance(daemon, "overp") == (2_000_000 - debt, 0)


async def test_gateway_without_interims_within_its_session_timeout_is_charged_in_full(
    daemon: Daemon,
) -> None:
    daemon.create_account("nointerim", "10.00")
    sock = await GatewaySocket.open()
    call = Call("mt-noint-1", "nointerim")
    try:
        assert await answered(daemon, sock, call, age_s=100) == 1000
        stop = call.accounting(rc.STATUS_STOP, 100)  # the first hold paid for 25 s
        assert (await sock.ask(stop, daemon.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
    finally:
        sock.close()
    (cdr,) = await cdrs_of(daemon, "nointerim", 1)
    assert (cdr.status, cdr.charged_micros, cdr.charge_reason) == (
        "normal",
        100 * MICROS_PER_S,
        "",
    )
    assert balance(daemon, "nointerim") == (10_000_000 - 100 * MICROS_PER_S, 0)


async def test_gateway_ending_the_call_at_its_paid_session_timeout_is_a_credit_cut(
    daemon: Daemon,
) -> None:
    """A gateway that ends the call itself when the Session-Timeout the money set is
    over (Kamailio's dialog timer, an FUI-obeying client) reports it or a second more,
    as its timer rounds: both are the money running out, one status (the 60 s Stop was
    `normal`, the 61 s one `credit_cut`), both charged the 2.00 paid, balance 0."""
    for n, usage_s in enumerate((60, 61)):
        account = f"ranout{n}"
        daemon.create_account(account, "2.00")
        sock = await GatewaySocket.open()
        call = Call(f"mt-ranout-{n}", account, called=PREMIUM)
        try:
            # Answered 58 s ago: the Stop comes before the deadline, no cut is sent.
            assert await answered(daemon, sock, call, age_s=58) == 60
            stop = call.accounting(rc.STATUS_STOP, usage_s, cause_hex="10")
            assert (await sock.ask(stop, daemon.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
        finally:
            sock.close()
        (cdr,) = await cdrs_of(daemon, account, 1)
        assert (cdr.status, cdr.duration_s, cdr.charged_micros) == (
            "credit_cut",
            usage_s,
            2_000_000,
        ), cdr
        assert cdr.charge_reason == ("" if usage_s == 60 else "cut_tolerance")
        assert balance(daemon, account) == (0, 0)


# -- finding 2 ------------------------------------------------------------------------


async def test_silent_gateway_after_a_topup_is_charged_then_corrected_by_its_late_stop(
    daemon: Daemon, gateway: TestGateway, billing_url: str
) -> None:
    daemon.create_account("silent", "0.20")  # pays 20 s: limited, a deadline
    sock = await GatewaySocket.open()
    call = Call("mt-silent-1", "silent")
    try:
        assert await answered(daemon, sock, call, age_s=0) == 20
        daemon.call("account.topup", {"id": "silent", "amount": "5.00", "txn_id": "silent-t1"})
        # The CoA tells the gateway the new Session-Timeout (5.20 pays 520 s) ...
        await wait_until(lambda: len(gateway.requests) >= 1, timeout_s=10.0)
        assert gateway.requests[0].code == rc.COA_REQUEST
        assert gateway.requests[0]["Session-Timeout"] == [520]
        # ... the deadline was moved, not cleared: the session is still watched.
        (listed,) = daemon.call("session.list", {"account": "silent"})["sessions"]
        assert listed["deadline_ms"] > 0
        # The gateway sends nothing more: reaped after 2 x 10 s, provisionally.
        (stale,) = await cdrs_of(daemon, "silent", 1)
        assert (stale.status, stale.charge_reason, stale.revision) == ("stale", "provisional", 0)
        assert stale.charged_micros == stale.duration_s * MICROS_PER_S > 0
        # Its Stop comes after all: 200 s (5.50 in the tariff, 2.00 here).
        stop = call.accounting(rc.STATUS_STOP, 200, cause_hex="10")
        assert (await sock.ask(stop, daemon.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
    finally:
        sock.close()
    _, final = await cdrs_of(daemon, "silent", 2)
    assert (final.status, final.duration_s, final.revision) == ("normal", 200, 1)
    assert final.charged_micros == 200 * MICROS_PER_S
    assert balance(daemon, "silent") == (5_200_000 - 200 * MICROS_PER_S, 0)
    rows = await stored_rows(billing_url, "silent", 2)
    assert rows == [("mt-silent-1", "normal", 200, 2_000_000, 2_000_000, "", 1)]
    audit = daemon.call("account.history", {"id": "silent", "count": 100})
    corrections = [e for e in audit["entries"] if e["what"] == "correct"]
    assert [e["why"] for e in corrections] == ["late stop after stale"]


async def test_accounting_that_cannot_be_applied_is_kept_with_a_reason_and_a_log_line(
    daemon: Daemon,
) -> None:
    daemon.create_account("twostops", "10.00")
    sock = await GatewaySocket.open()
    call = Call("mt-twostops-1", "twostops")
    try:
        await answered(daemon, sock, call, age_s=30)
        for usage_s in (30, 45):  # a second Stop contradicting the first one's CDR
            stop = call.accounting(rc.STATUS_STOP, usage_s)
            assert (await sock.ask(stop, daemon.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
    finally:
        sock.close()
    with daemon.redis() as r:
        mine = b"mt-twostops-1"
        orphans = [f for _, f in r.xrange("cdr:orphans") if f[b"call.session_id"] == mine]
    assert [(o[b"reason"], o[b"usage_s"]) for o in orphans] == [(b"stop_after_close", b"45")]
    assert daemon.wait_log("mt-twostops-1 reports 45s after its CDR said 30s"), daemon.log()
    (cdr,) = await cdrs_of(daemon, "twostops", 1)
    assert cdr.duration_s == 30


# -- finding 13 -----------------------------------------------------------------------


async def test_stop_meeting_another_closers_lease_closes_the_call_once_it_is_gone(
    daemon: Daemon,
) -> None:
    """A closer that died after the release leaves its 30 s close lease (here: 3 s);
    the Stop is kept and closes the call with its own usage and cause afterwards."""
    daemon.create_account("leased", "10.00")
    sock = await GatewaySocket.open()
    call = Call("mt-leased-1", "leased")
    try:
        await answered(daemon, sock, call, age_s=70)
        with daemon.redis() as r:
            r.set(fin_key("leased", "mt-leased-1"), "dead-closer", ex=3)
        stop = call.accounting(rc.STATUS_STOP, 70, cause_hex="11")  # Q.850 17: busy
        assert (await sock.ask(stop, daemon.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
        assert [c for c in daemon.cdrs() if c.account_id == "leased"] == []
    finally:
        sock.close()
    (cdr,) = await cdrs_of(daemon, "leased", 1)
    assert (cdr.status, cdr.duration_s, cdr.disconnect_cause) == ("normal", 70, 17)
    assert balance(daemon, "leased") == (10_000_000 - 70 * MICROS_PER_S, 0)


async def test_nas_reboot_charges_its_live_calls_up_to_the_restart(
    daemon: Daemon, billing_url: str
) -> None:
    """Accounting-On (RFC 2866 §5.1): the gateway's calls are gone. A call answered 40 s
    before the restart and silent since is charged those 40 s (the reaper's estimate,
    within its hold), one CDR and one billing row; nothing stays held."""
    daemon.create_account("reboot", "10.00")
    sock = await GatewaySocket.open()
    call = Call("mt-reboot-1", "reboot")
    try:
        accept = await sock.ask(call.access_request(), daemon.setup.auth_port)
        assert accept.code == rc.ACCESS_ACCEPT, accept
        now_s = int(time.time())
        start = call.accounting(rc.STATUS_START, 0, event_s=now_s - 40)
        assert (await sock.ask(start, daemon.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
        attrs = rc.attr_u32(rc.ACCT_STATUS_TYPE, rc.STATUS_ACCOUNTING_ON)
        attrs += rc.attr_ipv4(rc.NAS_IP_ADDRESS, "127.0.0.1")
        attrs += rc.attr_u32(rc.EVENT_TIMESTAMP, now_s)
        on = rc.encode_request(rc.ACCOUNTING_REQUEST, 200, attrs, SECRET)
        assert (await sock.ask(on, daemon.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
    finally:
        sock.close()
    (cdr,) = await cdrs_of(daemon, "reboot", 1)
    charged = 40 * MICROS_PER_S
    assert (cdr.status, cdr.duration_s, cdr.charged_micros) == ("gateway_restart", 40, charged)
    assert balance(daemon, "reboot") == (10_000_000 - charged, 0)
    rows = await stored_rows(billing_url, "reboot", 1)
    assert [r[:5] for r in rows] == [("mt-reboot-1", "gateway_restart", 40, charged, charged)]
