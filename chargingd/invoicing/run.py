"""`invoice run`: issue a period's invoices (postpaid) and statements (prepaid).

Accounts come from the ledger (mode, currency), billing settings from their profiles.
Per billing day, the period's usage is aggregated once in PostgreSQL; then accounts
are issued in batches, one transaction per batch: the series is locked first, so
what is already issued is known exactly, the documents are built and written, and
the numbers move in the same transaction. A failed batch leaves nothing behind; a
re-run issues only what is missing. Ledger postings follow each committed batch.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from chargingd.billing.db import Conn
from chargingd.invoicing import (
    cdrs,
    charges,
    dunning,
    issue,
    postings,
    statements,
    store,
    tax,
    usage,
)
from chargingd.invoicing.build import Correction, Inputs, Rerate, invoice_draft
from chargingd.invoicing.context import Books
from chargingd.invoicing.model import (
    Charge,
    Draft,
    Invoice,
    Kind,
    Profile,
    RunResult,
    Subscription,
    money,
)
from chargingd.invoicing.periods import (
    Period,
    PeriodError,
    check_closed,
    previous_label,
    utc,
    window,
)
from chargingd.invoicing.profiles import load_profiles
from chargingd.ledger import Account, Mode

log = logging.getLogger("chargingd.invoicing")

BeforeCommit = Callable[[list[Invoice]], None]

# A period without an invoice whose late calls a later invoice billed as a correction.
BILLED_LATE = "already billed as a usage correction"


@dataclass(frozen=True)
class Batch:
    """Accounts of one billing window issued in one transaction."""

    period: Period
    accounts: Sequence[Account]
    usage: usage.AccountUsage
    profiles: dict[str, Profile]
    summaries: dict[str, statements.LedgerSummary]


async def all_accounts(books: Books, account_id: str | None) -> list[Account]:
    """The accounts to bill: one, or every account of the ledger (by id)."""
    ledger = books.need_ledger()
    if account_id is not None:
        return [await ledger.get_account(account_id)]
    found: dict[str, Account] = {}
    cursor = 0
    while True:
        cursor, page = await ledger.list_accounts(cursor=cursor, count=1000)
        found.update((a.id, a) for a in page)
        if cursor == 0:
            return [found[k] for k in sorted(found)]


async def invoice_run(
    books: Books,
    label: str,
    *,
    account_id: str | None = None,
    dry_run: bool = False,
    before_commit: BeforeCommit | None = None,
) -> RunResult:
    """Issue (or with ``dry_run`` only build) the period's documents."""
    started = time.perf_counter()
    window(label, 1, books.cfg.time_zone)  # a bad label fails before any work
    result = RunResult(f"run-{uuid.uuid4().hex[:12]}", label, dry_run)
    accounts = await all_accounts(books, account_id)
    for currency in sorted({a.currency for a in accounts}):
        note = books.cfg.overridden(currency)  # minor_unit_decimals set, not the currency's
        if note is not None:
            result.notes.append(note)
            log.warning("%s", note)
    ids = [a.id for a in accounts] if account_id else None
    profiles = await books.db.run(lambda conn: load_profiles(conn, ids))
    by_window, covered = await _windows(books, label, accounts, profiles, ids, result)
    for _, (period, group) in sorted(by_window.items(), key=lambda item: item[0]):
        try:
            check_closed(period, books.now(), books.cfg.settle_delay_s)
        except PeriodError:
            if account_id is not None:
                raise
            for acc in group:
                result.skip("period not over yet", acc.id)
            continue
        whole_ledger = account_id is None and len(by_window) == 1 and not covered
        await _run_window(books, period, group, profiles, result, whole_ledger, before_commit)
    if not dry_run:
        result.posted = await postings.post_pending(
            books.db, books.need_ledger(), who=books.who, account_ids=ids
        )
        # A negative invoice that settled what dunning suspended for lifts it now, as a
        # credit note does (the loop would, at its next pass).
        for doc in result.issued:
            if isinstance(doc, Invoice) and doc.settles:
                await dunning.settle(books, doc.account_id)
    result.elapsed_s = time.perf_counter() - started
    log.info(
        "invoice run %s %s: %d issued, %d CDRs aggregated in %.1f s (run %.1f s)",
        result.run_id, label, len(result.issued), result.cdrs, result.aggregate_s,
        result.elapsed_s,
    )  # fmt: skip
    return result


