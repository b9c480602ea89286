"""`chargingd mediate` as an operator runs it, against the real billing database; and the
shared reference samples (../shared, when present) against the README's call table."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from paths import FIXTURES as ALL_FIXTURES
from paths import SHARED_DATA, needs_shared

from chargingd.app.cli import main
from chargingd.billing.db import BillingDB
from chargingd.core.config.mediation import SourceConfig
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.ledger import Ledger, Mode
from chargingd.mediation.cli import EXIT_REJECTS
from chargingd.mediation.normalise import Call
from chargingd.mediation.pipeline import normalised

FIXTURES = ALL_FIXTURES / "cdr"
SHARED = SHARED_DATA / "cdr-samples"


def write_config(tmp_path: Path, db_url: str) -> Path:
    path = tmp_path / "chargingd.toml"
    path.write_text(
        f"""
[server]
data_dir = "{tmp_path / "var"}"

[billing]
db_url = "{db_url}"

[mediation.sources.pbx1]
format = "asterisk"
time_zone = "Europe/Berlin"
default_country = "DE"
account_rule = "fixed"
account = "pbx-customer"
plan = "{FIXTURES / "tariff_tp"}"
tenant = "chargingd.test"
charge = "record_only"
loguniqueid = true
loguserfield = true
"""
    )
    return path


def test_mediate_command_twice(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, pg_url)
    cdr_file = tmp_path / "Master.csv"
    cdr_file.write_bytes((FIXTURES / "asterisk_Master.csv").read_bytes())
    argv = ["mediate", str(cdr_file), "--source", "pbx1", "--config", str(config), "--quiet"]
    assert main(argv) == 1  # EXIT_REJECTS: the run completed, 4 rows were rejected
    out = capsys.readouterr().out
    assert "read 9, stored 5, duplicates 0, rejected 4, unanswered 2" in out
    assert f"4 rejected -> {cdr_file}.rejects.csv" in out
    assert main([*argv, "--rejects", str(tmp_path / "rej")]) == 1
    out = capsys.readouterr().out
    assert "read 9, stored 0, duplicates 5, rejected 4, unanswered 2" in out
    assert (tmp_path / "rej" / "Master.csv.rejects.csv").exists()

    async def count() -> int:
        db = await BillingDB.open(pg_url)
        try:
            return await db.count_cdrs()
        finally:
            await db.close()

    assert asyncio.run(count()) == 5


def test_dry_run_stores_nothing(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, "postgresql://127.0.0.1:1/none")  # never opened
    argv = ["mediate", str(FIXTURES / "asterisk_Master.csv"), "--source", "pbx1"]
    rejects = tmp_path / "rej"
    argv += ["--config", str(config), "--dry-run", "--quiet", "--rejects", str(rejects)]
    assert main(argv) == 1  # the fixture holds 4 bad rows
    assert "dry run: read 9, stored 5, duplicates 0" in capsys.readouterr().out


def test_exit_status_tells_rejects_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """0: every row stored; 1 (EXIT_REJECTS): the run completed with rejected rows."""
    config = write_config(tmp_path, "postgresql://127.0.0.1:1/none")  # dry run: never opened
    good = tmp_path / "good.csv"
    bad = tmp_path / "bad.csv"
    rows = (FIXTURES / "asterisk_Master.csv").read_text().splitlines(keepends=True)
    good_rows = [r for r in rows if r.count(",") >= 15 and "ANSWERED" in r][:1]
    assert good_rows
    good.write_text("".join(good_rows))
    bad.write_text("".join(good_rows) + "not,a,cdr\n")
    argv = ["--source", "pbx1", "--config", str(config), "--dry-run", "--quiet"]
    argv += ["--rejects", str(tmp_path / "rej")]
    assert main(["mediate", str(good), *argv]) == 0
    assert "rejected 0" in capsys.readouterr().out
    assert main(["mediate", str(bad), *argv]) == EXIT_REJECTS == 1
    assert "stored 1, duplicates 0, rejected 1" in capsys.readouterr().out
    assert main(["mediate", str(good), str(bad), *argv]) == 1  # any file with rejects


@pytest.mark.parametrize(
    ("files", "source", "message"),
    [
        ([], "nosuch", "no source 'nosuch' (pbx1)"),
        (["/nonexistent/file.csv"], "pbx1", "no such file: /nonexistent/file.csv"),
    ],
)
def test_usage_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    files: list[str],
    source: str,
    message: str,
) -> None:
    config = write_config(tmp_path, "postgresql://127.0.0.1:1/none")
    argv = ["mediate", str(FIXTURES / "asterisk_Master.csv"), *files, "--source", source]
    argv += ["--config", str(config)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_rejects_directory_that_cannot_take_files_stops_before_anything_is_stored(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--rejects naming a file failed at the first reject with a traceback, after the
    good rows of the batch were stored and with the rejects lost; it is a usage error
    (exit 2) up front. A directory that does not exist yet is made."""
    config = write_config(tmp_path, pg_url)
    not_a_dir = tmp_path / "rejects"
    not_a_dir.write_text("")
    argv = ["mediate", str(FIXTURES / "asterisk_Master.csv"), "--source", "pbx1"]
    argv += ["--config", str(config), "--quiet"]
    assert main([*argv, "--rejects", str(not_a_dir)]) == 2
    err = capsys.readouterr().err
    assert err == f"chargingd mediate: rejects directory {not_a_dir} is not a directory\n"

    async def count() -> int:
        db = await BillingDB.open(pg_url)
        try:
            return await db.count_cdrs()
        finally:
            await db.close()

    assert asyncio.run(count()) == 0
    made = tmp_path / "new" / "rejects"
    assert main([*argv, "--rejects", str(made)]) == EXIT_REJECTS
    assert (made / "asterisk_Master.csv.rejects.csv").exists()
    assert asyncio.run(count()) == 5


