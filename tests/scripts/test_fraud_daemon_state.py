"""The fraud prototype measured by scripts/bench_fraud_daemon_state.py evaluates working
rules: each fires at its default threshold, not below it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_796_553_530_000


def _proto() -> ModuleType:
    path = ROOT / "scripts" / "proto" / "fraud_daemon_state.py"
    spec = importlib.util.spec_from_file_location("fraud_daemon_state_proto", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


P = _proto()


def _fired(calls: list[tuple[int, str, str, str, int]]) -> list[int]:
    st = P.AccountState()
    return [P.evaluate(st, *call)[0] for call in calls]


def test_velocity_per_account_fires_on_the_121st_call_of_a_minute() -> None:
    calls = [(T0 + i * 400, f"user:{i % 3}", f"+44207980{i:04d}", "GB", 0) for i in range(121)]
    fired = _fired(calls)
    assert all(not f & 1 for f in fired[:120])
    assert fired[120] & 1


def test_velocity_per_account_forgets_calls_out_of_its_window() -> None:
    calls = [(T0 + i * 600, f"user:{i % 3}", f"+44207980{i:04d}", "GB", 0) for i in range(200)]
    assert not any(f & 1 for f in _fired(calls))  # 100 a minute at most


def test_velocity_per_identity_fires_on_the_61st_call() -> None:
    calls = [(T0 + i * 500, "user:a", f"+44207980{i:04d}", "GB", 0) for i in range(61)]
    fired = _fired(calls)
    assert all(not f & 2 for f in fired[:60])
    assert fired[60] & 2


def test_same_range_fires_on_the_21st_call_to_one_range() -> None:
    calls = [(T0 + i * 10_000, "user:a", f"+442079801{i:03d}", "GB", 0) for i in range(21)]
    fired = _fired(calls)
    assert all(not f & 4 for f in fired[:20])
    assert fired[20] & 4


def test_distinct_numbers_fire_on_the_31st() -> None:
    calls = [(T0 + i * 5_000, "user:a", f"+4420798{i * 1000:05d}", "GB", 0) for i in range(31)]
    fired = _fired(calls)
    assert all(not f & 8 for f in fired[:30])
    assert fired[30] & 8


def test_new_country_fires_on_the_first_call_of_the_day_only() -> None:
    calls = [(T0 + i, "user:a", f"+44207980{i:04d}", "GB", 0) for i in range(3)]
    assert [bool(f & 16) for f in _fired(calls)] == [True, False, False]


def test_concurrent_fires_from_30_live_calls() -> None:
    assert not _fired([(T0, "user:a", "+442079800000", "GB", 29)])[0] & 32
    assert _fired([(T0, "user:a", "+442079800000", "GB", 30)])[0] & 32


def test_the_fact_is_packed_for_the_log() -> None:
    _, fact = P.evaluate(P.AccountState(), T0, "user:a", "+442079800000", "GB", 0)
    assert len(fact) == 22 and fact.endswith(b"GB")