Windows = dict[tuple[int, datetime], tuple[Period, list[Account]]]


async def _windows(
    books: Books,
    label: str,
    accounts: Sequence[Account],
    profiles: dict[str, Profile],
    ids: list[str] | None,
    result: RunResult,
) -> tuple[Windows, bool]:
    """The accounts by the window of their period (billing day), and whether some were
    left out because an earlier document covers the whole period already.

    Where each account's previous period ended: after its billing day changed, this
    period starts there (a transition period: no day billed twice, none skipped), not
    on the new day."""
    before = previous_label(label)
    ends = await books.db.run(lambda conn: issue.previous_ends(conn, before, ids))
    by_window: Windows = {}
    covered = False
    for acc in accounts:
        day = profiles.get(acc.id, Profile(acc.id)).billing_day
        period = window(label, day, books.cfg.time_zone)
        number, end = ends.get(acc.id, ("", period.start))
        if end >= period.end:
            # A guard: the previous label's period ends in this label's month, before
            # this period's end, with billing days 1..28.
            log.warning("%s: period %s is covered by %s already", acc.id, label, number or before)
            result.skip("period covered by the previous one (billing day changed)", acc.id)
            covered = True
            continue
        if end != period.start:
            period = period.transition(end)
        by_window.setdefault((day, period.start), (period, []))[1].append(acc)
    return by_window, covered


async def _run_window(
    books: Books,
    period: Period,
    accounts: list[Account],
    profiles: dict[str, Profile],
    result: RunResult,
    whole_ledger: bool,
    before_commit: BeforeCommit | None,
) -> None:
    # A re-run aggregates nothing for accounts already issued (checked again, under
    # the series lock, when a batch is issued).
    done = await books.db.run(
        lambda conn: issue.issued_in(conn, period.label, None if whole_ledger else accounts)
    )
    if done:
        for issued in accounts:
            if issued.id in done:
                result.skip("already issued", issued.id)
        accounts = [a for a in accounts if a.id not in done]
        whole_ledger = False
        if not accounts:
            return
    started = time.perf_counter()
    ids = None if whole_ledger else [a.id for a in accounts]
    groups = books.cfg.destination_groups
    found = await books.db.run(
        lambda conn: usage.usage_by_group(conn, period.start, period.end, groups, account_ids=ids)
    )
    result.aggregate_s += time.perf_counter() - started
    result.cdrs += sum(r.cdrs for rows in found.values() for r in rows)
    known = {a.id: a for a in accounts}
    for acc_id, currency in sorted(found):
        owner = known.get(acc_id)
        if owner is None and whole_ledger:
            result.skip("CDRs of an account the ledger does not know", acc_id)
        elif owner is not None and currency != owner.currency:
            result.errors.append(f"{acc_id}: CDRs in {currency}, account in {owner.currency}")
    size = books.cfg.batch_size
    for mode, kind in ((Mode.POSTPAID, Kind.INVOICE), (Mode.PREPAID, Kind.STATEMENT)):
        chosen = [a for a in accounts if a.mode is mode]
        for i in range(0, len(chosen), size):
            part = chosen[i : i + size]
            summaries = {}
            if mode is Mode.PREPAID:
                summaries = await _summaries(books, part, period, result)
            batch = Batch(period, part, found, profiles, summaries)
            await _issue_batch(books, kind, batch, result, before_commit)


async def _summaries(
    books: Books, accounts: Sequence[Account], period: Period, result: RunResult
) -> dict[str, statements.LedgerSummary]:
    ledger = books.need_ledger()
    found = {}
    for acc in accounts:
        try:
            found[acc.id] = await statements.summarise(ledger, acc.id, period)
        except statements.TrailTrimmed as exc:
            result.errors.append(str(exc))
            result.skip("ledger audit trail trimmed", acc.id)
    return found


