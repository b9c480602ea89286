"""`chargingd ctl`: the operator's command line over the admin socket.

Readable tables by default, ``--json`` prints the raw JSON-RPC result. Exit codes
(chargingd.core.exits, the same meaning in every command): 0 ok, 1 the daemon refused
(message on stderr), 2 usage error (found here, or the daemon's invalid params, -32602:
a value out of range, an unknown currency), 69 the daemon could not be reached (no
socket, nobody listening, no answer within --timeout). It was 3, which `chargingd
assure` uses for "leakage found": a script could not tell a down daemon from a finding.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from chargingd.admin import ctl_alerts, ctl_billing, ctl_fraud
from chargingd.admin.client import AdminClient, AdminUnreachable
from chargingd.admin.render import RENDERERS, make_console
from chargingd.admin.rpc import INVALID_PARAMS, RpcError
from chargingd.core.config import ConfigError, load_config
from chargingd.core.exits import EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE
from chargingd.core.money import AmountError, parse_amount

EXIT_REFUSED = EXIT_FAILED
EXIT_UNREACHABLE = EXIT_UNAVAILABLE

Request = tuple[str, dict[str, Any]]


class UsageError(ValueError):
    """A bad argument found before anything is sent."""


def _amount(text: str, *, negative: bool = False, option: str = "") -> str:
    """``option`` (such as --credit-limit) names the bad one of several amounts."""
    try:
        parse_amount(text, allow_negative=negative)
    except AmountError as exc:
        raise UsageError(f"{option}: {exc}" if option else str(exc)) from None
    return text


def _with_common(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    if getattr(args, "reason", None):
        params["reason"] = args.reason
    if args.operator:
        params["operator"] = args.operator
    return params


def _txn_id(args: argparse.Namespace) -> str:
    if args.txn_id:
        return str(args.txn_id)
    txn_id = f"ctl-{uuid.uuid4().hex}"
    # Printed so that a retry after a timeout can reuse it: the ledger applies it once.
    print(
        f"txn_id {txn_id} (retry with --txn-id {txn_id} to apply it at most once)", file=sys.stderr
    )
    return txn_id


def req_list(args: argparse.Namespace) -> Request:
    return "account.list", {"cursor": args.cursor, "count": args.count}


def req_get(args: argparse.Namespace) -> Request:
    return "account.get", {"id": args.id}


def _account_fields(args: argparse.Namespace, params: dict[str, Any]) -> dict[str, Any]:
    if args.mode is not None:
        params["mode"] = args.mode
    if args.currency is not None:
        params["currency"] = args.currency
    if args.credit_limit is not None:
        params["credit_limit"] = _amount(args.credit_limit, option="--credit-limit")
    if args.tariff is not None:
        params["tariff"] = args.tariff
    if args.max_calls is not None:
        params["max_calls"] = args.max_calls
    if args.identity is not None:
        params["identities"] = args.identity
    return params


def req_create(args: argparse.Namespace) -> Request:
    params = _account_fields(args, {"id": args.id})
    if args.balance is not None:
        params["balance"] = _amount(args.balance, negative=True, option="--balance")
    return "account.create", _with_common(args, params)


def req_update(args: argparse.Namespace) -> Request:
    params = _account_fields(args, {"id": args.id})
    if len(params) == 1:
        raise UsageError("nothing to update: give at least one of the options")
    return "account.update", _with_common(args, params)


def req_topup(args: argparse.Namespace) -> Request:
    amount = _amount(args.amount)
    if parse_amount(amount) <= 0:
        raise UsageError("a top-up amount must be positive")
    params: dict[str, Any] = {"id": args.id, "amount": amount, "txn_id": _txn_id(args)}
    if args.currency:
        params["currency"] = args.currency
    return "account.topup", _with_common(args, params)


def req_adjust(args: argparse.Namespace) -> Request:
    amount = _amount(args.amount, negative=True)
    if parse_amount(amount, allow_negative=True) == 0:
        # Refused by the daemon anyway: checked before a txn_id is printed and sent.
        raise UsageError("an adjustment amount must not be zero")
    params: dict[str, Any] = {"id": args.id, "amount": amount, "txn_id": _txn_id(args)}
    if args.currency:
        params["currency"] = args.currency
    if args.allow_debt:
        params["allow_debt"] = True
    return "account.adjust", _with_common(args, params)


def req_suspend(args: argparse.Namespace) -> Request:
    return "account.suspend", _with_common(args, {"id": args.id})


def req_resume(args: argparse.Namespace) -> Request:
    return "account.resume", _with_common(args, {"id": args.id})


def req_history(args: argparse.Namespace) -> Request:
    params: dict[str, Any] = {"id": args.id, "count": args.count}
    if args.before:
        params["before"] = args.before
    return "account.history", params


def req_status(args: argparse.Namespace) -> Request:
    return "server.status", {}


def req_session_list(args: argparse.Namespace) -> Request:
    return "session.list", ({"account": args.account} if args.account else {})


def req_session_kill(args: argparse.Namespace) -> Request:
    return "session.kill", _with_common(args, {"id": args.session_id})


def req_stats(args: argparse.Namespace) -> Request:
    params: dict[str, Any] = {}
    if args.by:
        params["by"] = args.by
    if args.window:
        params["window"] = args.window
    return "stats.kpi", params


def _session_parsers(session: argparse.ArgumentParser) -> None:
    sub = session.add_subparsers(dest="session_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="live calls")
    p.add_argument("--account", help="only this account's calls")
    p.set_defaults(build=req_session_list)
    p = sub.add_parser("kill", help="cut a call now (Disconnect-Request, JSON-RPC or ASR)")
    p.add_argument("session_id")
    p.add_argument("--reason", help="why, for the log")
    p.set_defaults(build=req_session_kill)


def _account_options(p: argparse.ArgumentParser, *, create: bool) -> None:
    p.add_argument("id", help="account id")
    p.add_argument("--mode", choices=["prepaid", "postpaid"], required=create)
    p.add_argument("--currency", required=create, help="ISO 4217 code, e.g. EUR")
    if create:
        p.add_argument("--balance", help="opening balance, e.g. 10.00")
    p.add_argument("--credit-limit", help="postpaid credit limit, e.g. 500.00")
    p.add_argument("--tariff", help="tariff plan id")
    p.add_argument("--max-calls", type=int, help="concurrent call limit, 0 = unlimited")
    p.add_argument("--identity", action="append", help="KIND:VALUE such as user:alice (repeatable)")
    p.add_argument("--reason", help="why, for the audit trail")


def _account_parsers(account: argparse.ArgumentParser) -> None:
    sub = account.add_subparsers(dest="account_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="list accounts")
    p.add_argument(
        "--count",
        type=int,
        default=100,
        help="a hint to Redis of how many per page (page until the cursor is 0)",
    )
    p.add_argument("--cursor", type=int, default=0, help="continue a previous listing")
    p.set_defaults(build=req_list)
    p = sub.add_parser("get", help="show one account")
    p.add_argument("id")
    p.set_defaults(build=req_get)
    p = sub.add_parser("create", help="create an account")
    _account_options(p, create=True)
    p.set_defaults(build=req_create)
    p = sub.add_parser("update", help="change an account's settings")
    _account_options(p, create=False)
    p.set_defaults(build=req_update)
    for action, build, help_text in (
        ("topup", req_topup, "add money (idempotent on --txn-id)"),
        ("adjust", req_adjust, "signed correction with a reason (idempotent on --txn-id)"),
    ):
        p = sub.add_parser(action, help=help_text)
        p.add_argument("id")
        p.add_argument("amount", help="decimal amount, e.g. 12.50 (adjust: may be negative)")
        p.add_argument("--txn-id", help="transaction id; default: a new one, printed")
        p.add_argument("--reason", required=action == "adjust", help="why, for the audit trail")
        p.add_argument("--currency", help="refuse unless the account has this currency")
        if action == "adjust":
            p.add_argument(
                "--allow-debt",
                action="store_true",
                help="let a negative adjustment exceed what is available (leaves a debt)",
            )
        p.set_defaults(build=build)
    for action, build, help_text in (
        ("suspend", req_suspend, "refuse new calls"),
        ("resume", req_resume, "make active again"),
    ):
        p = sub.add_parser(action, help=help_text)
        p.add_argument("id")
        p.add_argument("--reason", help="why, for the audit trail")
        p.set_defaults(build=build)
    p = sub.add_parser("history", help="audit trail, newest first")
    p.add_argument("id")
    p.add_argument("--count", type=int, default=20)
    p.add_argument("--before", help="entry id to continue from (paging)")
    p.set_defaults(build=req_history)


def configure_parser(name: str, parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--config", metavar="PATH", help="find the admin socket in this config")
    where.add_argument("--socket", metavar="PATH", help="admin socket path")
    parser.add_argument("--json", action="store_true", help="print the raw JSON result")
    parser.add_argument("--operator", help="operator name for the audit trail (default: uid)")
    parser.add_argument(
        "--timeout", type=_timeout, default=10.0, help="seconds to wait for the answer (> 0)"
    )
    sub = parser.add_subparsers(dest="ctl_command", metavar="COMMAND", required=True)
    _account_parsers(sub.add_parser("account", help="accounts and money"))
    p = sub.add_parser("status", help="uptime, counters, Redis summary")
    p.set_defaults(build=req_status)
    _session_parsers(sub.add_parser("session", help="live calls"))
    ctl_billing.add_parsers(sub)  # payment, subscription, charge, credit, billing
    ctl_alerts.add_parsers(sub)  # alerts list, alerts resolve
    ctl_fraud.add_parsers(sub)  # fraud rules, alerts, state, unblock
    p = sub.add_parser("stats", help="call-quality KPIs: ASR, NER, ACD, ALOC, PDD, MOS")
    p.add_argument("--by", choices=["gateway", "destination"], help="one row per group")
    p.add_argument("--window", choices=["5m", "1h", "24h"], help="one window (default: all)")
    # Also accepted after the command (`chargingd ctl stats --json`); SUPPRESS keeps
    # the global option's value when it is not given here.
    p.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print the raw JSON result"
    )
    p.set_defaults(build=req_stats)


def _timeout(text: str) -> float:
    """--timeout: seconds > 0. 0 made the socket non-blocking ("cannot reach chargingd:
    Resource temporarily unavailable" about a running daemon), a negative one a
    traceback (ValueError from settimeout)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, not {text!r}")
    return value


def _socket_path(args: argparse.Namespace) -> Path:
    if args.socket:
        return Path(args.socket)
    return load_config(args.config).admin_socket


def _err(message: str) -> None:
    print(f"chargingd ctl: {message}", file=sys.stderr)


def _not_resumed(acc: dict[str, Any]) -> str:
    """Why `account resume` left the account inactive (the daemon applied the request,
    but the postpaid credit rule keeps an account at its credit limit suspended)."""
    cur = acc.get("currency", "")
    if acc.get("status_reason") == "credit":
        return (
            f"account {acc.get('id')} stays suspended (credit): its balance "
            f"{acc.get('balance')} {cur} is at its credit limit of {acc.get('credit_limit')} "
            f"{cur}; a top-up, or a higher --credit-limit, makes it active again"
        )
    return f"account {acc.get('id')} is {acc.get('status')} ({acc.get('status_reason')})"


def _unreachable_hint(exc: AdminUnreachable, path: Path | str, params: dict[str, Any]) -> str:
    """What an operator (or a script's log) needs after exit 69: whether the request
    reached the daemon. Sent and unanswered, it may have been applied."""
    if not exc.sent:
        return f"is chargingd serve running? socket {path} (nothing was sent)"
    again = (
        f"send it again with --txn-id {params['txn_id']}: it is applied at most once"
        if params.get("txn_id")
        else "check before sending it again"
    )
    return (
        f"the request was sent but not answered: the daemon may have applied it; {again} "
        f"(socket {path}; --timeout waits longer)"
    )


def run(name: str, args: argparse.Namespace) -> int:
    """Send one request, print the answer; returns the exit code."""
    try:
        path = _socket_path(args)
        method, params = args.build(args)
    except (
        ConfigError,
        UsageError,
        ctl_billing.BillingUsageError,
        ctl_alerts.AlertsUsageError,
    ) as exc:
        _err(str(exc))
        return EXIT_USAGE
    try:
        with AdminClient(path, timeout_s=args.timeout) as client:
            result = client.call(method, params)
    except AdminUnreachable as exc:
        _err(f"{exc}\n{_unreachable_hint(exc, path, params)}")
        return EXIT_UNREACHABLE
    except RpcError as exc:
        _err(exc.message)
        # Invalid params (a --count out of range, an unknown currency) are a usage
        # error whichever side finds them; every other refusal is the daemon's.
        return EXIT_USAGE if exc.code == INVALID_PARAMS else EXIT_REFUSED
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        renderer = (
            RENDERERS.get(method)
            or ctl_fraud.RENDERERS.get(method)
            or ctl_billing.RENDERERS[method]
        )
        renderer(make_console(), result)
    if isinstance(result, dict):  # what the daemon did but wants the operator to know
        for warning in result.get("warnings") or []:
            _err(f"warning: {warning}")
    resumed = method == "account.resume" and isinstance(result, dict)
    if resumed and result.get("status") != "active":
        _err(_not_resumed(result))
    return 0
