"""JSON-RPC 2.0 methods of the admin socket: request validation, ledger calls, rendering.

Pure request-in / response-out (no socket code). Amounts travel as decimal strings
("12.50", at most 6 decimals); a float, a bad amount or an unknown parameter is
-32602 and changes nothing. Ledger errors map by their stable ``code``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis.exceptions import RedisError

from chargingd.admin import sessions as adminsessions
from chargingd.admin.alerts import ALERT_METHODS, ALERT_READ_ONLY, AlertMethodError, AlertMethods
from chargingd.admin.billing import (
    BILLING_METHODS,
    BILLING_READ_ONLY,
    BillingMethods,
    OpenBooks,
    rpc_code,
)
from chargingd.admin.fraud import (
    FRAUD_METHODS,
    FRAUD_READ_ONLY,
    FraudMethodError,
    FraudMethods,
)
from chargingd.admin.params import (
    _NAME,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    LEDGER_CODES,
    METHOD_NOT_FOUND,
    NOT_FOUND,
    REDIS_UNAVAILABLE,
    Params,
    Peer,
    RpcError,
    error_response,
    render_account,
    render_audit,
)
from chargingd.alerts import AlertError, Alerts
from chargingd.core.ratelog import REQUEST_SETTLE_S, RateLimitedLog
from chargingd.core.redisconn import CLUSTER_UNAVAILABLE
from chargingd.fraud import Fraud
from chargingd.invoicing import InvoicingError
from chargingd.ledger import Ledger, LedgerError, Status
from chargingd.ledger.codec import MAX_CALLS_LIMIT
from chargingd.sessions.pricing import DEFAULT_PLAN

log = logging.getLogger("chargingd.admin")

_REDIS_DOWN = "admin requests failed, Redis unavailable"
# Redis down, or a cluster's slot served nowhere right now (a failover, a migration).
_REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, *CLUSTER_UNAVAILABLE)
_HISTORY_MAX = 1000
_READ_ONLY = frozenset(
    {"account.get", "account.list", "account.history", "server.status", "session.list"}
    | BILLING_READ_ONLY
    | ALERT_READ_ONLY
    | FRAUD_READ_ONLY
    | {"stats.kpi"}
)
STATS_BY = ("", "gateway", "destination")
STATS_WINDOWS = ("", "5m", "1h", "24h")

StatusProvider = Callable[[], Awaitable[dict[str, Any]]]
# monitoring.Monitor.stats(by=..., window=...): the KPI windows read now.
StatsProvider = Callable[..., Awaitable[dict[str, Any]]]


_WRITE = frozenset({"operator", "reason"})
METHODS: dict[str, tuple[str, frozenset[str]]] = {
    "account.create": (
        "account_create",
        _WRITE
        | {
            "id",
            "mode",
            "currency",
            "balance",
            "credit_limit",
            "tariff",
            "max_calls",
            "identities",
        },
    ),
    "account.get": ("account_get", frozenset({"id"})),
    "account.update": (
        "account_update",
        _WRITE | {"id", "mode", "currency", "credit_limit", "tariff", "max_calls", "identities"},
    ),
    "account.list": ("account_list", frozenset({"cursor", "count"})),
    "account.topup": ("account_topup", _WRITE | {"id", "amount", "txn_id", "currency"}),
    "account.adjust": (
        "account_adjust",
        _WRITE | {"id", "amount", "txn_id", "currency", "allow_debt"},
    ),
    "account.suspend": ("account_suspend", _WRITE | {"id"}),
    "account.resume": ("account_resume", _WRITE | {"id"}),
    "account.history": ("account_history", frozenset({"id", "count", "before"})),
    "server.status": ("server_status", frozenset()),
    "session.list": ("session_list", frozenset({"account"})),
    "session.kill": ("session_kill", _WRITE | {"id"}),
    **BILLING_METHODS,  # admin/billing.py: profiles, subscriptions, charges, payments
    **ALERT_METHODS,  # admin/alerts.py: alert.list, alert.resolve
    **FRAUD_METHODS,  # admin/fraud.py: fraud.rules, fraud.state, fraud.unblock, fraud.lift
    "stats.kpi": ("stats_kpi", frozenset({"by", "window"})),
}


class AdminMethods(BillingMethods, AlertMethods, FraudMethods):
    """The method handlers; ``dispatch`` is the error boundary of one request."""

    def __init__(
        self,
        ledger: Ledger,
        status: StatusProvider,
        sessions: adminsessions.SessionOps | None = None,
        tariffs: frozenset[str] | None = None,
        open_books: OpenBooks | None = None,
        alerts: Alerts | None = None,
        fraud: Fraud | None = None,
        stats: StatsProvider | None = None,
        plan_currencies: Mapping[str, str] | None = None,
    ) -> None:
        self.ledger = ledger
        self.alerts = alerts  # the process's alert stream (None: alert.* refused)
        self.fraud = fraud  # the process's fraud rules (None: fraud.* refused)
        self.open_books = open_books  # None: no billing database (billing.* refused)
        self.stats = stats  # None: a daemon without monitoring
        self.status = status
        self.tariffs = tariffs  # plan ids this daemon rates with; None: not checked
        # Plan id -> the currency it prices in ("" or absent: not checked).
        self.plan_currencies = dict(plan_currencies or {})
        self.sessions = adminsessions.SessionHooks(sessions)  # None: RADIUS off
        # Redis down: a line per interval, not per request (nor per flip: one shard away)
        self.outage = RateLimitedLog(log, settle_s=REQUEST_SETTLE_S)

    async def dispatch(self, request: Any, peer: Peer) -> dict[str, Any] | None:
        """Validate and run one request object; always an outcome, never an exception."""
        req_id = request.get("id") if isinstance(request, dict) else None
        if not _valid_id(req_id):
            req_id = None
        notification = isinstance(request, dict) and "id" not in request
        started = time.perf_counter()
        try:
            result = await self._call(request, peer)
        except RpcError as exc:
            response = error_response(req_id, exc.code, exc.message, exc.data)
        except LedgerError as exc:
            code = LEDGER_CODES.get(exc.code, LEDGER_CODES["ledger_error"])
            message = str(exc) or exc.code.replace("_", " ")
            response = error_response(req_id, code, message, {"code": exc.code})
        except InvoicingError as exc:
            response = error_response(req_id, rpc_code(exc), str(exc), {"code": exc.code})
        except AlertError as exc:
            response = error_response(req_id, INVALID_PARAMS, str(exc))
        except (AlertMethodError, FraudMethodError) as exc:
            response = error_response(req_id, exc.rpc_code, str(exc))
        except _REDIS_ERRORS as exc:
            self.outage.failure(_REDIS_DOWN, exc)
            response = error_response(req_id, REDIS_UNAVAILABLE, f"Redis unavailable: {exc}")
        except Exception:  # the boundary: log it, answer, keep serving
            log.exception("admin request failed: %.200r", request)
            response = error_response(req_id, INTERNAL_ERROR, "internal error; see the daemon log")
        else:
            response = {"jsonrpc": "2.0", "id": req_id, "result": result}
            # server.status answers while Redis is down (its `redis` says the error):
            # its success proves nothing, and a health check polling it (Docker's `ctl
            # status`) logged "recovered" then a new outage at every poll.
            if not (isinstance(request, dict) and request.get("method") == "server.status"):
                self.outage.recovered(_REDIS_DOWN)
        _log_outcome(request, peer, response, time.perf_counter() - started)
        return None if notification else response

    async def _call(self, request: Any, peer: Peer) -> Any:
        if (
            not isinstance(request, dict)
            or request.get("jsonrpc") != "2.0"
            or not isinstance(request.get("method"), str)
            or not _valid_id(request.get("id"))
        ):
            raise RpcError(
                INVALID_REQUEST,
                'invalid request: expected {"jsonrpc": "2.0", "id": ..., "method": "...", '
                '"params": {...}}',
            )
        method = request["method"]
        entry = METHODS.get(method)
        if entry is None:
            raise RpcError(METHOD_NOT_FOUND, f"method not found: {method!r}")
        attr, allowed = entry
        params = Params(request.get("params"), allowed)
        handler: Callable[[Params, str], Awaitable[Any]] = getattr(self, attr)
        return await handler(params, _who(params, peer))

    # -- accounts -----------------------------------------------------------------
    async def account_create(self, p: Params, who: str) -> Any:
        mode = p.mode()
        acc = await self.ledger.create_account(
            p.ident(),
            mode=mode,
            currency=p.currency(known=True),
            balance_micros=p.amount("balance", "0", negative=True),
            credit_limit_micros=p.amount("credit_limit", "0"),
            tariff=self._tariff(p.text("tariff", "")),
            max_calls=p.integer("max_calls", 0, hi=MAX_CALLS_LIMIT),
            identities=p.identities(),
            who=who,
            why=p.text("reason", ""),
        )
        return self._currency_warning(acc.currency, acc.tariff, render_account(acc))

    def _tariff(self, tariff: str) -> str:
        """A tariff no loaded plan answers to would refuse every call of the account."""
        if tariff and self.tariffs is not None and tariff not in self.tariffs:
            known = ", ".join(sorted(self.tariffs)) or "none"
            raise RpcError(INVALID_PARAMS, f"unknown tariff {tariff!r} (loaded plans: {known})")
        return tariff

    def _currency_warning(self, currency: str, tariff: str, answer: Any) -> Any:
        """The answer, with ``warnings`` when the account is in another currency than
        the plan live calls would rate it with: every live call of it is then refused
        ("tariff currency mismatch", said only in the daemon's log). Not refused here:
        a mediation source's own plan may rate such an account (docs/mediation.md)."""
        plan_id = tariff or DEFAULT_PLAN
        plan_currency = self.plan_currencies.get(plan_id, "")
        if plan_currency and currency != plan_currency:
            which = f"tariff {tariff!r}" if tariff else "default plan ([rating] default_plan)"
            answer["warnings"] = [
                f"currency {currency} is not that of the {which}, which prices in "
                f"{plan_currency}: its live calls will be refused (tariff currency mismatch)"
            ]
        return answer

    async def account_get(self, p: Params, who: str) -> Any:
        return render_account(await self.ledger.get_account(p.ident()))

    async def account_update(self, p: Params, who: str) -> Any:
        changes: dict[str, Any] = {}
        if p.has("credit_limit"):
            changes["credit_limit_micros"] = p.amount("credit_limit")
        if p.has("tariff"):
            changes["tariff"] = self._tariff(p.text("tariff"))
        if p.has("max_calls"):
            changes["max_calls"] = p.integer("max_calls", hi=MAX_CALLS_LIMIT)
        if p.has("currency"):
            changes["currency"] = p.currency(known=True)
        if p.has("identities"):
            changes["identities"] = p.identities()
        if p.has("mode"):
            changes["mode"] = p.mode()
        account_id = p.ident()
        if not changes:
            raise RpcError(INVALID_PARAMS, "nothing to update: give at least one field")
        acc = await self.ledger.update_account(
            account_id, who=who, why=p.text("reason", ""), **changes
        )
        if "currency" in changes or "tariff" in changes:
            return self._currency_warning(acc.currency, acc.tariff, render_account(acc))
        return render_account(acc)

    async def account_list(self, p: Params, who: str) -> Any:
        cursor, accounts = await self.ledger.list_accounts(
            cursor=p.integer("cursor", 0, hi=1 << 62),
            count=p.integer("count", 100, lo=1, hi=10_000),
        )
        return {"cursor": cursor, "accounts": [render_account(a) for a in accounts]}

    async def account_topup(self, p: Params, who: str) -> Any:
        account_id, amount = p.ident(), p.amount("amount")
        if amount <= 0:
            raise RpcError(INVALID_PARAMS, "amount of a top-up must be positive")
        acc = await self.ledger.topup(
            account_id,
            amount,
            txn_id=p.ident("txn_id"),
            who=who,
            why=p.text("reason", ""),
            currency=p.currency() if p.has("currency") else None,
        )
        await self.sessions.after_topup(account_id)
        return render_account(acc)

    async def account_adjust(self, p: Params, who: str) -> Any:
        account_id, amount = p.ident(), p.amount("amount", negative=True)
        if amount == 0:
            raise RpcError(INVALID_PARAMS, "amount of an adjustment must not be zero")
        reason = p.text("reason")
        if not reason.strip():
            raise RpcError(INVALID_PARAMS, "an adjustment needs a reason")
        acc = await self.ledger.adjust(
            account_id,
            amount,
            txn_id=p.ident("txn_id"),
            who=who,
            why=reason,
            currency=p.currency() if p.has("currency") else None,
            allow_debt=p.flag("allow_debt"),
        )
        if amount > 0:
            await self.sessions.after_topup(account_id)
        return render_account(acc)

    async def account_suspend(self, p: Params, who: str) -> Any:
        account_id, why = p.ident(), p.text("reason", "")
        acc = await self.ledger.set_status(account_id, Status.SUSPENDED, who=who, why=why)
        self.sessions.after_block(account_id)  # Disconnect-Requests, in the background
        return render_account(acc)

    async def account_resume(self, p: Params, who: str) -> Any:
        account_id, why = p.ident(), p.text("reason", "")
        fraud = self.fraud
        if fraud is not None:
            # An account a fraud rule blocked, where the rules run: resumed as `ctl fraud
            # unblock` does it (its counts start over, its incidents are resolved). A bare
            # status change kept the counts that blocked it (blocked again by its next
            # risky call) and its incident open (that second block raised no new alert,
            # no webhook), and `fraud state` still said blocked_by.
            before = await self.ledger.get_account(account_id)
            if (before.status, before.status_reason) == (Status.BLOCKED, "fraud"):
                why = why or "ctl account resume"
                return render_account(await fraud.unblock(account_id, who=who, why=why))
        return render_account(
            await self.ledger.set_status(account_id, Status.ACTIVE, who=who, why=why)
        )

    async def account_history(self, p: Params, who: str) -> Any:
        account_id = p.ident()
        count = p.integer("count", 20, lo=1, hi=_HISTORY_MAX)
        before = p.text("before", "+")
        # An unknown account has no history; say so rather than answer an empty list.
        acc = await self.ledger.get_account(account_id)
        entries = await self.ledger.audit(account_id, count=count, before_id=before)
        rendered = [render_audit(e, acc.currency) for e in entries]
        more = len(entries) == count
        return {"entries": rendered, "next_before": rendered[-1]["id"] if more else None}

    async def server_status(self, p: Params, who: str) -> Any:
        return await self.status()

    async def stats_kpi(self, p: Params, who: str) -> Any:
        """Call-quality KPIs per window ("all", or per gateway / destination group)."""
        by = p.text("by", "")
        window = p.text("window", "")
        if by not in STATS_BY:
            raise RpcError(INVALID_PARAMS, "by must be gateway or destination")
        if window not in STATS_WINDOWS:
            raise RpcError(INVALID_PARAMS, "window must be 5m, 1h or 24h")
        if self.stats is None:
            raise RpcError(INVALID_REQUEST, "no monitoring in this daemon")
        return await self.stats(by=by, window=window)

    # -- sessions (admin/sessions.py) ----------------------------------------------------
    def _sessions(self) -> adminsessions.SessionOps:
        if self.sessions.sessions is None:
            raise RpcError(INVALID_REQUEST, "no sessions here: [radius] enabled = false")
        return self.sessions.sessions

    async def session_list(self, p: Params, who: str) -> Any:
        account_id = p.ident("account") if p.has("account") else None
        ops = self._sessions()
        if account_id is not None:
            # UnknownAccount (-32001): a mistyped id listed "no live calls", exit 0.
            await self.ledger.get_account(account_id)
        return await self.sessions.list_live(ops, account_id)

    async def session_kill(self, p: Params, who: str) -> Any:
        session_id = p.text("id")
        result = await self.sessions.kill(self._sessions(), session_id)
        if result is None:
            raise RpcError(NOT_FOUND, f"no live session {session_id!r}")
        log.info("session %s killed by %s: %s", session_id, who, result)
        return result


def _log_outcome(request: Any, peer: Peer, response: dict[str, Any], elapsed_s: float) -> None:
    """One line per request: method, account, peer, outcome, elapsed (changes at INFO)."""
    method = request.get("method") if isinstance(request, dict) else None
    params = request.get("params") if isinstance(request, dict) else None
    account = params.get("id") if isinstance(params, dict) else None
    operator = params.get("operator") if isinstance(params, dict) else None
    outcome = f"error {response['error']['code']}" if "error" in response else "ok"
    level = logging.DEBUG
    if method in METHODS and method not in _READ_ONLY:
        level = logging.INFO
    log.log(
        level,
        "admin %.40s id=%.40s operator=%.64s uid=%d pid=%d: %s in %.1f ms",
        method,
        account,
        operator,
        peer.uid,
        peer.pid,
        outcome,
        elapsed_s * 1e3,
    )


def _valid_id(value: Any) -> bool:
    # JSON-RPC 2.0 §4: id is a string, a number or null (fractions discouraged).
    return (
        value is None
        or isinstance(value, str)
        or (isinstance(value, int) and not isinstance(value, bool))
    )


def _who(p: Params, peer: Peer) -> str:
    """Audit-trail actor: a named operator, else the peer's uid (SO_PEERCRED)."""
    operator = p.raw.get("operator")
    if operator is None:
        return f"admin:{peer.uid}"
    if not isinstance(operator, str) or not _NAME.match(operator):
        raise RpcError(INVALID_PARAMS, "operator must be 1-64 letters, digits or _.@:+-")
    return f"admin:{operator}"
