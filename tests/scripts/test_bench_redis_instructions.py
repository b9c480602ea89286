"""scripts/bench_redis_instructions.py: Redis's instructions per credit-control step
under callgrind, on a private redis-server 7: each phase printed with the scripts it
sent (the fused steps by FCALL)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from functools import cache

import pytest
from conftest import redis7_binary
from paths import REPO

BENCH = REPO / "scripts" / "bench_redis_instructions.py"


@cache  # one callgrind run per set of arguments (each takes seconds), shared by the tests
def _run(*extra: str) -> dict[str, tuple[int, float]]:
    """phase -> (instructions per packet, FCALLs per packet)."""
    binary = redis7_binary()
    if binary is None or shutil.which("valgrind") is None:
        pytest.skip("needs valgrind and a redis-server 7+")
    out = subprocess.run(
        [sys.executable, str(BENCH), "--calls", "40", "--accounts", "10", "--redis-server", binary,
         *extra],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    found = {}
    phases = (
        ("authorize",) if "--authorize-only" in extra else ("authorize", "start", "interim", "stop")
    )
    for phase in phases:
        line = re.search(rf"^{phase} +([\d,]+) instructions per packet +FCALL ([\d.]+) ", out, re.M)
        assert line and int(line[1].replace(",", "")) > 10_000, out
        found[phase] = (int(line[1].replace(",", "")), float(line[2]))
    return found


@pytest.mark.slow
def test_bench_prints_instructions_per_step() -> None:
    fcalls = {phase: sent for phase, (_, sent) in _run().items()}
    assert fcalls == {"authorize": 1.0, "start": 0.0, "interim": 1.0, "stop": 1.0}, fcalls


@pytest.mark.slow
def test_bench_with_the_fraud_rules_counts_their_authorize() -> None:
    """--fraud: the authorize is one FCALL, which costs Redis more than without the
    rules: the account's rule value compared and written (the rules decided in the
    daemon, fraud/local.py; each account's first call too since its value is read first:
    docs/fraud-cost.md "Twentieth round"; ~19-22k more here, ~31k with 2,000 calls)."""
    # One call at a time: two authorizes of one account in flight together may both
    # read its rule value, and the second's compare-and-set then finds it moved and runs
    # again (a second FCALL, as designed); how often depends on the box's scheduling
    # (1.4 FCALLs per authorize once, under load).
    plain, rules = _run()["authorize"][0], _run("--fraud", "--inflight", "1")
    assert rules["authorize"][1] == 1.0, rules
    assert rules["authorize"][0] > plain + 10_000, (plain, rules)


def test_sized_session_ids_are_unique_and_of_their_length() -> None:
    """bench_common.sized_sid (the benches' --sid-bytes): every call's id, the warm-up's
    negative numbers too, is its own and of the length asked (0: the bench's own)."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from bench_common import sized_sid
    finally:
        sys.path.remove(str(REPO / "scripts"))
    calls = range(-1000, 70_000)
    for size in (8, 16, 36):
        ids = [sized_sid(i, size, "") for i in calls]
        assert {len(s) for s in ids} == {size}
        assert len(set(ids)) == len(ids), size
    assert [sized_sid(i, 0, f"c{i}") for i in (-1, 7)] == ["c-1", "c7"]
