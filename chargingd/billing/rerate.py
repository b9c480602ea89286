"""`chargingd rerate`: re-price stored CDRs and settle the differences in the ledger.

The report compares each answered CDR's stored cost with its price under the
account's current tariff ([rating] plans, default_plan) or a given plan. With
``--apply`` one run records the new costs (keeping each CDR's first cost) and the
per-account adjustments in one transaction, then posts each adjustment to the
ledger with a transaction id derived from the run: the ledger applies it once, and
an interrupted run is finished by the next ``--apply``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from chargingd.billing.db import BillingDB, Conn
from chargingd.core.config import Config
from chargingd.core.money import format_amount
from chargingd.ledger import Ledger, LedgerError
from chargingd.rating.durations import billed_seconds, seconds_to_ns
from chargingd.rating.loaders import load_plan
from chargingd.rating.plan import TariffPlan

log = logging.getLogger("chargingd.rerate")

PlanFor = Callable[[str], Awaitable[TariffPlan | None]]


class RerateError(Exception):
    """A rerate that cannot run (bad dates, CDRs changed meanwhile); nothing changed."""

    code = "rerate_error"


@dataclass(frozen=True)
class Change:
    cdr_id: int
    account_id: str
    currency: str
    old_micros: int
    new_micros: int
    new_billed_s: int


@dataclass
class AccountDiff:
    """One account's totals in one currency over the rerated CDRs."""

    account_id: str
    currency: str
    cdrs: int = 0
    unrated: int = 0  # could not be priced (no plan, unknown destination): unchanged
    old_micros: int = 0
    new_micros: int = 0

    @property
    def diff_micros(self) -> int:
        return self.new_micros - self.old_micros

    def to_json(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "currency": self.currency,
            "cdrs": self.cdrs,
            "unrated": self.unrated,
            "old": format_amount(self.old_micros),
            "new": format_amount(self.new_micros),
            "difference": format_amount(self.diff_micros),
        }


@dataclass
class Report:
    start: datetime
    end: datetime
    account_id: str | None
    plan: str
    accounts: dict[tuple[str, str], AccountDiff] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)  # reason -> CDRs

    def run_id(self) -> str:
        """Derived from the parameters and every change: the same run has the same id."""
        h = hashlib.sha256()
        h.update(f"{self.start.isoformat()}|{self.end.isoformat()}|{self.account_id}|".encode())
        h.update(self.plan.encode())
        for c in self.changes:
            h.update(f"|{c.cdr_id}:{c.old_micros}:{c.new_micros}:{c.new_billed_s}".encode())
        return "rr-" + h.hexdigest()[:20]


def parse_when(text: str, *, end: bool = False) -> datetime:
    """YYYY-MM-DD (UTC; as an end, the whole day is included) or an ISO date-time."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return moment + timedelta(days=1) if end else moment
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise RerateError(f"not a date: {text!r} (YYYY-MM-DD or ISO 8601)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


_SELECT = """
SELECT id, account_id, currency, callee, answer_time, duration_s, cost_micros
FROM cdrs
WHERE start_time >= %s AND start_time < %s AND (%s::text IS NULL OR account_id = %s)
  AND answer_time IS NOT NULL
ORDER BY account_id, id
"""


async def compute(
    db: BillingDB,
    plan_for: PlanFor,
    *,
    start: datetime,
    end: datetime,
    account_id: str | None = None,
    plan_label: str = "",
    tenant: str = "",
    category: str = "call",
) -> Report:
    """Price the answered CDRs started in [start, end) again; change nothing."""
    if end <= start:
        raise RerateError("--to must be after --from")
    report = Report(start, end, account_id, plan_label)

    async def fetch(conn: Conn) -> list[tuple[Any, ...]]:
        cur = await conn.execute(_SELECT, (start, end, account_id, account_id))
        return list(await cur.fetchall())

    for cdr_id, acct, currency, callee, answer, duration_s, cost in await db.run(fetch):
        diff = report.accounts.setdefault((acct, currency), AccountDiff(acct, currency))
        plan = await plan_for(acct)
        if plan is None:
            diff.unrated += 1
            report.errors["no tariff plan"] = report.errors.get("no tariff plan", 0) + 1
            continue
        try:
            price = plan.rate(
                subject=acct,
                destination=callee.lstrip("+"),
                start=answer,
                usage_ns=seconds_to_ns(duration_s),
                tenant=tenant,
                category=category,
            )
        except Exception as exc:  # a rating refusal leaves the CDR as it is, counted
            reason = str(getattr(exc, "code", type(exc).__name__))
            diff.unrated += 1
            report.errors[reason] = report.errors.get(reason, 0) + 1
            continue
        diff.cdrs += 1
        diff.old_micros += cost
        diff.new_micros += price.cost_micros
        if price.cost_micros != cost:
            billed_s = billed_seconds(price.billed_ns)
            report.changes.append(Change(cdr_id, acct, currency, cost, price.cost_micros, billed_s))
    return report


# -- applying a run ---------------------------------------------------------------------


@dataclass(frozen=True)
class Adjustment:
    run_id: str
    account_id: str
    currency: str
    cdrs: int
    old_micros: int
    new_micros: int
    amount_micros: int  # to the ledger: old - new (a price rise debits)
    txn_id: str
    applied: bool = False


async def record(db: BillingDB, report: Report, *, who: str, reason: str) -> str | None:
    """Write the run: new costs, first costs, usage, one adjustment per account.

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
            return  # recorded before: only its adjustments may still be pending
        await _write_changes(conn, run_id, report.changes)
        await _write_adjustments(conn, run_id, report)

    await db.run(work)
    return run_id