@dataclass
class Billables:
    """What a batch's accounts owe besides usage (invoices), and their late usage."""

    subscriptions: dict[str, list[Subscription]] = field(default_factory=dict)
    charges: dict[str, list[Charge]] = field(default_factory=dict)
    rerates: dict[str, list[Rerate]] = field(default_factory=dict)
    corrections: dict[str, list[Correction]] = field(default_factory=dict)


def _inputs(books: Books, batch: Batch, acc: Account, billables: Billables) -> Inputs:
    profile = batch.profiles.get(acc.id, Profile(acc.id))
    tax_profile = tax.resolve(
        books.cfg,
        mode=profile.tax_mode,
        country=profile.country,
        rate_ppm=profile.vat_rate_ppm,
        vat_id=profile.vat_id,
        note=profile.tax_note,
    )
    return Inputs(
        account_id=acc.id,
        currency=acc.currency,
        period=batch.period,
        profile=profile,
        tax=tax_profile,
        usage=batch.usage.get((acc.id, acc.currency), []),
        subscriptions=billables.subscriptions.get(acc.id, []),
        charges=billables.charges.get(acc.id, []),
        rerates=billables.rerates.get(acc.id, []),
        corrections=billables.corrections.get(acc.id, []),
    )


async def _billables(
    books: Books, conn: Conn, kind: Kind, period: Period, ids: list[str]
) -> Billables:
    found = Billables()
    if not ids:
        return found
    lookback = books.cfg.late_usage_periods
    # The last `lookback` periods in full; older ones where their usage changed.
    since = period.earlier(lookback).start if lookback else period.start
    found.corrections = await usage.corrections(conn, ids, period.start, since)
    if kind is Kind.INVOICE:
        found.subscriptions = await charges.running_subscriptions(conn, ids, period)
        found.charges = await charges.open_charges(conn, ids, period)
        found.rerates = await usage.open_rerates(conn, ids, period.end)
    return found


def _draft(books: Books, kind: Kind, batch: Batch, acc: Account, inputs: Inputs) -> Draft | None:
    decimals = books.cfg.decimals(inputs.currency)  # the currency's minor unit (or the config's)
    if kind is Kind.STATEMENT:
        summary = batch.summaries.get(acc.id)
        if summary is None:
            return None
        draft = statements.statement_draft(inputs, summary, decimals)
        if statements.is_empty(summary, draft) and not books.cfg.empty_statements:
            return None
        return draft
    terms = inputs.profile.payment_terms_days
    return invoice_draft(inputs, decimals, books.cfg.payment_terms_days if terms is None else terms)


def _zero_refused(books: Books, draft: Draft, profile: Profile) -> str | None:
    """Why an invoice is not issued (nothing billed, or zero), None to issue it."""
    if draft.kind is not Kind.INVOICE:
        return None
    if not draft.lines:
        return "nothing to bill"
    if draft.total_micros == 0 and not (books.cfg.zero_amount_invoices or profile.zero_invoices):
        return "zero amount"
    return None


async def _settling(conn: Conn, draft: Draft, decimals: int) -> Draft:
    """A negative invoice (the corrections of earlier periods exceed what its own period
    charges): its credit settles the account's invoices still owed, oldest first, each
    up to what it owes, as a credit note would (invoice_credits), so dunning does not
    suspend for money the customer no longer owes. What no invoice takes stays on the
    account: its ledger balance, which the invoice's posting moves in full either way."""
    credit = -draft.total_micros
    settles = []
    for invoice_id, number, owed in await store.owed_invoices(
        conn, draft.account_id, draft.currency
    ):
        if credit <= 0:
            break
        part = min(credit, owed)
        settles.append((invoice_id, number, part))
        credit -= part
    if not settles:
        return draft
    cur = draft.currency
    applied = ", ".join(f"invoice {n} ({money(m, decimals)} {cur})" for _, n, m in settles)
    kept = f"; {money(credit, decimals)} {cur} stays on the account" if credit else ""
    return replace(
        draft,
        refers_to=settles[0][0],
        reason=f"credit applied to {applied}{kept}",
        settles=tuple(settles),
    )


