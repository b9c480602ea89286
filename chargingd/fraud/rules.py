"""The rules as the engine runs them: [fraud] rules compiled (amounts in micros,
windows in ms, a stable slot each) and the effective set of an account (its tariff's
overrides, then its own).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field

from chargingd.core.config.fraud import (
    AUTHORIZE_KINDS,
    DEFAULT_MATCH,
    FraudConfig,
    RuleConfig,
    RuleOverride,
    merged,
)
from chargingd.core.money import parse_amount

CACHE_MAX = 10_000  # remembered (account, tariff) rule sets, cleared when full
DEFAULT_MEMORY_DAYS = 90

log = logging.getLogger("chargingd.fraud")


class Action(enum.StrEnum):
    ALERT = "alert"
    REFUSE = "refuse"
    BLOCK = "block"


_SEVERITY = {Action.ALERT: "warning", Action.REFUSE: "warning", Action.BLOCK: "critical"}


@dataclass(frozen=True)
class Rule:
    """One rule, ready to run. ``limit`` is what the kind compares with: calls,
    destinations, micros (spend: the cap of the currency the set was compiled for, or
    max_amount's, 0 for none) or the lowest answer ratio in percent (asr). ``caps``:
    a spend rule's per-currency caps (max_amounts, in micros), as configured."""

    name: str
    kind: str
    slot: int  # its position in [fraud] rules: keys shared by rules keep them apart
    action: Action
    shadow: bool
    severity: str
    message: str
    window_ms: int
    limit: int
    scope: str = "account"
    match: tuple[str, ...] = ()
    range_digits: int = 0
    max_duration_s: int = 0
    min_calls: int = 0
    cooldown_ms: int = 0
    exempt_countries: frozenset[str] = frozenset()
    caps: tuple[tuple[str, int], ...] = ()
    # the h323-return-code of its refusal (-1: the frontend's own for fraud)
    return_code: int = -1

    @property
    def at_authorize(self) -> bool:
        return self.kind in AUTHORIZE_KINDS

    # The script's act code: a alert, r refuse, b block, s shadow (from action and
    # shadow; computed once: the authorize path reads it for every op).
    act: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "act", "s" if self.shadow else self.action.value[0])


def compile_rule(
    cfg: RuleConfig, slot: int, fraud: FraudConfig, currency: str | None = None
) -> Rule:
    """A configured rule (validated by the config loader) as the engine runs it; a
    spend rule with the cap of ``currency`` (None: max_amount's, in no one currency)."""
    action = Action(cfg.action)
    default_message = fraud.block_message if action is Action.BLOCK else fraud.refuse_message
    caps = tuple(sorted((c, parse_amount(a)) for c, a in (cfg.max_amounts or {}).items()))
    limit = {
        "distinct_destinations": cfg.max_destinations,
        "identity_scan": cfg.max_identities,
        "shared_destination": cfg.max_accounts,
        "spend": spend_cap(cfg, caps, currency),
        "asr": cfg.min_asr_pct,
    }.get(cfg.kind, cfg.max_calls)
    window_s = cfg.window_s
    if cfg.kind == "new_country":
        window_s = (cfg.memory_days or DEFAULT_MEMORY_DAYS) * 86400
    return Rule(
        name=cfg.name,
        kind=cfg.kind,
        slot=slot,
        action=action,
        shadow=cfg.shadow or fraud.shadow,
        severity=cfg.severity or _SEVERITY[action],
        message=cfg.message or default_message,
        window_ms=(window_s or 0) * 1000,
        limit=limit or 0,
        # identity_scan counts per caller IP (its alerts' subject, its refusal's value)
        scope="caller_ip" if cfg.kind == "identity_scan" else cfg.scope or "account",
        match=cfg.match or DEFAULT_MATCH,
        range_digits=cfg.range_digits or 0,
        max_duration_s=cfg.max_duration_s or 0,
        min_calls=cfg.min_calls or 0,
        cooldown_ms=(cfg.cooldown_s or 0) * 1000,
        exempt_countries=frozenset(cfg.exempt_countries or ()),
        caps=caps,
        return_code=-1 if cfg.h323_return_code is None else cfg.h323_return_code,
    )


