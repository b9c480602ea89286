"""What a call's final usage is charged: the cut tolerance and overrun rule (DESIGN
invariant 2, docs/credit-control.md "Cut tolerance and overrun").

chargingd *allowed* a call some usage: once a cut for credit was sent *and
confirmed*, what its debited + held money pays for (the deadline); otherwise the
longer of that and the Session-Timeout the gateway was last told (Access-Accept, CoA
after a top-up), since a gateway that sends no Interim, or never got the cut, may run
to it (DESIGN: a call overruns only when its gateway ignores both the Session-Timeout
and the cut). Then:

- usage within the allowance: its rated cost, never more than the account can give
  (policy ``cap``; ``capped`` when the money was not there, e.g. promised twice); a
  call that ran exactly to an allowance the money set (below ``max_session_s``) is
  ``credit_cut``, as one a second past it is;
- past it by at most ``cut_tolerance_s`` (the gateway obeyed the cut or its
  Session-Timeout, a second or two late), or past it but within ``cut_tolerance_s``
  of a confirmed credit cut that itself left late (the cutter waited on another
  gateway's Disconnect exchange): what the allowed usage costs, so a prepaid
  account that was cut never ends below zero (``cut_tolerance``);
- further: the gateway overran: the rated cost is committed as debt (policy
  ``debt``), status ``overrun``. Revenue is never silently dropped.

A cut shows in the CDR (status ``credit_cut`` or ``killed``) only once it was
confirmed: the gateway answered it (Disconnect-ACK, JSON-RPC success, the session
already gone: ``cut_ok``), or the call's Stop says it ended at the cut (answer +
usage no later than the last cut attempt + ``cut_tolerance_s``, or never answered;
Kamailio's attempt counts from its ``dlg.end_dlg``: sessions/cutter.py cut_going_out).
A cut nobody answered leaves the call running: its Stop, long after, is closed with
the status the rules give (normal, or overrun past what a credit cut allowed), and
the CDR keeps ``cut_reason`` with ``cut_confirmed = 0``.

Pure: no Redis; the pricer functions are passed in. The per-client credit modes
(sessions/modes.py) change what is held and told, not these rules: the allowance
stays "what chargingd told or paid for".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from chargingd.billing.cdr import CdrStatus
from chargingd.sessions.pricing import Priced
from chargingd.sessions.recordspec import ADOPTED_REFUSED
from chargingd.sessions.store import SessionRecord

CAP = "cap"  # the ledger takes at most what the account can give
DEBT = "debt"  # the ledger takes the whole amount, below the floor if it must

# charge_reason values of live CDRs (why charged_micros differs from cost_micros).
CUT_TOLERANCE = "cut_tolerance"
CAPPED = "capped"
OVERRUN = "overrun"
PROVISIONAL = "provisional"

# CdrStatus's members (the same objects) as str constants: compiled code compares them
# as str (a CdrStatus's == is str's) where CdrStatus.X was a class attribute look-up
# and the enum's Python-level __eq__ per comparison (~2,000 instructions per Stop's
# settle, round 13b)
_NORMAL: Final[str] = CdrStatus.NORMAL
_CREDIT_CUT: Final[str] = CdrStatus.CREDIT_CUT
_UNANSWERED: Final[str] = CdrStatus.UNANSWERED
_OVERRUN: Final[str] = CdrStatus.OVERRUN

PriceFn = Callable[[SessionRecord, int], Priced]
PaidFn = Callable[[SessionRecord, int], int]


class Settlement:
    """How one usage of a session is charged. One per close: a plain class (a
    dataclass's __init__ is interpreted even compiled), frozen (Final)."""

    __slots__ = (
        "allowed_s",
        "cut_confirmed",
        "policy",
        "priced",
        "reason",
        "status",
        "target_micros",
        "usage_s",
    )

    def __init__(
        self,
        usage_s: int,
        priced: Priced,  # the rated cost of usage_s: the CDR's cost
        target_micros: int,  # what the ledger should hold debited for the call, in all
        policy: str,  # CAP | DEBT
        status: str,  # the CDR status the rules give (the ledger may still say overrun)
        reason: str,  # charge_reason ("" when charged = rated)
        allowed_s: int,
        cut_confirmed: bool = False,  # a cut was sent and is confirmed (see the docstring)
    ) -> None:
        self.usage_s: Final = usage_s
        self.priced: Final = priced
        self.target_micros: Final = target_micros
        self.policy: Final = policy
        self.status: Final = status
        self.reason: Final = reason
        self.allowed_s: Final = allowed_s
        self.cut_confirmed: Final = cut_confirmed


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

    def allowed_s(self, rec: SessionRecord, cut_confirmed: bool) -> int:
        """The usage chargingd allowed this call (see the module docstring)."""
        if rec.cut_reason == _CREDIT_CUT and cut_confirmed:
            return rec.paid_usage_s
        return max(rec.paid_usage_s, self.told_s(rec))

    def rated(self, rec: SessionRecord, usage_s: int) -> Priced:
        return self.price(rec, usage_s) if usage_s > 0 else Priced(0, 0, rec.destination)

    def settle(self, rec: SessionRecord, usage_s: int, status: str) -> Settlement:
        """Charge ``usage_s`` of ``rec`` closed with ``status`` (normal for a Stop)."""
        priced = self.rated(rec, usage_s)
        cost = priced.cost_micros
        confirmed = self.cut_confirmed(rec, usage_s, status)
        final = _status(status, rec, usage_s, confirmed)
        if rec.adopted == ADOPTED_REFUSED:  # refused here, connected anyway: allowed nothing
            return Settlement(usage_s, priced, cost, DEBT, _OVERRUN, OVERRUN, 0, confirmed)
        if rec.adopted:  # no authorize here, nothing allowed or refused: the call happened
            return Settlement(usage_s, priced, cost, DEBT, final, "", 0, confirmed)
        allowed = self.allowed_s(rec, confirmed)
        if usage_s < allowed:
            return Settlement(usage_s, priced, cost, CAP, final, "", allowed, confirmed)
        # From the allowance to the tolerance past it: the call ran to its Session-Timeout
        # (or the cut), which the money set when it is below max_session_s. The gateway's
        # timer rounding decides between "at" and "a second past" it: one status for both.
        if final == _NORMAL and allowed < self.max_session_s:
            final = _CREDIT_CUT
        if usage_s == allowed:
            return Settlement(usage_s, priced, cost, CAP, final, "", allowed, confirmed)
        if usage_s <= allowed + self.tolerance_s or self.ended_at_late_cut(rec, usage_s, confirmed):
            paid = min(cost, self.rated(rec, allowed).cost_micros)
            return Settlement(usage_s, priced, paid, CAP, final, CUT_TOLERANCE, allowed, confirmed)
        overrun = _OVERRUN
        return Settlement(usage_s, priced, cost, DEBT, overrun, OVERRUN, allowed, confirmed)

    def ended_at_late_cut(self, rec: SessionRecord, usage_s: int, confirmed: bool) -> bool:
        """A confirmed credit cut that left after the paid second (the cutter was late:
        another gateway's Disconnect exchange, a busy daemon) and a Stop within the cut
        tolerance of it, and of the Session-Timeout the gateway was told: the gateway
        obeyed both, so it pays what was paid, never debt. The tolerance counts from
        the cut, not from the paid second. One that ran past its Session-Timeout
        ignored it: an overrun, however late the cut."""
        if rec.cut_reason != _CREDIT_CUT or not confirmed or not rec.answer_ms or not rec.cut_ms:
            return False
        limit_s = min((rec.cut_ms - rec.answer_ms) // 1000, self.told_s(rec))
        return usage_s <= limit_s + self.tolerance_s

    def cut_confirmed(self, rec: SessionRecord, usage_s: int, status: str) -> bool:
        """A cut was sent and the gateway confirmed it, or this Stop ended the call at
        it (see the module docstring); False when no cut was sent."""
        if not rec.cut_reason:
            return False
        if rec.cut_ok:
            return True
        if status != _NORMAL:
            return False  # reaped, gateway restart: nobody said the call ended at the cut
        if not rec.answer_ms or not rec.cut_ms:
            return True  # never answered: nothing ran on after the cut
        return rec.answer_ms + usage_s * 1000 <= rec.cut_ms + (self.tolerance_s + 1) * 1000


def _status(status: str, rec: SessionRecord, usage_s: int, cut_confirmed: bool) -> str:
    if status == _NORMAL and cut_confirmed:
        return rec.cut_reason
    if status == _NORMAL and usage_s == 0:
        return _UNANSWERED
    return status
