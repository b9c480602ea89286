"""`chargingd rerate`: re-price stored CDRs and settle each call's charge in the ledger.

The report compares each answered CDR's stored cost with its price under the
account's current tariff (as live credit control picks it: [rating] plans, or
default_plan; a mediation source's own ``plan`` for that source's CDRs, as mediation
priced them) or a given plan, and what the ledger would move (rerate_model: only
the difference to what each call charged; never a refund of money never taken). With
``--apply`` one run records the new costs and one charge row per moving call, then
the ledger moves each call's charge once (rerate_apply); an interrupted run is
finished by the next ``--apply``, which also posts what is still pending first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
from datetime import datetime

from chargingd.billing.db import BillingDB
from chargingd.billing.rerate_apply import (
    Adjustment,
    PendingCharge,
    Settled,
    pending_charges,
    post_legacy,
    post_pending,
    record,
)
from chargingd.billing.rerate_model import (
    AccountDiff,
    Change,
    PlanFor,
    Report,
    RerateError,
    compute,
    parse_when,
    target_charge,
)
from chargingd.core.config import Config
from chargingd.core.currencies import minor_unit
from chargingd.core.money import format_amount
from chargingd.ledger import Ledger, LedgerError
from chargingd.rating.loaders import load_configured
from chargingd.rating.plan import TariffPlan

log = logging.getLogger("chargingd.rerate")

__all__ = [
    "AccountDiff",
    "Adjustment",
    "Change",
    "PendingCharge",
    "PlanFor",
    "Report",
    "RerateError",
    "Settled",
    "compute",
    "configure_parser",
    "make_plan_resolver",
    "needs_ledger",
    "parse_when",
    "pending_charges",
    "post_pending",
    "record",
    "rerate",
    "source_rating",
    "target_charge",
]


# -- `chargingd rerate` --------------------------------------------------------------------


def configure_parser(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="TOML config file")
    parser.add_argument("--from", dest="start", required=True, metavar="DATE",
                        help="first day (UTC YYYY-MM-DD) or ISO date-time")  # fmt: skip
    parser.add_argument("--to", dest="end", required=True, metavar="DATE",
                        help="last day, included (or an exclusive ISO date-time)")  # fmt: skip
    parser.add_argument("--account", metavar="ID", help="only this account")
    parser.add_argument(
        "--plan", metavar="PATH", help="price with this plan, not each account's (or source's)"
    )
    parser.add_argument("--apply", action="store_true", help="record new costs, adjust ledger")
    parser.add_argument("--reason", default="rerate", help="why, recorded with the run")
    parser.add_argument("--who", default="rerate", help="operator recorded in the ledger audit")
    parser.add_argument(
        "--tenant", default="", help="rating tenant (default: the source's, else the plan's)"
    )
    parser.add_argument(
        "--category", default="", help="rating category (default: the source's, else call)"
    )
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
    settled: list[Settled] = []
    if args.apply:
        if ledger is None:
            raise RerateError("--apply needs the ledger")
        # An interrupted run first: the new one is priced from what the ledger holds.
        await post_legacy(db, ledger, who=args.who)
        settled += await post_pending(db, ledger, who=args.who)
    elif await pending_charges(db):
        log.warning("an earlier rerate is not settled yet: run with --apply to finish it")
    plan_for = make_plan_resolver(cfg, ledger, args.plan)
    report = await compute(
        db, plan_for, start=start, end=end, account_id=args.account,
        plan_label=args.plan or "", tenant=args.tenant, category=args.category,
        source_rating=source_rating(cfg),
    )  # fmt: skip
    run_id: str | None = None
    if args.apply:
        assert ledger is not None
        run_id = await record(db, report, cfg, who=args.who, reason=args.reason)
        settled += await post_pending(db, ledger, who=args.who)
    _print(report, run_id, settled, as_json=args.json, applied=args.apply)
    return 0


def needs_ledger(args: argparse.Namespace) -> bool:
    """The ledger settles differences (--apply) and names each account's tariff."""
    return bool(args.apply or not args.plan)


