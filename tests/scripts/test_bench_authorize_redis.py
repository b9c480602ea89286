"""scripts/bench_authorize_redis.py: Redis's CPU, commands and memory per authorize, on
its own redis-server; with --echo-class no locator is written (one HSET fewer: the
locator is a field of a sharded hash, sessions/shards.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from conftest import redis7_binary
from paths import REPO

BENCH = REPO / "scripts" / "bench_authorize_redis.py"


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server on PATH")
def test_bench_prints_cpu_commands_and_memory_per_authorize() -> None:
    sets, hsets = {}, {}
    redis7 = redis7_binary() == shutil.which("redis-server")
    for extra in ([], ["--echo-class"]):
        out = subprocess.run(
            [sys.executable, str(BENCH), "--calls", "300", "--accounts", "20", *extra],
            capture_output=True, text=True, timeout=120, check=True,
        ).stdout  # fmt: skip
        head = re.search(r"Redis CPU ([\d.]+) us per authorize .* used_memory (\d+) bytes", out)
        assert head and float(head[1]) > 0 and int(head[2]) > 0, out
        # the fused authorize: a library's FCALL on a Redis 7+, else its EVALSHA
        script = re.search(rf"{'fcall' if redis7 else 'evalsha'}\s+calls\s+([\d.]+)", out)
        assert script and float(script[1]) == 1.0, out
        found = re.search(r"\bset\s+calls\s+([\d.]+)", out)
        assert found, out
        sets[bool(extra)] = float(found[1])
        found = re.search(r"\bhset\s+calls\s+([\d.]+)", out)
        assert found, out
        hsets[bool(extra)] = float(found[1])
    assert sets == {False: 1.0, True: 1.0}  # the record
    assert hsets[False] == hsets[True] + 1  # the locator's field
