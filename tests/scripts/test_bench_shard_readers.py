"""scripts/bench_shard_readers.py: a reaper pass and a monitoring sample over G gateways'
last-seen shards, on its own redis-server: one script per gateway, whatever the shard
count (G + 2 and G + 7 commands), and client CPU, Redis CPU and the load printed."""

from __future__ import annotations

import re
import subprocess
import sys

from paths import REPO

BENCH = REPO / "scripts" / "bench_shard_readers.py"


def test_bench_prints_one_command_per_gateway() -> None:
    out = subprocess.run(
        [sys.executable, str(BENCH), "--gateways", "3", "7", "--shards", "32", "--passes", "2"],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    for gateways in (3, 7):
        # the sample's fixed commands: its pipeline (live gateways, the KPI gateways,
        # XLEN of cdr:orphans and of cdr:legs, the shard map), the reserved money, the
        # exporter's backlog and dead letters
        for what, extra in (("reaper pass", 2), ("monitoring sample", 8)):
            line = re.search(
                rf"^G={gateways} .*shards=32 {what}: client CPU ([\d.]+) ms .*, (\d+) commands, "
                r"Redis CPU ([\d.]+) ms \(load ",
                out,
                re.M,
            )
            assert line and float(line[1]) > 0, out
            assert int(line[2]) == gateways + extra, out
