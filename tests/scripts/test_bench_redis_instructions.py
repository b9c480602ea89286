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
    for phase in ("authorize", "start", "interim", "stop"):
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
    docs/fraud.md "Twentieth round"; ~19-22k more here, ~31k with 2,000 calls)."""
    plain, rules = _run()["authorize"][0], _run("--fraud")
    assert rules["authorize"][1] == 1.0, rules
    assert rules["authorize"][0] > plain + 10_000, (plain, rules)
