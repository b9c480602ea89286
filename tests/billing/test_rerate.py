"""Rerating stored CDRs: report, apply once, resume; real PostgreSQL, Redis and ledger."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from cdr_factory import make_cdr

from chargingd.billing.db import BillingDB
from chargingd.billing.rerate import (
    RerateError,
    compute,
    make_plan_resolver,
    parse_when,
    pending_charges,
    post_pending,
    record,
)
from chargingd.core.config import config_from_dict
from chargingd.core.money import format_amount
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.ledger import Ledger, Mode, UsageRequest

PLAN = """
[tariff]
id = "{id}"
currency = "EUR"
timezone = "UTC"
decimals = 6

[destinations]
DE = ["49"]

[rates.R]
rate = "{per_minute}"
unit = "60s"
increment = "1s"

[plans.P]
[[plans.P.rates]]
destinations = ["DE"]
rate = "R"

[[profiles]]
subject = "*any"
plan = "P"
from = 2026-01-01T00:00:00Z
"""

START = datetime(2026, 11, 1, tzinfo=UTC)
END = datetime(2026, 12, 1, tzinfo=UTC)
N = 60  # CDRs, 20 per account; stored at 0.60/minute (10_000 micros per second)


def _plan(tmp_path: Path, name: str, per_minute: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(PLAN.format(id=name, per_minute=per_minute))
    return path


def live_cdr(i: int) -> Any:
    """A live call's CDR: its session debited its cost."""
    cdr = make_cdr(i)
    return make_cdr(i, charge="live", charged_micros=cdr.cost_micros)


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[BillingDB]:
    database = await BillingDB.open(pg_url)
    await database.store_cdrs([live_cdr(i) for i in range(N)])
    yield database
    await database.close()


@pytest.fixture
async def ledger(redis: aioredis.Redis) -> Ledger:
    led = Ledger(redis)
    await led.load_scripts()
    for a, tariff in enumerate(["", "gold", "gold"]):
        await led.create_account(
            f"acct-{a}", mode=Mode.POSTPAID, currency="EUR", tariff=tariff, who="test"
        )
    return led


def _durations(account: int) -> list[int]:
    return [make_cdr(i).duration_s for i in range(N) if i % 3 == account]


async def test_report_prices_with_the_given_plan_and_changes_nothing(
    db: BillingDB, tmp_path: Path
) -> None:
    cfg = config_from_dict({})
    plan_for = make_plan_resolver(cfg, None, str(_plan(tmp_path, "cheap", "0.012")))
    report = await compute(db, plan_for, start=START, end=END)
    for a in range(3):
        diff = report.accounts[(f"acct-{a}", "EUR")]
        assert diff.cdrs == 20
        assert diff.old_micros == sum(d * 10_000 for d in _durations(a))
        assert diff.new_micros == sum(d * 200 for d in _durations(a))  # 0.012/60 s
    assert len(report.changes) == N
    usage = await db.usage("acct-0")
    assert usage[0].cost_micros == sum(d * 10_000 for d in _durations(0))  # unchanged


async def test_account_tariffs_and_unpriced_cdrs(
    db: BillingDB, ledger: Ledger, tmp_path: Path
) -> None:
    gold = _plan(tmp_path, "gold", "0.60")  # the stored price: no change
    cfg = config_from_dict({"rating": {"plans": {"gold": str(gold)}}})
    # acct-0 has no tariff and there is no default plan: its CDRs are left alone.
    report = await compute(db, make_plan_resolver(cfg, ledger, None), start=START, end=END)
    assert report.accounts[("acct-0", "EUR")].unrated == 20
    assert report.errors == {"no tariff plan": 20}
    assert report.accounts[("acct-1", "EUR")].diff_micros == 0
    assert report.changes == []
    assert await record(db, report, cfg, who="t", reason="t") is None


async def test_a_plan_in_another_currency_prices_no_cdr(db: BillingDB, tmp_path: Path) -> None:
    """EUR calls priced by a USD plan would store dollars as euros (and move them in
    the ledger): live credit control refuses such a tariff, so a rerate does too."""
    usd = tmp_path / "usd.toml"
    usd.write_text(PLAN.format(id="usd", per_minute="0.012").replace('"EUR"', '"USD"'))
    plan_for = make_plan_resolver(config_from_dict({}), None, str(usd))
    report = await compute(db, plan_for, start=START, end=END)
    assert report.changes == []
    assert report.errors == {"plan prices in USD, the CDRs are in EUR": N}
    assert sum(d.unrated for d in report.accounts.values()) == N
    assert all(d.new_micros == d.old_micros == 0 for d in report.accounts.values())


