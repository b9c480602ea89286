"""scripts/bench_accounting.py: CPU, EVALSHA and round trips per accounting packet by
phase, on its own redis-server: one script per Start, Interim and Stop (the close with
the Stop noted, its CDR and the closed mark: the call paid in full), every hold
released."""

from __future__ import annotations

import re
import subprocess
import sys

from paths import REPO

BENCH = REPO / "scripts" / "bench_accounting.py"


def test_bench_prints_figures_per_accounting_packet() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--calls", "300", "--inflight", "8"],
        capture_output=True, text=True, timeout=180, check=True,
    ).stdout  # fmt: skip
    scripts = {}
    for phase in ("start", "interim", "stop"):
        line = re.search(rf"^{phase} .*daemon CPU +([\d.]+) us .*EVALSHA ([\d.]+) ", out, re.M)
        assert line and float(line[1]) > 0, out
        scripts[phase] = float(line[2])
    assert scripts == {"start": 1.0, "interim": 1.0, "stop": 1.0}, out
    assert "300 CDRs; acc0 reserved 0 " in out, out
