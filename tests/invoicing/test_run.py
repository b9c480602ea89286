"""The invoice run on a real PostgreSQL (pgserver) and a real Redis ledger."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta

import psycopg
import pytest
import redis.asyncio as aioredis
from invoicing_harness import (
    CDR_COLUMNS,
    NOW,
    at,
    cdr,
    invoicing_config,
    load_cdrs,
    make_books,
    postpaid,
    query,
)

from chargingd.billing.cdr import CDR
from chargingd.billing.db import BillingDB, load_migrations, migrate
from chargingd.invoicing import Books, Invoice, PeriodError, Refused, backdating, invoice_run
from chargingd.invoicing.cdrs import document_calls
from chargingd.invoicing.charges import (
    add_charge,
    add_subscription,
    end_subscription,
    list_charges,
    list_subscriptions,
)
from chargingd.invoicing.credit import credit_note
from chargingd.invoicing.model import Kind
from chargingd.invoicing.payments import add_payment
from chargingd.invoicing.profiles import set_profile
from chargingd.invoicing.render import invoice_text
from chargingd.invoicing.store import get_invoice, overdue
from chargingd.invoicing.tax import TaxMode
from chargingd.ledger import Ledger


@pytest.fixture
async def ledger(redis: aioredis.Redis) -> Ledger:
    led = Ledger(redis)
    await led.load_scripts()
    return led


@pytest.fixture
async def books(pg_url: str, ledger: Ledger) -> AsyncIterator[Books]:
    b = await make_books(pg_url, ledger, default_vat_rate="19")
    yield b
    await b.db.close()


async def test_invoice_of_a_month_of_calls(books: Books, ledger: Ledger, pg_url: str) -> None:
    await postpaid(ledger, "acme")
    rows = [cdr(i, "acme", at(1 + i % 28), charged_micros=123_457) for i in range(30)]
    rows.append(cdr(99, "acme", at(30, 23), charged_micros=5, destination="UK_MOB"))
    rows.append(cdr(100, "acme", at(1, 0, month=12), charged_micros=777))  # next period
    await load_cdrs(pg_url, rows)
    result = await invoice_run(books, "2026-11")
    (inv,) = result.issued
    assert inv.kind is Kind.INVOICE
    assert inv.usage_micros == 30 * 123_457 + 5
    assert [line.description for line in inv.lines] == [
        "Calls to DE_FIX (30 calls)",
        "Calls to UK_MOB (1 call)",
    ]
    assert inv.lines[0].amount_micros == 3_700_000  # 3.70371 -> 3.70
    assert inv.lines[0].tax_micros == 700_000  # 19 % of 3.70 = 0.703 -> 0.70
    assert inv.lines[1].amount_micros == 0
    assert inv.total_micros == 4_400_000
    stored = await query(pg_url, "SELECT number, total_micros FROM invoices")
    assert stored == [("INV-2027-000001", 4_400_000)]
    again = await invoice_run(books, "2026-11")
    assert again.issued == []
    assert again.skipped == {"already issued": ["acme"]}


def unanswered(n: int, account_id: str, destination: str) -> tuple[object, ...]:
    """An unanswered attempt as the daemon and mediation store it: nothing billed;
    no destination when the call was never rated (a mediated one)."""
    return cdr(
        n, account_id, at(4), billed_s=0, charged_micros=0, destination=destination,
        answered=False,
    )  # fmt: skip


async def test_unanswered_attempts_make_no_invoice_line(
    books: Books, ledger: Ledger, pg_url: str
) -> None:
    """An invoice lists calls: unanswered attempts alone are no line ("Calls to Other
    (0 calls)", 0.00) and no reason to invoice an account; with answered calls to the
    same destination they change nothing."""
    for account_id in ("mixed", "ringing"):
        await postpaid(ledger, account_id)
    rows = [
        cdr(1, "mixed", at(3)),
        cdr(2, "mixed", at(3)),
        unanswered(3, "mixed", ""),  # mediated: never rated
        unanswered(4, "mixed", "UK_MOB"),  # live: rated at authorize
        unanswered(5, "mixed", "DE_FIX"),
        unanswered(6, "ringing", ""),
    ]
    await load_cdrs(pg_url, rows)
    result = await invoice_run(books, "2026-11")
    (inv,) = result.issued
    assert inv.account_id == "mixed"
    assert [line.description for line in inv.lines] == ["Calls to DE_FIX (2 calls)"]
    assert inv.usage_micros == 200_000
    assert result.skipped == {"nothing to bill": ["ringing"]}


async def test_concurrent_runs_neither_duplicate_nor_skip_numbers(
    books: Books, ledger: Ledger, pg_url: str
) -> None:
    ids = [f"c{i:02d}" for i in range(23)]
    for account_id in ids:
        await postpaid(ledger, account_id)
    await load_cdrs(pg_url, [cdr(i, a, at(3)) for i, a in enumerate(ids)])
    others = [await make_books(pg_url, ledger, batch_size=4) for _ in range(3)]
    try:
        results = await asyncio.gather(*(invoice_run(b, "2026-11") for b in [books, *others]))
    finally:
        for b in others:
            await b.db.close()
    assert sum(len(r.issued) for r in results) == len(ids)
    rows = await query(pg_url, "SELECT account_id, seq FROM invoices ORDER BY seq")
    assert sorted(a for a, _ in rows) == ids
    assert [s for _, s in rows] == list(range(1, len(ids) + 1))


async def test_a_failed_run_leaves_no_half_invoice_and_no_gap(
    books: Books, ledger: Ledger, pg_url: str
) -> None:
    ids = [f"f{i}" for i in range(7)]
    for account_id in ids:
        await postpaid(ledger, account_id)
    await load_cdrs(pg_url, [cdr(i, a, at(5)) for i, a in enumerate(ids)])
    books.cfg = invoicing_config(batch_size=3, default_vat_rate="19")
    batches: list[int] = []

    def crash_in_second_batch(issued: list[Invoice]) -> None:
        batches.append(len(issued))
        if len(batches) == 2:  # after its invoices and lines were written, before commit
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        await invoice_run(books, "2026-11", before_commit=crash_in_second_batch)
    rows = await query(pg_url, "SELECT account_id, seq FROM invoices ORDER BY seq")
    assert rows == [("f0", 1), ("f1", 2), ("f2", 3)]
    assert await query(pg_url, "SELECT count(*) FROM invoice_lines") == [(3,)]
    assert await query(pg_url, "SELECT last_number FROM invoice_series") == [(3,)]
    again = await invoice_run(books, "2026-11")
    assert [(i.account_id, i.number) for i in again.issued] == [
        (f"f{n}", f"INV-2027-00000{n + 1}") for n in range(3, 7)
    ]
    assert again.skipped == {"already issued": ["f0", "f1", "f2"]}
    seqs = await query(pg_url, "SELECT seq FROM invoices ORDER BY seq")
    assert [s for (s,) in seqs] == list(range(1, 8))


async def test_issued_invoices_never_change(books: Books, ledger: Ledger, pg_url: str) -> None:
    await postpaid(ledger, "imm")
    await load_cdrs(pg_url, [cdr(1, "imm", at(2))])
    await invoice_run(books, "2026-11")
    for sql in (
        "UPDATE invoices SET total_micros = 0",
        "DELETE FROM invoices",
        "UPDATE invoice_lines SET amount_micros = 1",
        "DELETE FROM invoice_lines",
        "UPDATE invoice_usage SET charged_micros = 0",
    ):
        with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="never change"):
            await query(pg_url, sql)
    assert await query(pg_url, "SELECT total_micros FROM invoices") == [(120_000,)]


async def test_zero_amount_invoices_only_when_asked(
    books: Books, ledger: Ledger, pg_url: str
) -> None:
    for account_id in ("idle", "free", "wants-zero"):
        await postpaid(ledger, account_id)
    # Calls that cost nothing (free destination), and an account without any call.
    await load_cdrs(
        pg_url,
        [cdr(1, "free", at(3), charged_micros=0), cdr(2, "wants-zero", at(3), charged_micros=0)],
    )
    await set_profile(books.db, "wants-zero", {"zero_invoices": True}, who="t")
    result = await invoice_run(books, "2026-11")
    assert [i.account_id for i in result.issued] == ["wants-zero"]
    assert result.issued[0].total_micros == 0
    assert result.skipped == {"nothing to bill": ["idle"], "zero amount": ["free"]}


async def test_subscriptions_charges_and_credits_on_the_invoice(
    books: Books, ledger: Ledger, pg_url: str
) -> None:
    await postpaid(ledger, "subs")
    db = books.db
    await add_subscription(
        db,
        "subs",
        description="DID rental",
        amount_micros=9_900_000,
        starts_on=date(2026, 11, 16),
        who="t",
    )
    await add_subscription(
        db,
        "subs",
        description="Channels",
        amount_micros=2_500_000,
        quantity=4,
        starts_on=date(2026, 1, 1),
        ends_on=date(2026, 11, 10),
        who="t",
    )
    await add_subscription(
        db,
        "subs",
        description="Old",
        amount_micros=1_000_000,
        starts_on=date(2026, 1, 1),
        ends_on=date(2026, 10, 31),
        who="t",
    )
    await add_charge(
        db,
        "subs",
        kind="charge",
        description="Setup fee",
        amount_micros=49_000_000,
        charge_date=date(2026, 11, 3),
        reference="setup-1",
        who="t",
    )
    await add_charge(
        db,
        "subs",
        kind="credit",
        description="Goodwill",
        amount_micros=10_000_000,
        charge_date=date(2026, 11, 20),
        reference="gw-1",
        who="t",
    )
    await add_charge(
        db,
        "subs",
        kind="charge",
        description="Next month",
        amount_micros=1_000_000,
        charge_date=date(2026, 12, 2),
        reference="dec-1",
        who="t",
    )
    (inv,) = (await invoice_run(books, "2026-11")).issued
    got = [(ln.kind, ln.description, ln.amount_micros, ln.tax_micros) for ln in inv.lines]
    assert got == [
        ("subscription", "DID rental (15 of 30 days)", 4_950_000, 940_000),
        ("subscription", "Channels, 4 x 2.50 (10 of 30 days)", 3_330_000, 630_000),
        ("charge", "Setup fee (2026-11-03)", 49_000_000, 9_310_000),
        ("credit", "Goodwill (2026-11-20)", -10_000_000, -1_900_000),
    ]
    assert inv.subtotal_micros == 47_280_000 and inv.tax_micros == 8_980_000
    assert inv.total_micros == 56_260_000
    charges = {c.reference: c.invoice for c in await list_charges(db, "subs")}
    assert charges == {"setup-1": inv.number, "gw-1": inv.number, "dec-1": None}
    # The ledger owes what the calls did not debit: the whole invoice here.
    acc = await ledger.get_account("subs")
    assert acc.balance_micros == -56_260_000


async def test_vat_by_country_reverse_charge_and_exemption(ledger: Ledger, pg_url: str) -> None:
    books = await make_books(pg_url, ledger, vat_rates={"DE": "19", "FR": "20"})
    try:
        for account_id in ("de", "fr", "b2b", "ngo", "own"):
            await postpaid(ledger, account_id)
        await load_cdrs(
            pg_url,
            [
                cdr(i, a, at(4), charged_micros=10_000_000)
                for i, a in enumerate(("de", "fr", "b2b", "ngo", "own"))
            ],
        )
        db = books.db
        await set_profile(db, "de", {"country": "DE"}, who="t")
        await set_profile(db, "fr", {"country": "FR"}, who="t")
        await set_profile(
            db,
            "b2b",
            {"country": "FR", "tax_mode": "reverse_charge", "vat_id": "FR12345678901"},
            who="t",
        )
        await set_profile(
            db,
            "ngo",
            {"country": "DE", "tax_mode": "exempt", "tax_note": "Exempt under §4 UStG"},
            who="t",
        )
        await set_profile(db, "own", {"country": "DE", "vat_rate": "7"}, who="t")
        with pytest.raises(Refused, match="reverse charge needs"):
            await set_profile(db, "de", {"tax_mode": "reverse_charge"}, who="t")
        issued = {i.account_id: i for i in (await invoice_run(books, "2026-11")).issued}
    finally:
        await books.db.close()
    assert {a: (i.tax.rate_ppm, i.tax_micros, i.total_micros) for a, i in issued.items()} == {
        "de": (190_000, 1_900_000, 11_900_000),
        "fr": (200_000, 2_000_000, 12_000_000),
        "b2b": (0, 0, 10_000_000),
        "ngo": (0, 0, 10_000_000),
        "own": (70_000, 700_000, 10_700_000),
    }
    assert issued["b2b"].tax.mode is TaxMode.REVERSE_CHARGE
    assert issued["b2b"].tax.vat_id == "FR12345678901"
    assert "Art. 196" in issued["b2b"].tax.note
    assert issued["ngo"].tax.note == "Exempt under §4 UStG"


async def test_late_calls_and_rerates_are_billed_on_the_next_invoice(
    books: Books, ledger: Ledger, pg_url: str
) -> None:
    await postpaid(ledger, "late")
    await load_cdrs(pg_url, [cdr(1, "late", at(10), charged_micros=1_000_000)])
    first = (await invoice_run(books, "2026-11")).issued[0]
    # After November was invoiced: a late November call and a December call arrive,
    # and a rerate refunded 0.25 of November's calls.
    await load_cdrs(
        pg_url,
        [
            cdr(2, "late", at(29), charged_micros=2_000_000),
            cdr(3, "late", at(2, month=12), charged_micros=500_000),
        ],
    )
    await query(
        pg_url,
        "INSERT INTO rerate_runs (run_id, from_time, to_time, plan, who, reason, cdrs,"
        " changed_cdrs) VALUES ('rr-1', now(), now(), '', 't', 't', 1, 1);"
        "INSERT INTO rerate_adjustments (run_id, account_id, currency, cdrs, old_cost_micros,"
        " new_cost_micros, amount_micros, txn_id, applied_at) VALUES ('rr-1', 'late', 'EUR', 1,"
        " 1000000, 750000, 250000, 'rr-1:late', '2026-12-05T10:00:00Z')",
    )
    second = (await invoice_run(books, "2026-12")).issued[0]
    got = [(ln.kind, ln.description, ln.exact_micros) for ln in second.lines]
    assert got == [
        ("usage", "Calls to DE_FIX (1 call)", 500_000),
        ("rerate", "Re-rated calls (1 calls, run rr-1)", -250_000),
        (
            "correction",
            "Usage correction for 2026-11 (+1 calls recorded after it was billed)",
            2_000_000,
        ),
    ]
    assert first.usage_micros == 1_000_000 and second.usage_micros == 500_000
    third = await invoice_run(books, "2027-01")
    assert third.issued == [] and third.skipped == {"nothing to bill": ["late"]}


async def test_late_calls_of_a_period_that_had_nothing_to_bill_are_billed_next(
    books: Books, ledger: Ledger, pg_url: str
) -> None:
    """An account with no call in October gets no October invoice ("nothing to bill");
    a switch file with an October call of 2.00 arrives after that run (the ledger
    debited it). November's invoice bills it as a correction of October, like a late
    call of an invoiced period: it was never billed at all (the re-count only looked at
    periods an invoice counted). October run again then issues nothing: its usage is
    billed."""
    for account_id in ("quiet", "tiny"):
        await postpaid(ledger, account_id)
    # "tiny": October's one call rounds to 0.00, no invoice ("zero amount"); nothing
    # changes after, so nothing is corrected.
    await load_cdrs(pg_url, [cdr(1, "tiny", at(20, month=10), charged_micros=4_000)])
    october = await invoice_run(books, "2026-10")
    assert october.issued == []
    assert october.skipped == {"nothing to bill": ["quiet"], "zero amount": ["tiny"]}
    await load_cdrs(
        pg_url,
        [
            cdr(2, "quiet", at(20, month=10), charged_micros=2_000_000, source="mediation"),
            cdr(3, "quiet", at(5), charged_micros=500_000),
            cdr(4, "tiny", at(5), charged_micros=500_000),
        ],
    )
    november = {d.account_id: d for d in (await invoice_run(books, "2026-11")).issued}
    got = [(ln.kind, ln.description, ln.exact_micros) for ln in november["quiet"].lines]
    assert got == [
        ("usage", "Calls to DE_FIX (1 call)", 500_000),
        (
            "correction",
            "Usage correction for 2026-10 (+1 calls recorded after it was billed)",
            2_000_000,
        ),
    ]
    assert november["quiet"].total_micros == 2_980_000  # 2.50 + 19 % (0.10 + 0.38)
    assert [ln.kind for ln in november["tiny"].lines] == ["usage"]
    again = await invoice_run(books, "2026-10")
    assert again.issued == []
    assert again.skipped == {
        "already billed as a usage correction": ["quiet"],
        "zero amount": ["tiny"],
    }


async def test_a_changed_billing_day_neither_bills_days_twice_nor_skips_them(
    books: Books, ledger: Ledger, pg_url: str
) -> None:
    """November was invoiced on billing day 15 (15 Nov - 15 Dec) for "back", on day 1
    (1 Nov - 1 Dec) for "fwd"; then their billing days changed. December's invoice of
    "back" (day 1: 1 Dec - 1 Jan) billed the call of 5 December and 1-15 December of
    its subscription a second time; that of "fwd" (day 15: 15 Dec - 15 Jan) never
    billed 1-15 December. December now starts where November's invoice ended (a
    transition period), subscriptions prorated by the days of a December period."""
    for account_id, day in (("back", 15), ("fwd", 1)):
        await postpaid(ledger, account_id)
        await set_profile(books.db, account_id, {"billing_day": day}, who="t")
        await add_subscription(
            books.db, account_id, description="DID", amount_micros=31_000_000,
            starts_on=date(2026, 10, 1), who="t",
        )  # fmt: skip
    await load_cdrs(
        pg_url,
        [
            cdr(1, "back", at(5, month=12), charged_micros=1_000_000),
            cdr(2, "back", at(20, month=12), charged_micros=2_000_000),
            cdr(3, "fwd", at(5, month=12), charged_micros=1_000_000),
            cdr(4, "fwd", at(20, month=12), charged_micros=2_000_000),
        ],
    )
    november = {d.account_id: d for d in (await invoice_run(books, "2026-11")).issued}
    assert november["back"].usage_micros == 1_000_000  # 15 Nov - 15 Dec
    assert november["fwd"].usage_micros == 0  # 1 Nov - 1 Dec
    await set_profile(books.db, "back", {"billing_day": 1}, who="t")
    await set_profile(books.db, "fwd", {"billing_day": 15}, who="t")
    december = {d.account_id: d for d in (await invoice_run(books, "2026-12")).issued}
    back, fwd = december["back"], december["fwd"]
    assert (back.period_start.date(), back.period_end.date()) == (
        date(2026, 12, 15),
        date(2027, 1, 1),
    )
    assert [(ln.description, ln.exact_micros) for ln in back.lines] == [
        ("Calls to DE_FIX (1 call)", 2_000_000),
        ("DID (17 of 31 days)", 17_000_000),
    ]
    assert (fwd.period_start.date(), fwd.period_end.date()) == (
        date(2026, 12, 1),
        date(2027, 1, 15),
    )
    assert [(ln.description, ln.exact_micros) for ln in fwd.lines] == [
        ("Calls to DE_FIX (2 calls)", 3_000_000),
        ("DID (45 of 31 days)", 45_000_000),
    ]
    # Ending the subscription back on 20 December: the transition invoice billed 17
    # days of 31 (17.00 + VAT), 6 of 31 were due; the warning says so.
    (sub,) = await list_subscriptions(books.db, "back")
    before, after = await end_subscription(books.db, sub.id, date(2026, 12, 20))
    diffs = [d.to_json() for d in await backdating.effects(books, before, after)]
    assert {"invoice": back.number, "billed": "20.23", "due_now": "7.14"} in [
        {k: d[k] for k in ("invoice", "billed", "due_now")} for d in diffs
    ]
    # January runs on the new billing days as usual.
    january = {d.account_id: d for d in (await invoice_run(books, "2027-01")).issued}
    assert "back" not in january  # its subscription ended in December
    assert january["fwd"].period_start.date() == date(2027, 1, 15)


async def test_a_backdated_end_names_what_the_invoice_billed_for_that_subscription(
    books: Books, ledger: Ledger, pg_url: str
) -> None:
    """Two subscriptions with the same description (two numbers rented, 10.00 and
    20.00) on November's invoice; the 20.00 one ends back on 10 November. The warning
    took the first "DID rental" line (10.00 + VAT) as what the invoice billed for it and
    advised a credit note of 11.90 - 7.94 = 3.96; it billed 23.80, 15.86 are due back."""
    await postpaid(ledger, "two")
    for amount in (10_000_000, 20_000_000):
        await add_subscription(
            books.db, "two", description="DID rental", amount_micros=amount,
            starts_on=date(2026, 10, 1), who="t",
        )  # fmt: skip
    (inv,) = (await invoice_run(books, "2026-11")).issued
    assert [ln.amount_micros for ln in inv.lines] == [10_000_000, 20_000_000]
    second = (await list_subscriptions(books.db, "two"))[1]
    before, after = await end_subscription(books.db, second.id, date(2026, 11, 10))
    (diff,) = await backdating.effects(books, before, after)
    # 10 of 30 days of 20.00: 6.67 + 1.27 VAT
    assert (diff.billed_gross, diff.due_gross) == (23_800_000, 7_940_000)


async def test_cdrs_in_another_currency_never_reach_an_invoice_as_a_correction(
    books: Books, ledger: Ledger, pg_url: str
) -> None:
    """A USD CDR on a EUR account is an error of the run, not billed; re-counting the
    invoiced period must not bill its 5.00 dollars as a 5.00 EUR usage correction."""
    await postpaid(ledger, "cur")
    await load_cdrs(
        pg_url,
        [
            cdr(1, "cur", at(10), charged_micros=1_000_000),
            cdr(2, "cur", at(11), charged_micros=5_000_000, currency="USD"),
        ],
    )
    first = await invoice_run(books, "2026-11")
    assert first.errors == ["cur: CDRs in USD, account in EUR"]
    assert [d.usage_micros for d in first.issued] == [1_000_000]
    # A late EUR call of November is corrected, alone.
    await load_cdrs(pg_url, [cdr(3, "cur", at(29), charged_micros=2_000_000)])
    second = (await invoice_run(books, "2026-12")).issued[0]
    assert [(ln.kind, ln.exact_micros, ln.calls) for ln in second.lines] == [
        ("correction", 2_000_000, 1)
    ]
    third = await invoice_run(books, "2027-01")
    assert third.issued == [] and third.skipped == {"nothing to bill": ["cur"]}


async def test_dry_run_writes_nothing(books: Books, ledger: Ledger, pg_url: str) -> None:
    await postpaid(ledger, "dry")
    await load_cdrs(pg_url, [cdr(1, "dry", at(2))])
    result = await invoice_run(books, "2026-11", dry_run=True)
    assert [d.total_micros for d in result.issued] == [120_000]  # 0.10 + 0.02 VAT
    assert await query(pg_url, "SELECT count(*) FROM invoices") == [(0,)]
    assert await query(pg_url, "SELECT count(*) FROM invoice_series") == [(0,)]
    assert (await ledger.get_account("dry")).balance_micros == 0


async def test_a_period_not_over_is_refused(books: Books, ledger: Ledger) -> None:
    await postpaid(ledger, "early")
    with pytest.raises(PeriodError, match="can be invoiced from"):
        await invoice_run(books, "2027-03", account_id="early")
    result = await invoice_run(books, "2027-03")
    assert result.skipped == {"period not over yet": ["early"]}


async def _refund_november(pg_url: str, account_id: str, amount_micros: int) -> None:
    """A rerate, applied after November was invoiced, that lowered its calls."""
    await query(
        pg_url,
        "INSERT INTO rerate_runs (run_id, from_time, to_time, plan, who, reason, cdrs,"
        " changed_cdrs) VALUES ('rr-neg', now(), now(), '', 't', 't', 1, 1);"
        "INSERT INTO rerate_adjustments (run_id, account_id, currency, cdrs, old_cost_micros,"
        f" new_cost_micros, amount_micros, txn_id, applied_at) VALUES ('rr-neg', '{account_id}',"
        f" 'EUR', 1, 1000000, {1_000_000 - amount_micros}, {amount_micros}, 'rr-neg:x',"
        " '2026-12-05T10:00:00Z')",
    )


async def test_a_negative_invoice_credits_the_oldest_invoice_still_owed(
    books: Books, ledger: Ledger, pg_url: str
) -> None:
    """November invoiced 1.19 and unpaid; a rerate then refunded 0.60 of its calls and
    December has nothing else: December's invoice is -0.71 (0.60 + 19 % VAT). Its credit
    lowers November's outstanding to 0.48, so dunning asks for 0.48, not 1.19 (before,
    November stayed owed in full and December read 'paid')."""
    await postpaid(ledger, "neg")
    await load_cdrs(pg_url, [cdr(1, "neg", at(10), charged_micros=1_000_000)])
    nov = (await invoice_run(books, "2026-11")).issued[0]
    assert nov.total_micros == 1_190_000
    await _refund_november(pg_url, "neg", 600_000)
    dec = (await invoice_run(books, "2026-12")).issued[0]
    assert dec.kind is Kind.INVOICE and dec.total_micros == -710_000
    now = books.now()
    dec_read = await get_invoice(books.db, dec.number, now)
    assert dec_read.refers_to == nov.number
    nov_read = await get_invoice(books.db, nov.number, now)
    assert (nov_read.credited_micros, nov_read.outstanding_micros) == (710_000, 480_000)
    assert nov_read.status != "paid"
    far = now + timedelta(days=400)
    assert await overdue(books.db, far, "neg") == {
        "neg": [(nov.number, nov.due_at, 480_000, "EUR")]
    }
    text = invoice_text(dec_read)
    assert f"credit applied to {nov.number}" in text
    await add_payment(books, "neg", 480_000, invoice_number=nov.number, reference="neg-1", who="t")
    assert (await get_invoice(books.db, nov.number, now)).status == "paid"
    assert await overdue(books.db, far, "neg") == {}


async def _owing_one_and_two(books: Books, ledger: Ledger, account_id: str) -> list[Invoice]:
    """October's invoice 1.00 and November's 2.00 (no VAT), both unpaid."""
    await postpaid(ledger, account_id)
    await set_profile(books.db, account_id, {"tax_mode": "exempt"}, who="t")
    issued = []
    for month, amount in ((10, 1_000_000), (11, 2_000_000)):
        await add_charge(
            books.db, account_id, kind="charge", description="Number rental",
            amount_micros=amount, charge_date=date(2026, month, 5),
            reference=f"{account_id}{month}", who="t",
        )  # fmt: skip
        issued.append((await invoice_run(books, f"2026-{month}", account_id=account_id)).issued[0])
    assert [inv.total_micros for inv in issued] == [1_000_000, 2_000_000]
    return issued


async def test_a_negative_invoice_settles_the_invoices_owed_oldest_first(
    books: Books, ledger: Ledger, pg_url: str
) -> None:
    """A rerate refunded 2.50 after October (1.00) and November (2.00) were invoiced,
    both unpaid: December's invoice is -2.50. Its credit settles October (1.00) and
    1.50 of November, which still owes 0.50: dunning asks for 0.50. It was all applied
    to October, which owed 1.00: 1.50 of it vanished and November stayed owed in full."""
    oct_, nov = await _owing_one_and_two(books, ledger, "neg2")
    await _refund_november(pg_url, "neg2", 2_500_000)
    dec = (await invoice_run(books, "2026-12", account_id="neg2")).issued[0]
    assert dec.total_micros == -2_500_000
    now = books.now()
    oct_read, nov_read, dec_read = [
        await get_invoice(books.db, inv.number, now) for inv in (oct_, nov, dec)
    ]
    assert (oct_read.credited_micros, oct_read.outstanding_micros) == (1_000_000, 0)
    assert oct_read.status == "paid" and oct_read.credit_notes == (dec.number,)
    assert (nov_read.credited_micros, nov_read.outstanding_micros) == (1_500_000, 500_000)
    assert nov_read.status != "paid" and nov_read.credit_notes == (dec.number,)
    assert dec_read.settles == ((oct_.number, 1_000_000), (nov.number, 1_500_000))
    assert dec_read.credit_left_micros == 0 and dec_read.refers_to == oct_.number
    shown = dec_read.to_json()
    assert shown["settles"] == [
        {"invoice": oct_.number, "amount": "1.00"},
        {"invoice": nov.number, "amount": "1.50"},
    ]
    assert shown["credit_on_account"] == "0.00"
    text = invoice_text(dec_read)
    assert f"credit applied to {oct_.number} (1.00 EUR), {nov.number} (1.50 EUR)\n" in text
    far = now + timedelta(days=400)
    assert await overdue(books.db, far, "neg2") == {
        "neg2": [(nov.number, nov.due_at, 500_000, "EUR")]
    }
    # What settled an invoice is written once, like the invoices themselves.
    with pytest.raises(psycopg.errors.IntegrityConstraintViolation, match="never change"):
        await query(pg_url, "UPDATE invoice_credits SET amount_micros = 1")
    await add_payment(books, "neg2", 500_000, invoice_number=nov.number, reference="n2", who="t")
    assert await overdue(books.db, far, "neg2") == {}


async def test_a_negative_invoice_larger_than_what_is_owed_leaves_the_rest_on_the_account(
    books: Books, ledger: Ledger, pg_url: str
) -> None:
    oct_, nov = await _owing_one_and_two(books, ledger, "neg3")
    await add_payment(books, "neg3", 2_000_000, invoice_number=nov.number, reference="n3", who="t")
    await _refund_november(pg_url, "neg3", 2_500_000)
    dec = (await invoice_run(books, "2026-12", account_id="neg3")).issued[0]
    dec_read = await get_invoice(books.db, dec.number, books.now())
    assert dec_read.settles == ((oct_.number, 1_000_000),)
    assert dec_read.credit_left_micros == 1_500_000
    assert dec_read.to_json()["credit_on_account"] == "1.50"
    assert f"credit applied to {oct_.number} (1.00 EUR); 1.50 EUR stays on the account" in (
        invoice_text(dec_read)
    )
    assert (await get_invoice(books.db, oct_.number, books.now())).outstanding_micros == 0
    assert await overdue(books.db, books.now() + timedelta(days=400), "neg3") == {}


async def test_a_negative_invoice_waits_for_a_payment_being_recorded(
    books: Books, ledger: Ledger, pg_url: str
) -> None:
    """October is being paid while December's credit is shared out: the run waits for
    the payment, then settles November alone (2.00) and leaves 0.50 on the account;
    reading October as owed meanwhile would have settled it twice."""
    oct_, nov = await _owing_one_and_two(books, ledger, "neg4")
    await _refund_november(pg_url, "neg4", 2_500_000)
    async with await psycopg.AsyncConnection.connect(pg_url) as other:
        await other.execute(
            "INSERT INTO payments (reference, account_id, invoice_id, amount_micros, currency,"
            " created_by) VALUES ('race', 'neg4', %s, 1000000, 'EUR', 't')",
            (oct_.id,),
        )
        run = asyncio.create_task(invoice_run(books, "2026-12", account_id="neg4"))
        await asyncio.sleep(0.5)
        assert not run.done()
        await other.commit()
        dec = (await run).issued[0]
    dec_read = await get_invoice(books.db, dec.number, books.now())
    assert dec_read.settles == ((nov.number, 2_000_000),)
    assert dec_read.credit_left_micros == 500_000


def _legacy_invoice(n: int, month: int, total: int, refers_to: int | None) -> str:
    """An invoice row as chargingd wrote it before migration 011."""
    return (
        "INSERT INTO invoices (id, number, series, seq, kind, account_id, period, period_start,"
        " period_end, currency, issued_at, due_at, refers_to, reason, customer, issuer, tax,"
        " subtotal_micros, tax_micros, total_micros, run_id, created_by) VALUES"
        f" ({n}, 'INV-2026-00000{n}', 'INV-2026', {n}, 'invoice', 'old', '2026-{month:02d}',"
        f" '2026-{month:02d}-01Z', '2026-{month + 1:02d}-01Z', 'EUR', '2026-{month + 1:02d}-02Z',"
        f" '2026-{month + 1:02d}-16Z', {'NULL' if refers_to is None else refers_to}, '', '{{}}',"
        f" '{{}}', '{{\"mode\": \"exempt\", \"rate_ppm\": 0}}', {total}, 0, {total}, 'r', 't');"
    )


async def test_negative_invoices_issued_before_migration_011_count_as_they_did(
    pg_empty_url: str,
) -> None:
    """Before 011 a negative invoice's whole credit counted against the one invoice it
    named: the migration keeps that (issued documents never change their meaning)."""
    async with await psycopg.AsyncConnection.connect(pg_empty_url) as conn:
        await migrate(conn, [m for m in load_migrations() if m.version <= 10])
        for n, month, total, refers in ((1, 9, 1_000_000, None), (2, 10, 2_000_000, None),
                                        (3, 11, -2_500_000, 1)):  # fmt: skip
            await conn.execute(_legacy_invoice(n, month, total, refers).encode())
        await conn.commit()
        assert (await migrate(conn))[0] == 11  # (and the later ones)
    db = await BillingDB.open(pg_empty_url)
    try:
        now = NOW
        first, second, credit = [
            await get_invoice(db, f"INV-2026-00000{n}", now) for n in (1, 2, 3)
        ]
        assert (first.credited_micros, first.outstanding_micros) == (2_500_000, 0)
        assert (second.credited_micros, second.outstanding_micros) == (0, 2_000_000)
        assert credit.settles == (("INV-2026-000001", 2_500_000),)
        assert credit.refers_to == "INV-2026-000001" and first.credit_notes == (credit.number,)
        # The 1.50 credited beyond what INV-1 owed is the account's credit (the ledger
        # moved all 2.50): dunning asks for what the account owes net, 0.50.
        found = await overdue(db, now)
        assert found == {"old": [("INV-2026-000002", second.due_at, 500_000, "EUR")]}
    finally:
        await db.close()


async def test_a_negative_invoice_with_nothing_owed_keeps_its_credit_on_the_account(
    books: Books, ledger: Ledger, pg_url: str
) -> None:
    await postpaid(ledger, "negpaid")
    await load_cdrs(pg_url, [cdr(1, "negpaid", at(10), charged_micros=1_000_000)])
    nov = (await invoice_run(books, "2026-11")).issued[0]
    await add_payment(
        books, "negpaid", nov.total_micros, invoice_number=nov.number, reference="np-1",
        who="t",
    )  # fmt: skip
    await _refund_november(pg_url, "negpaid", 600_000)
    dec = (await invoice_run(books, "2026-12")).issued[0]
    assert dec.total_micros == -710_000
    assert (await get_invoice(books.db, dec.number, books.now())).refers_to is None
    assert (await get_invoice(books.db, nov.number, books.now())).credited_micros == 0
    assert await overdue(books.db, books.now() + timedelta(days=400), "negpaid") == {}


async def test_a_credit_note_racing_a_negative_invoice_never_credits_past_the_total(
    books: Books, ledger: Ledger, pg_url: str
) -> None:
    """November invoiced 1.19, unpaid; a rerate refunded 0.60, so December's invoice is
    -0.71 and settles 0.71 of November. A credit note of all of November (1.19) asked
    while that run is issuing December read what November had left before the run
    committed, waited only to write, and was issued: November credited 1.90 of 1.19,
    the customer given back 0.71 twice. It now reads November once the run is done,
    and is refused (0.48 is left)."""
    await postpaid(ledger, "race")
    await load_cdrs(pg_url, [cdr(1, "race", at(10), charged_micros=1_000_000)])
    nov = (await invoice_run(books, "2026-11")).issued[0]
    assert nov.total_micros == 1_190_000
    await _refund_november(pg_url, "race", 600_000)
    outcome: dict[str, object] = {}

    def credit_note_now() -> None:
        async def go() -> None:
            other = await make_books(pg_url, None, default_vat_rate="19")
            try:
                outcome["note"] = await credit_note(other, nov.number, 1_190_000, "goodwill")
            except Refused as exc:
                outcome["refused"] = str(exc)
            finally:
                await other.db.close()

        asyncio.run(go())

    thread = threading.Thread(target=credit_note_now)

    def while_december_is_issued(issued: list[Invoice]) -> None:
        # December is written, November's row locked: the credit note starts and waits
        # (on a lock) before the run commits.
        assert [inv.total_micros for inv in issued] == [-710_000]
        thread.start()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            for _ in range(400):
                cur = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"
                )
                row = cur.fetchone()
                if row is not None and row[0] > 0:
                    return
                time.sleep(0.05)
        raise AssertionError("the credit note never waited for the run")

    await invoice_run(books, "2026-12", before_commit=while_december_is_issued)
    await asyncio.to_thread(thread.join, 30)
    read = await get_invoice(books.db, nov.number, books.now())
    assert read.credited_micros <= read.total_micros, outcome
    assert "at most 0.48 EUR can still be credited" in str(outcome.get("refused")), outcome


async def test_a_call_stored_while_a_run_issues_is_in_an_invoice_and_its_call_list_or_neither(
    ledger: Ledger, pg_url: str
) -> None:
    """The exporter stores calls while a run issues its batches. A November call of
    the second batch's account stored after the run aggregated November (here: while
    the first batch commits) was left out of that invoice's usage but listed in its
    call detail (read later, from the CDRs). The batch now reads its calls itself:
    the invoice bills it, its call list shows it, and December bills no correction."""
    books = await make_books(pg_url, ledger, batch_size=1, default_vat_rate="19")
    try:
        for name in ("conc-a", "conc-b"):
            await postpaid(ledger, name)
            await load_cdrs(pg_url, [cdr(1, name, at(10), charged_micros=1_000_000)])
        stored = []

        def exporter_stores_a_call(issued: list[Invoice]) -> None:
            if stored:
                return
            row = cdr(2, "conc-b", at(20), charged_micros=250_000)
            with psycopg.connect(pg_url, autocommit=True) as conn:
                marks = ", ".join(["%s"] * len(row))
                conn.execute(f"INSERT INTO cdrs ({CDR_COLUMNS}) VALUES ({marks})", row)
            stored.append(issued[0].account_id)

        result = await invoice_run(books, "2026-11", before_commit=exporter_stores_a_call)
        assert stored == ["conc-a"]
        (inv_b,) = [inv for inv in result.issued if inv.account_id == "conc-b"]
        assert (inv_b.usage_micros, inv_b.usage_calls) == (1_250_000, 2)
        calls = (await document_calls(books.db, inv_b)).rows
        assert [c.charged_micros for c in calls] == [1_000_000, 250_000]
        dec = await invoice_run(books, "2026-12", account_id="conc-b")
        assert dec.issued == [] and dec.skipped == {"nothing to bill": ["conc-b"]}
    finally:
        await books.db.close()


async def test_a_run_of_an_earlier_period_does_not_hide_late_calls_of_later_ones(
    books: Books, ledger: Ledger
) -> None:
    """July invoiced, August and September nothing to bill; then a late call of July
    is stored, and June is run for the account (a back-run: it re-counts only what
    ended before June). October's run must still bill the late July call: the back-run
    is no check of the periods after it."""
    await postpaid(ledger, "back")
    july = at(10, month=7)

    def call(n: int, when: datetime, charged: int) -> CDR:
        ms = int(when.timestamp() * 1000)
        return CDR(
            source="radius", call_id=f"back-{n}", account_id="back", caller="+4930123456",
            callee="+4930999999", destination="DE_FIX", start_ms=ms, answer_ms=ms + 2000,
            end_ms=ms + 62_000, duration_s=60, billed_s=60, cost_micros=charged,
            currency="EUR", tariff="t", gateway="gw", disconnect_cause=16, status="normal",
            charged_micros=charged, charge="live",
        )  # fmt: skip

    await books.db.store_cdrs([call(1, july, 1_000_000)])
    assert len((await invoice_run(books, "2026-07", account_id="back")).issued) == 1
    for label in ("2026-08", "2026-09"):
        assert (await invoice_run(books, label, account_id="back")).issued == []
    await books.db.store_cdrs([call(2, at(20, month=7), 500_000)])
    assert (await invoice_run(books, "2026-06", account_id="back")).issued == []
    (oct_,) = (await invoice_run(books, "2026-10", account_id="back")).issued
    assert [(ln.description, ln.exact_micros) for ln in oct_.lines] == [
        ("Usage correction for 2026-07 (+1 calls recorded after it was billed)", 500_000)
    ]