def spend_cap(cfg: RuleConfig, caps: tuple[tuple[str, int], ...], currency: str | None) -> int:
    """A spend rule's cap for an account in ``currency`` (micros): its max_amounts
    entry, else max_amount (in each account's own currency); 0: none."""
    for code, micros in caps:
        if code == currency:
            return micros
    return parse_amount(cfg.max_amount) if cfg.max_amount else 0


class RuleBook:
    """The rules of [fraud] and the effective set of each (account, tariff)."""

    def __init__(self, cfg: FraudConfig) -> None:
        self.cfg = cfg
        self.slots = {r.name: i + 1 for i, r in enumerate(cfg.rules)}
        self.base = self._compile(cfg.rules, {}, {})
        self._sets: dict[tuple[str, str], tuple[Rule, ...]] = {}
        # the sets of the call events (spend counts in the account's currency): by
        # (account with overrides or "", tariff, currency), made once each
        self._in_currency: dict[tuple[str, str, str], tuple[Rule, ...]] = {}
        self._uncapped: set[tuple[str, str]] = set()  # (rule, currency) logged once
        # no override at all (the default): every account has the base set; read per
        # authorize, so kept here (the configuration's attributes are a frozen
        # dataclass's, read generically: ~0.9k instructions a call)
        self._by_account = cfg.account_overrides
        self._by_tariff = cfg.tariff_overrides
        self._plain = not cfg.account_overrides and not cfg.tariff_overrides

    def _compile(
        self,
        rules: tuple[RuleConfig, ...],
        tariff: dict[str, RuleOverride],
        account: dict[str, RuleOverride],
        currency: str | None = None,
    ) -> tuple[Rule, ...]:
        out = []
        for rule in rules:
            for override in (tariff.get(rule.name), account.get(rule.name)):
                if override is not None:
                    rule = merged(rule, override)
            if not rule.enabled:
                continue
            compiled = compile_rule(rule, self.slots[rule.name], self.cfg, currency)
            if compiled.kind == "spend" and not compiled.limit and currency is not None:
                self._no_cap(compiled, currency)
                continue  # no cap in this currency: the rule does not count its spend
            out.append(compiled)
        return tuple(out)

    def _no_cap(self, rule: Rule, currency: str) -> None:
        if (rule.name, currency) in self._uncapped or len(self._uncapped) >= CACHE_MAX:
            return
        self._uncapped.add((rule.name, currency))
        log.warning(
            "fraud: rule %s has no spend cap in %s (caps: %s): it does not count the"
            " spend of accounts in %s; give it one (max_amounts.%s of the rule, or of"
            " an account's or tariff's override: docs/fraud.md \"Spend caps\")",
            rule.name,
            currency or "(no currency)",
            ", ".join(c for c, _ in rule.caps) or "none",
            currency or "no currency",
            currency or "CODE",
        )

    def in_currency(self, account_id: str, tariff: str, currency: str) -> tuple[Rule, ...]:
        """The enabled rules of an account (rules_for) as its call events count them:
        each spend rule with the cap of the account's ``currency``, and without the
        spend rules that have none in it. Compiled once per (overrides, currency)."""
        account = None if self._plain else self._by_account.get(account_id)
        by_tariff = None if self._plain else self._by_tariff.get(tariff)
        key = (
            account_id if account is not None else "",
            tariff if by_tariff is not None else "",
            currency,
        )
        found = self._in_currency.get(key)
        if found is None:
            if len(self._in_currency) >= CACHE_MAX:
                del self._in_currency[next(iter(self._in_currency))]
            found = self._compile(self.cfg.rules, by_tariff or {}, account or {}, currency)
            self._in_currency[key] = found
        return found

    def rules_for(self, account_id: str, tariff: str) -> tuple[Rule, ...]:
        """The enabled rules of an account: [fraud] rules with its tariff's overrides,
        then its own, applied."""
        if self._plain:
            return self.base
        account = self._by_account.get(account_id)
        by_tariff = self._by_tariff.get(tariff)
        if account is None and by_tariff is None:
            return self.base
        key = (account_id if account is not None else "", tariff)
        found = self._sets.get(key)
        if found is None:
            if len(self._sets) >= CACHE_MAX:
                del self._sets[next(iter(self._sets))]  # the oldest (not all at once)
            found = self._compile(self.cfg.rules, by_tariff or {}, account or {})
            self._sets[key] = found
        return found

    def by_name(self, name: str) -> Rule | None:
        return next((r for r in self.base if r.name == name), None)
