"""Outcome classes (E.411 / E.425) and the KPI figures computed from window sums."""

from __future__ import annotations

import pytest
from cdr_factory import make_cdr

from chargingd.monitoring.feeder import cdr_metrics
from chargingd.monitoring.kpi import figures
from chargingd.monitoring.outcomes import conversation_ms, outcome, quality


def unanswered(cause: int = 0, sip: int = 0) -> dict[str, object]:
    extra = {"sip_code": str(sip)} if sip else {}
    return {"answer_ms": 0, "duration_s": 0, "disconnect_cause": cause, "extra": extra}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, "answered"),
        (unanswered(17), "busy"),
        (unanswered(18), "no_answer"),
        (unanswered(19), "no_answer"),
        (unanswered(20), "rejected"),
        (unanswered(21), "rejected"),
        (unanswered(16), "abandoned"),
        (unanswered(34), "failed"),
        (unanswered(1), "failed"),  # unallocated number: the formula counts it failed
        (unanswered(0), "unknown"),
        (unanswered(sip=486), "busy"),
        (unanswered(sip=600), "busy"),
        (unanswered(sip=408), "no_answer"),
        (unanswered(sip=480), "rejected"),
        (unanswered(sip=603), "rejected"),
        (unanswered(sip=487), "abandoned"),
        (unanswered(sip=503), "failed"),
        (unanswered(sip=404), "failed"),
        # The SIP code wins over the Q.850 cause when both are there.
        (unanswered(17, sip=503), "failed"),
    ],
)
def test_outcome_classes(changes: dict[str, object], expected: str) -> None:
    assert outcome(make_cdr(1, **changes)) == expected


def test_an_answered_call_adds_talk_and_conversation_time() -> None:
    cdr = make_cdr(0, answer_ms=10_000, end_ms=70_500, duration_s=60)
    assert conversation_ms(cdr) == 60_500
    assert cdr_metrics(cdr) == {"attempts": 1, "answered": 1, "talk_s": 60, "conv_ms": 60_500}
    assert cdr_metrics(make_cdr(0, **unanswered(17))) == {"attempts": 1, "busy": 1}


def test_quality_extras_out_of_range_or_garbage_are_ignored() -> None:
    extra = {"pdd_ms": "1500", "mos": "4.2", "jitter_ms": "nan", "loss_pct": "250"}
    assert dict(quality(make_cdr(0, extra=extra))) == {"pdd_ms": 1500.0, "mos": 4.2}
    metrics = cdr_metrics(make_cdr(0, extra={"mos": "3.95", "jitter_ms": "12"}))
    assert metrics["mos_n"] == 1 and metrics["mos_sum"] == 3950
    assert metrics["jitter_ms_sum"] == 12_000


def test_figures_exact_and_min_samples() -> None:
    sums = {
        "attempts": 11, "answered": 4, "busy": 2, "no_answer": 2, "abandoned": 1,
        "failed": 1, "unknown": 1, "talk_s": 300, "conv_ms": 300_000, "refused": 3,
        "pdd_ms_n": 2, "pdd_ms_sum": 4_000_000, "mos_n": 2, "mos_sum": 8000,
    }  # fmt: skip
    f = figures(sums, min_samples=2)
    assert f["asr"] == round(4 / 11, 4)
    assert f["ner"] == 0.9  # (4 + 2 + 2 + 1) / (11 - 1 unknown)
    assert f["acd_s"] == 75.0 and f["aloc_s"] == 75.0
    assert f["pdd_ms"] == 2000.0 and f["mos"] == 4.0
    assert f["jitter_ms"] is None and f["jitter_ms_samples"] == 0
    assert f["refused"] == 3 and f["attempts"] == 11
    few = figures(sums, min_samples=12)
    assert few["asr"] is None and few["ner"] is None and few["attempts"] == 11
    assert figures(sums, min_samples=5)["acd_s"] is None  # 4 answered < 5
