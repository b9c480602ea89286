"""Invoicing on a Redis Cluster.

- tests/invoicing/test_reconcile.py's month of live traffic, unchanged, through the
  real credit control on the cluster (the step-by-step path; its accounts p0, p1 on one
  master, p3 on another, p2 on the third): invoice usage = the period's CDRs'
  charged_micros = the ledger's debits for those calls, per account.
- tests/invoicing/test_dunning_e2e.py, unchanged: `ctl charge add`, `chargingd invoice
  run`, the daemon's dunning loop suspending the account and cutting its call, `ctl
  payment add` reactivating it.
- The operator's commands on accounts on all three masters: `chargingd mediate`
  charging the ledger, `invoice run` (invoices, a statement, the postings), `invoice
  show/list/pdf/credit-note`, `report revenue/usage/savings`, `rerate --apply`, `cdr
  list`: every figure equal to the CDRs' sums per account and to each one's ledger.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from assurance.test_assure_e2e import Placed, ani, switch_file
from cluster_daemon import ClusterDaemon, cluster_redis
from invoicing.test_dunning_e2e import (
    gateway,
    test_overdue_suspends_cuts_and_payment_reactivates,
)
from invoicing.test_reconcile import test_invoice_usage_equals_cdrs_equals_ledger_debits
from invoicing_harness import query
from radius_e2e_harness import BIN, MICROS_PER_S, TARIFF, Setup, write_setup
from redis.asyncio.cluster import RedisCluster
from redis_cluster import Cluster

from chargingd.core.money import format_amount, parse_amount
from chargingd.ledger.keys import acct_key

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

__all__ = [
    "gateway",
    "test_invoice_usage_equals_cdrs_equals_ledger_debits",
    "test_overdue_suspends_cuts_and_payment_reactivates",
]


@pytest.fixture
async def redis(cluster: Cluster) -> AsyncIterator[Any]:
    cluster.flush()
    alive = next(n for n in cluster.nodes if n.alive)
    client = RedisCluster(host="127.0.0.1", port=alive.port)
    yield client
    await client.aclose()


@pytest.fixture
def daemon(cluster: Cluster, tmp_path: Path, pg_url: str) -> Iterator[ClusterDaemon]:
    """test_dunning_e2e's daemon (its dunning loop on) on the cluster."""
    cluster.flush()
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
        redis=cluster_redis(cluster),
    )
    found = ClusterDaemon(setup, tmp_path / "daemon.log")
    found.cluster = cluster
    found.start()
    try:
        assert found.wait_ready()["redis"]["url"].startswith("cluster:")
        yield found
    finally:
        found.kill()
        print(f"---- daemon log ----\n{found.log()}")  # shown only when the test fails


# -- the commands an operator runs, on accounts on every master ---------------------------

POSTPAID = ("bob", "alice", "carol")  # one on each master (test_accounts_span_masters)
PREPAID = "dave"
NOVEMBER = datetime(2026, 11, 9, 10, tzinfo=UTC)
# Seconds of each account's November calls, as its switch recorded them.
USAGE_S = {"bob": (61, 125), "alice": (30, 47, 90), "carol": (240,), "dave": (15, 33)}
DEAR = TARIFF.replace('id = "e2e"', 'id = "dear"').replace('rate = "0.60"', 'rate = "1.20"')
SOURCE = """
[invoicing]
dunning_in_serve = false
settle_delay_s = 0
default_vat_rate = "19"

[mediation.sources.pbx]
format = "cisco_radius"
charge = "ledger"
default_country = "DE"
"""