async def _write_changes(conn: Conn, run_id: str, changes: Sequence[Change]) -> None:
    await conn.execute(
        "CREATE TEMP TABLE rerate_stage (id BIGINT PRIMARY KEY, old_cost BIGINT,"
        " new_cost BIGINT, new_billed_s INTEGER) ON COMMIT DROP"
    )
    async with conn.cursor() as cur:
        async with cur.copy("COPY rerate_stage FROM STDIN") as copy:
            for c in changes:
                await copy.write_row((c.cdr_id, c.old_micros, c.new_micros, c.new_billed_s))
        # Usage first, while cdrs still hold the old billed seconds.
        await cur.execute(
            "UPDATE usage_periods u SET cost_micros = u.cost_micros + d.cost,"
            " billed_s = u.billed_s + d.billed, updated_at = now()"
            " FROM (SELECT c.account_id, to_char(c.start_time AT TIME ZONE 'UTC', 'YYYY-MM') AS p,"
            "   c.currency, sum(s.new_cost - s.old_cost) AS cost,"
            "   sum(s.new_billed_s - c.billed_s) AS billed"
            "   FROM rerate_stage s JOIN cdrs c ON c.id = s.id GROUP BY 1, 2, 3) d"
            " WHERE u.account_id = d.account_id AND u.period = d.p AND u.currency = d.currency"
        )
        await cur.execute(
            "UPDATE cdrs c SET cost_micros = s.new_cost, billed_s = s.new_billed_s,"
            " original_cost_micros = COALESCE(c.original_cost_micros, c.cost_micros),"
            " rerate_run_id = %s FROM rerate_stage s"
            " WHERE c.id = s.id AND c.cost_micros = s.old_cost",
            (run_id,),
        )
        if cur.rowcount != len(changes):
            raise RerateError("CDRs changed while rerating; nothing applied, run it again")


async def _write_adjustments(conn: Conn, run_id: str, report: Report) -> None:
    changed = {(c.account_id, c.currency) for c in report.changes}
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO rerate_adjustments (run_id, account_id, currency, cdrs,"
            " old_cost_micros, new_cost_micros, amount_micros, txn_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    run_id,
                    d.account_id,
                    d.currency,
                    d.cdrs,
                    d.old_micros,
                    d.new_micros,
                    d.old_micros - d.new_micros,
                    f"{run_id}:{d.account_id}:{d.currency}",
                )
                for key, d in sorted(report.accounts.items())
                if key in changed and d.diff_micros != 0
            ],
        )


async def pending_adjustments(db: BillingDB) -> list[Adjustment]:
    """Adjustments recorded but not yet confirmed by the ledger (any run)."""

    async def work(conn: Conn) -> list[Adjustment]:
        cur = await conn.execute(
            "SELECT run_id, account_id, currency, cdrs, old_cost_micros, new_cost_micros,"
            " amount_micros, txn_id, applied_at IS NOT NULL FROM rerate_adjustments"
            " WHERE applied_at IS NULL ORDER BY run_id, account_id, currency"
        )
        return [Adjustment(*row) for row in await cur.fetchall()]

    result: list[Adjustment] = await db.run(work)
    return result


async def post_pending(db: BillingDB, ledger: Ledger, *, who: str) -> list[Adjustment]:
    """Post every pending adjustment to the ledger (idempotent on its txn_id)."""
    done: list[Adjustment] = []
    for adj in await pending_adjustments(db):
        why = (
            f"rerate {adj.run_id}: {adj.cdrs} CDRs, {format_amount(adj.old_micros)} -> "
            f"{format_amount(adj.new_micros)} {adj.currency}"
        )
        await ledger.adjust(
            adj.account_id,
            adj.amount_micros,
            txn_id=adj.txn_id,
            who=who,
            why=why,
            currency=adj.currency,
            allow_debt=True,  # re-rated real usage: may leave a debt like a commit does
        )

        async def mark(conn: Conn, txn_id: str = adj.txn_id) -> None:
            await conn.execute(
                "UPDATE rerate_adjustments SET applied_at = now() WHERE txn_id = %s", (txn_id,)
            )

        await db.run(mark)
        done.append(Adjustment(**{**adj.__dict__, "applied": True}))
        log.info("rerate: %s adjusted by %s", adj.account_id, format_amount(adj.amount_micros))
    return done


