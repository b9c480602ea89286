"""A subscription ended (or started) back in a period already invoiced, through the real
daemon and `chargingd ctl`: the issued invoice never changes, so the answer warns which
invoice bills it otherwise, by how much, and what to issue instead; following that
advice (`chargingd invoice credit-note ...`) gives the customer back exactly the days
after the new last day."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from radius_e2e_harness import Daemon, Setup, cli, serving, write_setup

from chargingd.invoicing.periods import prorate, round_half_up_div

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _months_ago(n: int) -> tuple[str, int]:
    """The label of the month ``n`` months ago and its number of days."""
    now = datetime.now(UTC)
    index = now.year * 12 + now.month - 1 - n
    year, month = index // 12, index % 12 + 1
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    return f"{year:04d}-{month:02d}", (nxt - date(year, month, 1)).days


@pytest.fixture
def daemon(tmp_path: Path, pg_url: str) -> Iterator[Daemon]:
    setup = write_setup(
        tmp_path,
        radius=False,
        invoicing='settle_delay_s = 0\ndefault_vat_rate = "19"',
        billing=f'db_url = "{pg_url}"',
    )
    with serving(setup, tmp_path / "daemon.log") as d:
        yield d


def ok(setup: Setup, *args: str) -> Any:
    done = cli(setup, *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout) if "--json" in args else done


def _cents(micros: int) -> int:
    return round_half_up_div(micros, 10_000) * 10_000


def test_a_backdated_end_warns_which_issued_invoice_to_credit(daemon: Daemon) -> None:
    setup = daemon.setup
    daemon.call("account.create", {"id": "acme", "mode": "postpaid", "currency": "EUR"})
    period, days = _months_ago(2)
    later, _ = _months_ago(1)
    sub = ok(setup, "ctl", "--json", "subscription", "add", "acme", "30.00",
             "--description", "PBX trunk", "--from", f"{period}-01")  # fmt: skip
    assert "warnings" not in sub  # nothing issued yet
    run = ok(setup, "invoice", "run", "--period", period, "--json")
    (inv,) = run["issued"]
    assert (inv["subtotal"], inv["tax"], inv["total"]) == ("30.00", "5.70", "35.70")

    # Ending it in a period not invoiced yet touches no issued invoice: no warning.
    sid = str(sub["subscription"])
    done = ok(setup, "ctl", "subscription", "end", sid, "--on", f"{later}-05")
    assert "warning" not in done.stderr

    # Back to the 10th of the invoiced period: the invoice stays as issued (30.00 for
    # the whole month); the answer says so and what to credit, tax included.
    done = ok(setup, "ctl", "subscription", "end", sid, "--on", f"{period}-10")
    net_now = _cents(prorate(30_000_000, 10, days))
    gross_now = net_now + round_half_up_div(net_now * 19, 100 * 10_000) * 10_000  # VAT 19 %
    over = 35_700_000 - gross_now
    over_text = f"{over // 1_000_000}.{over % 1_000_000 // 10_000:02d}"
    warnings = [ln for ln in done.stderr.splitlines() if ln.startswith("chargingd ctl: warning: ")]
    assert len(warnings) == 1, (done.stdout, done.stderr)
    warning = warnings[0]
    assert f"invoice {inv['number']} (period {period}) is issued and billed 35.70 EUR" in warning
    assert f"credit {over_text} EUR with `chargingd invoice credit-note" in warning
    answer = ok(setup, "ctl", "--json", "subscription", "end", sid, "--on", f"{period}-10")
    assert answer["ends_on"] == f"{period}-10"
    assert answer["issued_invoices"] == [
        {
            "invoice": inv["number"],
            "period": period,
            "currency": "EUR",
            "billed": "35.70",
            "due_now": f"{gross_now // 1_000_000}.{gross_now % 1_000_000 // 10_000:02d}",
            "difference": f"-{over_text}",
        }
    ]
    # The advice, run as printed, credits exactly the days after the new last day.
    command = re.search(r"`chargingd (invoice credit-note [^`]*)`", warning)
    assert command is not None
    words = shlex.split(command.group(1))
    note = ok(setup, *words, "--json")
    assert note["kind"] == "credit_note" and note["total"] == f"-{over_text}"
    assert note["refers_to"] == inv["number"]

    # Started back in the invoiced period: that invoice did not bill it, and no run will.
    extra = ok(setup, "ctl", "--json", "subscription", "add", "acme", "3.00",
               "--description", "DID", "--from", f"{period}-21")  # fmt: skip
    (warning,) = extra["warnings"]
    share = _cents(prorate(3_000_000, days - 20, days))
    share_text = f"{share // 1_000_000}.{share % 1_000_000 // 10_000:02d}"
    assert f"invoice {inv['number']} (period {period}) is issued and billed 0.00 EUR" in warning
    assert f"`chargingd ctl charge add acme {share_text} --description" in warning
