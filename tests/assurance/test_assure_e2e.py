"""Revenue assurance end to end: traffic through the real daemon (RADIUS over loopback),
the switch's own accounting file of the same calls mediated, CDRs exported, an
invoice issued; `chargingd assure` finds nothing. Then one fault of every kind is
injected the way it happens in practice, and the next run finds each one, once, with
the money at stake.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from assurance_harness import SwitchCall, cisco_detail_file
from invoicing_harness import make_books, query
from radius_e2e_harness import BIN, MICROS_PER_S, Call, Daemon, GatewaySocket, serving, write_setup

from chargingd.billing.cdr import CDR, CDR_STREAM
from chargingd.billing.db import BillingDB
from chargingd.billing.exporter import Exporter
from chargingd.core.config import load_config
from chargingd.core.money import format_amount
from chargingd.invoicing import invoice_run
from chargingd.ledger import Ledger
from chargingd.ledger.keys import acct_key
from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ACCOUNTS = ("alice", "bob", "carol", "dave", "erin", "frank", "gina")
EXTRA_CONFIG = """
[ledger]
# The sweeper does not come by during the test: a hold left behind stays.
sweep_interval_s = 3600.0

[mediation.sources.sw1]
format = "cisco_radius"
charge = "record_only"
default_country = "DE"

[assurance]
hold_grace_s = 1
session_grace_s = 1
stuck_after_s = 0
"""


def ani(account: str) -> str:
    return f"+49301110{ACCOUNTS.index(account):02d}"


@dataclass
class Placed:
    """A call as the gateway made it: what its own accounting file says."""

    session_id: str
    account: str
    callee: str
    usage_s: int
    setup_ms: int


class Traffic:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.numbers = iter(range(1000, 10_000))

    def call(self, session_id: str, account: str, *, callee: str | None = None) -> Call:
        return Call(session_id, account, called=callee or f"004420794{next(self.numbers):05d}",
                    calling=ani(account))  # fmt: skip

    async def place(self, call: Call, usage_s: int, *, stop: bool = True) -> Placed:
        """Access-Request, Start and (unless not) Stop after usage_s, as the gateway says."""
        setup = self.daemon.setup
        sock = await GatewaySocket.open()
        try:
            setup_ms = int(time.time() * 1000)
            accept = await sock.ask(call.access_request(), setup.auth_port)
            assert accept.code == rc.ACCESS_ACCEPT, accept
            answer = await sock.ask(call.accounting(rc.STATUS_START, 0), setup.acct_port)
            assert answer.code == rc.ACCOUNTING_RESPONSE
            if stop:
                answer = await sock.ask(call.accounting(rc.STATUS_STOP, usage_s), setup.acct_port)
                assert answer.code == rc.ACCOUNTING_RESPONSE
        finally:
            sock.close()
        callee = call.called
        return Placed(call.session_id, call.user, callee, usage_s, setup_ms)

    async def cdr_entry(self, session_id: str) -> tuple[bytes, CDR]:
        with self.daemon.redis() as r:
            for _ in range(500):
                for entry_id, fields in r.xrange(CDR_STREAM):
                    cdr = CDR.unpack(fields[b"cdr"])
                    if cdr.call_id == session_id:
                        return entry_id, cdr
                await asyncio.sleep(0.02)
        raise AssertionError(f"no CDR for {session_id}")


def switch_file(path: Path, calls: list[Placed]) -> Path:
    """The gateway's own accounting (FreeRADIUS detail file, originate leg)."""
    placed = [
        SwitchCall(p.session_id, ani(p.account), p.callee, p.usage_s, p.setup_ms) for p in calls
    ]
    return cisco_detail_file(path, placed)


def chargingd(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args, "--config", str(config)], capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


@pytest.fixture
def daemon(tmp_path: Path, pg_url: str) -> Iterator[Daemon]:
    setup = write_setup(tmp_path, billing=f'db_url = "{pg_url}"')
    # The test drains the CDR stream itself; a dead consumer's entry is never claimed.
    text = setup.config.read_text().replace(
        "run_in_serve = false", "run_in_serve = false\nclaim_idle_ms = 3600000"
    )
    setup.config.write_text(text + EXTRA_CONFIG)
    with serving(setup, tmp_path / "daemon.log") as d:
        yield d


def _accounts(daemon: Daemon) -> None:
    for account in ACCOUNTS:
        more: dict[str, Any] = {"identities": [f"user:{account}", f"ani:{ani(account)}"]}
        if account == "erin":
            more |= {"mode": "postpaid", "credit_limit": "100"}
        balance = {"erin": "0", "frank": "0.05"}.get(account, "20.00")
        daemon.create_account(account, balance, **more)


