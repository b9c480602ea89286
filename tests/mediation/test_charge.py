"""Mediated calls and the ledger tell one story (issue 9 finding 3), through the real
`chargingd mediate` and `chargingd rerate` commands on a real Redis and PostgreSQL.

A source charged to the ledger debits each call once (a re-run, or two imports of one
file at the same time, charge nothing twice); a record_only source matches its calls to
the live CDRs and moves nothing; a rerate moves only the difference to what each call
charged, and never refunds money that was never taken."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from cdr_factory import make_cdr

from chargingd.billing.db import BillingDB
from chargingd.core.money import format_amount
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.ledger import Ledger, Mode, Status

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

BIN = Path(sys.executable).parent / "chargingd"
PER_S = 10_000  # 0.60 a minute, billed per second
TARIFF = """
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
from = 2020-01-01T00:00:00Z
"""
HEADER = "id,account,from,to,start,answer,end,talk\n"
START_S = 1_782_892_800  # 2026-07-01T08:00:00Z
# The repro: four calls of a prepaid account, 208 s at 0.60/min = 2.08.
ALICE_CALLS = [("a1", 52), ("a2", 60), ("a3", 44), ("a4", 52)]


def _row(call_id: str, code: str, talk_s: int, offset_s: int = 0) -> str:
    start = START_S + offset_s
    answer = start + 3 if talk_s else 0
    end = (answer or start) + talk_s + (0 if talk_s else 20)
    return f"{call_id},{code},+4930111111,+4930222222,{start},{answer or ''},{end},{talk_s}\n"


def _file(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(rows))
    return path


def _source(name: str, **extra: str) -> str:
    lines = [
        f"[mediation.sources.{name}]",
        'format = "csv"',
        'time_format = "epoch"',
        'mapping = { call_id = "id", account = "account", caller = "from", callee = "to",'
        ' start = "start", answer = "answer", end = "end", billsec = "talk" }',
        'account_rule = "accountcode"',
        'account_map = { A = "alice", B = "bob", C = "acme", Y = "yoko" }',
    ]
    lines += [f'{k} = "{v}"' for k, v in extra.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def config(tmp_path: Path, redis_server: EmbeddedRedis, pg_url: str) -> Path:
    std = tmp_path / "std.toml"
    std.write_text(TARIFF.format(id="std", per_minute="0.60"))
    cheap = tmp_path / "cheap.toml"
    cheap.write_text(TARIFF.format(id="cheap", per_minute="0.45"))
    yen = tmp_path / "yen.toml"  # 6 yen a minute, billed per second
    yen.write_text(TARIFF.format(id="yen", per_minute="6").replace('"EUR"', '"JPY"'))
    path = tmp_path / "chargingd.toml"
    path.write_text(
        f'[server]\ndata_dir = "{tmp_path / "var"}"\n'
        f'[redis]\nurl = "{redis_server.url}"\n'
        f'[billing]\ndb_url = "{pg_url}"\n'
        f'[rating]\nplans = {{ std = "{std}", cheap = "{cheap}", yen = "{yen}" }}\n'
        + _source("pbx", charge="ledger")
        + _source("pbxcap", charge="ledger", insufficient="cap")
        + _source("gw", charge="record_only", match_source="radius")
        + '[mediation.sources.ciscogw]\nformat = "cisco_radius"\ncharge = "record_only"\n'
        'account_rule = "fixed"\naccount = "alice"\n'
    )
    return path


@pytest.fixture
async def ledger(redis: aioredis.Redis) -> AsyncIterator[Ledger]:
    led = Ledger(redis)
    await led.load_scripts()
    await led.create_account(
        "alice", mode=Mode.PREPAID, currency="EUR", balance_micros=10_000_000, tariff="std",
        who="t",
    )  # fmt: skip
    await led.create_account(
        "bob", mode=Mode.PREPAID, currency="EUR", balance_micros=1_000_000, tariff="std", who="t"
    )
    await led.create_account(
        "acme", mode=Mode.POSTPAID, currency="EUR", credit_limit_micros=5_000_000, tariff="std",
        who="t",
    )  # fmt: skip
    await led.create_account(
        "yoko", mode=Mode.PREPAID, currency="JPY", balance_micros=1000 * 10**6, tariff="yen",
        who="t",
    )  # fmt: skip
    yield led


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[BillingDB]:
    database = await BillingDB.open(pg_url)
    yield database
    await database.close()


async def _run(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        str(BIN), *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def _mediate(config: Path, path: Path, source: str) -> str:
    code, out, err = await _run("mediate", str(path), "--source", source, "--config",
                                str(config), "--quiet")  # fmt: skip
    assert code == 0, out + err
    return out


async def _rerate(config: Path, *args: str) -> dict[str, Any]:
    code, out, err = await _run("rerate", "--config", str(config), "--json",
                                "--from", "2026-07-01", "--to", "2026-07-01", *args)  # fmt: skip
    assert code == 0, err
    result: dict[str, Any] = json.loads(out)
    return result


async def _cdrs(db: BillingDB, source: str) -> dict[str, tuple[Any, ...]]:
    async def work(conn: Any) -> dict[str, tuple[Any, ...]]:
        cur = await conn.execute(
            "SELECT call_id, cost_micros, charged_micros, charge, charge_reason, tariff, extra"
            " FROM cdrs WHERE source = %s",
            (source,),
        )
        return {row[0]: tuple(row[1:]) for row in await cur.fetchall()}

    result: dict[str, tuple[Any, ...]] = await db.run(work)
    return result


async def test_mediated_calls_are_debited_once_and_rerate_settles_the_difference(
    config: Path, ledger: Ledger, db: BillingDB, tmp_path: Path
) -> None:
    rows = [_row(c, "A", s, i * 100) for i, (c, s) in enumerate(ALICE_CALLS)]
    path = _file(tmp_path / "pbx.csv", [*rows, _row("a5", "A", 0, 500)])  # and one unanswered
    out = await _mediate(config, path, "pbx")
    assert "stored 5, duplicates 0, rejected 0, unanswered 1, debited 2.08 EUR" in out
    alice = await ledger.get_account("alice")
    assert alice.balance_micros == 10_000_000 - 2_080_000
    cdrs = await _cdrs(db, "pbx")
    for call_id, talk_s in ALICE_CALLS:
        cost, charged, charge, reason, tariff, _ = cdrs[call_id]
        assert (cost, charged, charge, reason) == (talk_s * PER_S, talk_s * PER_S,
                                                   "mediated_debit", "")  # fmt: skip
        assert tariff == "std"  # the plan named as live CDRs name it
    assert cdrs["a5"][:4] == (0, 0, "mediated_debit", "")
    (usage,) = await db.usage("alice")
    assert usage.cost_micros == usage.charged_micros == 2_080_000
    audit = [e for e in await ledger.audit("alice") if e.what == "usage"]
    assert sorted(e.details["call"] for e in audit) == ["a1", "a2", "a3", "a4"]

    again = await _mediate(config, path, "pbx")  # the same file again: nothing moves
    assert "stored 0, duplicates 5" in again and "debited" not in again
    assert (await ledger.get_account("alice")).balance_micros == 7_920_000

    # A cheaper plan (0.45/min): the ledger gives back the difference to what was
    # charged (2.08 - 1.56), and nothing more however often the rerate runs.
    report = await _rerate(config, "--plan", str(tmp_path / "cheap.toml"), "--apply")
    (row,) = report["accounts"]
    assert (row["account_id"], row["ledger"]) == ("alice", "-0.52")
    assert (await ledger.get_account("alice")).balance_micros == 10_000_000 - 1_560_000
    cdrs = await _cdrs(db, "pbx")
    assert sum(c[0] for c in cdrs.values()) == sum(c[1] for c in cdrs.values()) == 1_560_000
    assert {c[3] for k, c in cdrs.items() if k != "a5"} == {"rerate"}
    again_report = await _rerate(config, "--plan", str(tmp_path / "cheap.toml"), "--apply")
    assert again_report["changed_cdrs"] == 0 and again_report["applied"] == []
    assert (await ledger.get_account("alice")).balance_micros == 8_440_000


async def test_the_summary_writes_each_currency_in_its_minor_unit(
    config: Path, ledger: Ledger, db: BillingDB, tmp_path: Path
) -> None:
    """`chargingd mediate`'s summary: what was debited in the currency's minor unit with
    its code (a yen account's 18 yen said "debited 18.00"); a file whose calls are of
    accounts in two currencies says each one's amount, never one sum of both."""
    yen = [_row("y1", "Y", 60), _row("y2", "Y", 120, 100)]  # 6 + 12 yen
    out = await _mediate(config, _file(tmp_path / "yen.csv", yen), "pbx")
    assert out.strip() == "read 2, stored 2, duplicates 0, rejected 0, unanswered 0, debited 18 JPY"
    assert (await ledger.get_account("yoko")).balance_micros == (1000 - 18) * 10**6
    eur = [_row(c, "A", t, i * 100) for i, (c, t) in enumerate(ALICE_CALLS)]
    out = await _mediate(config, _file(tmp_path / "eur.csv", eur), "pbx")
    assert out.strip() == (
        "read 4, stored 4, duplicates 0, rejected 0, unanswered 0, debited 2.08 EUR"
    )
    both = [_row("m1", "A", 60, 1000), _row("m2", "Y", 60, 1000)]
    code, out, err = await _run("mediate", str(_file(tmp_path / "both.csv", both)), "--source",
                                "pbx", "--config", str(config), "--quiet", "--dry-run")  # fmt: skip
    assert code == 0, out + err
    assert out.strip() == (
        "dry run: read 2, stored 2, duplicates 0, rejected 0, unanswered 0,"
        " would debit 0.60 EUR + 6 JPY"
    )
    out = await _mediate(config, _file(tmp_path / "both.csv", both), "pbx")
    assert out.strip().endswith(", debited 0.60 EUR + 6 JPY"), out


async def test_two_imports_of_one_file_at_once_charge_once(
    config: Path, ledger: Ledger, db: BillingDB, tmp_path: Path
) -> None:
    talk = [30 + i % 90 for i in range(400)]
    rows = [_row(f"c{i}", "C", t, i * 10) for i, t in enumerate(talk)]
    path = _file(tmp_path / "big.csv", rows)
    results = await asyncio.gather(*(
        _run("mediate", str(path), "--source", "pbx", "--config", str(config), "--quiet")
        for _ in range(3)
    ))  # fmt: skip
    assert all(code == 0 for code, _, _ in results), results
    total = sum(talk) * PER_S
    acme = await ledger.get_account("acme")
    assert acme.balance_micros == -total and acme.debits_micros == total
    cdrs = await _cdrs(db, "pbx")
    assert len(cdrs) == 400
    assert sum(c[1] for c in cdrs.values()) == total
    # A postpaid limit sees the usage: far past 5.00, the account is suspended for credit.
    assert {c[3] for c in cdrs.values()} <= {"", "debt"}
    assert (acme.status, acme.status_reason) == (Status.SUSPENDED, "credit")
    assert acme.available_micros == 0


async def test_insufficient_prepaid_balance_debt_or_cap(
    config: Path, ledger: Ledger, db: BillingDB, tmp_path: Path
) -> None:
    rows = [_row(c, "A", s, i * 100) for i, (c, s) in enumerate(ALICE_CALLS)]
    await _mediate(config, _file(tmp_path / "a.csv", rows), "pbx")
    await ledger.adjust("alice", -7_920_000, txn_id="spent", who="t", why="other calls")
    more = [_row(f"x{i}", "A", 100, 1000 + i * 200) for i in range(2)]  # 2 x 1.00
    await _mediate(config, _file(tmp_path / "x.csv", more), "pbx")
    alice = await ledger.get_account("alice")
    assert alice.balance_micros == -2_000_000  # the calls happened: a debt, said so
    debts = await _cdrs(db, "pbx")
    assert [debts[f"x{i}"][1:4] for i in range(2)] == [
        (1_000_000, "mediated_debit", "debt"), (1_000_000, "mediated_debit", "debt"),
    ]  # fmt: skip
    # The capping source takes what bob has (1.00), charges the rest nothing, says so.
    capped = [_row(f"b{i}", "B", 60, i * 100) for i in range(3)]  # 3 x 0.60
    out = await _mediate(config, _file(tmp_path / "b.csv", capped), "pbxcap")
    assert "debited 1.00 EUR" in out
    bob = await ledger.get_account("bob")
    assert bob.balance_micros == 0
    cdrs = await _cdrs(db, "pbxcap")
    assert sum(c[1] for c in cdrs.values()) == 1_000_000
    assert sorted((c[1], c[3]) for c in cdrs.values()) == [
        (0, "capped"), (400_000, "capped"), (600_000, ""),
    ]  # fmt: skip
    assert all(c[0] == 600_000 for c in cdrs.values())  # the cost stays the price


async def test_record_only_calls_match_their_live_cdrs_and_move_nothing(
    config: Path, ledger: Ledger, db: BillingDB, tmp_path: Path
) -> None:
    live = [
        make_cdr(
            i,
            call_id=f"L{i}",
            account_id="alice",
            start_ms=(START_S + i * 100) * 1000,
            charge="live",
            charged_micros=make_cdr(i).cost_micros,
        )
        for i in range(3)
    ]
    assert await db.store_cdrs(live) == 3
    rows = [_row(f"L{i}", "A", 60, i * 100) for i in range(3)] + [_row("L9", "A", 60, 900)]
    out = await _mediate(config, _file(tmp_path / "gw.csv", rows), "gw")
    assert "stored 4" in out and "debited" not in out
    assert (await ledger.get_account("alice")).balance_micros == 10_000_000  # untouched
    cdrs = await _cdrs(db, "gw")
    for i in range(3):
        cost, charged, charge, reason, _, extra = cdrs[f"L{i}"]
        assert (charged, charge, reason, extra["live_call_id"]) == (0, "recorded_only", "", f"L{i}")
        assert cost == 60 * PER_S  # rated, for revenue assurance to compare
    assert cdrs["L9"][1:4] == (0, "recorded_only", "unmatched")
    (usage,) = await db.usage("alice")
    assert usage.calls == 3  # the live calls; their switch records are not counted again
    # A rerate moves money for the live calls only (their charge), never for the echoes.
    report = await _rerate(config, "--plan", str(tmp_path / "cheap.toml"), "--apply")
    (row,) = report["accounts"]
    live_cost = sum(c.cost_micros for c in live)
    live_new = sum(c.duration_s * 7_500 for c in live)  # 0.45/min
    assert row["ledger"] == format_amount(live_new - live_cost, 2)  # EUR: 2 decimals or more
    assert (await ledger.get_account("alice")).balance_micros == 10_000_000 + live_cost - live_new
    assert {c[1] for c in (await _cdrs(db, "gw")).values()} == {0}


def _cisco_stop(conf_id: str, session_id: str, talk_s: int) -> str:
    """A Cisco gateway's answer-leg Stop (FreeRADIUS detail file), as in its docs."""
    t = time.gmtime(START_S)
    stamp = time.strftime("%a %b %d %H:%M:%S %Y", t)
    setup = time.strftime("%H:%M:%S.000 UTC %a %b %d %Y", t)
    end = time.strftime("%H:%M:%S.000 UTC %a %b %d %Y", time.gmtime(START_S + talk_s))
    return (
        f"{stamp}\n\tAcct-Status-Type = Stop\n\tNAS-IP-Address = 192.0.2.10\n"
        f'\tAcct-Session-Id = "{session_id}"\n\tCalling-Station-Id = "4930111111"\n'
        f'\tCalled-Station-Id = "4930222222"\n\th323-conf-id = "h323-conf-id={conf_id}"\n'
        '\th323-call-origin = "h323-call-origin=answer"\n'
        f'\th323-setup-time = "h323-setup-time={setup}"\n'
        f'\th323-connect-time = "h323-connect-time={setup}"\n'
        f'\th323-disconnect-time = "h323-disconnect-time={end}"\n'
        '\th323-disconnect-cause = "h323-disconnect-cause=10"\n'
        f"\tAcct-Session-Time = {talk_s}\n\n"
    )


async def test_record_only_cisco_calls_match_live_cdrs_keyed_by_the_spaced_conf_id(
    config: Path, ledger: Ledger, db: BillingDB, tmp_path: Path
) -> None:
    """A cisco RADIUS client's live CDR is keyed by the h323-conf-id as the gateway
    sends it, in four groups ("3A7F2C10 11E9A1B2 ..."); cisco_radius reads the same
    call's id without the spaces. The record_only match looked the latter up as it
    is, so every call of the gateway's own accounting file was "unmatched" (as if it
    had bypassed chargingd)."""
    spaced = "3A7F2C10 11E9A1B2 8000C0A8 0A0A0001"
    live = make_cdr(1, call_id=spaced, account_id="alice", start_ms=START_S * 1000,
                    charge="live", charged_micros=make_cdr(1).cost_micros)  # fmt: skip
    assert await db.store_cdrs([live]) == 1
    detail = tmp_path / "detail-20260701"
    detail.write_text(
        _cisco_stop(spaced, "0000001A", 61) + _cisco_stop("0A0A0002 " * 3 + "0A0A0002", "1B", 5)
    )
    out = await _mediate(config, detail, "ciscogw")
    assert "stored 2" in out, out
    cdrs = await _cdrs(db, "ciscogw")
    _, charged, charge, reason, _, extra = cdrs[spaced.replace(" ", "")]
    assert (charged, charge, reason, extra.get("live_call_id")) == (
        0, "recorded_only", "", spaced,
    )  # fmt: skip
    assert cdrs["0A0A0002" * 4][3] == "unmatched"  # no live CDR: still said
    assert (await ledger.get_account("alice")).balance_micros == 10_000_000
