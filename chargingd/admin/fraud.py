"""Admin-socket methods of the fraud rules: fraud.rules, fraud.state, fraud.unblock,
fraud.lift.
Used by AdminMethods (a mixin: the handlers share its Params and its error boundary);
`chargingd ctl fraud` (admin/ctl_fraud.py) calls them, and `ctl fraud alerts` reads
the alert stream's fraud.* kinds (alert.list).
"""

from __future__ import annotations

from typing import Any, Protocol

from chargingd.core.config import DEFAULT_PLAN_ID
from chargingd.core.currencies import minor_unit
from chargingd.core.money import format_amount
from chargingd.fraud import Fraud, Rule
from chargingd.ledger import Account

_WRITE = frozenset({"operator", "reason"})
FRAUD_METHODS: dict[str, tuple[str, frozenset[str]]] = {
    "fraud.rules": ("fraud_rules", frozenset({"account", "tariff"})),
    "fraud.state": ("fraud_state", frozenset({"id", "caller_ip"})),
    "fraud.unblock": ("fraud_unblock", _WRITE | {"id"}),
    "fraud.lift": ("fraud_lift", _WRITE | {"id", "identity", "caller_ip"}),
}
FRAUD_READ_ONLY = frozenset({"fraud.rules", "fraud.state"})


class FraudMethodError(Exception):
    """A refusal of a fraud method; ``rpc_code`` is its JSON-RPC error code."""

    rpc_code = -32602  # invalid params


class NoFraud(FraudMethodError):
    """This daemon runs no fraud rules ([fraud] enabled = false)."""

    rpc_code = -32600  # invalid request


class Params(Protocol):
    def has(self, name: str) -> bool: ...

    def text(self, name: str, default: str | None = None) -> str: ...

    def ident(self, name: str = "id") -> str: ...


def render_rule(rule: Rule, currency: str = "") -> dict[str, Any]:
    """A rule as JSON: its thresholds in config units (seconds, decimal amounts in
    ``currency``, the account's; "": no single one, each account's own)."""
    out: dict[str, Any] = {
        "name": rule.name,
        "kind": rule.kind,
        "action": rule.action.value,
        "shadow": rule.shadow,
        "severity": rule.severity,
        "message": rule.message,
        "at": "authorize" if rule.at_authorize else "events",
    }
    out["thresholds"] = thresholds(rule, currency)
    return out


