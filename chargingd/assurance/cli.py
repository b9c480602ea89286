"""``chargingd assure``: reconcile a period, or list and show stored runs.

    chargingd assure --from D --to D [--source NAME] [--account ID] [--json|--csv]
    chargingd assure --list [--limit N] [--json]
    chargingd assure --show RUN [--json|--csv]

Exit status: 0 done (leakage within [assurance] leakage_threshold), 3 done and some
currency's leakage exceeds it (cron alerts on it), 1 failed (or no such --account),
2 usage or config error, 69 the database or Redis out of reach (chargingd.core.exits).
chargingd.app wires the command (it opens the database and Redis).
"""

from __future__ import annotations

import argparse
import os
import sys
import zoneinfo
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from chargingd.alerts import Alerts, Severity
from chargingd.assurance import render, runs
from chargingd.assurance.model import AssuranceError, Run, RunParams, Summary
from chargingd.assurance.reconcile import Context, reconcile
from chargingd.billing.db import BillingDB
from chargingd.core.config.assurance import AssuranceConfig
from chargingd.core.exits import EXIT_LEAKAGE


def configure_parser(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="TOML config file")
    parser.add_argument("--from", dest="start", metavar="DATE", help="first day (YYYY-MM-DD)")
    parser.add_argument("--to", dest="end", metavar="DATE", help="last day, included")
    parser.add_argument("--source", help="only this [mediation.sources.NAME] and its live calls")
    parser.add_argument("--account", help="only this account")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="the run and its findings as JSON")
    out.add_argument("--csv", action="store_true", help="the findings as CSV")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--list", action="store_true", help="list the stored runs, newest first")
    what.add_argument("--show", type=int, metavar="RUN", help="show a stored run again")
    parser.add_argument("--limit", type=int, default=50, help="runs listed (default 50)")


def usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the arguments, or None."""
    if args.list or args.show is not None:
        if args.start or args.end or args.source or args.account:
            return "--list and --show take no --from, --to, --source or --account"
        if args.list and args.csv:
            return "--list prints a table or --json"
        return None
    if not args.start or not args.end:
        return "--from and --to are required (or --list, --show RUN)"
    return None


def parse_day(text: str, time_zone: str, *, end: bool = False) -> datetime:
    """YYYY-MM-DD at midnight in the zone (an end day is included)."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise AssuranceError(f"not a date: {text!r} (YYYY-MM-DD)") from None
    moment = datetime(day.year, day.month, day.day, tzinfo=zoneinfo.ZoneInfo(time_zone))
    return moment + timedelta(days=1) if end else moment


def run_params(args: argparse.Namespace, cfg: AssuranceConfig, time_zone: str) -> RunParams:
    start = parse_day(args.start, time_zone)
    end = parse_day(args.end, time_zone, end=True)
    if end <= start:
        raise AssuranceError("--to must not be before --from")
    return RunParams(
        start=start,
        end=end,
        source=args.source,
        account_id=args.account,
        start_tolerance_s=cfg.start_tolerance_s,
        duration_tolerance_s=cfg.duration_tolerance_s,
        duration_tolerance_bp=cfg.duration_tolerance_bp,
        hold_grace_s=cfg.hold_grace_s,
        session_grace_s=cfg.session_grace_s,
        stuck_after_s=cfg.stuck_after_s,
        leakage_threshold_micros=cfg.leakage_threshold_micros,
        max_findings=cfg.max_findings,
    )


async def assure(
    ctx: Context, params: RunParams, args: argparse.Namespace, *, now_ms: Callable[[], int],
    who: str, alerts: Alerts | None = None,
) -> int:  # fmt: skip
    """Reconcile, store the run, print it, raise an alert when leakage exceeds the
    threshold; the exit status."""
    started = datetime.fromtimestamp(now_ms() / 1000, UTC)
    outcome = await reconcile(ctx, params, now_ms())
    summary = Summary.of(outcome.findings, outcome.matching)
    run = await runs.store(
        ctx.db, params, summary=summary, findings=outcome.findings, checks=outcome.checks,
        started_at=started, finished_at=datetime.fromtimestamp(now_ms() / 1000, UTC), who=who,
    )  # fmt: skip
    _print(run, args)
    if run.over_threshold and alerts is not None:
        # The days the operator gave (the period's zone; the end one included): the
        # stored run's end is the next midnight, in UTC.
        days = (params.start.date(), (params.end - timedelta(days=1)).date())
        await raise_leakage(alerts, run, params.leakage_threshold_micros, days=days)
    return EXIT_LEAKAGE if run.over_threshold else 0


async def raise_leakage(
    alerts: Alerts, run: Run, threshold_micros: int, *, days: tuple[date, date]
) -> None:
    """One alert incident per currency over the threshold (docs/alerts.md): a daily
    cron run that keeps finding leakage counts into the same incident. ``days``: the
    first and last day of the period as given."""
    first, last = days
    for currency, micros in sorted(run.summary.leakage.items()):
        if micros <= threshold_micros:
            continue
        leak = render.money(micros, currency)
        await alerts.raise_alert(
            "assurance.leakage", severity=Severity.WARNING,
            incident=f"assurance.leakage:{currency}",
            summary=f"revenue leakage {leak} {currency} from {first} to"
            f" {last} (run {run.run_id}; threshold {render.money(threshold_micros, currency)})",
            details={"run_id": run.run_id, "from": run.start.isoformat(),
                     "to": run.end.isoformat(), "source": run.source, "account": run.account_id,
                     "leakage": leak, "currency": currency, "counts": run.summary.counts},
        )  # fmt: skip


def _print(run: Run, args: argparse.Namespace) -> None:
    """The run on stdout. A reader that went away (``assure ... | head -50 | mail``)
    changes nothing else: the run is stored, its leakage alert still raised and the
    exit status still says leakage (it was "[Errno 32] Broken pipe", exit 1 and no
    alert: the cron job that mailed the head of the report never alerted)."""
    if args.json:
        _write(render.as_json(render.run_json(run)) + "\n")
    elif args.csv:
        _write(render.findings_csv(run))
    else:
        _write(render.text(run) + "\n")


def _write(text: str) -> None:
    """Write to stdout; a reader that went away is no error (see _print)."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # What is left in the buffer would fail again at exit: write on into /dev/null.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


async def stored(db: BillingDB, args: argparse.Namespace) -> int:
    """--list or --show RUN."""
    if args.list:
        found = await runs.list_runs(db, limit=max(1, args.limit))
        if args.json:
            _write(render.as_json([render.run_json(r, findings=False) for r in found]) + "\n")
        else:
            _write(render.run_list(found) + "\n")
        return 0
    run = await runs.show(db, args.show)
    if run is None:
        print(f"chargingd assure: no run {args.show}", file=sys.stderr)
        return 1
    _print(run, args)
    return EXIT_LEAKAGE if run.over_threshold else 0
