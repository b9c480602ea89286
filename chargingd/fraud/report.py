"""How a fired rule reads as an alert: kind, incident key, one-line summary, details."""

from __future__ import annotations

from typing import Any

from chargingd.core.currencies import money_text
from chargingd.fraud.destinations import Destination
from chargingd.fraud.rules import Action, Rule
from chargingd.fraud.types import CallFacts, Decision, Fired, Verdict


def incident_key(rule: Rule, subject: str) -> str:
    """One incident per rule and account (or caller IP, or unknown identity)."""
    return rule_incident_key(rule.name, subject)


def rule_incident_key(rule_name: str, subject: str) -> str:
    """incident_key of the rule named ``rule_name``."""
    return f"fraud.{rule_name}:{subject}"


def _measure(rule: Rule, count: int, dest: Destination | None, currency: str) -> str:
    window = f"{rule.window_ms // 1000} s"
    if rule.kind == "concurrent":
        return f"{count} live calls (limit {rule.limit})"
    if rule.kind == "new_country":
        country = dest.country if dest is not None else "?"
        return f"first call to {country} (the account called {count} other countries)"
    if rule.kind == "distinct_destinations":
        return f"{count} numbers in {window} (limit {rule.limit})"
    if rule.kind == "spend":
        # the account's currency (the CDR's): its minor unit and code (1500 JPY)
        spent, cap = money_text(count, currency), money_text(rule.limit, currency)
        return f"spent {spent} in {window} (cap {cap})"
    if rule.kind == "identity_scan":
        if dest is not None:  # authorize: a call from the address its deny flag refuses
            return f"a call from a caller IP that tried over {rule.limit} unknown identities"
        return f"{count} unknown identities in {window} (limit {rule.limit})"
    if rule.kind == "shared_destination":
        return f"{count} accounts called it in {window} (limit {rule.limit})"
    if rule.kind == "asr":
        return f"ASR {count}% in {window} (lowest {rule.limit}%, {rule.min_calls}+ calls)"
    return f"{count} calls in {window} (limit {rule.limit})"


def _outcome(fired: Fired, verdict: Verdict, at_call: bool = False) -> str:
    """``at_call``: fired in authorize (an identity_scan rule refuses the call itself
    there, its next calls from its Access-Rejects)."""
    rule = fired.rule
    if rule.shadow:
        return f"shadow: would {rule.action.value}" if rule.action is not Action.ALERT else "shadow"
    if verdict.rule is rule and verdict.decision is Decision.BLOCK:
        return "account blocked" if verdict.blocked_now else "refused (account blocked)"
    if verdict.rule is rule and verdict.decision is Decision.REFUSE:
        return "refused" if rule.at_authorize or at_call else "next calls refused"
    by = verdict.rule
    if rule.action is not Action.ALERT and by is not None and not verdict.allowed:
        # A refusing or blocking rule that fired with another that decided: its call (its
        # account) was refused all the same; "alert" read as if the rule only alerted.
        if verdict.decision is Decision.BLOCK:
            return f"account blocked (by {by.name})"
        return f"{'refused' if by.at_authorize else 'next calls refused'} (by {by.name})"
    return "alert"


def alert_for(
    fired: Fired,
    verdict: Verdict,
    subject: str,
    facts: CallFacts | None,
    dest: Destination | None,
    currency: str = "",
) -> tuple[str, str, str, dict[str, Any]]:
    """(kind, incident key, summary, details) of one fired rule; ``currency`` the
    account's (spend: what its amounts are in)."""
    rule = fired.rule
    if rule.scope == "caller_ip" and facts is not None and facts.caller_ip:
        subject = facts.caller_ip
    outcome = _outcome(fired, verdict, facts is not None)
    summary = f"{rule.name}: {_measure(rule, fired.count, dest, currency)}: {outcome}"
    details: dict[str, Any] = {
        "rule": rule.name,
        "kind": rule.kind,
        "subject": subject,
        "count": fired.count,
        "limit": rule.limit,
        "window_s": rule.window_ms // 1000,
        "action": rule.action.value,
        "shadow": rule.shadow,
        "outcome": outcome,
    }
    if rule.kind == "spend":  # count and limit in micro-units of the account's currency
        details["currency"] = currency
    if facts is not None:
        details |= {"account": facts.account_id, "identity": facts.identity}
        if facts.caller_ip:
            details["caller_ip"] = facts.caller_ip
    if dest is not None:
        details |= {
            "callee": dest.number,
            "country": dest.country,
            "number_type": dest.number_type,
            "risky": dest.reasons(rule.match)
            if rule.kind in ("destination", "shared_destination")
            else [],
        }
    return f"fraud.{rule.kind}", incident_key(rule, subject), summary, details