async def test_apply_once_then_resume_is_a_no_op(
    db: BillingDB, ledger: Ledger, tmp_path: Path
) -> None:
    cfg = config_from_dict({})
    plan_for = make_plan_resolver(cfg, ledger, str(_plan(tmp_path, "cheap", "0.012")))
    report = await compute(db, plan_for, start=START, end=END, account_id="acct-1")
    assert list(report.accounts) == [("acct-1", "EUR")]
    old = sum(d * 10_000 for d in _durations(1))
    new = sum(d * 200 for d in _durations(1))
    assert report.accounts[("acct-1", "EUR")].ledger_micros == new - old  # a refund
    run_id = await record(db, report, cfg, who="t", reason="price cut")
    assert run_id is not None and run_id == report.run_id()
    pending = await pending_charges(db)
    assert len(pending) == 20 and {p.account_id for p in pending} == {"acct-1"}
    assert sum(p.old_charged - p.target_charged for p in pending) == old - new

    # Crash after the ledger applied some but before the DB noted them: posting again
    # meets the calls' keys in the ledger, so each call moves once.
    for p in pending[:7]:
        req = UsageRequest(p.account_id, p.source, p.call_id, p.currency, p.insufficient,
                           "t", "")  # fmt: skip
        await ledger.rerate_usage(req, charged_micros=p.old_charged, target_micros=p.target_charged)
    posted = await post_pending(db, ledger, who="t")
    assert len(posted) == 20 and not any(s.error for s in posted)
    assert sum(s.moved_micros for s in posted) == -(old - new) - sum(
        p.target_charged - p.old_charged for p in pending[:7]
    )
    assert (await ledger.get_account("acct-1")).balance_micros == old - new
    assert await post_pending(db, ledger, who="t") == []
    # The DB now holds the new costs and charges, the first cost, and the usage follows.
    (usage,) = await db.usage("acct-1")
    assert usage.cost_micros == usage.charged_micros == new
    again = await compute(db, plan_for, start=START, end=END, account_id="acct-1")
    assert again.changes == []

    async def firsts(conn: Any) -> list[tuple[Any, ...]]:
        cur = await conn.execute(
            "SELECT sum(original_cost_micros), count(DISTINCT rerate_run_id), sum(charged_micros),"
            " min(charge_reason) FROM cdrs WHERE account_id = 'acct-1'"
        )
        return list(await cur.fetchall())

    assert await db.run(firsts) == [(old, 1, new, "rerate")]


async def test_never_refunds_money_never_taken(pg_url: str, ledger: Ledger, tmp_path: Path) -> None:
    """The issue's repro: mediated calls that never touched the balance (charge none,
    stored before charged_micros existed) and calls only recorded (recorded_only) get
    a cheaper price; no money moves. A capped call is never charged more than it was."""
    db = await BillingDB.open(pg_url)
    try:
        cdrs = [make_cdr(i, source="pbx", account_id="acct-1") for i in range(5)]
        cdrs += [make_cdr(i, source="gw", account_id="acct-1", charge="recorded_only")
                 for i in range(5, 10)]  # fmt: skip
        capped = make_cdr(10, source="pbx", account_id="acct-2", charge="mediated_debit",
                          charged_micros=50_000, charge_reason="capped")  # fmt: skip
        assert await db.store_cdrs([*cdrs, capped]) == 11
        cfg = config_from_dict({})
        seen: list[tuple[int, int]] = []
        for price in ("0.90", "0.012", "0.90", "0.0001"):
            plan_for = make_plan_resolver(cfg, ledger, str(_plan(tmp_path, "p", price)))
            report = await compute(db, plan_for, start=START, end=END)
            assert report.accounts[("acct-1", "EUR")].ledger_micros == 0
            await record(db, report, cfg, who="t", reason=f"price {price}")
            await post_pending(db, ledger, who="t")
            assert (await ledger.get_account("acct-1")).balance_micros == 0
            seen.append(await _charged(db, capped.call_id))
        # 0.90: dearer, never more than it charged; 0.012: cheaper (70 s x 200 = 14_000),
        # refund the difference; 0.90 again: still no more than 14_000; 0.0001: its price.
        assert [charged for charged, _ in seen[:3]] == [50_000, 14_000, 14_000]
        assert [cost for _, cost in seen[:3]] == [70 * 15_000, 14_000, 70 * 15_000]
        last_charged, last_cost = seen[3]
        assert last_charged == last_cost < 14_000
        assert (await ledger.get_account("acct-2")).balance_micros == 50_000 - last_charged
    finally:
        await db.close()


async def _charged(db: BillingDB, call_id: str) -> tuple[int, int]:
    async def work(conn: Any) -> tuple[int, int]:
        cur = await conn.execute(
            "SELECT charged_micros, cost_micros, charge_reason FROM cdrs WHERE call_id = %s",
            (call_id,),
        )
        charged, cost, reason = await cur.fetchone()
        assert reason == "capped"
        return int(charged), int(cost)

    result: tuple[int, int] = await db.run(work)
    return result


