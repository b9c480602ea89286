"""Fixtures shared by the sessions tests that run every case on both paths: the fused
scripts (sessions/fused.py) and the step-by-step one (Redis Cluster's, and the fallback)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sessions_harness import Clock, MakeSessions, RecordingCutter, make_sessions

from chargingd.ledger import Ledger
from chargingd.sessions.service import Sessions


@pytest.fixture
def cutter() -> RecordingCutter:
    return RecordingCutter()


@pytest.fixture(params=["fused", "stepwise"])
def on_both_paths(
    request: pytest.FixtureRequest,
    redis: aioredis.Redis,
    ledger: Ledger,
    clock: Clock,
    tmp_path: Path,
) -> MakeSessions:
    """make(cutter, **make_sessions options): the Sessions of the test, on the fused
    scripts, then (the test runs again) step by step."""

    def make(cutter: RecordingCutter, **options: Any) -> Sessions:
        made = make_sessions(redis, ledger, clock, tmp_path, cutter, **options)
        if request.param == "stepwise":
            made.step_by_step()
        return made

    return make
