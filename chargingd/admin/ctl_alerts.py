"""`chargingd ctl alerts list|resolve`: the alert stream (admin/alerts.py)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from chargingd.admin.since import since_ms

Request = tuple[str, dict[str, Any]]


class AlertsUsageError(ValueError):
    """A bad argument found before anything is sent."""


def req_alert_list(args: argparse.Namespace) -> Request:
    params: dict[str, Any] = {"limit": args.limit}
    if args.since:
        try:
            params["since_ms"] = since_ms(args.since, int(time.time() * 1000))
        except ValueError as exc:
            raise AlertsUsageError(str(exc)) from None
    if args.kind:
        params["kind"] = args.kind
    return "alert.list", params


def req_alert_resolve(args: argparse.Namespace) -> Request:
    params: dict[str, Any] = {"incident": args.incident}
    if args.reason:
        params["reason"] = args.reason
    if args.operator:
        params["operator"] = args.operator
    return "alert.resolve", params


def json_option(p: argparse.ArgumentParser) -> None:
    """`--json` after the command too (`ctl fraud alerts --json`, as the docs write it);
    SUPPRESS keeps the global option's value (`ctl --json ...`) when it is not given."""
    p.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the raw JSON result"
    )


def alert_list_options(p: argparse.ArgumentParser, *, kind: str | None = None) -> None:
    """--since/--limit of `ctl alerts list` (with --kind) and `ctl fraud alerts` (whose
    kinds are fixed: ``kind``)."""
    json_option(p)
    p.add_argument(
        "--since",
        help="opened, counted or resolved since: 30m, 24h, 7d, an ISO time or epoch ms",
    )
    p.add_argument("--limit", type=int, default=100, help="at most this many incidents")
    if kind is None:
        p.add_argument("--kind", help="only kinds starting with this (fraud., kpi.)")
    else:
        p.set_defaults(kind=kind)
    p.set_defaults(build=req_alert_list)


def add_parsers(sub: Any) -> None:
    """`ctl alerts list` and `ctl alerts resolve`."""
    alerts = sub.add_parser("alerts", help="the alert stream (fraud, KPI, ...)")
    actions = alerts.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    alert_list_options(actions.add_parser("list", help="incidents, newest first, with counts"))
    p = actions.add_parser("resolve", help="close an open incident (the next raise opens anew)")
    p.add_argument("incident", help="the incident key")
    p.add_argument("--reason", help="why, kept with the incident")
    p.set_defaults(build=req_alert_resolve)