def test_dates() -> None:
    assert parse_when("2026-11-01") == START
    assert parse_when("2026-11-30", end=True) == END
    assert parse_when("2026-11-01T12:00:00+01:00").hour == 12
    with pytest.raises(RerateError):
        parse_when("1 Nov")


def _cli(config: Path, *args: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "chargingd", "rerate", "--config", str(config), "--json"]
    done = subprocess.run(
        [*cmd, *args], capture_output=True, text=True, timeout=60, env=dict(os.environ)
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


async def test_cli_a_plan_that_cannot_load_is_exit_2_and_changes_nothing(
    db: BillingDB, redis_server: EmbeddedRedis, pg_url: str, tmp_path: Path
) -> None:
    """`rerate --plan` naming a missing or broken file (or a broken [rating] plan)
    ended in a TariffLoadError traceback, exit 1; it is a usage or config error (2)
    that says which file and why, and no CDR, run or charge is written."""
    broken = tmp_path / "broken.toml"
    broken.write_text(PLAN.format(id="b", per_minute="0.10").replace('"UTC"', '"Mars/Base"'))
    config = tmp_path / "c.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path}"\n[redis]\nurl = "{redis_server.url}"\n'
        f'[billing]\ndb_url = "{pg_url}"\n[rating]\ndefault_plan = "{broken}"\n'
    )
    cmd = [sys.executable, "-m", "chargingd", "rerate", "--config", str(config)]
    cmd += ["--from", "2026-11-01", "--to", "2026-11-30"]
    for extra, why in (
        (["--plan", str(tmp_path / "missing.toml")], "missing.toml: cannot read"),
        (["--plan", str(broken), "--apply"], "unknown time zone 'Mars/Base'"),
        (["--apply"], "unknown time zone 'Mars/Base'"),
    ):
        done = subprocess.run(
            [*cmd, *extra], capture_output=True, text=True, timeout=60, env=dict(os.environ)
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("chargingd rerate: ") and why in done.stderr
        assert "Traceback" not in done.stderr

    async def written(conn: Any) -> list[Any]:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM rerate_runs), (SELECT count(*) FROM rerate_charges),"
            " (SELECT count(*) FROM cdrs WHERE rerate_run_id IS NOT NULL)"
        )
        return list(await cur.fetchall())

    assert await db.run(written) == [(0, 0, 0)]


@pytest.mark.slow
async def test_cli_an_unknown_account_or_reversed_dates_are_refused(
    db: BillingDB, ledger: Ledger, redis_server: EmbeddedRedis, pg_url: str, tmp_path: Path
) -> None:
    """`--account` of an account that does not exist printed "0 CDRs would change",
    exit 0 (a mistyped id looked like prices unchanged), as report usage and assure
    did before; --to before --from was exit 1 (a failure) where a bad date is 2."""
    config = tmp_path / "c.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path}"\n[redis]\nurl = "{redis_server.url}"\n'
        f'[billing]\ndb_url = "{pg_url}"\n'
    )
    cheap = str(_plan(tmp_path, "cheap", "0.012"))
    cmd = [sys.executable, "-m", "chargingd", "rerate", "--config", str(config)]
    days = ["--from", "2026-11-01", "--to", "2026-11-30"]
    for extra in (["--account", "acct-9"], ["--account", "acct-9", "--plan", cheap]):
        done = subprocess.run([*cmd, *days, *extra], capture_output=True, text=True,
                              timeout=60, env=dict(os.environ))  # fmt: skip
        assert (done.returncode, done.stdout) == (1, ""), done.stderr
        assert "no account 'acct-9'" in done.stderr
    # An account with CDRs, or one the ledger alone knows (no call yet): reported.
    await ledger.create_account("new-1", mode=Mode.PREPAID, currency="EUR", who="t")
    for account in ("acct-1", "new-1"):
        report = _cli(config, *days, "--account", account, "--plan", cheap)
        assert report["run_id"] is None
    reversed_days = ["--from", "2026-11-30", "--to", "2026-11-01"]
    done = subprocess.run([*cmd, *reversed_days], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ))  # fmt: skip
    assert done.returncode == 2 and "--to must be after --from" in done.stderr