# -- `chargingd rerate` --------------------------------------------------------------------


def configure_parser(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="TOML config file")
    parser.add_argument("--from", dest="start", required=True, metavar="DATE",
                        help="first day (UTC YYYY-MM-DD) or ISO date-time")  # fmt: skip
    parser.add_argument("--to", dest="end", required=True, metavar="DATE",
                        help="last day, included (or an exclusive ISO date-time)")  # fmt: skip
    parser.add_argument("--account", metavar="ID", help="only this account")
    parser.add_argument("--plan", metavar="PATH", help="price with this plan, not each account's")
    parser.add_argument("--apply", action="store_true", help="record new costs, adjust ledger")
    parser.add_argument("--reason", default="rerate", help="why, recorded with the run")
    parser.add_argument("--who", default="rerate", help="operator recorded in the ledger audit")
    parser.add_argument("--tenant", default="", help="rating tenant (default: the plan's)")
    parser.add_argument("--category", default="call", help="rating category")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


async def rerate(
    cfg: Config,
    args: argparse.Namespace,
    db: BillingDB,
    ledger: Ledger | None,
    start: datetime,
    end: datetime,
) -> int:
    """Report (and with --apply record and settle) one rerate run; print the report."""
    plan_for = make_plan_resolver(cfg, ledger, args.plan)
    report = await compute(
        db, plan_for, start=start, end=end, account_id=args.account,
        plan_label=args.plan or "", tenant=args.tenant, category=args.category,
    )  # fmt: skip
    run_id: str | None = None
    posted: list[Adjustment] = []
    if args.apply:
        if ledger is None:
            raise RerateError("--apply needs the ledger")
        run_id = await record(db, report, who=args.who, reason=args.reason)
        posted = await post_pending(db, ledger, who=args.who)
    _print(report, run_id, posted, as_json=args.json, applied=args.apply)
    return 0


def needs_ledger(args: argparse.Namespace) -> bool:
    """The ledger settles differences (--apply) and names each account's tariff."""
    return bool(args.apply or not args.plan)


def make_plan_resolver(cfg: Config, ledger: Ledger | None, plan_path: str | None) -> PlanFor:
    """Plan per account: the given file, else the account's tariff, else the default."""
    loaded: dict[str, TariffPlan] = {}
    by_account: dict[str, str] = {}

    def plan_at(path: str) -> TariffPlan:
        if path not in loaded:
            loaded[path] = load_plan(path)  # a broken plan file stops the run
        return loaded[path]

    async def plan_for(account_id: str) -> TariffPlan | None:
        if plan_path:
            return plan_at(plan_path)
        if account_id not in by_account:
            tariff = ""
            if ledger is not None:
                with contextlib.suppress(LedgerError):
                    tariff = (await ledger.get_account(account_id)).tariff
            by_account[account_id] = cfg.rating.plans.get(tariff, "") or cfg.rating.default_plan
        path = by_account[account_id]
        return plan_at(path) if path else None

    return plan_for


def _print(
    report: Report, run_id: str | None, posted: list[Adjustment], *, as_json: bool, applied: bool
) -> None:
    rows = [d for _, d in sorted(report.accounts.items())]
    if as_json:
        out = {
            "from": report.start.isoformat(),
            "to": report.end.isoformat(),
            "accounts": [d.to_json() for d in rows],
            "changed_cdrs": len(report.changes),
            "errors": report.errors,
            "run_id": run_id,
            "applied": [
                {
                    "account_id": a.account_id,
                    "amount": format_amount(a.amount_micros),
                    "currency": a.currency,
                    "txn_id": a.txn_id,
                }
                for a in posted
            ],
        }
        print(json.dumps(out, sort_keys=True))
        return
    print(f"{'account':<24} {'cur':<4} {'CDRs':>7} {'old':>16} {'new':>16} {'difference':>16}")
    for d in rows:
        j = d.to_json()
        print(
            f"{d.account_id:<24} {d.currency:<4} {d.cdrs:>7} {j['old']:>16} {j['new']:>16}"
            f" {j['difference']:>16}" + (f"  ({d.unrated} unrated)" if d.unrated else "")
        )
    for reason, n in sorted(report.errors.items()):
        print(f"not priced: {n} CDRs: {reason}")
    if not applied:
        print(f"{len(report.changes)} CDRs would change; run with --apply to record and adjust")
        return
    print(f"run {run_id or '-'}: {len(report.changes)} CDRs changed")
    for a in posted:
        print(f"ledger adjustment {a.txn_id}: {format_amount(a.amount_micros)} {a.currency}")