async def _issue_batch(
    books: Books,
    kind: Kind,
    batch: Batch,
    result: RunResult,
    before_commit: BeforeCommit | None,
) -> None:
    template = books.cfg.invoice_series if kind is Kind.INVOICE else books.cfg.statement_series
    issued_at = books.now()
    numbering = issue.Numbering(issue.series_name(template, issued_at), books.cfg.number_digits)
    skipped: list[tuple[str, str]] = []

    async def work(conn: Conn) -> list[Invoice] | list[Draft]:
        skipped.clear()
        ids = [a.id for a in batch.accounts]
        last = 0 if result.dry_run else await issue.lock_series(conn, numbering.series)
        done = await issue.already_issued(conn, kind, batch.period.label, ids)
        skipped.extend(("already issued", a) for a in sorted(done))
        if kind is Kind.INVOICE:
            # The period had no invoice and a later one billed its late calls already.
            late = await usage.billed_as_correction(conn, batch.period.label, ids) - done
            skipped.extend((BILLED_LATE, a) for a in sorted(late))
            done |= late
        todo = [a for a in batch.accounts if a.id not in done]
        todo_ids = [a.id for a in todo]
        # The calls this batch bills, read once here (after the lock): the usage lines
        # are summed from them and each document keeps them as its call detail, so a
        # CDR stored since the run's first aggregation is in both or in neither.
        snapshot = await cdrs.stage_calls(conn, todo_ids, batch.period.start, batch.period.end)
        counted = replace(
            batch,
            usage=await usage.usage_by_group(
                conn, batch.period.start, batch.period.end, books.cfg.destination_groups,
                account_ids=todo_ids, staged=True,
            ),
        )  # fmt: skip
        uninvoiced = []
        billables = await _billables(books, conn, kind, batch.period, todo_ids)
        drafts = []
        for acc in todo:
            inputs = _inputs(books, counted, acc, billables)
            draft = _draft(books, kind, counted, acc, inputs)
            why = _zero_refused(books, draft, inputs.profile) if draft else "nothing to report"
            if why is not None or draft is None:
                skipped.append((why or "nothing to report", acc.id))
                if draft is not None and draft.kind is Kind.INVOICE:
                    own = draft.usage[0]  # what this run counted of the period
                    uninvoiced.append(
                        (acc.id, own.period, utc(own.start), utc(own.end), draft.currency,
                         own.calls, own.charged_micros, why or "", result.run_id)
                    )  # fmt: skip
                continue
            if draft.kind is Kind.INVOICE and draft.total_micros < 0:
                draft = await _settling(conn, draft, books.cfg.decimals(draft.currency))
            drafts.append(draft)
        if result.dry_run:
            return drafts
        await usage.record_uninvoiced(conn, uninvoiced)
        issued = await issue.write(
            conn, drafts, numbering=numbering, last_number=last, issued_at=issued_at,
            issuer=books.issuer(), run_id=result.run_id, who=books.who,
        )  # fmt: skip
        await cdrs.keep_calls(conn, [(d.id, d.account_id, d.currency) for d in issued])
        # The re-count of older periods starts from this snapshot next time, for every
        # account whose corrections a document written here bills (or that had none).
        # Not after a run of an earlier period than one already counted (a back-run):
        # it re-counted none of the later periods.
        written = {d.account_id for d in issued}
        later = await usage.counted_after(conn, todo_ids, batch.period.end)
        await usage.record_checks(
            conn,
            [
                (a.id, a.currency, snapshot)
                for a in todo
                if a.id not in later and (a.id in written or not billables.corrections.get(a.id))
            ],
        )
        if before_commit is not None:
            before_commit(issued)
        return issued

    documents = await books.db.run(work)
    result.issued.extend(documents)
    for why, account_id in skipped:
        result.skip(why, account_id)