@pytest.fixture
def books_daemon(cluster: Cluster, tmp_path: Path, pg_url: str) -> Iterator[ClusterDaemon]:
    cluster.flush()
    setup = write_setup(
        tmp_path, billing=f'db_url = "{pg_url}"', redis=cluster_redis(cluster), invoicing=""
    )
    (tmp_path / "dear.toml").write_text(DEAR)
    text = setup.config.read_text().replace("[invoicing]\n\n", "")
    text = text.replace(
        "[rating]\n", f'[rating]\nplans = {{ dear = "{tmp_path / "dear.toml"}" }}\n'
    )
    setup.config.write_text(text + SOURCE)
    found = ClusterDaemon(setup, tmp_path / "daemon.log")
    found.cluster = cluster
    found.start()
    try:
        assert found.wait_ready()["redis"]["url"].startswith("cluster:")
        yield found
    finally:
        found.kill()
        print(f"---- daemon log ----\n{found.log()}")  # shown only when the test fails


def _cli(setup: Setup, *args: str, code: int = 0) -> str:
    done = subprocess.run([str(BIN), args[0], "--config", str(setup.config), *args[1:]],
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert done.returncode == code, done.stdout + done.stderr
    return done.stdout


def _cli_json(setup: Setup, *args: str) -> Any:
    return json.loads(_cli(setup, *args))


def _cents(micros: int) -> str:
    return format_amount(micros, 2)


async def test_invoices_reports_rerate_of_accounts_on_every_master(
    books_daemon: ClusterDaemon, pg_url: str, tmp_path: Path
) -> None:
    daemon, setup = books_daemon, books_daemon.setup
    masters = {daemon.cluster.master_of(acct_key(a)).port for a in POSTPAID}
    assert len(masters) == 3  # the accounts' slots are served by three masters
    for account in (*POSTPAID, PREPAID):
        more: dict[str, Any] = {"identities": [f"user:{account}", f"ani:{ani(account)}"]}
        if account != PREPAID:
            more |= {"mode": "postpaid", "credit_limit": "100"}
        daemon.create_account(account, "0" if account != PREPAID else "20.00", **more)
    daemon.call("account.update", {"id": "alice", "tariff": "dear"})

    # November's calls from the switch's own file, charged to the ledger by mediation.
    calls, n = [], 0
    for account, usages in USAGE_S.items():
        for usage_s in usages:
            n += 1
            start_ms = int((NOVEMBER + timedelta(days=n, minutes=n)).timestamp() * 1000)
            calls.append(Placed(f"nov-{account}-{n}", account, f"004420794{n:05d}", usage_s,
                                start_ms))  # fmt: skip
    path = switch_file(tmp_path / "pbx.detail", calls)
    out = _cli(setup, "mediate", "--source", "pbx", str(path))
    assert f"read {len(calls)}, stored {len(calls)}, duplicates 0, rejected 0" in out, out

    # What each account was charged: the CDRs (PostgreSQL) and the ledger (its master).
    rows = await query(pg_url, "SELECT account_id, sum(charged_micros), count(*) FROM cdrs"
                       " GROUP BY account_id")  # fmt: skip
    charged = {a: int(total) for a, total, _ in rows}
    price = {a: 20_000 if a == "alice" else MICROS_PER_S for a in USAGE_S}  # dear: 1.20/min
    assert charged == {a: sum(u) * price[a] for a, u in USAGE_S.items()}
    for account in USAGE_S:
        got = daemon.call("account.get", {"id": account})
        opening = 20_000_000 if account == PREPAID else 0
        assert parse_amount(got["balance"]) == opening - charged[account], got

    # The invoice run: an invoice per postpaid account, a statement for the prepaid one.
    run = _cli_json(setup, "invoice", "run", "--period", "2026-11", "--json")
    assert run["errors"] == [] and run["cdrs"] == len(calls)
    issued = {d["account"]: d for d in run["issued"]}
    assert sorted(issued) == sorted(USAGE_S)
    for account in USAGE_S:
        doc = issued[account]
        assert doc["kind"] == ("statement" if account == PREPAID else "invoice")
        assert doc["usage"] == _cents(charged[account]), doc
        assert doc["usage_calls"] == len(USAGE_S[account])
        usage_lines = [ln for ln in doc["lines"] if ln["kind"] == "usage"]
        assert sum(parse_amount(ln["exact_amount"]) for ln in usage_lines) == charged[account]
    for account in POSTPAID:
        inv = _cli_json(setup, "invoice", "show", issued[account]["number"], "--json")
        subtotal = charged[account]
        assert (inv["subtotal"], inv["status"]) == (_cents(subtotal), "open")
        assert parse_amount(inv["total"]) == subtotal + parse_amount(inv["tax"])
        # The run posted what the calls had not debited (the tax) to the account's master.
        got = daemon.call("account.get", {"id": account})
        assert parse_amount(got["balance"]) == -parse_amount(inv["total"]), (account, got)
    listed = _cli_json(setup, "invoice", "list", "--period", "2026-11", "--json")
    assert sorted(d["account"] for d in listed) == sorted(USAGE_S)
    again = _cli_json(setup, "invoice", "run", "--period", "2026-11", "--json")
    assert again["issued"] == [] and sorted(again["skipped"]["already issued"]) == sorted(USAGE_S)

    # The PDF of one (reportlab), read back: its total.
    carol = issued["carol"]
    pdf_path = tmp_path / "carol.pdf"
    _cli(setup, "invoice", "pdf", carol["number"], "-o", str(pdf_path), "--calls", "yes")
    text = subprocess.run(["pdftotext", "-layout", str(pdf_path), "-"], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip
    assert carol["number"] in text and carol["total"] in text, text

    # A credit note posts to the ledger of that account's master.
    before = parse_amount(daemon.call("account.get", {"id": "carol"})["balance"])
    note = _cli_json(setup, "invoice", "credit-note", carol["number"], "--amount", "1.19",
                     "--reason", "goodwill", "--json")  # fmt: skip
    assert (note["kind"], note["total"]) == ("credit_note", "-1.19")
    after = parse_amount(daemon.call("account.get", {"id": "carol"})["balance"])
    assert after - before == 1_190_000

    # Reports: every account's revenue, one account's usage, savings under every plan.
    revenue = _cli_json(setup, "report", "revenue", "--by", "account", "--from", "2026-11-01",
                        "--to", "2026-11-30", "--format", "json")["rows"]  # fmt: skip
    assert {r["key"]: (r["calls"], r["charged"]) for r in revenue} == {
        a: (len(u), _cents(charged[a])) for a, u in USAGE_S.items()
    }
    usage = _cli_json(setup, "report", "usage", "--account", "alice", "--by", "day", "--from",
                      "2026-11-01", "--to", "2026-11-30", "--format", "json")["rows"]  # fmt: skip
    assert sum(r["calls"] for r in usage) == 3 and len(usage) == 3
    savings = _cli_json(setup, "report", "savings", "--account", "alice", "--period", "2026-11",
                        "--json")  # fmt: skip
    assert savings["current_plan"] == "dear" and savings["charged"] == _cents(charged["alice"])
    plans = {p["plan"]: p["total"] for p in savings["plans"]}
    assert plans["dear"] == _cents(charged["alice"])
    assert plans["default"] == _cents(sum(USAGE_S["alice"]) * MICROS_PER_S)

    # A rerate at the default plan: alice's calls get cheaper, her ledger is credited
    # the difference (on her master); the others' prices stand.
    cheap = tmp_path / "tariff.toml"
    applied = _cli_json(setup, "rerate", "--from", "2026-11-01", "--to", "2026-11-30",
                        "--plan", str(cheap), "--apply", "--json")  # fmt: skip
    refund = charged["alice"] - sum(USAGE_S["alice"]) * MICROS_PER_S
    (settled,) = applied["applied"]
    assert settled["account_id"] == "alice" and settled["calls"] == 3
    got = daemon.call("account.get", {"id": "alice"})
    assert parse_amount(got["balance"]) == -parse_amount(issued["alice"]["total"]) + refund
    cdrs = _cli_json(setup, "cdr", "list", "--account", "alice", "--json")
    assert sum(parse_amount(c["charged"]) for c in cdrs) == charged["alice"] - refund
