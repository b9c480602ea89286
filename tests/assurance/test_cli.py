"""`chargingd assure` as a command: the run is stored, listed and shown again, its exit
status says whether leakage exceeds the threshold, bad arguments are a usage error."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import redis.asyncio as aioredis
from assurance_harness import MICROS_PER_S, live_cdr, switch_cdr

from chargingd.billing.db import BillingDB
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.ledger import Ledger, Mode

BIN = Path(sys.executable).parent / "chargingd"


def _config(tmp_path: Path, pg_url: str, redis_url: str, threshold: str) -> Path:
    path = tmp_path / f"chargingd-{threshold}.toml"
    path.write_text(
        f"""
[server]
data_dir = "{tmp_path / "data"}"

[redis]
url = "{redis_url}"

[billing]
db_url = "{pg_url}"

[mediation.sources.sw1]
format = "cisco_radius"
charge = "record_only"

[assurance]
leakage_threshold = "{threshold}"
"""
    )
    return path


def _assure(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), "assure", "--config", str(config), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


async def test_runs_are_stored_listed_shown_and_the_exit_status_says_leakage(
    pg_url: str, redis: aioredis.Redis, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    db = await BillingDB.open(pg_url)
    calls = [live_cdr(n) for n in range(3)]
    missing = live_cdr(7, usage_s=42)
    await db.store_cdrs([*calls, *(switch_cdr(c) for c in calls), switch_cdr(missing)])
    await db.close()
    strict = _config(tmp_path, pg_url, redis_server.url, "0")
    period = ("--from", "2026-11-04", "--to", "2026-11-04")

    first = _assure(strict, *period, "--json")
    assert first.returncode == 3, first.stderr  # leakage 0.42 > 0
    out = json.loads(first.stdout)
    assert out["leakage"] == {"EUR": "0.42"} and out["over_threshold"] is True
    assert out["counts"] == {"uncharged_call": 1}
    assert out["matching"]["matched_by_id"] == 3
    (finding,) = out["findings"]
    assert finding["call_id"] == "SESS-7" and finding["money_micros"] == 42 * MICROS_PER_S
    # The alert stream has the incident (one per currency over the threshold).
    (opened,) = [f for _, f in await redis.xrange("{alerts}:stream") if f[b"event"] == b"opened"]
    assert opened[b"key"] == b"assurance.leakage:EUR" and b"0.42 EUR" in opened[b"summary"]
    # The days given (--to included); it said "from 2026-11-04 to 2026-11-05".
    assert b"from 2026-11-04 to 2026-11-04 (run" in opened[b"summary"]

    lenient = _config(tmp_path, pg_url, redis_server.url, "1.00")
    second = _assure(lenient, *period, "--account", "alice")
    assert second.returncode == 0, second.stderr
    assert "uncharged_call" in second.stdout and "within the threshold" in second.stdout

    listed = _assure(strict, "--list", "--json")
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert [r["account"] for r in runs] == ["alice", None]
    assert runs[1]["from"].startswith("2026-11-04T00:00:00") and "findings" not in runs[1]

    shown = _assure(strict, "--show", str(out["run_id"]), "--csv")
    assert shown.returncode == 3, shown.stderr
    rows = list(csv.DictReader(io.StringIO(shown.stdout)))
    assert [(r["kind"], r["call_id"], r["money"]) for r in rows] == [
        ("uncharged_call", "SESS-7", "0.42")
    ]
    assert json.loads(rows[0]["detail"])["switch_duration_s"] == 42


async def test_a_reader_that_goes_away_still_gets_the_alert_and_the_exit_status(
    pg_url: str, redis: aioredis.Redis, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """`chargingd assure ... | head -50 | mail ops` (cron): the report is longer than the
    pipe holds and head leaves. The run is stored and its leakage alert raised, and the
    exit status is still 3; it was "[Errno 32] Broken pipe", exit 1 and no alert."""
    db = await BillingDB.open(pg_url)
    await db.store_cdrs([switch_cdr(live_cdr(n, usage_s=42)) for n in range(1500)])
    await db.close()
    config = _config(tmp_path, pg_url, redis_server.url, "0")
    proc = subprocess.Popen(
        [str(BIN), "assure", "--config", str(config), "--from", "2026-11-04", "--to",
         "2026-11-04"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"assurance run 1:")
    proc.stdout.close()  # the reader goes away; 1,500 finding lines are ~200 kB
    assert proc.wait(timeout=120) == 3
    with proc.stderr:
        assert b"Broken pipe" not in proc.stderr.read()
    (opened,) = [f for _, f in await redis.xrange("{alerts}:stream") if f[b"event"] == b"opened"]
    assert (
        opened[b"key"] == b"assurance.leakage:EUR" and b"leakage 352.80 EUR" in opened[b"summary"]
    )


def test_usage_errors(tmp_path: Path, pg_url: str, redis_server: EmbeddedRedis) -> None:
    config = _config(tmp_path, pg_url, redis_server.url, "0")
    for args, message in (
        ((), "--from and --to are required"),
        (("--list", "--from", "2026-11-01"), "--list and --show take no"),
        (("--from", "2026-11-31", "--to", "2026-12-01"), "not a date"),
        (("--from", "2026-11-02", "--to", "2026-11-01"), "--to must not be before --from"),
        (("--from", "2026-11-01", "--to", "2026-11-01", "--source", "nope"), "unknown source"),
    ):
        result = _assure(config, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr
    assert _assure(config, "--show", "999999").returncode == 1


async def test_an_account_that_does_not_exist_is_refused(
    tmp_path: Path, pg_url: str, redis: aioredis.Redis, redis_server: EmbeddedRedis
) -> None:
    """`assure --account NOPE` stored and printed an empty run, exit 0, as if the
    account had nothing wrong: a mistyped id passed the daily check."""
    config = _config(tmp_path, pg_url, redis_server.url, "0")
    day = ("--from", "2026-10-01", "--to", "2026-10-01")
    before = json.loads(_assure(config, "--list", "--json").stdout)
    refused = _assure(config, *day, "--account", "nope-qp", "--json")
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == "chargingd assure: no such account 'nope-qp'\n"
    assert json.loads(_assure(config, "--list", "--json").stdout) == before  # none stored
    # One the ledger has, with no call in the period (nor ever): an empty run, exit 0.
    ledger = Ledger(redis)
    await ledger.load_scripts()
    await ledger.create_account("quiet-qp", mode=Mode.PREPAID, currency="EUR", who="test")
    quiet = _assure(config, *day, "--account", "quiet-qp", "--json")
    assert quiet.returncode == 0, quiet.stderr
    assert json.loads(quiet.stdout)["findings"] == []


def test_list_to_a_reader_that_went_away_is_no_error(
    pg_url: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    """`chargingd assure --list | head -5`: head may leave before the list is written.
    It said "chargingd assure: [Errno 32] Broken pipe" and exited 1 (a failure, for
    a list that was shown); --show and a run already ended quietly."""
    config = _config(tmp_path, pg_url, redis_server.url, "0")
    assert _assure(config, "--from", "2026-11-04", "--to", "2026-11-04").returncode == 0
    for args in (["--list"], ["--list", "--json"]):
        read, write = os.pipe()
        os.close(read)  # the reader is gone before anything is written
        try:
            done = subprocess.run([str(BIN), "assure", "--config", str(config), *args],
                                  stdout=write, stderr=subprocess.PIPE, text=True,
                                  timeout=120, check=False)  # fmt: skip
        finally:
            os.close(write)
        assert (done.returncode, done.stderr) == (0, ""), args
