"""Counters an operator alerts on are exported at 0 before their first event.

Prometheus' rate() and increase() need a sample before the jump: a series that
appears only with its first Redis error, refusal reason or credit cut makes
`increase(chargingd_redis_errors_total[5m]) > 0` miss that first outage (the
Prometheus instrumentation guide: "avoid missing metrics"). A fresh daemon, no
traffic at all: every known label value of these counters is there, at 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from monitoring_harness import http_get, start_daemon
from prometheus_client.parser import text_string_to_metric_families
from radius_e2e_harness import Daemon

from chargingd.billing.cdr import CdrStatus
from chargingd.monitoring.outcomes import OUTCOMES
from chargingd.sessions.ccapi import RefusalCode

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = start_daemon(tmp_path, workers=1)
    try:
        d.wait_ready()
        yield d
    finally:
        d.kill()
        print(f"---- daemon log ----\n{d.log()}")  # shown only when the test fails


def test_alertable_counters_start_at_zero(daemon: Daemon) -> None:
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(http_get(daemon, "/metrics"))
        for s in family.samples
    }

    def at(name: str, **labels: str) -> float | None:
        return samples.get((name, tuple(sorted(labels.items()))))

    for where in ("authorize", "accounting"):
        assert at("chargingd_redis_errors_total", where=where) == 0.0, where
    for reason in RefusalCode:
        assert at("chargingd_refusals_total", reason=reason.value) == 0.0, reason
    for outcome in OUTCOMES:
        assert at("chargingd_calls_total", outcome=outcome) == 0.0, outcome
    for status in CdrStatus:
        assert at("chargingd_calls_ended_total", status=status.value) == 0.0, status
    for result in ("accepted", "refused", "fail_open", "error"):
        labels = {"protocol": "radius", "kind": "authorize", "result": result}
        assert at("chargingd_requests_total", **labels) == 0.0, result
