"""What a call's final usage is charged: the cut tolerance and overrun rule (DESIGN
invariant 2, docs/credit-control.md "Cut tolerance and overrun").

chargingd *allowed* a call some usage: once a cut for credit was sent, what its
debited + held money pays for (the deadline); otherwise the longer of that and the
Session-Timeout the gateway was last told (Access-Accept, CoA after a top-up), since
a gateway that sends no Interim may run to it. Then:

- usage within the allowance: its rated cost, never more than the account can give
  (policy ``cap``; ``capped`` when the money was not there, e.g. promised twice);
- past it by at most ``cut_tolerance_s`` (the gateway obeyed the cut or its
  Session-Timeout, a second or two late): what the allowed usage costs, so a prepaid
  account that was cut never ends below zero (``cut_tolerance``);
- further: the gateway overran: the rated cost is committed as debt (policy
  ``debt``), status ``overrun``. Revenue is never silently dropped.

Pure: no Redis; the pricer functions are passed in. A later per-client credit mode
(money held behind the whole Session-Timeout) changes what is held and told, not
these rules: the allowance stays "what chargingd told or paid for".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chargingd.billing.cdr import CdrStatus
from chargingd.sessions.pricing import Priced
from chargingd.sessions.store import SessionRecord

CAP = "cap"  # the ledger takes at most what the account can give
DEBT = "debt"  # the ledger takes the whole amount, below the floor if it must

# charge_reason values of live CDRs (why charged_micros differs from cost_micros).
CUT_TOLERANCE = "cut_tolerance"
CAPPED = "capped"
OVERRUN = "overrun"
PROVISIONAL = "provisional"

PriceFn = Callable[[SessionRecord, int], Priced]
PaidFn = Callable[[SessionRecord, int], int]


@dataclass(frozen=True)
class Settlement:
    """How one usage of a session is charged."""

    usage_s: int
    priced: Priced  # the rated cost of usage_s: the CDR's cost
    target_micros: int  # what the ledger should hold debited for the call, in all
    policy: str  # CAP | DEBT
    status: str  # the CDR status the rules give (the ledger may still say overrun)
    reason: str  # charge_reason ("" when charged = rated)
    allowed_s: int


class Settler:
    """Applies the rules above to a session record."""

    def __init__(
        self, *, price: PriceFn, paid_s: PaidFn, tolerance_s: int, max_session_s: int
    ) -> None:
        self.price = price
        self.paid_s = paid_s
        self.tolerance_s = tolerance_s
        self.max_session_s = max_session_s

    def told_s(self, rec: SessionRecord) -> int:
        """The Session-Timeout the gateway was last told (0: not known)."""
        if rec.credit_micros <= 0:
            return 0
        return min(self.paid_s(rec, rec.credit_micros), self.max_session_s)

    def allowed_s(self, rec: SessionRecord) -> int:
        """The usage chargingd allowed this call (see the module docstring)."""
        if rec.cut_reason == CdrStatus.CREDIT_CUT:
            return rec.paid_usage_s
        return max(rec.paid_usage_s, self.told_s(rec))

    def rated(self, rec: SessionRecord, usage_s: int) -> Priced:
        return self.price(rec, usage_s) if usage_s > 0 else Priced(0, 0, rec.destination)

    def settle(self, rec: SessionRecord, usage_s: int, status: str) -> Settlement:
        """Charge ``usage_s`` of ``rec`` closed with ``status`` (normal for a Stop)."""
        priced = self.rated(rec, usage_s)
        cost = priced.cost_micros
        if rec.adopted:  # no authorize here, nothing allowed or refused: the call happened
            return Settlement(usage_s, priced, cost, DEBT, _status(status, rec, usage_s), "", 0)
        allowed = self.allowed_s(rec)
        if usage_s <= allowed:
            final = _status(status, rec, usage_s)
            return Settlement(usage_s, priced, cost, CAP, final, "", allowed)
        if usage_s <= allowed + self.tolerance_s:
            paid = min(cost, self.rated(rec, allowed).cost_micros)
            final = _status(status, rec, usage_s)
            if final == CdrStatus.NORMAL and allowed < self.max_session_s:
                final = CdrStatus.CREDIT_CUT  # its Session-Timeout was the money running out
            return Settlement(usage_s, priced, paid, CAP, final, CUT_TOLERANCE, allowed)
        return Settlement(usage_s, priced, cost, DEBT, CdrStatus.OVERRUN, OVERRUN, allowed)


def _status(status: str, rec: SessionRecord, usage_s: int) -> str:
    if status == CdrStatus.NORMAL and rec.cut_reason in (CdrStatus.CREDIT_CUT, CdrStatus.KILLED):
        return rec.cut_reason
    if status == CdrStatus.NORMAL and usage_s == 0:
        return CdrStatus.UNANSWERED
    return status
