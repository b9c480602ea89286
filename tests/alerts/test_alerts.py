"""Alerts on a real Redis: one incident per key, counted, its first calls kept;
concurrent raisers (two processes' worth) open it once; quiet windows and resolve."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis
from fakes import Clock

from chargingd.alerts import AlertError, Alerts, Severity
from chargingd.alerts.store import STREAM, AlertStore


def make_alerts(
    redis: aioredis.Redis, clock: Clock, *, window_s: int = 60, calls_kept: int = 3
) -> Alerts:
    store = AlertStore(
        redis,
        clock_ms=clock,
        dedup_window_s=window_s,
        retention_s=3600,
        calls_kept=calls_kept,
        stream_maxlen=1000,
    )
    return Alerts(store, max_pending=10)


async def raise_one(alerts: Alerts, call: str = "", key: str = "fraud.velocity:acc1") -> object:
    return await alerts.raise_alert(
        "fraud.velocity",
        severity=Severity.CRITICAL,
        incident=key,
        summary="61 calls in 60 s",
        details={"account": "acc1", "count": 61},
        call=call,
    )


async def test_first_raise_opens_later_ones_count_and_keep_the_first_calls(
    redis: aioredis.Redis, clock: Clock
) -> None:
    alerts = make_alerts(redis, clock)
    first = await raise_one(alerts, "sid-1")
    assert first.opened and first.count == 1  # type: ignore[attr-defined]
    for i in range(2, 6):
        clock.advance(1)
        again = await raise_one(alerts, f"sid-{i}")
        assert not again.opened and again.count == i  # type: ignore[attr-defined]
        assert again.incident_id == first.incident_id  # type: ignore[attr-defined]
    (incident,) = await alerts.incidents()
    assert incident.count == 5
    assert incident.calls == ("sid-1", "sid-2", "sid-3")  # calls_kept = 3
    assert incident.state == "open"
    assert incident.details == {"account": "acc1", "count": 61}
    assert incident.last_ms - incident.first_ms == 4000
    assert await redis.xlen(STREAM) == 1  # one stream entry for five raises
    assert alerts.opened == 1 and alerts.counted == 4


async def test_concurrent_raisers_in_two_processes_open_one_incident(
    redis: aioredis.Redis, redis_server: object, clock: Clock
) -> None:
    other_client = aioredis.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
    try:
        one, two = make_alerts(redis, clock), make_alerts(other_client, clock)
        raises = [raise_one(a, f"sid-{i}") for i in range(40) for a in (one, two)]
        results = await asyncio.gather(*raises)
    finally:
        await other_client.aclose()
    assert sum(r.opened for r in results) == 1  # type: ignore[attr-defined]
    assert sorted(r.count for r in results) == list(range(1, 81))  # type: ignore[attr-defined]
    (incident,) = await one.incidents()
    assert incident.count == 80
    assert one.opened + two.opened == 1


async def test_a_quiet_window_closes_the_incident_and_the_next_raise_opens_another(
    redis: aioredis.Redis, clock: Clock
) -> None:
    alerts = make_alerts(redis, clock, window_s=60)
    await raise_one(alerts, "a")
    clock.advance(59)
    assert not (await raise_one(alerts, "b")).opened  # type: ignore[attr-defined]
    clock.advance(30)  # 30 s after the last raise: still the same incident
    assert (await alerts.incidents())[0].state == "open"
    clock.advance(30)  # 60 s quiet
    assert (await alerts.incidents())[0].state == "quiet"
    again = await raise_one(alerts, "c")
    assert again.opened  # type: ignore[attr-defined]
    newer, older = await alerts.incidents()
    assert (newer.count, newer.calls, newer.state) == (1, ("c",), "open")
    assert (older.count, older.calls, older.state) == (2, ("a", "b"), "quiet")
    assert older.closed == {"why": "quiet"}


async def test_resolve_closes_the_incident_and_says_who(
    redis: aioredis.Redis, clock: Clock
) -> None:
    alerts = make_alerts(redis, clock)
    await raise_one(alerts, "a")
    await raise_one(alerts, "b")
    resolved = await alerts.resolve("fraud.velocity:acc1", who="admin:ops", why="customer called")
    assert resolved is not None and resolved.state == "resolved" and resolved.count == 2
    assert await alerts.resolve("fraud.velocity:acc1", who="admin:ops") is None  # nothing open
    assert (await raise_one(alerts, "c")).opened  # type: ignore[attr-defined]
    newer, older = await alerts.incidents()
    assert newer.state == "open"
    assert older.state == "resolved"
    assert older.closed == {"why": "resolved", "by": "admin:ops", "note": "customer called"}
    assert older.count == 2


async def test_listing_filters_by_kind_and_since(redis: aioredis.Redis, clock: Clock) -> None:
    alerts = make_alerts(redis, clock)
    await raise_one(alerts, key="fraud.velocity:acc1")
    clock.advance(10)
    since = clock()
    await alerts.raise_alert("kpi.asr", severity="warning", incident="kpi.asr:gw1")
    await raise_one(alerts, key="fraud.velocity:acc2")
    assert [i.key for i in await alerts.incidents(kind_prefix="fraud.")] == [
        "fraud.velocity:acc2",
        "fraud.velocity:acc1",
    ]
    assert [i.key for i in await alerts.incidents(since_ms=since)] == [
        "fraud.velocity:acc2",
        "kpi.asr:gw1",
    ]
    assert [i.key for i in await alerts.incidents(limit=1)] == ["fraud.velocity:acc2"]


async def test_listing_since_shows_incidents_counted_or_resolved_since(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """`ctl fraud alerts --since 02:00` (and `ctl alerts list`, the dashboard): an attack
    that began at 01:50 and went on after 02:00 is listed, as is one resolved after 02:00
    and an older incident of a key that went quiet after it; one left alone since is not.
    Before, only the incidents opened since were listed."""
    alerts = make_alerts(redis, clock, window_s=600)
    await raise_one(alerts, key="fraud.velocity:going-on")
    await raise_one(alerts, key="fraud.velocity:resolved")
    await raise_one(alerts, key="fraud.velocity:untouched")
    await raise_one(alerts, key="fraud.velocity:reopened")
    await alerts.raise_alert("kpi.asr", severity="warning", incident="kpi.asr:gw1")
    clock.advance(60)
    since = clock()
    clock.advance(60)
    await raise_one(alerts, "sid-late", key="fraud.velocity:going-on")
    await raise_one(alerts, key="fraud.velocity:reopened")  # its last raise: since
    await alerts.raise_alert("kpi.asr", severity="warning", incident="kpi.asr:gw1")
    await alerts.resolve("fraud.velocity:resolved", who="admin:ops", why="fixed")
    clock.advance(700)  # past the window: the next raise of reopened opens a new one
    await raise_one(alerts, key="fraud.velocity:reopened")
    listed = await alerts.incidents(since_ms=since, kind_prefix="fraud.")
    shown = [(i.key, i.state, i.count) for i in listed]
    assert shown == [
        ("fraud.velocity:reopened", "open", 1),  # opened since
        # opened before (newest opened first): counted, resolved, counted since
        ("fraud.velocity:reopened", "quiet", 2),
        ("fraud.velocity:resolved", "resolved", 1),
        ("fraud.velocity:going-on", "quiet", 2),
    ], shown
    assert "fraud.velocity:untouched" not in {i.key for i in listed}
    assert [i.key for i in await alerts.incidents(since_ms=since, kind_prefix="kpi.")] == [
        "kpi.asr:gw1"
    ]
    assert len(await alerts.incidents(since_ms=since, kind_prefix="fraud.", limit=2)) == 2
    # before ``since`` nothing changes: every incident, newest opened first
    assert len(await alerts.incidents(kind_prefix="fraud.")) == 5


@pytest.mark.parametrize(
    ("kind", "severity", "incident", "details", "call"),
    [
        ("Fraud", "critical", "k", {}, ""),  # kind: dotted lower case
        ("fraud.x", "panic", "k", {}, ""),  # unknown severity
        ("fraud.x", "info", "", {}, ""),  # empty key
        ("fraud.x", "info", "has space", {}, ""),
        ("fraud.x", "info", "k" * 201, {}, ""),
        ("fraud.x", "info", "k", {"x": object()}, ""),  # not JSON
        ("fraud.x", "info", "k", {"x": "y" * 9000}, ""),  # too large
        ("fraud.x", "info", "k", {}, "a\nb"),  # call not printable
    ],
)
async def test_bad_arguments_are_refused_and_record_nothing(
    redis: aioredis.Redis,
    clock: Clock,
    kind: str,
    severity: str,
    incident: str,
    details: dict[str, object],
    call: str,
) -> None:
    alerts = make_alerts(redis, clock)
    with pytest.raises(AlertError):
        await alerts.raise_alert(
            kind, severity=severity, incident=incident, details=details, call=call
        )
    with pytest.raises(AlertError):
        alerts.raise_soon(kind, severity=severity, incident=incident, details=details, call=call)
    assert await redis.exists(STREAM) == 0


async def test_one_log_line_per_incident_at_its_severity(
    redis: aioredis.Redis, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    alerts = make_alerts(redis, clock)
    with caplog.at_level(logging.DEBUG, logger="chargingd.alerts"):
        for i in range(5):
            await raise_one(alerts, f"sid-{i}")
    lines = [r for r in caplog.records if r.name == "chargingd.alerts"]
    assert len(lines) == 1
    assert lines[0].levelno == logging.ERROR  # critical
    assert "fraud.velocity:acc1" in lines[0].getMessage()
    assert "61 calls in 60 s" in lines[0].getMessage()


async def test_raise_soon_returns_at_once_and_drops_beyond_its_bound(
    redis: aioredis.Redis, clock: Clock
) -> None:
    alerts = make_alerts(redis, clock)  # max_pending = 10
    accepted = [
        alerts.raise_soon("fraud.burst", severity="warning", incident=f"k{i}") for i in range(15)
    ]
    assert accepted == [True] * 10 + [False] * 5
    assert alerts.dropped == 5
    await alerts.settle()
    assert len(await alerts.incidents()) == 10


async def test_raise_soon_survives_redis_going_away(redis_server: object, clock: Clock) -> None:
    client = aioredis.Redis.from_url(redis_server.url)  # type: ignore[attr-defined]
    alerts = make_alerts(client, clock)
    await client.aclose()
    dead = aioredis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    alerts.store.redis = dead
    alerts.store._raise = dead.register_script(alerts.store._raise.script)
    assert alerts.raise_soon("fraud.burst", severity="warning", incident="k")
    await alerts.settle()
    assert alerts.failed == 1
    await dead.aclose()
