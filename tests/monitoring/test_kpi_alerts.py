"""KPI alert rules on a real Redis: raised into the shared alert stream while a
threshold is breached, one incident per rule and group, resolved once it is not."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from chargingd.alerts import Alerts
from chargingd.alerts.store import AlertStore
from chargingd.core.config import ConfigError, config_from_dict
from chargingd.core.config.monitoring import KpiAlertRule
from chargingd.monitoring.kpialerts import KpiAlerts
from chargingd.monitoring.windows import ALL, Increments, KpiStore

T0 = 1_800_000_000_000


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


def rule(**changes: object) -> KpiAlertRule:
    fields: dict[str, object] = {"name": "low-asr", "kpi": "asr", "below": 0.3,
                                 "window_s": 900, "min_attempts": 50}  # fmt: skip
    fields.update(changes)
    return KpiAlertRule(**fields)  # type: ignore[arg-type]


async def calls(store: KpiStore, clock: Clock, gateway: str, attempts: int, answered: int) -> None:
    """``attempts`` calls spread over the last 10 minutes, ``answered`` of them answered."""
    group = await store.group("gateway", gateway)
    inc = Increments()
    for i in range(attempts):
        at_ms = clock.ms - (i % 10) * 60_000
        inc.add(at_ms, [ALL, group], {"attempts": 1, "answered": int(i < answered)})
    await store.write(inc)


def make(redis: aioredis.Redis, clock: Clock, *rules: KpiAlertRule) -> tuple[KpiAlerts, Alerts]:
    alerts = Alerts(
        AlertStore(
            redis,
            clock_ms=clock,
            dedup_window_s=3600,
            retention_s=86400,
            calls_kept=5,
            stream_maxlen=1000,
        )
    )
    store = KpiStore(redis, max_groups=10, clock_ms=clock)
    return KpiAlerts(rules, store, alerts), alerts


async def test_low_asr_over_15_minutes_with_enough_attempts(redis: aioredis.Redis) -> None:
    clock = Clock()
    kpi, alerts = make(redis, clock, rule())
    await calls(kpi.store, clock, "10.0.0.1", attempts=60, answered=12)  # ASR 20 %
    await calls(kpi.store, clock, "10.0.0.2", attempts=60, answered=30)  # ASR 50 %
    await calls(kpi.store, clock, "10.0.0.3", attempts=40, answered=0)  # too few attempts
    assert await kpi.evaluate() == ["kpi:low-asr:gateway:10.0.0.1"]
    assert await kpi.evaluate() == ["kpi:low-asr:gateway:10.0.0.1"]  # still: counted
    (incident,) = await alerts.incidents()
    assert incident.kind == "kpi.asr" and incident.severity == "warning"
    assert incident.key == "kpi:low-asr:gateway:10.0.0.1" and incident.count == 2
    assert incident.details["value"] == 0.2 and incident.details["attempts"] == 60
    assert "asr of gateway 10.0.0.1 is 0.2 (below 0.3)" in incident.summary
    # Answered calls bring it back above 30 %: resolved; a new breach is a new incident.
    await calls(kpi.store, clock, "10.0.0.1", attempts=40, answered=40)  # 52 / 100
    assert await kpi.evaluate() == []
    (resolved,) = await alerts.incidents()
    assert resolved.state != "open"


async def test_an_incident_opened_before_a_restart_is_resolved_after_it(
    redis: aioredis.Redis,
) -> None:
    """The daemon restarts (or another daemon judges the rule) while an incident is open:
    once the route is back within the threshold it is resolved. It stayed open until
    the dedup window (an hour) passed: only the process that raised it resolved it."""
    clock = Clock()
    before, alerts = make(redis, clock, rule())
    await calls(before.store, clock, "10.0.0.1", attempts=60, answered=12)  # ASR 20 %
    assert await before.evaluate() == ["kpi:low-asr:gateway:10.0.0.1"]
    after, _ = make(redis, clock, rule())  # the restarted daemon: a new process
    await calls(after.store, clock, "10.0.0.1", attempts=40, answered=40)  # 52 / 100
    assert await after.evaluate() == []
    (resolved,) = await alerts.incidents()
    assert resolved.state == "resolved"
    assert await after.evaluate() == []  # judged again: no second resolve, nothing new
    assert [f[b"event"] for _, f in await redis.xrange("{alerts}:stream")] == [
        b"opened",
        b"closed",
    ]


async def test_no_answered_call_on_a_gateway_for_10_minutes(redis: aioredis.Redis) -> None:
    clock = Clock()
    silent = rule(name="no-answer", kpi="answered", below=1, window_s=600, min_attempts=1,
                  group="10.0.0.9", severity="critical")  # fmt: skip
    kpi, alerts = make(redis, clock, silent)
    await calls(kpi.store, clock, "10.0.0.9", attempts=5, answered=0)
    assert await kpi.evaluate() == ["kpi:no-answer:gateway:10.0.0.9"]
    (incident,) = await alerts.incidents()
    assert incident.kind == "kpi.answered" and incident.severity == "critical"
    clock.ms += 11 * 60_000  # the attempts leave the 10 minute window: nothing to judge
    assert await kpi.evaluate() == []
    (resolved,) = await alerts.incidents()  # not open until the hour's dedup window ends
    assert resolved.state == "resolved"
    assert resolved.closed == {
        "why": "resolved",
        "by": "kpi",
        "note": "no traffic in the last 600 s",
    }


async def test_a_gateway_that_stops_sending_traffic_ends_its_incident(
    redis: aioredis.Redis,
) -> None:
    """A route with a low ASR stops carrying calls (the switch moved its traffic away):
    the incident ends once its calls leave the window, saying why, instead of staying
    open for the alert's dedup window (an hour); a restarted daemon ends the incidents
    raised before its restart; a route below min_attempts ends with that reason."""
    clock = Clock()
    kpi, alerts = make(redis, clock, rule())
    await calls(kpi.store, clock, "10.0.0.1", attempts=60, answered=12)  # ASR 20 %
    await calls(kpi.store, clock, "10.0.0.2", attempts=60, answered=6)  # ASR 10 %
    await calls(kpi.store, clock, "10.0.0.3", attempts=60, answered=0)  # ASR 0 %
    assert await kpi.evaluate() == [f"kpi:low-asr:gateway:10.0.0.{i}" for i in (1, 2, 3)]
    restarted, _ = make(redis, clock, rule())  # a new process: raised nothing itself
    clock.ms += 16 * 60_000  # the 15 minute window is past every call
    await calls(kpi.store, clock, "10.0.0.2", attempts=10, answered=0)  # 10 < 50 attempts
    refused = Increments()  # 10.0.0.3's customers have no money left: refusals only
    refused.add(clock.ms, [ALL, ("gateway", "10.0.0.3")], {"refused": 7})
    await kpi.store.write(refused)
    assert await restarted.evaluate() == []
    closed = {i.key: (i.state, i.closed.get("note")) for i in await alerts.incidents()}
    assert closed == {
        "kpi:low-asr:gateway:10.0.0.1": ("resolved", "no traffic in the last 900 s"),
        "kpi:low-asr:gateway:10.0.0.2": (
            "resolved",
            "10 attempts in the last 900 s, fewer than the rule's min_attempts (50): "
            "too few to judge",
        ),
        "kpi:low-asr:gateway:10.0.0.3": (
            "resolved",
            "no call attempts in the last 900 s, only 7 refused authorizations",
        ),
    }
    assert await kpi.evaluate() == []  # the first process: already resolved, nothing new
    assert await restarted.evaluate() == []
    events = [f[b"event"] for _, f in await redis.xrange("{alerts}:stream")]
    assert events.count(b"opened") == 3 and events.count(b"closed") == 3
    # The route carries bad traffic again: a new incident, opened by whichever judges.
    await calls(kpi.store, clock, "10.0.0.1", attempts=60, answered=0)
    assert await restarted.evaluate() == ["kpi:low-asr:gateway:10.0.0.1"]
    newest = (await alerts.incidents())[0]
    assert newest.key == "kpi:low-asr:gateway:10.0.0.1" and newest.state == "open"


async def test_a_silent_gateway_alerts_only_where_a_rule_asks(redis: aioredis.Redis) -> None:
    """The gateway stops: its low-ASR incident ends ("no traffic"), and the rule written
    for its silence (a named group, min_attempts 0) opens one and holds it."""
    clock = Clock()
    silent = rule(name="silent", kpi="attempts", below=1, window_s=300, min_attempts=0,
                  group="10.0.0.5", severity="critical")  # fmt: skip
    kpi, alerts = make(redis, clock, rule(), silent)
    await calls(kpi.store, clock, "10.0.0.5", attempts=60, answered=0)
    assert await kpi.evaluate() == ["kpi:low-asr:gateway:10.0.0.5"]
    clock.ms += 16 * 60_000
    assert await kpi.evaluate() == ["kpi:silent:gateway:10.0.0.5"]
    assert await kpi.evaluate() == ["kpi:silent:gateway:10.0.0.5"]
    states = {i.key: (i.state, i.count, i.closed.get("note")) for i in await alerts.incidents()}
    assert states == {
        "kpi:low-asr:gateway:10.0.0.5": ("resolved", 1, "no traffic in the last 900 s"),
        "kpi:silent:gateway:10.0.0.5": ("open", 2, None),
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "x", "kpi": "asr"}, "exactly one of below and above"),
        ({"name": "x", "kpi": "speed", "below": 1}, "kpi must be one of"),
        ({"name": "x", "below": 1, "window_s": 450}, "window_s must be"),
        ({"name": "", "below": 1}, "needs a name"),
        ({"name": "x", "below": 1, "severity": "urgent"}, "severity"),
    ],
)
def test_bad_rules_are_refused(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"monitoring": {"alerts": [raw]}})
