"""Settler with CdrStatus's members as str constants (round 13b) settles as with
CdrStatus.X: the same Settlement, down to the status object (a CdrStatus member where
it was one: its repr is the CDR's), on a grid of cuts, answers, usages, allowances and
close statuses against the rules written with the enum (the code before)."""

from __future__ import annotations

import itertools

from chargingd.billing.cdr import CdrStatus
from chargingd.sessions.pricing import Priced
from chargingd.sessions.record import SessionRecord
from chargingd.sessions.settle import CAP, CUT_TOLERANCE, DEBT, OVERRUN, Settler

TOLERANCE_S, MAX_S = 5, 7200


def _price(rec: SessionRecord, usage_s: int) -> Priced:
    return Priced(usage_s * 1000, usage_s, rec.destination)


def _paid_s(rec: SessionRecord, amount_micros: int) -> int:
    return amount_micros // 1000


def _old_confirmed(rec: SessionRecord, usage_s: int, status: str) -> bool:
    if not rec.cut_reason:
        return False
    if rec.cut_ok:
        return True
    if status != CdrStatus.NORMAL:
        return False
    if not rec.answer_ms or not rec.cut_ms:
        return True
    return rec.answer_ms + usage_s * 1000 <= rec.cut_ms + (TOLERANCE_S + 1) * 1000


def _old(rec: SessionRecord, usage_s: int, status: str) -> tuple[object, ...]:
    """Settler.settle as written with CdrStatus.X (status, target, policy, reason,
    allowed, confirmed)."""
    confirmed = _old_confirmed(rec, usage_s, status)
    final: str = status
    if status == CdrStatus.NORMAL and confirmed:
        final = rec.cut_reason
    elif status == CdrStatus.NORMAL and usage_s == 0:
        final = CdrStatus.UNANSWERED
    cost = usage_s * 1000 if usage_s > 0 else 0
    if rec.adopted:
        return (final, cost, DEBT, "", 0, confirmed)
    told = min(_paid_s(rec, rec.credit_micros), MAX_S) if rec.credit_micros > 0 else 0
    if rec.cut_reason == CdrStatus.CREDIT_CUT and confirmed:
        allowed = rec.paid_usage_s
    else:
        allowed = max(rec.paid_usage_s, told)
    if usage_s < allowed:
        return (final, cost, CAP, "", allowed, confirmed)
    # a Stop within the tolerance of a confirmed credit cut that left late: what was paid
    late_cut = (
        rec.cut_reason == CdrStatus.CREDIT_CUT
        and confirmed
        and bool(rec.answer_ms and rec.cut_ms)
        and usage_s <= min((rec.cut_ms - rec.answer_ms) // 1000, told) + TOLERANCE_S
    )
    if usage_s <= allowed + TOLERANCE_S or late_cut:
        paid = min(cost, allowed * 1000 if allowed > 0 else 0)
        if final == CdrStatus.NORMAL and allowed < MAX_S:
            final = CdrStatus.CREDIT_CUT  # at the allowance, or a second past it
        if usage_s == allowed:
            return (final, cost, CAP, "", allowed, confirmed)
        return (final, paid, CAP, CUT_TOLERANCE, allowed, confirmed)
    return (CdrStatus.OVERRUN, cost, DEBT, OVERRUN, allowed, confirmed)


def test_settle_is_the_enum_rules() -> None:
    settler = Settler(price=_price, paid_s=_paid_s, tolerance_s=TOLERANCE_S, max_session_s=MAX_S)
    base = SessionRecord("s1", "acc1", "u", "+1", "+2", "D", "p", "EUR", "gw", "c", 1000)
    grid = itertools.product(
        ["", CdrStatus.CREDIT_CUT, "killed"],  # cut_reason (as the record stores it: text)
        [0, 1],  # cut_ok
        [0, 3000],  # answer_ms
        [0, 40_000],  # cut_ms
        [0, 1, 30, 34, 36, 40, 60, 9000],  # usage_s
        [CdrStatus.NORMAL, CdrStatus.STALE, CdrStatus.GATEWAY_RESTART, "normal"],
        [0, 1],  # adopted
        [0, 30],  # paid_usage_s
        [0, 40_000],  # credit_micros
    )
    checked = 0
    for cut, ok, answer, cut_ms, usage, status, adopted, paid, credit in grid:
        rec = base.replace(
            cut_reason=str(cut), cut_ok=ok, answer_ms=answer, cut_ms=cut_ms, adopted=adopted,
            paid_usage_s=paid, credit_micros=credit,
        )  # fmt: skip
        got = settler.settle(rec, usage, status)
        want = _old(rec, usage, status)
        assert (
            got.status, got.target_micros, got.policy, got.reason, got.allowed_s,
            got.cut_confirmed,
        ) == want  # fmt: skip
        assert type(got.status) is type(want[0]) and repr(got.status) == repr(want[0])
        assert got.usage_s == usage and got.priced.cost_micros == (usage * 1000 if usage else 0)
        checked += 1
    assert checked == 3 * 2 * 2 * 2 * 8 * 4 * 2 * 2 * 2