def thresholds(rule: Rule, currency: str = "") -> dict[str, Any]:
    """A rule's thresholds in config units (seconds, decimal amounts). A spend cap is
    counted in the account's currency: of one account (``currency``), written with
    that currency's minor-unit decimals (1000 JPY, 20.00 EUR) and its code; else
    as configured (spend_thresholds) with ``currency`` "" (no single currency)."""
    window_s = rule.window_ms // 1000
    limits: dict[str, Any] = {"window_s": window_s}
    kind = rule.kind
    if kind == "concurrent":
        limits = {}
    elif kind == "velocity":
        limits["scope"] = rule.scope
    elif kind == "destination":
        limits["match"] = list(rule.match)
    elif kind == "shared_destination":
        limits |= {"match": list(rule.match), "range_digits": rule.range_digits}
    elif kind == "new_country":
        limits = {"memory_days": window_s // 86400, "exempt": sorted(rule.exempt_countries)}
    elif kind == "same_destination":
        limits["range_digits"] = rule.range_digits
    elif kind == "short_calls":
        limits["max_duration_s"] = rule.max_duration_s
    name = {"distinct_destinations": "max_destinations", "spend": "max_amount"}
    name |= {"identity_scan": "max_identities", "shared_destination": "max_accounts"}
    name |= {"asr": "min_asr_pct", "new_country": ""}
    if kind == "spend":
        limits |= spend_thresholds(rule, currency)
    elif name.get(kind, "max_calls"):
        limits[name.get(kind, "max_calls")] = rule.limit
    if kind == "asr":
        limits["min_calls"] = rule.min_calls
    if not rule.at_authorize and kind != "shared_destination":  # (that one only alerts)
        limits["cooldown_s"] = (rule.cooldown_ms or rule.window_ms) // 1000
    return limits


def spend_thresholds(rule: Rule, currency: str) -> dict[str, Any]:
    """A spend rule's cap: of an account in ``currency`` (its max_amounts entry, else
    max_amount; None: no cap in that currency, its spend is not counted), or as
    configured (max_amount in each account's currency, max_amounts per currency)."""
    caps = dict(rule.caps)
    if currency:
        cap = caps.get(currency, rule.limit)
        shown = format_amount(cap, minor_unit(currency)) if cap else None
        return {"max_amount": shown, "currency": currency}
    out: dict[str, Any] = {}
    if rule.limit:
        out["max_amount"] = format_amount(rule.limit, 0)
    out["currency"] = ""
    if caps:
        out["max_amounts"] = {c: format_amount(m, minor_unit(c)) for c, m in caps.items()}
    return out


class FraudMethods:
    """The fraud handlers of the admin socket (mixed into AdminMethods)."""

    fraud: Fraud | None = None
    tariffs: frozenset[str] | None = None  # plan ids this daemon rates with; None: unchecked

    def _fraud(self) -> Fraud:
        if self.fraud is None:
            raise NoFraud("no fraud rules here: [fraud] enabled = false")
        return self.fraud

    async def fraud_rules(self, p: Params, who: str) -> dict[str, Any]:
        """The rules in force: [fraud] rules, or an account's with its overrides. An
        account's tariff is its own unless --tariff names one: as in authorize, an
        account that names none takes tariff_overrides.default (its plan's id)."""
        fraud = self._fraud()
        account = p.ident("account") if p.has("account") else ""
        tariff = p.text("tariff", "")
        if tariff and self.tariffs is not None and tariff not in self.tariffs:
            # A typo matches no override: the preview showed the [fraud] rules as if
            # they were that tariff's (the config refuses such an override key too).
            known = ", ".join(sorted(self.tariffs)) or "none"
            raise FraudMethodError(f"unknown tariff {tariff!r} (loaded plans: {known})")
        currency = ""  # a spend cap is in the account's currency; without one, in each's
        if account:
            # UnknownAccount: a clear error (a mistyped id showed the [fraud] rules).
            found = await fraud.ledger.get_account(account)
            currency = found.currency
            if not tariff:
                tariff = found.tariff or DEFAULT_PLAN_ID
        rules = fraud.book.rules_for(account, tariff) if account or tariff else fraud.book.base
        out: dict[str, Any] = {
            "enabled": True,
            "shadow": fraud.cfg.shadow,
            "account": account,
            "tariff": tariff,
            "rules": [render_rule(r, currency) for r in rules],
            "high_risk_countries": list(fraud.cfg.high_risk_countries),
            "high_risk_prefixes": list(fraud.cfg.high_risk_prefixes),
        }
        if not account and not tariff:
            # The [fraud] rules alone hide what overrides change: a rule off here and
            # on for some accounts (or tariffs) is in force for them all the same.
            cfg = fraud.cfg
            out["disabled"] = [r.name for r in cfg.rules if not r.enabled]
            out["account_overrides"] = {k: sorted(v) for k, v in cfg.account_overrides.items()}
            out["tariff_overrides"] = {k: sorted(v) for k, v in cfg.tariff_overrides.items()}
        return out

    async def fraud_state(self, p: Params, who: str) -> dict[str, Any]:
        """What the rules hold against an account (blocked by, deny flags, since), or
        against a caller IP (caller_ip: its deny flags, the unknown identities it tried)."""
        fraud = self._fraud()
        caller_ip = p.text("caller_ip", "")
        if caller_ip:
            if p.has("id"):
                raise FraudMethodError("name an account (id) or a caller IP, not both")
            try:
                shown, state = await fraud.caller_ip_state(caller_ip)
            except ValueError as exc:
                raise FraudMethodError(str(exc)) from None
            return {"id": "", "caller_ip": shown, "state": state}
        account_id = p.ident()
        await fraud.ledger.get_account(account_id)  # UnknownAccount: a clear error
        return {"id": account_id, "state": await fraud.state(account_id)}

    async def fraud_unblock(self, p: Params, who: str) -> dict[str, Any]:
        """Make an account a fraud rule blocked active again (needs a reason)."""
        reason = p.text("reason", "")
        if not reason.strip():
            raise FraudMethodError("an unblock needs a reason (--reason)")
        account = await self._fraud().unblock(p.ident(), who=who, why=reason)
        return unblocked(account)

    async def fraud_lift(self, p: Params, who: str) -> dict[str, Any]:
        """End early what the rules refuse an active account (a refusal's cooldown, a
        velocity count) or an identity (needs a reason; audited)."""
        reason = p.text("reason", "")
        if not reason.strip():
            raise FraudMethodError("a lift needs a reason (--reason)")
        identity = p.text("identity", "")
        caller_ip = p.text("caller_ip", "")
        if p.has("id") + bool(identity) + bool(caller_ip) != 1:
            raise FraudMethodError(
                "name an account (id), an identity or a caller IP (caller_ip), one of them"
            )
        if caller_ip:
            try:
                return await self._fraud().lift_caller_ip(caller_ip, who=who, why=reason)
            except ValueError as exc:
                raise FraudMethodError(str(exc)) from None
        account_id = p.ident() if p.has("id") else None
        return await self._fraud().lift(account_id, identity=identity, who=who, why=reason)


def unblocked(account: Account) -> dict[str, Any]:
    """What fraud.unblock answers: the account's status now."""
    return {
        "id": account.id,
        "status": str(account.status),
        "status_reason": account.status_reason,
    }
