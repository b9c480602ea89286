"""`chargingd ctl alerts list|resolve` against a real admin server and Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from chargingd.admin.methods import AdminMethods
from chargingd.admin.server import AdminServer
from chargingd.admin.since import since_ms
from chargingd.alerts import Alerts
from chargingd.alerts.store import AlertStore
from chargingd.app.cli import main
from chargingd.core.clock import wall_ms
from chargingd.core.status import StatusRegistry
from chargingd.ledger import Ledger


@pytest.fixture
async def served(redis: aioredis.Redis, tmp_path: Path) -> AsyncIterator[tuple[Alerts, Path]]:
    ledger = Ledger(redis)
    await ledger.load_scripts()
    store = AlertStore(
        redis,
        clock_ms=wall_ms,
        dedup_window_s=3600,
        retention_s=7200,
        calls_kept=5,
        stream_maxlen=1000,
    )
    alerts = Alerts(store)

    async def status() -> dict[str, Any]:
        return {}

    path = tmp_path / "admin.sock"
    server = AdminServer(
        AdminMethods(ledger, status, alerts=alerts),
        path,
        mode=0o660,
        stats=StatusRegistry().component("admin"),
        grace_s=2.0,
    )
    await server.start()
    try:
        yield alerts, path
    finally:
        await server.stop()


async def ctl(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["ctl", "--socket", str(path), *args])
    out, err = capsys.readouterr()
    return code, out, err


async def test_list_filter_and_resolve(
    served: tuple[Alerts, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    alerts, path = served
    for sid in ("sid-1", "sid-2", "sid-3"):
        await alerts.raise_alert(
            "fraud.velocity",
            severity="critical",
            incident="fraud.velocity:acc1",
            summary="too many calls",
            call=sid,
        )
    await alerts.raise_alert("kpi.asr", severity="warning", incident="kpi.asr:gw1")

    code, out, err = await ctl(path, capsys, "--json", "alerts", "list", "--since", "1h")
    assert code == 0, err
    incidents = json.loads(out)["incidents"]
    assert [(i["incident"], i["count"]) for i in incidents] == [
        ("kpi.asr:gw1", 1),
        ("fraud.velocity:acc1", 3),
    ]
    assert incidents[1]["calls"] == ["sid-1", "sid-2", "sid-3"]

    code, out, _ = await ctl(path, capsys, "alerts", "list", "--kind", "fraud.")
    assert code == 0
    assert "fraud.velocity:acc1" in out and "kpi.asr" not in out and "sid-1" in out

    code, out, err = await ctl(
        path, capsys, "--operator", "ops", "alerts", "resolve", "fraud.velocity:acc1",
        "--reason", "checked",
    )  # fmt: skip
    assert code == 0, err
    assert "resolved after 3 occurrences" in out
    (latest,) = await alerts.incidents(kind_prefix="fraud.")
    assert latest.closed == {"why": "resolved", "by": "admin:ops", "note": "checked"}
    code, out, _ = await ctl(path, capsys, "alerts", "list", "--kind", "fraud.")
    assert code == 0 and "resolved by admin:ops: checked" in " ".join(out.split()), out

    code, _, err = await ctl(path, capsys, "alerts", "resolve", "fraud.velocity:acc1")
    assert code == 1 and "no open incident" in err
    code, _, err = await ctl(path, capsys, "alerts", "list", "--since", "yesterday-ish")
    assert code == 2 and "--since" in err


def test_since_forms() -> None:
    now = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    assert since_ms("30m", now) == now - 1_800_000
    assert since_ms("7d", now) == now - 7 * 86_400_000
    assert since_ms("2026-01-01T00:00:00Z", 0) == now
    assert since_ms("2026-01-01T01:00:00+01:00", 0) == now
    assert since_ms("2026-01-01", 0) == now  # no offset: UTC
    assert since_ms(str(now), 0) == now
    with pytest.raises(ValueError, match="--since"):
        since_ms("soon", now)