def source_rating(cfg: Config) -> dict[str, tuple[str, str]]:
    """Each mediation source's (tenant, category): what mediation priced its calls with."""
    return {name: (src.tenant, src.category) for name, src in cfg.mediation.sources.items()}


def make_plan_resolver(cfg: Config, ledger: Ledger | None, plan_path: str | None) -> PlanFor:
    """Plan per CDR: the given file; else, for a mediation source with its own ``plan``,
    that plan (mediation priced its calls with it, whatever the account's tariff); else
    the account's tariff as live credit control picks it, else the default plan."""
    loaded: dict[str, TariffPlan] = {}
    by_account: dict[str, str] = {}

    def plan_at(path: str) -> TariffPlan:
        if path not in loaded:
            loaded[path] = load_configured(  # a broken plan file stops the run
                path,
                tp_timezone=cfg.rating.cgrates_timezone,
                tp_rounding_decimals=cfg.rating.cgrates_rounding_decimals,
            )
        return loaded[path]

    async def plan_for(account_id: str, source: str) -> TariffPlan | None:
        if plan_path:
            return plan_at(plan_path)
        mediated = cfg.mediation.sources.get(source)
        if mediated is not None and mediated.plan:
            return plan_at(cfg.rating.plan_named(mediated.plan)[1])  # as mediation picks it
        if account_id not in by_account:
            tariff = ""
            if ledger is not None:
                with contextlib.suppress(LedgerError):
                    tariff = (await ledger.get_account(account_id)).tariff
            found = cfg.rating.plan_for(tariff)  # as live credit control picks it
            by_account[account_id] = found[1] if found is not None else ""
        path = by_account[account_id]
        return plan_at(path) if path else None

    return plan_for


def _applied(settled: list[Settled]) -> list[dict[str, object]]:
    """What the ledger moved, per account and currency."""
    by: dict[tuple[str, str], list[Settled]] = {}
    for s in settled:
        by.setdefault((s.charge.account_id, s.charge.currency), []).append(s)
    out: list[dict[str, object]] = []
    for (account_id, currency), items in sorted(by.items()):
        moved = sum(s.moved_micros for s in items if not s.error)
        out.append({
            "account_id": account_id, "currency": currency, "calls": len(items),
            "amount": format_amount(-moved, minor_unit(currency)),
            "errors": sum(1 for s in items if s.error),
        })  # fmt: skip
    return out


def _print(
    report: Report, run_id: str | None, settled: list[Settled], *, as_json: bool, applied: bool
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
            "applied": _applied(settled),
        }
        print(json.dumps(out, sort_keys=True))
        return
    print(
        f"{'account':<24} {'cur':<4} {'CDRs':>7} {'old':>14} {'new':>14} {'difference':>14}"
        f" {'ledger':>14}"
    )
    for d in rows:
        j = d.to_json()
        print(
            f"{d.account_id:<24} {d.currency:<4} {d.cdrs:>7} {j['old']:>14} {j['new']:>14}"
            f" {j['difference']:>14} {j['ledger']:>14}"
            + (f"  ({d.unrated} unrated)" if d.unrated else "")
        )
    for reason, n in sorted(report.errors.items()):
        print(f"not priced: {n} CDRs: {reason}")
    if not applied:
        print(f"{len(report.changes)} CDRs would change; run with --apply to record and settle")
        return
    print(f"run {run_id or '-'}: {len(report.changes)} CDRs changed")
    for a in _applied(settled):
        print(applied_line(a))


def applied_line(a: dict[str, object]) -> str:
    """What --apply moved on one account, in words: the JSON ``amount`` is signed as the
    balance moved (-0.95 = debited), the report's ``ledger`` column as the charge moved
    (0.95 = debited); printed as the bare amount, the two read as opposite moves."""
    amount = str(a["amount"])
    if amount.startswith("-"):
        verb, amount = "debited", amount[1:]
    elif amount.strip("0.") == "":
        verb = "moved"
    else:
        verb = "refunded"
    errors = f", {a['errors']} not posted" if a.get("errors") else ""
    return f"ledger: {a['account_id']} {verb} {amount} {a['currency']} ({a['calls']} calls{errors})"
