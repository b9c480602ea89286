"""scripts/loadgen.py drives a real frontend for a moment and reports what it measured."""

from __future__ import annotations

import asyncio
import re
import sys

import pytest
from paths import REPO
from radius_peer import RecordingCredit

from chargingd.core.config import config_from_dict
from chargingd.radius.server import RadiusFrontend

LOADGEN = REPO / "scripts" / "loadgen.py"


@pytest.mark.parametrize("mode", ["auth", "call"])
async def test_loadgen_reports_rate_and_latency(mode: str) -> None:
    cfg = config_from_dict(
        {
            "radius": {
                "bind": "127.0.0.1",
                "auth_port": 0,
                "acct_port": 0,
                "clients": [{"name": "lg", "address": "127.0.0.1", "secret": "lg-secret"}],
            }
        }
    ).radius
    credit = RecordingCredit()
    frontend = RadiusFrontend(cfg, credit)
    await frontend.start()
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(LOADGEN), "--mode", mode, "--seconds", "0.5", "--pool", "64",
            "--inflight", "4", "--sockets", "2", "--secret", "lg-secret",
            "--auth-port", str(frontend.auth_port), "--acct-port", str(frontend.acct_port),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        await frontend.stop()
    text = out.decode()
    assert proc.returncode == 0, text
    requests = int(re.search(r"requests=(\d+)", text).group(1))  # type: ignore[union-attr]
    assert requests > 0 and "timeouts=0" in text, text
    assert re.search(r"latency_ms p50=[\d.]+ p99=[\d.]+ max=[\d.]+", text), text
    assert frontend.counters.duplicates == 0  # every packet had its own authenticator
    assert frontend.counters.bad_authenticator == 0 and frontend.counters.malformed == 0
    if mode == "call":
        assert frontend.counters.accepted > 0 and frontend.counters.accounted > 0
    # The slots walk the accounts spread out (1,000 users / 4 slots: 250 apart), not in
    # step: no two outstanding requests are the same account's or the same number.
    first = {call.user_name for call in credit.calls[:4]}
    assert first == {"load0", "load250", "load500", "load750"}, first
    assert len({call.called for call in credit.calls[:4]}) == 4