@pytest.mark.parametrize("broken", ["missing", "bad"])
def test_a_plan_that_cannot_load_is_a_config_error_before_anything_is_read(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], broken: str
) -> None:
    """A source plan that cannot load (a typo in its path, a broken file) crashed the
    run with a traceback (exit 1) at the first answered call; it is a configuration
    error (exit 2) naming the source, the file and why, and nothing is stored."""
    plan = tmp_path / "plans" / "wholesale.toml"
    if broken == "bad":
        plan.parent.mkdir()
        sample = (Path(__file__).parents[2] / "config" / "tariffs" / "sample.toml").read_text()
        plan.write_text(sample.replace('"Europe/London"', '"Europe/Londn"'))
    config = write_config(tmp_path, pg_url)
    config.write_text(config.read_text().replace(str(FIXTURES / "tariff_tp"), str(plan)))
    argv = ["mediate", str(FIXTURES / "asterisk_Master.csv"), "--source", "pbx1"]
    assert main([*argv, "--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err
    why = "cannot read" if broken == "missing" else "unknown time zone 'Europe/Londn'"
    assert err.startswith(f"chargingd mediate: [mediation.sources.pbx1] plan: {plan}")
    assert why in err and "Traceback" not in err

    async def count() -> int:
        db = await BillingDB.open(pg_url)
        try:
            return await db.count_cdrs()
        finally:
            await db.close()

    assert asyncio.run(count()) == 0


# The README of the shared samples: C1..C4 by A-number, B-number, start, answer, end, billsec.
C1 = ("+4930123456", "+4989987654", 1552294800000, 1552294805000, 1552294930000, 125, 16)
C2 = ("+4930123456", "+4930111222", 1552338000000, 1552338003000, 1552338048000, 45, 16)
C3 = ("+4930555000", "+4989987654", 1552295400000, 0, 1552295420000, 0, 17)
C4 = ("+4930555000", "+4915123456789", 1552296000000, 0, 1552296030000, 0, 19)


@needs_shared("cdr-samples")
@pytest.mark.parametrize(
    ("name", "fmt", "expected"),
    [
        ("asterisk_Master.csv", "asterisk", [C1, C2, C3, C4]),
        ("freeswitch_Master_example.csv", "freeswitch", [C1, C2, C3, C4]),
        ("freeswitch_sql_template.sql", "freeswitch", [C1, C3]),
        ("cucm_cdr_sample.csv", "cucm", [C1, C3]),
        ("cisco_ios_radius_acct.txt", "cisco_radius", None),
        # C1's answer leg Stop in radclient's input syntax (was: no record read at all).
        ("cisco_ios_radius_acct.radclient", "cisco_radius", None),
        ("kamailio_acc_syslog.log", "kamailio", None),
        ("kamailio_acc_db.csv", "kamailio_db", None),
    ],
)
def test_shared_samples(name: str, fmt: str, expected: list[tuple[object, ...]] | None) -> None:
    # The Asterisk sample was written with loguniqueid=yes, loguserfield=yes (its README).
    options = {"loguniqueid": True, "loguserfield": True} if fmt == "asterisk" else {}
    with open(SHARED / name, encoding="utf-8", newline="") as fh:
        items = [item for _, item in normalised(fh, "s", SourceConfig(format=fmt, **options))]
    calls = [c for c in items if isinstance(c, Call)]
    assert len(calls) == len(items), [i for i in items if not isinstance(i, Call)]
    got = [
        (c.caller, c.callee, c.start_ms, c.answer_ms, c.end_ms, c.duration_s, c.cause)
        for c in calls
    ]
    if expected is not None:
        assert got == expected
        return
    # Kamailio sees the call from its 200 OK, Cisco to the millisecond: compare by caller.
    first = calls[0]
    assert (first.caller, first.callee, first.duration_s, first.cause) == (
        "+4930123456",
        "+4989987654",
        125,
        16,
    )
    assert first.end_ms // 1000 == C1[4] // 1000


def test_mediate_with_ledger_accounts(
    redis_server: EmbeddedRedis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """account_rule = "ani": the caller's ledger account pays, with its account's tariff."""

    async def setup() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            await client.flushall()
            ledger = Ledger(client)
            await ledger.load_scripts()
            await ledger.create_account(
                "carol",
                mode=Mode.POSTPAID,
                currency="EUR",
                tariff="std",
                identities=("ani:+493012345678",),
                who="test",
            )
        finally:
            await client.aclose()

    asyncio.run(setup())
    config = tmp_path / "c.toml"
    config.write_text(
        f"""
[redis]
url = "{redis_server.url}"

[rating]
plans = {{ std = "{FIXTURES / "tariff_tp"}" }}

[mediation.sources.sbc]
format = "kamailio"
default_country = "DE"
tenant = "chargingd.test"
charge = "ledger"
"""
    )
    argv = ["mediate", str(FIXTURES / "kamailio_acc.log"), "--source", "sbc"]
    argv += ["--config", str(config), "--dry-run", "--quiet", "--rejects", str(tmp_path)]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "read 7, stored 1, duplicates 0, rejected 4, unanswered 0" in out
    assert out.rstrip().endswith(", pending 2")  # a BYE and an INVITE: kept for their files
    # A dry run writes no rejects file: it shows the rejects.
    assert not (tmp_path / "kamailio_acc.log.rejects.csv").exists()
    assert "rejected: no account with identity ani:+4930222333" in out


@needs_shared("cdr-samples")
def test_shared_kamailio_acc_cdrs_through_a_csv_mapping() -> None:
    """The dialog module's acc_cdrs table needs no format of its own: a mapping reads it."""
    source = SourceConfig(
        format="csv",
        mapping={
            "call_id": "callid",
            "caller": "src_user",
            "callee": "dst_user",
            "start": "start_time",
            "answer": "start_time",
            "end": "end_time",
        },
    )
    with open(SHARED / "kamailio_acc_cdrs.csv", encoding="utf-8", newline="") as fh:
        ((_, call),) = list(normalised(fh, "s", source))
    assert isinstance(call, Call)
    assert (call.caller, call.callee, call.answer_ms, call.duration_s) == (
        "+4930123456",
        "+4989987654",
        C1[3],
        125,
    )
