"""Fraud detection in the call path: rules evaluated in authorize (in the same Redis
round trip where the sessions' fused script runs them) and on call events (CDRs,
Access-Rejects), with actions (alert, refuse, block) and a shadow mode. See
docs/fraud.md.

Others use ``Fraud`` (check / prepare + decided / forget / refused / cdr / unblock),
``CallFacts``, ``Verdict`` and ``Decision``; ``fragment`` is the Lua a fused script
embeds. The CDR-stream consumer of the event rules is ``FraudEvents``.
"""

from chargingd.fraud.engine import Fraud, Prepared, fragment
from chargingd.fraud.events import FraudEvents, FraudOff
from chargingd.fraud.rules import Action, Rule, RuleBook
from chargingd.fraud.types import ALLOWED, CallFacts, Decision, Fired, Verdict

__all__ = [
    "ALLOWED",
    "Action",
    "CallFacts",
    "Decision",
    "Fired",
    "Fraud",
    "FraudEvents",
    "FraudOff",
    "Prepared",
    "Rule",
    "RuleBook",
    "Verdict",
    "fragment",
]
