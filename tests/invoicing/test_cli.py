"""The `chargingd invoice|report|cdr|db` commands (cli.main in-process; `db shell` as a
process), on the session's real PostgreSQL and Redis, a config file pointing at both."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis as syncredis
from invoicing_harness import cdr, load_cdrs, postpaid, query

from chargingd.app.cli import main
from chargingd.billing.cdr import CDR, CDR_STREAM
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.ledger import Ledger

BIN = Path(sys.executable).parent / "chargingd"

FLAT = """
[tariff]
id = "{id}"
currency = "EUR"
timezone = "UTC"
decimals = 4

[destinations]
UK = ["44"]
DE = ["49"]

[rates.FLAT]
rate = "{rate}"
unit = "60s"
increment = "1s"

[plans.ALL]
[[plans.ALL.rates]]
destinations = ["UK", "DE"]
rate = "FLAT"

[[profiles]]
subject = "*any"
plan = "ALL"
from = 2020-01-01T00:00:00Z
"""


@pytest.fixture
def config(tmp_path: Path, pg_url: str, redis_server: EmbeddedRedis) -> Path:
    with syncredis.Redis.from_url(redis_server.url) as r:
        r.flushall()
    for name, rate in (("cheap", "0.30"), ("dear", "1.20")):
        (tmp_path / f"{name}.toml").write_text(FLAT.format(id=name, rate=rate))
    path = tmp_path / "chargingd.toml"
    path.write_text(
        f"""
[server]
data_dir = "{tmp_path / "data"}"

[redis]
url = "{redis_server.url}"

[billing]
db_url = "{pg_url}"

[rating]
plans = {{ cheap = "{tmp_path / "cheap.toml"}", dear = "{tmp_path / "dear.toml"}" }}

[invoicing]
settle_delay_s = 0
default_vat_rate = "19"
destination_groups = {{ "United Kingdom" = ["UK*"] }}

