"""Dunning: suspend postpaid accounts with an invoice unpaid past its grace, and
reactivate them once nothing is overdue any more.

A suspension is the ledger's own status change with reason ``overdue`` (new calls
are refused with it) followed by a cut of the account's live calls through the
sessions' cutter path (Disconnect-Request). Only an active (or credit-suspended)
account is suspended, and only an ``overdue`` suspension is lifted: an operator's
suspension or block is never overridden. Each change is logged in dunning_events.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from chargingd.billing.db import Conn
from chargingd.core.loops import run_every, wait_or_stop
from chargingd.core.status import ComponentStats
from chargingd.invoicing import postings, store
from chargingd.invoicing.context import Books
from chargingd.invoicing.model import money
from chargingd.ledger import LedgerError, Mode, Status, UnknownAccount

log = logging.getLogger("chargingd.dunning")

REASON = "overdue"
WHO = "dunning"
SUSPENDABLE = ("active/", "suspended/credit")
LIFTABLE = (f"suspended/{REASON}",)

CutAccount = Callable[[str], Awaitable[int]]


async def _event(books: Books, account_id: str, action: str, invoice: str, detail: str) -> None:
    async def work(conn: Conn) -> None:
        await conn.execute(
            "INSERT INTO dunning_events (account_id, action, invoice_id, detail)"
            " VALUES (%s, %s, (SELECT id FROM invoices WHERE number = %s), %s)",
            (account_id, action, invoice or None, detail),
        )

    await books.db.run(work)


async def _suspended_by_dunning(books: Books, account_id: str | None) -> set[str]:
    """Accounts whose last dunning event is a suspension."""

    async def work(conn: Conn) -> set[str]:
        cur = await conn.execute(
            "SELECT account_id FROM (SELECT DISTINCT ON (account_id) account_id, action"
            "  FROM dunning_events WHERE %s::text IS NULL OR account_id = %s"
            "  ORDER BY account_id, id DESC) last WHERE action = 'suspend'",
            (account_id, account_id),
        )
        return {row[0] for row in await cur.fetchall()}

    result: set[str] = await books.db.run(work)
    return result


async def suspend(
    books: Books, account_id: str, invoice: str, why: str, cut: CutAccount | None
) -> bool:
    """Suspend one postpaid account for an overdue invoice; True if it was suspended now."""
    ledger = books.need_ledger()
    acc = await ledger.get_account(account_id)
    if acc.mode is not Mode.POSTPAID or acc.status_reason == REASON:
        return False
    after = await ledger.set_status(
        account_id, Status.SUSPENDED, who=WHO, why=why, reason=REASON, only_from=SUSPENDABLE
    )
    if after.status_reason != REASON:
        return False  # an operator's status: left alone
    await _event(books, account_id, "suspend", invoice, why)
    log.warning("account %s suspended: %s", account_id, why)
    if cut is not None:
        try:
            cutting = await cut(account_id)
        except Exception:  # the suspension stands: new calls are refused anyway
            log.exception("cutting the live calls of %s failed", account_id)
        else:
            if cutting:
                log.info("account %s suspended: cutting %d live calls", account_id, cutting)
    return True


async def reactivate(books: Books, account_id: str, why: str) -> bool:
    """Lift an ``overdue`` suspension; True if the account was reactivated now."""
    ledger = books.need_ledger()
    before = await ledger.get_account(account_id)
    after = await ledger.set_status(
        account_id, Status.ACTIVE, who=WHO, why=why, reason=REASON, only_from=LIFTABLE
    )
    # Recorded even when an operator changed the status meanwhile: the dunning is over.
    await _event(books, account_id, "reactivate", "", f"{why} (now {after.status})")
    changed = before.status_reason == REASON and after.status_reason != REASON
    if changed:
        log.warning("account %s reactivated: %s", account_id, why)
    return changed


async def dunning_pass(
    books: Books, cut: CutAccount | None = None, *, account_id: str | None = None
) -> tuple[int, int]:
    """One pass (over every account, or one): (suspended, reactivated)."""
    ledger = books.need_ledger()
    accounts = None if account_id is None else [account_id]
    await postings.post_pending(books.db, ledger, who=WHO, account_ids=accounts)
    cutoff = books.now() - timedelta(days=books.cfg.dunning_grace_days)
    late = await store.overdue(books.db, cutoff, account_id)
    suspended = reactivated = 0
    for acc_id, invoices in sorted(late.items()):
        number, due, owed, currency = invoices[0]
        left = f"{money(owed, books.cfg.decimals(currency))} {currency}"
        day = due.astimezone(cutoff.tzinfo).date()  # in the invoicing time zone
        why = f"invoice {number} unpaid ({left} due {day.isoformat()})"
        try:
            suspended += await suspend(books, acc_id, number, why, cut)
        except UnknownAccount:
            log.error("overdue invoice %s: the ledger has no account %s", number, acc_id)
    for acc_id in sorted(await _suspended_by_dunning(books, account_id) - set(late)):
        try:
            reactivated += await reactivate(books, acc_id, "no invoice overdue any more")
        except LedgerError as exc:
            log.error("reactivating %s failed: %s", acc_id, exc)
    return suspended, reactivated


async def settle(books: Books, account_id: str) -> bool:
    """After a payment or a credit note: reactivate the account if it was suspended by
    dunning and nothing is overdue any more (never suspends: the loop does, and cuts)."""
    if books.ledger is None or account_id not in await _suspended_by_dunning(books, account_id):
        return False
    cutoff = books.now() - timedelta(days=books.cfg.dunning_grace_days)
    if await store.overdue(books.db, cutoff, account_id):
        return False
    return await reactivate(books, account_id, "paid")


class Dunning:
    """The daemon's dunning loop (``[invoicing] dunning_in_serve``)."""

    name = "dunning"

    def __init__(
        self,
        open_books: Callable[[], Awaitable[Books]],
        *,
        interval_s: float,
        cut: CutAccount | None,
        stats: ComponentStats,
    ) -> None:
        self.open_books = open_books
        self.interval_s = interval_s
        self.cut = cut
        self.stats = stats
        self.books: Books | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dunning")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 10.0)
            except TimeoutError:
                log.warning("dunning did not stop in time; cancelled")
        if self.books is not None:
            await self.books.db.close()

    async def pass_once(self) -> None:
        if self.books is None:
            self.books = await self.open_books()  # the database may start slowly: not in start()
        suspended, reactivated = await dunning_pass(self.books, self.cut)
        self.stats.inc("passes")
        self.stats.inc("suspended", suspended)
        self.stats.inc("reactivated", reactivated)

    async def _run(self) -> None:
        # The first pass waits one interval: the daemon is up (and the embedded
        # PostgreSQL not started for nothing) before dunning looks at invoices.
        if await wait_or_stop(self._stop, self.interval_s):
            return
        await run_every(self._stop, self.interval_s, self.pass_once, log=log, what="dunning")