@pytest.mark.slow
async def test_cli_a_mediation_source_with_its_own_plan_is_priced_with_it(
    redis_server: EmbeddedRedis, ledger: Ledger, pg_url: str, tmp_path: Path
) -> None:
    """Mediation prices a source's calls with its `plan` (and its category), whatever
    the account's tariff. A rerate re-priced them with the account's plan (here the
    default plan) instead, and --apply moved the difference: a run meant for a price
    change of the retail plan refunded or debited every mediated call of the source."""
    own = _plan(tmp_path, "pbx-own", "0.60").read_text()  # the stored price: no change
    (tmp_path / "own.toml").write_text(
        own.replace('plan = "P"', 'plan = "P"\ncategory = "wholesale"')
    )
    config = tmp_path / "c.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path}"\n[redis]\nurl = "{redis_server.url}"\n'
        f'[billing]\ndb_url = "{pg_url}"\n'
        f'[rating]\ndefault_plan = "{_plan(tmp_path, "retail", "0.012")}"\n'
        f'[mediation.sources.pbx]\nformat = "asterisk"\ncharge = "ledger"\n'
        f'plan = "{tmp_path / "own.toml"}"\ncategory = "wholesale"\n'
    )
    db = await BillingDB.open(pg_url)
    try:
        mediated = [
            make_cdr(
                i,
                source="pbx",
                account_id="acct-0",
                charge="mediated_debit",
                charged_micros=make_cdr(i).cost_micros,
            )
            for i in range(0, 9, 3)
        ]
        live = [live_cdr(i) for i in range(9, 18, 3)]  # acct-0 too: the default plan
        assert await db.store_cdrs([*mediated, *live]) == 6
    finally:
        await db.close()
    applied = _cli(config, "--from", "2026-11-01", "--to", "2026-11-30", "--apply")
    assert applied["changed_cdrs"] == 3, applied  # the live calls only
    (account,) = applied["accounts"]
    assert account["cdrs"] == 6 and account["unrated"] == 0, account
    refund = sum(c.duration_s * (10_000 - 200) for c in live)
    assert (await ledger.get_account("acct-0")).balance_micros == refund


@pytest.mark.slow
async def test_cli_report_apply_and_reapply(
    db: BillingDB,
    ledger: Ledger,
    redis_server: EmbeddedRedis,
    pg_url: str,
    tmp_path: Path,
) -> None:
    cheap = _plan(tmp_path, "cheap", "0.012")
    dear = _plan(tmp_path, "dear", "0.90")
    config = tmp_path / "c.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path}"\n[redis]\nurl = "{redis_server.url}"\n'
        f'[billing]\ndb_url = "{pg_url}"\n'
        f'[rating]\ndefault_plan = "{cheap}"\nplans = {{ gold = "{dear}" }}\n'
    )
    report = _cli(config, "--from", "2026-11-01", "--to", "2026-11-30")
    assert report["run_id"] is None and report["changed_cdrs"] == N
    by_account = {a["account_id"]: a for a in report["accounts"]}
    old1 = sum(d * 10_000 for d in _durations(1))
    # 0.90 vs 0.60; in the currency's minor unit (EUR: at least 2 decimals; it was 6)
    assert by_account["acct-1"]["difference"] == format_amount(old1 // 2, 2)
    assert (await ledger.get_account("acct-1")).balance_micros == 0  # report only

    applied = _cli(config, "--from", "2026-11-01", "--to", "2026-11-30", "--apply")
    assert applied["run_id"].startswith("rr-")
    assert sorted(a["account_id"] for a in applied["applied"]) == ["acct-0", "acct-1", "acct-2"]
    assert {a["calls"] for a in applied["applied"]} == {20}
    balance = {a: (await ledger.get_account(f"acct-{a}")).balance_micros for a in range(3)}
    assert balance[1] == -(old1 // 2)  # a price rise debits the difference
    assert balance[0] == sum(d * 10_000 - d * 200 for d in _durations(0))
    audits = {a: len(await ledger.audit(f"acct-{a}")) for a in range(3)}

    again = _cli(config, "--from", "2026-11-01", "--to", "2026-11-30", "--apply")
    assert again["changed_cdrs"] == 0 and again["applied"] == [] and again["run_id"] is None
    assert {a: (await ledger.get_account(f"acct-{a}")).balance_micros for a in range(3)} == balance
    assert {a: len(await ledger.audit(f"acct-{a}")) for a in range(3)} == audits


def test_applied_line_says_which_way_the_money_moved() -> None:
    """After the report's `ledger` column (charge moved: 0.95 = debited), --apply printed
    `ledger: alice -0.95 EUR over 19 calls` (balance moved): a debit read as a refund."""
    from chargingd.billing.rerate import applied_line

    debit = {"account_id": "alice", "currency": "EUR", "calls": 19, "amount": "-0.95", "errors": 0}
    assert applied_line(debit) == "ledger: alice debited 0.95 EUR (19 calls)"
    refund = dict(debit, amount="0.52", calls=2, errors=1)
    assert applied_line(refund) == "ledger: alice refunded 0.52 EUR (2 calls, 1 not posted)"
    assert applied_line(dict(debit, amount="0.00")) == "ledger: alice moved 0.00 EUR (19 calls)"
