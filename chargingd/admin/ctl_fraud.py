"""`chargingd ctl fraud rules|alerts|state|unblock|lift` (admin/fraud.py, admin/alerts.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from chargingd.admin.ctl_alerts import alert_list_options, json_option
from chargingd.admin.render import _ts

Request = tuple[str, dict[str, Any]]


def req_rules(args: argparse.Namespace) -> Request:
    params: dict[str, Any] = {}
    if args.account:
        params["account"] = args.account
    if args.tariff:
        params["tariff"] = args.tariff
    return "fraud.rules", params


def req_state(args: argparse.Namespace) -> Request:
    if args.caller_ip:
        return "fraud.state", {"caller_ip": args.caller_ip}
    return "fraud.state", {"id": args.id}


def req_unblock(args: argparse.Namespace) -> Request:
    params: dict[str, Any] = {"id": args.id, "reason": args.reason}
    if args.operator:
        params["operator"] = args.operator
    return "fraud.unblock", params


def req_lift(args: argparse.Namespace) -> Request:
    params: dict[str, Any] = {"reason": args.reason}
    if args.id:
        params["id"] = args.id
    if args.identity:
        params["identity"] = args.identity
    if args.caller_ip:
        params["caller_ip"] = args.caller_ip
    if args.operator:
        params["operator"] = args.operator
    return "fraud.lift", params


def add_parsers(sub: Any) -> None:
    """`ctl fraud ...`."""
    fraud = sub.add_parser("fraud", help="fraud rules, their alerts, blocked accounts")
    actions = fraud.add_subparsers(dest="fraud_command", metavar="ACTION", required=True)
    p = actions.add_parser("rules", help="the rules in force (of an account, a tariff)")
    p.add_argument("--account", help="with this account's overrides")
    p.add_argument("--tariff", help="with this tariff's overrides")
    p.set_defaults(build=req_rules)
    json_option(p)
    alert_list_options(
        actions.add_parser("alerts", help="fraud incidents, newest first"), kind="fraud."
    )
    p = actions.add_parser("state", help="what the rules hold against an account or caller IP")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("id", nargs="?", help="account id")
    who.add_argument("--caller-ip", help="a caller IP (identity_scan's refusal, its count)")
    p.set_defaults(build=req_state)
    json_option(p)
    p = actions.add_parser("unblock", help="make an account a rule blocked active again")
    p.add_argument("id", help="account id")
    p.add_argument("--reason", required=True, help="why, for the audit trail")
    p.set_defaults(build=req_unblock)
    json_option(p)
    p = actions.add_parser(
        "lift", help="end a refusal of an active account or identity early (not a block)"
    )
    p.add_argument("id", nargs="?", help="account id (or --identity)")
    p.add_argument(
        "--identity",
        help="only this identity's refusal (user:alice); the account's own stay (lift ACCOUNT)",
    )
    p.add_argument(
        "--caller-ip",
        help="the counts of the rules per caller IP of this address (its refusal ends)",
    )
    p.add_argument("--reason", required=True, help="why, for the audit trail")
    p.set_defaults(build=req_lift)
    json_option(p)


OVERRIDES_SHOWN = 10  # owners listed by `ctl fraud rules` (--json: all of them)


def render_rules(console: Console, result: dict[str, Any]) -> None:
    whose = result.get("account") or result.get("tariff") or ""
    title = "fraud rules" + (f" of {whose}" if whose else "")
    if result.get("shadow"):
        title += " (all in shadow mode)"
    table = Table(title=title)
    for col in ("rule", "kind", "when", "thresholds", "action"):
        table.add_column(col)
    for rule in result["rules"]:
        limit = dict(rule["thresholds"])
        if "currency" in limit:  # a spend cap: in the account's currency, or each one's
            code = limit.pop("currency")
            if code and limit.get("max_amount") is None:
                limit["max_amount"] = f"none in {code} (not counted)"
            elif code:
                limit["max_amount"] = f"{limit['max_amount']} {code}"
            elif "max_amount" in limit:
                limit["max_amount"] = f"{limit['max_amount']} (each account's currency)"
            if "max_amounts" in limit:  # per currency, as configured
                limit["max_amounts"] = " ".join(f"{a} {c}" for c, a in limit["max_amounts"].items())
        limits = ", ".join(
            f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in limit.items()
        )
        action = rule["action"] + (" (shadow)" if rule["shadow"] else "")
        table.add_row(rule["name"], rule["kind"], rule["at"], limits, action)
    console.print(table)
    if result.get("disabled"):
        console.print("off here (enabled = false): " + ", ".join(result["disabled"]))
    for what in ("account", "tariff"):
        overrides = result.get(f"{what}_overrides") or {}
        if overrides:
            shown = [
                f"{k} ({', '.join(v)})" for k, v in sorted(overrides.items())[:OVERRIDES_SHOWN]
            ]
            more = len(overrides) - len(shown)
            tail = f" and {more} more" if more > 0 else ""
            console.print(
                f"overridden for {len(overrides)} {what}(s) (see --{what}): "
                + ", ".join(shown)
                + tail
            )
    console.print("high-risk countries: " + ", ".join(result["high_risk_countries"]))
    console.print("high-risk prefixes: " + ", ".join(result["high_risk_prefixes"]))


def render_state(console: Console, result: dict[str, Any]) -> None:
    state = result["state"]
    who = f"caller IP {result['caller_ip']}" if result.get("caller_ip") else result["id"]
    if not state:
        console.print(
            f"{'' if result.get('caller_ip') else 'account '}{who}: nothing held against it"
        )
        return
    table = Table(title=f"fraud state of {who}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in sorted(state.items()):
        table.add_row(key, _when(key, value))
    console.print(table)


def _when(key: str, value: str) -> str:
    """A time of the state (since, blocked_ms, deny:RULE until) as epoch ms with its UTC
    time beside it: an operator reads "blocked at", not 1796568409427."""
    if (key in ("since", "blocked_ms") or key.startswith("deny:")) and value.isdigit():
        return f"{value} ({_ts(int(value))} UTC)"
    return value


def render_unblocked(console: Console, result: dict[str, Any]) -> None:
    reason = f" ({result['status_reason']})" if result.get("status_reason") else ""
    console.print(f"account {result['id']} unblocked: status {result['status']}{reason}")


def render_lifted(console: Console, result: dict[str, Any]) -> None:
    if result.get("caller_ip"):
        state = "its counts cleared" if result["lifted"] else "no counts kept"
        console.print(f"caller IP {result['caller_ip']}: {state}, its incidents resolved")
        return
    if not result["id"]:
        console.print(f"identity {result['identity']} (no account): its counts cleared")
        return
    if "account_refusals" not in result:  # the account's lift
        lifted = ", ".join(result["lifted"]) or "none in force"
        console.print(f"account {result['id']}: refusals lifted ({lifted}), its counts start over")
        return
    identity = result["identity"]
    rules = [f.partition("|")[0] for f in result["lifted"]]
    lifted = ", ".join(rules) or "none in force"
    console.print(
        f"identity {identity} of account {result['id']}: refusal lifted ({lifted}),"
        " its counts start over"
    )
    held = result["account_refusals"]
    if held:
        console.print(
            f"still refused: every call of account {result['id']} (any identity) by "
            + "; ".join(_refusal(r) for r in held)
            + f": `ctl fraud lift {result['id']}` ends these"
        )


def _refusal(held: dict[str, Any]) -> str:
    """One account refusal `lift --identity` left in force, as an operator reads it."""
    if "until_ms" in held:
        return f"{held['rule']} until {_ts(int(held['until_ms']))} UTC"
    window = f" in {held['window_s']} s" if "window_s" in held else " live"
    return f"{held['rule']} ({held['count']} calls{window}, limit {held['limit']})"


RENDERERS: dict[str, Callable[[Console, Any], None]] = {
    "fraud.rules": render_rules,
    "fraud.state": render_state,
    "fraud.unblock": render_unblocked,
    "fraud.lift": render_lifted,
}