[invoicing.issuer]
name = "Example Voice Carrier Ltd"
"""
    )
    asyncio.run(_seed(pg_url, redis_server.url))
    return path


async def _seed(pg_url: str, redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        ledger = Ledger(client)
        await ledger.load_scripts()
        await postpaid(ledger, "acme", tariff="dear")
    finally:
        await client.aclose()
    nov = [datetime(2026, 11, d, h, tzinfo=UTC) for d in (2, 3) for h in (9, 15)]
    rows = [
        cdr(
            i,
            "acme",
            when,
            billed_s=60 * (i + 1),
            charged_micros=1_200_000 * (i + 1),
            destination="UK" if i % 2 else "DE",
        )
        for i, when in enumerate(nov)
    ]
    # Callee numbers the flat tariffs price.
    rows = [(*r[:4], "+442079460000" if r[5] == "UK" else "+4930999999", *r[5:]) for r in rows]
    await load_cdrs(pg_url, rows)


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse's usage errors, as the shell sees them
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def run_json(*argv: str) -> Any:
    code, out, err = run(*argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_invoice_run_list_show_json(config: Path) -> None:
    c = str(config)
    dry = run_json("invoice", "--config", c, "run", "--period", "2026-11", "--dry-run")
    assert dry["dry_run"] and [d["number"] for d in dry["issued"]] == [None]
    done = run_json("invoice", "--config", c, "run", "--period", "2026-11")
    (issued,) = done["issued"]
    number = issued["number"]
    assert number.startswith("INV-") and done["cdrs"] == 4
    listed = run_json("invoice", "--config", c, "list", "--period", "2026-11")
    assert [(i["number"], i["status"]) for i in listed] == [(number, "open")]
    shown = run_json("invoice", "--config", c, "show", number)
    assert {k: shown[k] for k in ("number", "account", "period", "currency", "status")} == {
        "number": number,
        "account": "acme",
        "period": "2026-11",
        "currency": "EUR",
        "status": "open",
    }
    assert [
        {k: ln[k] for k in ("description", "quantity", "unit", "amount", "tax")}
        for ln in shown["lines"]
    ] == [
        {
            "description": "Calls to DE (2 calls)",
            "quantity": "4.00",
            "unit": "min",
            "amount": "4.80",
            "tax": "0.91",
        },
        {
            "description": "Calls to United Kingdom (2 calls)",
            "quantity": "6.00",
            "unit": "min",
            "amount": "7.20",
            "tax": "1.37",
        },
    ]
    assert (shown["subtotal"], shown["tax"], shown["total"]) == ("12.00", "2.28", "14.28")
    code, text, _ = run("invoice", "--config", c, "show", number)
    assert code == 0 and "total 14.28 EUR" in text
    again = run_json("invoice", "--config", c, "run", "--period", "2026-11")
    assert again["issued"] == [] and again["skipped"] == {"already issued": ["acme"]}


def test_credit_note_calls_csv_and_errors(config: Path, tmp_path: Path) -> None:
    c = str(config)
    number = run_json("invoice", "--config", c, "run", "--period", "2026-11")["issued"][0]["number"]
    note = run_json(
        "invoice", "--config", c, "credit-note", number, "--amount", "2.38", "--reason", "goodwill"
    )
    assert (note["kind"], note["total"], note["refers_to"]) == ("credit_note", "-2.38", number)
    csv_path = tmp_path / "calls.csv"
    code, _, _ = run("invoice", "--config", c, "calls", number, "-o", str(csv_path))
    lines = csv_path.read_text().splitlines()
    assert code == 0 and len(lines) == 5 and lines[0].startswith("start,answer,end,caller")
    assert [ln.split(",")[8] for ln in lines[1:]] == [
        "1.200000",
        "2.400000",
        "3.600000",
        "4.800000",
    ]
    code, _, err = run("invoice", "--config", c, "show", "INV-1999-000001")
    assert code == 1 and "no invoice 'INV-1999-000001'" in err
    # A malformed or negative amount is a usage error (exit 2, docs/invoicing.md), as
    # `ctl` answers the same amount; it exited 1, the code of a refusal.
    for bad, why in (("1e3", "not a plain decimal amount"), ("-1", "amount must not be negative")):
        code, _, err = run(
            "invoice", "--config", c, "credit-note", number, "--amount", bad, "--reason", "x"
        )
        assert code == 2 and f"argument --amount: {why}" in err, err
    code, _, err = run(
        "invoice", "--config", c, "credit-note", number, "--amount", "0.001", "--reason", "x"
    )
    assert code == 1 and "whole units of 0.01" in err
    # Malformed periods and dates are usage errors (exit 2, docs/invoicing.md), as in
    # `chargingd assure`; they exited 1, the code of a refusal.
    code, _, err = run("invoice", "--config", c, "run", "--period", "2026-13")
    assert code == 2 and "argument --period: period must be YYYY-MM" in err
    code, _, err = run("invoice", "--config", c, "list", "--period", "11/2026")
    assert code == 2 and "YYYY-MM" in err
    code, _, err = run(
        "report", "--config", c, "usage", "--account", "acme", "--from", "2026-11-31",
        "--to", "2026-12-01",
    )  # fmt: skip
    assert code == 2 and "argument --from: not a date: '2026-11-31'" in err
    code, _, err = run(
        "report", "--config", c, "revenue", "--from", "2026-11-30", "--to", "2026-11-01"
    )
    assert code == 2 and "--to must not be before --from" in err
    code, _, err = run("report", "--config", c, "savings", "--account", "acme", "--period", "x")
    assert code == 2 and "YYYY-MM" in err
    # Swapped dates were an empty answer, exit 0 ("no CDRs", a savings report of 0 calls)
    # where `report usage` says it is a usage error; no dates at all was a refusal (1).
    swapped = ("--from", "2026-11-30", "--to", "2026-11-01")
    code, out, err = run("cdr", "--config", c, "list", *swapped)
    assert (code, out) == (2, "") and "--to must not be before --from" in err
    code, out, err = run("report", "--config", c, "savings", "--account", "acme", *swapped)
    assert (code, out) == (2, "") and "--to must not be before --from" in err
    code, out, err = run(
        "report", "--config", c, "savings", "--account", "acme", "--from", "2026-11-01"
    )
    assert (code, out) == (2, "") and "give --period YYYY-MM or --from and --to" in err
    code, _, err = run("cdr", "--config", c, "list", "--to", "tomorrow")
    assert code == 2 and "not a date" in err
    # A well-formed period that is not over yet stays a refusal.
    code, _, err = run("invoice", "--config", c, "run", "--period", "2999-01", "--account", "acme")
    assert code == 1 and "can be invoiced from" in err


def test_call_detail_of_an_invoice_holds_only_its_currency(
    config: Path, pg_url: str, tmp_path: Path
) -> None:
    """A USD CDR on the EUR account is the run's error, billed nowhere: the invoice's
    CSV and PDF call detail must not list it nor add its 5.00 to the EUR total."""
    usd = cdr(9, "acme", datetime(2026, 11, 4, 9, tzinfo=UTC), charged_micros=5_000_000)
    usd = (*usd[:12], "USD", *usd[13:])
    asyncio.run(load_cdrs(pg_url, [usd]))
    c = str(config)
    code, out, _ = run("invoice", "--config", c, "run", "--period", "2026-11", "--json")
    issued = json.loads(out)
    assert code == 1 and issued["errors"] == ["acme: CDRs in USD, account in EUR"]
    number = issued["issued"][0]["number"]
    csv_path = tmp_path / "calls.csv"
    assert run("invoice", "--config", c, "calls", number, "-o", str(csv_path))[0] == 0
    rows = csv_path.read_text().splitlines()[1:]
    assert [r.split(",")[8:10] for r in rows] == [
        ["1.200000", "EUR"],
        ["2.400000", "EUR"],
        ["3.600000", "EUR"],
        ["4.800000", "EUR"],
    ]
    if shutil.which("pdftotext") is None:
        return
    pdf_path = tmp_path / "inv.pdf"
    assert (
        run("invoice", "--config", c, "pdf", number, "-o", str(pdf_path), "--calls", "yes")[0] == 0
    )
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf_path), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "5.000000" not in text
    assert re.search(r"4 calls\s+\d+\s+12\.000000\n", text), text


def test_reports_by_every_key(config: Path) -> None:
    c = str(config)
    common = ("--from", "2026-11-01", "--to", "2026-11-30")
    by_dest = run_json_report("usage", c, "--account", "acme", "--by", "destination", *common)
    assert [(r["key"], r["calls"], r["charged"]) for r in by_dest] == [
        ("DE", 2, "4.80"),
        ("United Kingdom", 2, "7.20"),
    ]
    by_day = run_json_report("usage", c, "--account", "acme", "--by", "day", *common)
    assert [(r["key"], r["calls"]) for r in by_day] == [("2026-11-02", 2), ("2026-11-03", 2)]
    by_hour = run_json_report("usage", c, "--account", "acme", "--by", "hour", *common)
    assert [(r["key"], r["calls"]) for r in by_hour] == [("09:00", 2), ("15:00", 2)]
    by_gw = run_json_report("usage", c, "--account", "acme", "--by", "gateway", *common)
    assert [(r["key"], r["minutes"]) for r in by_gw] == [("gw1", "10.00")]
    revenue = run_json_report("revenue", c, "--by", "account", *common)
    assert [(r["key"], r["charged"], r["rated"]) for r in revenue] == [("acme", "12.00", "12.00")]
    code, out, _ = run(
        "report", "--config", c, "usage", "--account", "acme", *common, "--format", "csv"
    )
    assert (
        code == 0
        and out.splitlines()[0]
        == "destination,currency,calls,minutes,rated,charged,charged_per_minute"
    )
    code, out, _ = run("report", "--config", c, "revenue", *common)
    assert code == 0 and "4 calls, 10.00 min, 12.00 EUR charged" in out


def test_reports_by_destination_show_no_row_for_unanswered_attempts_alone(
    config: Path, pg_url: str
) -> None:
    """Unanswered attempts alone made an "Other 0 calls" row (mediated: never rated,
    no destination) and a "FR_MOB 0 calls" one (live: rated at authorize), as invoices did
    before a466210; with answered calls of the group they change nothing. Other keys
    keep their rows (a day of attempts only is still that day's traffic)."""
    nov5 = datetime(2026, 11, 5, 10, tzinfo=UTC)
    attempts = [
        cdr(10 + n, "acme", nov5, billed_s=0, charged_micros=0, destination=dest,
            answered=False)
        for n, dest in enumerate(("", "FR_MOB", "DE"))
    ]  # fmt: skip
    asyncio.run(load_cdrs(pg_url, attempts))
    c = str(config)
    common = ("--from", "2026-11-01", "--to", "2026-11-30", "--format", "json")
    for kind, account in (("usage", ("--account", "acme")), ("revenue", ())):
        rows = run_json_report(kind, c, *account, "--by", "destination", *common[:4])
        assert [(r["key"], r["calls"], r["cdrs"], r["charged"]) for r in rows] == [
            ("DE", 2, 3, "4.80"),
            ("United Kingdom", 2, 2, "7.20"),
        ], kind
    by_day = run_json_report("usage", c, "--account", "acme", "--by", "day", *common[:4])
    assert [(r["key"], r["calls"], r["cdrs"]) for r in by_day][-1] == ("2026-11-05", 0, 3)
    code, out, _ = run("report", "--config", c, "usage", "--account", "acme", *common[:4])
    assert code == 0 and "Other" not in out and "FR_MOB" not in out


def test_usage_of_an_account_that_does_not_exist_is_refused(
    config: Path, redis_server: EmbeddedRedis
) -> None:
    """`report usage --account NOPE` printed an empty report, exit 0, as for an account
    with no calls: a mistyped id looked like a quiet customer."""
    c = str(config)
    common = ("--from", "2026-11-01", "--to", "2026-11-30")
    code, out, err = run("report", "--config", c, "usage", "--account", "nope", *common)
    assert (code, out, err) == (1, "", "chargingd report: no such account 'nope'\n")
    code, out, _ = run("report", "--config", c, "usage", "--account", "nope", *common,
                       "--format", "json")  # fmt: skip
    assert (code, out) == (1, "")
    # An account with CDRs, none in the period: an empty report.
    october = ("--from", "2026-10-01", "--to", "2026-10-31")
    code, out, err = run("report", "--config", c, "usage", "--account", "acme", *october)
    assert code == 0 and "no calls" in out, err
    # One the ledger alone has (no call, no journal copy in the database yet): the same.
    asyncio.run(_new_account(redis_server.url, "fresh"))
    assert run_json_report("usage", c, "--account", "fresh", *common) == []


async def _new_account(redis_url: str, account_id: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    try:
        ledger = Ledger(client)
        await ledger.load_scripts()
        await postpaid(ledger, account_id)
    finally:
        await client.aclose()


def run_json_report(kind: str, config: str, *args: str) -> list[dict[str, Any]]:
    code, out, err = run("report", "--config", config, kind, *args, "--format", "json")
    assert code == 0, err
    rows: list[dict[str, Any]] = json.loads(out)["rows"]
    return rows


def test_savings_reprices_under_every_plan(config: Path) -> None:
    found = run_json(
        "report", "--config", str(config), "savings", "--account", "acme", "--period", "2026-11"
    )
    assert (found["calls"], found["charged"], found["current_plan"]) == (4, "12.00", "dear")
    assert [(p["plan"], p["total"], p["saving"], p["cheaper"]) for p in found["plans"]] == [
        ("cheap", "3.00", "9.00", True),
        ("dear", "12.00", "0.00", False),
    ]
    # "from 2026-11-01 to 2026-12-01" read as December 1 included: say it is not, as
    # `invoice show` does for its period.
    code, out, err = run(
        "report", "--config", str(config), "savings", "--account", "acme", "--period", "2026-11"
    )
    assert code == 0, err
    assert "4 answered calls from 2026-11-01 to 2026-12-01 (end excluded), charged" in out
    # A mistyped account is no customer who would save nothing: refused, as usage's.
    code, out, err = run(
        "report", "--config", str(config), "savings", "--account", "nope", "--period", "2026-11"
    )
    assert (code, out, err) == (1, "", "chargingd report: no such account 'nope'\n")


def test_cdr_list_and_show(config: Path) -> None:
    c = str(config)
    rows = run_json("cdr", "--config", c, "list", "--account", "acme", "--limit", "3")
    assert [r["call_id"] for r in rows] == ["call-acme-0", "call-acme-1", "call-acme-2"]
    more = run_json("cdr", "--config", c, "list", "--after", str(rows[-1]["id"]))
    assert [r["call_id"] for r in more] == ["call-acme-3"]
    (one,) = run_json("cdr", "--config", c, "show", "call-acme-1")
    assert (one["charged"], one["charge"], one["destination"]) == ("2.40", "live", "UK")
    code, _, err = run("cdr", "--config", c, "show", "nope")
    assert code == 1 and "no CDR" in err
    code, out, _ = run("cdr", "--config", c, "list", "--from", "2026-11-03", "--to", "2026-11-03")
    # A page shorter than --limit is the last: no "continue" to a page that is empty.
    assert code == 0 and out.endswith("(2 CDRs, the last of the listing)\n")
    code, out, _ = run("cdr", "--config", c, "list", "--limit", "2")
    assert code == 0 and "(2 CDRs; continue with --after" in out


def test_cdr_list_pages_reach_cdrs_stored_late(config: Path, pg_url: str) -> None:
    """Following "continue with --after ID" from the first page lists every CDR once,
    in start order, also those stored after later calls (a switch's October file
    mediated in November): they have higher ids and earlier starts."""
    october = [datetime(2026, 10, d, 12, tzinfo=UTC) for d in (5, 20)]
    asyncio.run(load_cdrs(pg_url, [cdr(10 + i, "acme", t) for i, t in enumerate(october)]))
    c = str(config)
    every = run_json("cdr", "--config", c, "list")
    assert [r["call_id"] for r in every[:2]] == ["call-acme-10", "call-acme-11"]
    paged: list[str] = []
    after = 0
    while page := run_json("cdr", "--config", c, "list", "--limit", "2", "--after", str(after)):
        paged += [r["call_id"] for r in page]
        after = page[-1]["id"]
    assert paged == [r["call_id"] for r in every] and len(paged) == 6


def test_cdr_list_after_an_unknown_id_is_a_usage_error(config: Path) -> None:
    """--after of an id no CDR has listed an empty page, which reads as "no more CDRs"
    (a mistyped cursor ended the paging silently). The last CDR's id still does."""
    c = str(config)
    every = run_json("cdr", "--config", c, "list")
    assert every and run_json("cdr", "--config", c, "list", "--after", str(every[-1]["id"])) == []
    unknown = max(r["id"] for r in every) + 1000
    code, out, err = run("cdr", "--config", c, "list", "--after", str(unknown), "--json")
    assert (code, out) == (2, "")
    assert err == f"chargingd cdr list: --after: no CDR with id {unknown}\n"
    help_text = io.StringIO()
    with contextlib.redirect_stdout(help_text), pytest.raises(SystemExit):
        main(["cdr", "list", "--help"])
    assert "continue after this CDR in the listing's order (start time, then id)" in " ".join(
        help_text.getvalue().split()
    )


@pytest.mark.parametrize("command", [("cdr", "list"), ("invoice", "list")])
@pytest.mark.parametrize("limit", ["0", "-5", "ten"])
def test_a_page_size_below_one_is_a_usage_error(
    config: Path, command: tuple[str, str], limit: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """--limit 0 answered "no CDRs" although there were CDRs; -5 reached PostgreSQL."""
    with pytest.raises(SystemExit) as exited:
        main([command[0], "--config", str(config), command[1], "--limit", limit])
    assert exited.value.code == 2
    assert f"--limit: must be a whole number >= 1, not '{limit}'" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("psql") is None, reason="no psql on PATH (postgresql-client)")
def test_db_shell_runs_psql_on_the_configured_database(config: Path) -> None:
    done = subprocess.run(
        [
            str(BIN),
            "db",
            "--config",
            str(config),
            "shell",
            "--",
            "-At",
            "-c",
            "SELECT count(*) FROM cdrs",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "4"


def test_savings_with_a_plan_that_cannot_load_is_a_config_error(config: Path) -> None:
    """A [rating] plan that does not load is the config's fault: exit 2 (docs/invoicing.md),
    not 1, the code of a refusal; the message names the file and why."""
    dear = config.parent / "dear.toml"
    dear.write_text(dear.read_text().replace('timezone = "UTC"', 'timezone = "Mars/Base"'))
    code, out, err = run(
        "report", "--config", str(config), "savings", "--account", "acme", "--period", "2026-11"
    )
    assert (code, out) == (2, "")
    assert f"chargingd report: {dear}" in err and "unknown time zone 'Mars/Base'" in err


def test_documents_show_their_dates_in_the_invoicing_time_zone(config: Path) -> None:
    """With time_zone = "Europe/Berlin" period 2026-11 runs from 1 November 00:00 CET
    (31 October 23:00 UTC): show, --json and the PDF printed the UTC dates of those
    midnights, "2026-10-31 to 2026-11-30" and "31 Oct 2026 – 29 Nov 2026", and the
    issue and due dates of the UTC day, on a German operator's invoice."""
    config.write_text(
        config.read_text().replace(
            "settle_delay_s = 0", 'settle_delay_s = 0\ntime_zone = "Europe/Berlin"'
        )
    )
    c = str(config)
    number = run_json("invoice", "--config", c, "run", "--period", "2026-11")["issued"][0]["number"]
    shown = run_json("invoice", "--config", c, "show", number)
    assert shown["period_start"] == "2026-11-01T00:00:00+01:00"
    assert shown["period_end"] == "2026-12-01T00:00:00+01:00"
    assert shown["issued_at"].endswith("+01:00") and shown["due_at"].endswith("+01:00")
    code, text, _ = run("invoice", "--config", c, "show", number)
    assert code == 0 and "(2026-11-01 to 2026-12-01, end excluded)" in text
    assert " CET  due " in text
    if shutil.which("pdftotext") is None:
        return
    pdf_path = config.parent / "inv.pdf"
    code, _, err = run("invoice", "--config", c, "pdf", number, "-o", str(pdf_path))
    assert code == 0, err
    pdf = subprocess.run(
        ["pdftotext", "-layout", str(pdf_path), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "01 Nov 2026 – 30 Nov 2026" in pdf
    # The call detail appendix: call times in that zone too (09:00 UTC is 10:00 CET).
    code, _, err = run(
        "invoice", "--config", c, "pdf", number, "-o", str(pdf_path), "--calls", "yes"
    )
    assert code == 0, err
    pdf = subprocess.run(
        ["pdftotext", "-layout", str(pdf_path), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "Start (Europe/Berlin)" in pdf and "2026-11-02 10:00:00" in pdf


def test_pdf_to_stdout_with_a_dash(config: Path, tmp_path: Path) -> None:
    """`invoice pdf N -o -` wrote a file named "-" in the working directory."""
    c = str(config)
    number = run_json("invoice", "--config", c, "run", "--period", "2026-11")["issued"][0]["number"]
    done = subprocess.run(
        [str(BIN), "invoice", "--config", c, "pdf", number, "-o", "-"],
        capture_output=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"%PDF-") and done.stdout.rstrip().endswith(b"%%EOF")
    assert not (tmp_path / "-").exists()


def test_a_reader_that_went_away_exits_141_not_failed(config: Path) -> None:
    """`chargingd cdr list | head` and the like (docs/operations.md: every command 141
    when the reader of stdout went away). They said "[Errno 32] Broken pipe" and exited
    1, which these commands use for "refused or failed"."""
    c = str(config)
    for argv in (
        ["invoice", "--config", c, "run", "--period", "2026-11", "--dry-run"],
        ["report", "--config", c, "usage", "--account", "acme", "--from", "2026-11-01",
         "--to", "2026-11-30", "--by", "day"],
        ["cdr", "--config", c, "list"],
        ["rerate", "--config", c, "--from", "2026-11-01", "--to", "2026-11-30"],
    ):  # fmt: skip
        read, write = os.pipe()
        os.close(read)  # the reader is gone before anything is written
        try:
            done = subprocess.run([str(BIN), *argv], stdout=write, stderr=subprocess.PIPE,
                                  text=True, timeout=120, check=False)  # fmt: skip
        finally:
            os.close(write)
        assert (done.returncode, done.stderr) == (141, ""), argv


def _call(call_id: str, start: datetime, seconds: int, charged: int, *, revision: int = 0) -> CDR:
    """A live call of acme to a German number (both flat plans price it), as the
    sessions write it to the CDR stream."""
    start_ms = int(start.timestamp() * 1000)
    return CDR(
        source="radius", call_id=call_id, account_id="acme", caller="+4930123456",
        callee="+4930999999", destination="DE", start_ms=start_ms, answer_ms=start_ms + 2000,
        end_ms=start_ms + 2000 + seconds * 1000, duration_s=seconds, billed_s=seconds,
        cost_micros=charged, currency="EUR", tariff="dear", gateway="10.0.0.1",
        disconnect_cause=16, status="normal", charged_micros=charged, charge="live",
        revision=revision,
    )  # fmt: skip


def _export(config: str, redis_url: str, calls: list[CDR]) -> None:
    """Through the real path: the CDR stream, then `chargingd export --once`."""
    with syncredis.Redis.from_url(redis_url) as r:
        for call in calls:
            r.xadd(CDR_STREAM, {"cdr": call.pack()})
    code, _, err = run("export", "--config", config, "--once")
    assert code == 0, err


def _pdf_text(config: str, number: str, tmp_path: Path) -> str:
    path = tmp_path / f"{number}.pdf"
    code, _, err = run(
        "invoice", "--config", config, "pdf", number, "-o", str(path), "--calls", "yes"
    )
    assert code == 0, err
    return subprocess.run(
        ["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True
    ).stdout


def _csv_total(text: str) -> tuple[int, Decimal]:
    rows = text.splitlines()[1:]
    return len(rows), sum((Decimal(r.split(",")[8]) for r in rows), Decimal(0))


def test_a_reprinted_invoice_lists_the_calls_it_billed_after_a_rerate_and_late_calls(
    config: Path, tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    """An issued invoice is a legal document: its call detail (CSV and PDF) is what it
    billed. It was read from the CDRs as they are now, so after a rerate, a reaped
    call's late Stop or a late call of the period, a reprint listed other calls and
    amounts than the invoice's usage: the customer's dispute. The changes are billed on
    the next invoice (a usage correction), whose own call detail is its own calls."""
    c = str(config)
    october = [
        _call("oct-1", datetime(2026, 10, 5, 9, tzinfo=UTC), 60, 1_200_000),
        _call("oct-2", datetime(2026, 10, 6, 9, tzinfo=UTC), 120, 2_400_000),
        _call("oct-3", datetime(2026, 10, 7, 9, tzinfo=UTC), 30, 600_000),
    ]
    _export(c, redis_server.url, october)
    issued = run_json("invoice", "--config", c, "run", "--period", "2026-10")["issued"]
    (inv,) = issued
    number = inv["number"]
    assert (Decimal(inv["usage"]), inv["usage_calls"]) == (Decimal("4.2"), 3)
    code, billed_csv, err = run("invoice", "--config", c, "calls", number)
    assert code == 0 and err == "" and _csv_total(billed_csv) == (3, Decimal("4.2"))
    pdf = shutil.which("pdftotext") is not None
    billed_pdf = _pdf_text(c, number, tmp_path) if pdf else ""

    # After the invoice: October re-rated at 0.30 a minute (a refund of 3.15 written
    # back to its calls), the reaped oct-3 corrected by its late Stop (revision 1, 90 s),
    # and a call of October the exporter stores only now.
    code, out, err = run(
        "rerate", "--config", c, "--from", "2026-10-01", "--to", "2026-10-31",
        "--plan", str(tmp_path / "cheap.toml"), "--apply",
    )  # fmt: skip
    assert code == 0, err + out
    _export(
        c,
        redis_server.url,
        [
            _call("oct-3", datetime(2026, 10, 7, 9, tzinfo=UTC), 90, 450_000, revision=1),
            _call("oct-late", datetime(2026, 10, 30, 9, tzinfo=UTC), 60, 300_000),
        ],
    )

    # A reprint is the same document, byte for byte, and adds up to its usage.
    code, again, err = run("invoice", "--config", c, "calls", number)
    assert code == 0 and err == ""
    assert again == billed_csv
    if pdf:
        assert _pdf_text(c, number, tmp_path) == billed_pdf
        assert re.search(r"3 calls\s+210\s+4\.200000\n", billed_pdf), billed_pdf
    # The next invoice bills the difference as a correction of October: now
    # 0.30 + 0.60 + 0.45 + 0.30 = 1.65, billed 4.20: -2.55, one call more.
    nov = run_json("invoice", "--config", c, "run", "--period", "2026-11")["issued"][0]
    correction = [ln for ln in nov["lines"] if "2026-10" in ln["description"]]
    assert [Decimal(ln["exact_amount"]) for ln in correction] == [Decimal("-2.55")], nov["lines"]
    code, nov_csv, err = run("invoice", "--config", c, "calls", nov["number"])
    assert code == 0 and err == ""
    assert _csv_total(nov_csv) == (4, Decimal(nov["usage"]))
    assert "oct-" not in nov_csv


def test_late_calls_of_a_period_older_than_late_usage_periods_are_billed(
    config: Path, redis_server: EmbeddedRedis
) -> None:
    """A late Stop or a late switch file of a period older than `late_usage_periods`
    (1: only the last period is re-counted in full) was charged and billed on no
    invoice: revenue lost without a word. It is billed on the next invoice as a usage
    correction naming its period, once."""
    c = str(config)
    july = datetime(2026, 7, 10, 9, tzinfo=UTC)
    _export(c, redis_server.url, [_call("jul-1", july, 60, 1_200_000)])
    (jul,) = run_json("invoice", "--config", c, "run", "--period", "2026-07")["issued"]
    for period in ("2026-08", "2026-09"):  # no calls: nothing to bill
        assert run_json("invoice", "--config", c, "run", "--period", period)["issued"] == []
    # July's calls change after September was run: a reaped call's late Stop (revision
    # 1, 0.60 more) and a call from a switch file stored only now.
    _export(
        c,
        redis_server.url,
        [
            _call("jul-1", july, 90, 1_800_000, revision=1),
            _call("jul-2", datetime(2026, 7, 20, 9, tzinfo=UTC), 30, 600_000),
        ],
    )
    (oct_,) = run_json("invoice", "--config", c, "run", "--period", "2026-10")["issued"]
    assert [
        (ln["kind"], ln["description"], Decimal(ln["exact_amount"]), ln["calls"])
        for ln in oct_["lines"]
    ] == [
        ("correction", "Usage correction for 2026-07 (+1 calls recorded after it was billed)",
         Decimal("1.2"), 1),
    ]  # fmt: skip
    # Billed once: November bills its own calls and nothing more of July.
    (nov,) = run_json("invoice", "--config", c, "run", "--period", "2026-11")["issued"]
    assert [ln["kind"] for ln in nov["lines"]] == ["usage", "usage"], nov["lines"]
    assert jul["number"] < oct_["number"] < nov["number"]


@pytest.mark.parametrize("check", ["none", "another_history"])
def test_late_calls_from_before_migration_015_are_billed_at_the_first_run(
    config: Path, pg_url: str, redis_server: EmbeddedRedis, check: str
) -> None:
    """A late call of July stored before migration 015 left no mark of its change; the
    first run after the upgrade (no late_usage_checks row) re-counts every invoiced
    period once, in full, and bills it. So does a run whose check is a snapshot of
    another history (the database restored from a dump: transaction ids start again)."""
    c = str(config)
    july = datetime(2026, 7, 10, 9, tzinfo=UTC)
    _export(c, redis_server.url, [_call("jul-1", july, 60, 1_200_000)])
    run_json("invoice", "--config", c, "run", "--period", "2026-07")
    for period in ("2026-08", "2026-09"):
        run_json("invoice", "--config", c, "run", "--period", period)
    # Stored past the exporter (no usage_periods change), as before the migration.
    late = cdr(7, "acme", datetime(2026, 7, 20, 9, tzinfo=UTC), charged_micros=600_000)
    asyncio.run(load_cdrs(pg_url, [late]))
    change = {
        "none": "DELETE FROM late_usage_checks",
        "another_history": "UPDATE late_usage_checks SET snapshot ="
        " '999999999999:999999999999:'::pg_snapshot",
    }[check]
    asyncio.run(query(pg_url, change))
    (oct_,) = run_json("invoice", "--config", c, "run", "--period", "2026-10")["issued"]
    assert [(ln["description"], Decimal(ln["exact_amount"])) for ln in oct_["lines"]] == [
        ("Usage correction for 2026-07 (+1 calls recorded after it was billed)", Decimal("0.6"))
    ]


def test_an_invoice_issued_before_calls_were_kept_says_its_list_is_the_cdrs_now(
    config: Path, tmp_path: Path, pg_url: str, redis_server: EmbeddedRedis
) -> None:
    """A document issued before migration 014 has no copy of its calls: its call detail
    is the CDRs as they are now, and once they no longer add up to what it billed the
    CSV's stderr and the PDF say so (they did not: the customer saw other amounts than
    the invoice's, unexplained)."""
    c = str(config)
    _export(
        c, redis_server.url, [_call("oct-1", datetime(2026, 10, 5, 9, tzinfo=UTC), 60, 1_200_000)]
    )
    (inv,) = run_json("invoice", "--config", c, "run", "--period", "2026-10")["issued"]
    number = inv["number"]

    async def as_before_014() -> None:  # past the immutability trigger, as a restore would
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            await conn.execute("SET session_replication_role = replica")
            await conn.execute(
                "DELETE FROM invoice_calls WHERE invoice_id = (SELECT id FROM invoices"
                " WHERE number = %s)",
                (number,),
            )
            await conn.execute(
                "UPDATE invoices SET calls_kept = false WHERE number = %s", (number,)
            )

    asyncio.run(as_before_014())
    code, unchanged, err = run("invoice", "--config", c, "calls", number)
    assert code == 0 and err == "" and _csv_total(unchanged) == (1, Decimal("1.2"))
    code, out, err = run(
        "rerate", "--config", c, "--from", "2026-10-01", "--to", "2026-10-31",
        "--plan", str(tmp_path / "cheap.toml"), "--apply",
    )  # fmt: skip
    assert code == 0, err + out
    code, now, err = run("invoice", "--config", c, "calls", number)
    assert code == 0 and _csv_total(now) == (1, Decimal("0.3"))
    assert f"warning: {number} was issued before documents kept their calls" in err, err
    assert "1 calls, 0.300000 EUR; it billed 1 calls, 1.200000 EUR" in err, err
    if shutil.which("pdftotext") is not None:
        text = " ".join(_pdf_text(c, number, tmp_path).split())
        assert "was issued before documents kept their calls" in text, text
