"""scripts/bench_fraud.py runs both sides (rules off, rules on) and prints the ratio."""

from __future__ import annotations

import re
import subprocess
import sys

from paths import REPO

from chargingd.core.redisconn import EmbeddedRedis

BENCH = REPO / "scripts" / "bench_fraud.py"


def test_bench_fraud_prints_both_sides_and_the_ratio(redis_server: EmbeddedRedis) -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--calls", "200", "--accounts", "20", "--rounds", "1",
         "--redis-url", redis_server.url],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    figures = r"([\d,]+)/s, p50 [\d.]+ ms, p99 ([\d.]+) ms, (\d+) us CPU each"
    off = re.search("rules off: " + figures, out)
    on = re.search("rules on:  " + figures, out)
    ratio = re.search(r"on/off: throughput ([\d.]+), p99 ([\d.]+), CPU per authorize ([\d.]+)", out)
    assert off and on and ratio, out
    assert float(off[1].replace(",", "")) > 0 and float(on[1].replace(",", "")) > 0
    assert int(off[3]) > 0 and int(on[3]) > 0
    assert float(ratio[1]) > 0 and float(ratio[3]) > 0