async def _export(daemon: Daemon, db: BillingDB) -> None:
    client = daemon.async_redis()
    try:
        await Exporter(client, load_config(daemon.setup.config), db=db).drain()
    finally:
        await client.aclose()


def _assure(daemon: Daemon, day: datetime) -> tuple[int, dict[str, Any]]:
    first, last = (day - timedelta(days=1)).date(), (day + timedelta(days=1)).date()
    done = chargingd(daemon.setup.config, "assure", "--from", str(first), "--to", str(last),
                     "--json")  # fmt: skip
    assert done.returncode in (0, 3), done.stderr
    return done.returncode, json.loads(done.stdout)


async def test_clean_traffic_then_one_fault_of_every_kind(
    daemon: Daemon, pg_url: str, tmp_path: Path
) -> None:
    _accounts(daemon)
    traffic = Traffic(daemon)
    db = await BillingDB.open(pg_url)
    redis = daemon.async_redis()
    day = datetime.now(UTC)

    # -- clean traffic: concurrent calls, the switch's file, export, an invoice -------
    plan = [("alice", 3), ("bob", 3), ("carol", 2), ("dave", 2), ("erin", 3)]
    clean = await asyncio.gather(
        *(traffic.place(traffic.call(f"c-{a}-{i}", a), 20 + 7 * i + len(a))
          for a, n in plan for i in range(n))
    )  # fmt: skip
    # One call the switch filed under an id of its own: matched by caller, callee, start.
    on_file = [dataclasses.replace(clean[0], session_id="gw-own-id"), *clean[1:]]
    mediated = chargingd(daemon.setup.config, "mediate", "--source", "sw1", "--quiet",
                         str(switch_file(tmp_path / "sw1-1.detail", on_file)))  # fmt: skip
    assert mediated.returncode == 0, mediated.stdout + mediated.stderr
    await _export(daemon, db)
    ledger = Ledger(redis)
    await ledger.load_scripts()
    month_end = (day.replace(day=28) + timedelta(days=4)).replace(day=1, hour=1)
    books = await make_books(pg_url, ledger, now=month_end)
    (invoice,) = [i for i in (await invoice_run(books, f"{day:%Y-%m}")).issued
                  if i.account_id == "erin"]  # fmt: skip
    await books.db.close()
    code, run = _assure(daemon, day)
    assert (code, run["counts"], run["findings"]) == (0, {}, []), run
    assert run["matching"] == {
        "switch_calls": len(clean), "live_calls": len(clean), "matched_by_id": len(clean) - 1,
        "matched_by_caller_callee_start": 1, "matched_by_callee_start_no_caller_id": 0,
    }  # fmt: skip

    # -- one fault of every kind ---------------------------------------------------
    # A CDR an exporter on another host read and died holding (never acknowledged).
    stuck = await traffic.place(traffic.call("f-stuck", "alice"), 33)
    await traffic.cdr_entry("f-stuck")
    with daemon.redis() as r:
        (((_, ((_, _),)),)) = r.xreadgroup("exporter", "dead-host", {CDR_STREAM: ">"}, count=1)
    double_callee = "00442079400000"
    late_call = traffic.call("f-late", "frank")  # 0.05 pays 5 s; never stopped
    placed = await asyncio.gather(
        traffic.place(traffic.call("f-extra", "bob"), 25),  # the switch never saw it
        traffic.place(traffic.call("f-short", "carol"), 60),  # the switch says 67 s
        traffic.place(traffic.call("f-double", "alice", callee=double_callee), 40),
        # The gateway accounted the same call again under a second session id.
        traffic.place(traffic.call("f-double-2", "alice", callee=double_callee), 40),
        traffic.place(traffic.call("f-reason", "dave"), 30),
        traffic.place(traffic.call("f-claims", "carol"), 20),
        traffic.place(late_call, 0, stop=False),
    )
    _extra, short, double, _double2, reason, claims, late = placed
    # A CDR writer that recorded another rated cost than what it charged, no reason.
    entry_id, cdr = await traffic.cdr_entry("f-reason")
    with daemon.redis() as r:
        r.xdel(CDR_STREAM, entry_id)
        r.xadd(CDR_STREAM, {"cdr": dataclasses.replace(cdr, cost_micros=cdr.cost_micros + 50_000)
                            .pack()})  # fmt: skip
    # A CDR writer that recorded 0.10 more charged (and rated) than the ledger moved.
    entry_id, cdr = await traffic.cdr_entry("f-claims")
    with daemon.redis() as r:
        r.xdel(CDR_STREAM, entry_id)
        more = {"cost_micros": cdr.cost_micros + 100_000, "charged_micros": cdr.charged_micros
                + 100_000}  # fmt: skip
        r.xadd(CDR_STREAM, {"cdr": dataclasses.replace(cdr, **more).pack()})
    for sid in ("f-extra", "f-short", "f-double", "f-double-2"):
        await traffic.cdr_entry(sid)
    # A call the switch completed that never reached chargingd (dave's line, 42 s).
    missing = Placed("f-missing", "dave", "00442079499999", 42, int(time.time() * 1000))
    on_switch = [stuck, dataclasses.replace(short, usage_s=67), double, reason, claims, missing]
    mediated = chargingd(daemon.setup.config, "mediate", "--source", "sw1", "--quiet",
                         str(switch_file(tmp_path / "sw1-2.detail", on_switch)))  # fmt: skip
    assert mediated.returncode == 0, mediated.stdout + mediated.stderr
    await _export(daemon, db)
    # An issued invoice's total edited by a superuser past the immutability trigger.
    await query(
        pg_url,
        "SET session_replication_role = replica; UPDATE invoices"
        f" SET total_micros = total_micros + 5000000 WHERE number = '{invoice.number}'",
    )
    # carol's balance edited by hand in Redis; its totals say otherwise.
    await redis.hincrby(acct_key("carol"), "balance", -1_000_000)
    # A direct adjustment without a reason: 2.00 credited to bob by hand in Redis,
    # balance and totals alike (no ledger script, so no journal entry, no reason).
    await redis.hincrby(acct_key("bob"), "balance", 2_000_000)
    await redis.hincrby(acct_key("bob"), "topups", 2_000_000)
    # A hold of a process that died holding it; its lease is 1 s.
    await ledger.reserve("gina", "ghost-hold", 500_000, lease_ms=1000)
    # frank's call runs past the 5 s its money paid for (plus the 1 s grace).
    while time.time() * 1000 < late.setup_ms + 8_000:
        await asyncio.sleep(0.1)
    before_ms = int(time.time() * 1000)
    code, run = _assure(daemon, day)
    after_ms = int(time.time() * 1000)
    await redis.aclose()
    await db.close()

    assert code == 3
    found = {(f["kind"], f["account"], f["call_id"]): f for f in run["findings"]}
    money = {k: f["money_micros"] for k, f in found.items()}
    late_key = ("session_past_timeout", "frank", "f-late")
    assert set(money) == {
        ("uncharged_call", "dave", "F-MISSING"),
        ("unknown_to_switch", "bob", "f-extra"),
        ("duration_mismatch", "carol", "F-SHORT"),
        ("double_charge", "alice", "f-double-2"),
        ("charge_without_reason", "dave", "f-reason"),
        ("stuck_cdr", "alice", "f-stuck"),
        ("invoice_mismatch", "erin", invoice.number),
        ("hold_past_lease", "gina", "ghost-hold"),
        late_key,
        ("balance_mismatch", "carol", ""),
        ("unexplained_movement", "bob", ""),
        ("unrecorded_charge", "carol", "f-claims"),
    }, run["findings"]
    assert money[("uncharged_call", "dave", "F-MISSING")] == 42 * MICROS_PER_S
    assert money[("unknown_to_switch", "bob", "f-extra")] == -25 * MICROS_PER_S
    mismatch = found[("duration_mismatch", "carol", "F-SHORT")]
    assert mismatch["money_micros"] == 7 * MICROS_PER_S and mismatch["matched_by"] == "id:call_id"
    assert money[("double_charge", "alice", "f-double-2")] == -40 * MICROS_PER_S
    assert money[("charge_without_reason", "dave", "f-reason")] == 50_000
    assert money[("stuck_cdr", "alice", "f-stuck")] == 33 * MICROS_PER_S
    assert money[("invoice_mismatch", "erin", invoice.number)] == -5_000_000
    assert money[("hold_past_lease", "gina", "ghost-hold")] == 500_000
    assert money[("balance_mismatch", "carol", "")] == -1_000_000
    assert money[("unexplained_movement", "bob", "")] == 2_000_000
    assert money[("unrecorded_charge", "carol", "f-claims")] == 100_000
    # Elapsed since the answer at 0.01/s, minus the 0.05 held for it.
    late_detail = found[late_key]["detail"]
    elapsed_s = late_detail["elapsed_s"]
    lowest, highest = (before_ms - late.setup_ms) // 1000 - 1, (after_ms - late.setup_ms) // 1000
    assert lowest <= elapsed_s <= highest
    assert late_detail["held_micros"] == 50_000 and late_detail["paid_usage_s"] == 5
    assert money[late_key] == elapsed_s * MICROS_PER_S - 50_000
    leaks = sum(m for k, m in money.items() if m > 0 and k[0] != "hold_past_lease")
    assert run["leakage"] == {"EUR": format_amount(leaks, 2)}
