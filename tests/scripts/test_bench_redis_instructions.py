"""scripts/bench_redis_instructions.py: Redis's instructions per credit-control step
under callgrind, on a private redis-server 7: each phase printed with the scripts it
sent (the fused steps by FCALL)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from conftest import redis7_binary
from paths import REPO

BENCH = REPO / "scripts" / "bench_redis_instructions.py"


@pytest.mark.slow
def test_bench_prints_instructions_per_step() -> None:
    binary = redis7_binary()
    if binary is None or shutil.which("valgrind") is None:
        pytest.skip("needs valgrind and a redis-server 7+")
    out = subprocess.run(
        [sys.executable, str(BENCH), "--calls", "40", "--accounts", "10", "--redis-server", binary],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout  # fmt: skip
    fcalls = {}
    for phase in ("authorize", "start", "interim", "stop"):
        line = re.search(rf"^{phase} +([\d,]+) instructions per packet +FCALL ([\d.]+) ", out, re.M)
        assert line and int(line[1].replace(",", "")) > 10_000, out
        fcalls[phase] = float(line[2])
    assert fcalls == {"authorize": 1.0, "start": 0.0, "interim": 1.0, "stop": 1.0}, out
