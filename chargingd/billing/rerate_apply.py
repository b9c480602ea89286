"""Applying a rerate: record the run, then settle each call's charge in the ledger.

``record`` writes, in one transaction, the run (rerate_runs), the new costs and billed
seconds (keeping each CDR's first cost), the change of usage_periods, and one
``rerate_charges`` row per call whose charge moves. ``post_pending`` then asks the
ledger to move each call's charge to its target (Ledger.rerate_usage: idempotent on
the call) and writes back what the ledger holds: cdrs.charged_micros, the reason
(``rerate``, or ``capped`` when a prepaid account could not pay more), and
usage_periods.charged_micros. A run interrupted anywhere is finished by the next
``--apply``: a call the ledger already moved is a replay there.

Rows of the per-account ``rerate_adjustments`` written before migration 004 are still
posted as they were (one adjustment per account and run).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncCursor

from chargingd.billing.db import BillingDB, Conn
from chargingd.billing.rerate_model import Change, Report, RerateError
from chargingd.core.config import Config
from chargingd.core.currencies import money_text
from chargingd.ledger import Ledger, LedgerError, UsageCharge, UsageRequest

log = logging.getLogger("chargingd.rerate")

CHUNK = 500  # calls asked of the ledger at once (one pipeline), then written back


async def record(
    db: BillingDB, report: Report, cfg: Config, *, who: str, reason: str
) -> str | None:
    """Write the run: new costs, first costs, usage, one charge row per moving call.

    One transaction; returns the run id (None when nothing changed). Raises
    RerateError if a CDR changed since the report was computed.
    """
    if not report.changes:
        return None
    run_id = report.run_id()

    async def work(conn: Conn) -> None:
        cur = await conn.execute(
            "INSERT INTO rerate_runs (run_id, from_time, to_time, account_id, plan, who, reason,"
            " cdrs, changed_cdrs) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (run_id) DO NOTHING",
            (
                run_id, report.start, report.end, report.account_id, report.plan, who, reason,
                sum(d.cdrs for d in report.accounts.values()), len(report.changes),
            ),
        )  # fmt: skip
        if cur.rowcount == 0:
            return  # recorded before: only its charges may still be pending
        await _write_changes(conn, run_id, report.changes)
        await _write_charges(conn, run_id, report.changes, cfg)

    await db.run(work)
    return run_id


async def _write_changes(conn: Conn, run_id: str, changes: Sequence[Change]) -> None:
    await conn.execute(
        "CREATE TEMP TABLE rerate_stage (id BIGINT PRIMARY KEY, old_cost BIGINT,"
        " new_cost BIGINT, new_billed_s INTEGER, old_charged BIGINT) ON COMMIT DROP"
    )
    async with conn.cursor() as cur:
        async with cur.copy("COPY rerate_stage FROM STDIN") as copy:
            for c in changes:
                row = (c.cdr_id, c.old_micros, c.new_micros, c.new_billed_s, c.old_charged)
                await copy.write_row(row)
        # Usage first, while cdrs still hold the old billed seconds.
        await cur.execute(
            "UPDATE usage_periods u SET cost_micros = u.cost_micros + d.cost,"
            " billed_s = u.billed_s + d.billed, updated_at = now()"
            " FROM (SELECT c.account_id, to_char(c.start_time AT TIME ZONE 'UTC', 'YYYY-MM') AS p,"
            "   c.currency, sum(s.new_cost - s.old_cost) AS cost,"
            "   sum(s.new_billed_s - c.billed_s) AS billed"
            "   FROM rerate_stage s JOIN cdrs c ON c.id = s.id"
            "   WHERE c.charge <> 'recorded_only' GROUP BY 1, 2, 3) d"
            " WHERE u.account_id = d.account_id AND u.period = d.p AND u.currency = d.currency"
        )
        await cur.execute(
            "UPDATE cdrs c SET cost_micros = s.new_cost, billed_s = s.new_billed_s,"
            " original_cost_micros = COALESCE(c.original_cost_micros, c.cost_micros),"
            " rerate_run_id = %s FROM rerate_stage s"
            " WHERE c.id = s.id AND c.cost_micros = s.old_cost"
            " AND c.charged_micros = s.old_charged",
            (run_id,),
        )
        if cur.rowcount != len(changes):
            raise RerateError("CDRs changed while rerating; nothing applied, run it again")


async def _write_charges(conn: Conn, run_id: str, changes: Sequence[Change], cfg: Config) -> None:
    rows = [
        (
            run_id, c.cdr_id, c.account_id, c.currency, c.source, c.call_id, c.old_charged,
            c.new_charged, _insufficient(cfg, c.source), c.keep_reason,
        )
        for c in changes
        if c.new_charged != c.old_charged
    ]  # fmt: skip
    if not rows:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO rerate_charges (run_id, cdr_id, account_id, currency, source, call_id,"
            " old_charged, target_charged, insufficient, keep_reason)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )


def _insufficient(cfg: Config, source: str) -> str:
    """A mediated source's own rule; a live call's rerate may leave a debt, like its commit."""
    found = cfg.mediation.sources.get(source)
    return found.insufficient if found is not None else "debt"


# -- settling in the ledger ------------------------------------------------------------


@dataclass(frozen=True)
class PendingCharge:
    seq: int
    run_id: str
    cdr_id: int
    account_id: str
    currency: str
    source: str
    call_id: str
    old_charged: int
    target_charged: int
    insufficient: str
    keep_reason: str = ""


@dataclass(frozen=True)
class Settled:
    """One call's charge as the ledger left it (or the ledger's refusal)."""

    charge: PendingCharge
    charged_micros: int
    moved_micros: int
    reason: str
    error: str = ""


async def pending_charges(db: BillingDB) -> list[PendingCharge]:
    """Charges recorded but not yet confirmed by the ledger (any run), in order."""

    async def work(conn: Conn) -> list[PendingCharge]:
        cur = await conn.execute(
            "SELECT seq, run_id, cdr_id, account_id, currency, source, call_id, old_charged,"
            " target_charged, insufficient, keep_reason FROM rerate_charges"
            " WHERE applied_at IS NULL AND error IS NULL ORDER BY seq"
        )
        return [PendingCharge(*row) for row in await cur.fetchall()]

    result: list[PendingCharge] = await db.run(work)
    return result


def _chunks(pending: Sequence[PendingCharge]) -> list[list[PendingCharge]]:
    """Up to CHUNK charges each, a call at most once per chunk (its order kept)."""
    chunks: list[list[PendingCharge]] = []
    current: list[PendingCharge] = []
    keys: set[tuple[str, str, str]] = set()
    for p in pending:
        key = (p.account_id, p.source, p.call_id)
        if len(current) >= CHUNK or key in keys:
            chunks.append(current)
            current, keys = [], set()
        current.append(p)
        keys.add(key)
    if current:
        chunks.append(current)
    return chunks


async def post_pending(db: BillingDB, ledger: Ledger, *, who: str) -> list[Settled]:
    """Move every pending call charge in the ledger and write back what it holds."""
    done: list[Settled] = []
    for chunk in _chunks(await pending_charges(db)):
        results = await asyncio.gather(
            *(_settle_one(ledger, p, who) for p in chunk), return_exceptions=True
        )
        settled = []
        for result in results:
            if isinstance(result, BaseException):
                raise result  # Redis down: the rest stays pending for the next --apply
            settled.append(result)
        await _write_back(db, settled)
        done.extend(settled)
    for s in done:
        if s.error:
            log.warning("rerate: call %s of %s not settled: %s", s.charge.call_id,
                        s.charge.account_id, s.error)  # fmt: skip
    return done


async def _settle_one(ledger: Ledger, p: PendingCharge, who: str) -> Settled:
    req = UsageRequest(
        account_id=p.account_id,
        source=p.source,
        call_id=p.call_id,
        currency=p.currency,
        insufficient=p.insufficient,
        who=who,
        why=f"rerate {p.run_id}",
    )
    try:
        result: UsageCharge = await ledger.rerate_usage(
            req, charged_micros=p.old_charged, target_micros=p.target_charged
        )
    except LedgerError as exc:
        return Settled(p, p.old_charged, 0, "", error=f"{exc.code}: {exc}")
    reason = result.reason
    if p.keep_reason and reason != "capped":
        reason = p.keep_reason  # held back before: it stays so through this rerate
    return Settled(p, result.charged_micros, result.moved_micros, reason)


async def _write_back(db: BillingDB, settled: Sequence[Settled]) -> None:
    async def work(conn: Conn) -> None:
        async with conn.cursor() as cur:
            for s in settled:
                if s.error:
                    await cur.execute(
                        "UPDATE rerate_charges SET error = %s WHERE seq = %s",
                        (s.error[:500], s.charge.seq),
                    )
                    continue
                await _write_one(cur, s)

    await db.run(work)


async def _write_one(cur: AsyncCursor[Any], s: Settled) -> None:
    # Usage first, from the CDR's charge as the database still holds it.
    await cur.execute(
        "UPDATE usage_periods u SET charged_micros = u.charged_micros + (%s - c.charged_micros),"
        " updated_at = now() FROM cdrs c WHERE c.id = %s AND c.charge <> 'recorded_only'"
        " AND u.account_id = c.account_id AND u.currency = c.currency"
        " AND u.period = to_char(c.start_time AT TIME ZONE 'UTC', 'YYYY-MM')",
        (s.charged_micros, s.charge.cdr_id),
    )
    await cur.execute(
        "UPDATE cdrs SET charged_micros = %s, charge_reason = %s WHERE id = %s",
        (s.charged_micros, s.reason, s.charge.cdr_id),
    )
    await cur.execute(
        "UPDATE rerate_charges SET applied_at = now(), applied_charged = %s WHERE seq = %s",
        (s.charged_micros, s.charge.seq),
    )


# -- before migration 004: per-account adjustments -------------------------------------


@dataclass(frozen=True)
class Adjustment:
    run_id: str
    account_id: str
    currency: str
    amount_micros: int
    txn_id: str
    cdrs: int


async def post_legacy(db: BillingDB, ledger: Ledger, *, who: str) -> list[Adjustment]:
    """Post the per-account adjustments an older chargingd recorded and never posted."""

    async def pending(conn: Conn) -> list[Adjustment]:
        cur = await conn.execute(
            "SELECT run_id, account_id, currency, amount_micros, txn_id, cdrs"
            " FROM rerate_adjustments WHERE applied_at IS NULL ORDER BY run_id, account_id"
        )
        return [Adjustment(*row) for row in await cur.fetchall()]

    done: list[Adjustment] = []
    for adj in await db.run(pending):
        why = (
            f"rerate {adj.run_id}: {adj.cdrs} CDRs ({money_text(adj.amount_micros, adj.currency)})"
        )
        await ledger.adjust(
            adj.account_id, adj.amount_micros, txn_id=adj.txn_id, who=who, why=why,
            currency=adj.currency, allow_debt=True,
        )  # fmt: skip

        async def mark(conn: Conn, txn_id: str = adj.txn_id) -> None:
            await conn.execute(
                "UPDATE rerate_adjustments SET applied_at = now() WHERE txn_id = %s", (txn_id,)
            )

        await db.run(mark)
        done.append(adj)
    return done
