"""KPI windows and the CDR feeder on a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses

import redis.asyncio as aioredis
from cdr_factory import make_cdr

from chargingd.billing.cdr import CDR, CDR_STREAM
from chargingd.monitoring.feeder import CHUNK, KpiFeeder, cdr_metrics
from chargingd.monitoring.windows import ALL, BY_NAME, Increments, KpiStore

T0 = 1_800_000_000_000  # a bucket boundary of every resolution (ms)


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


async def test_windows_slide_and_expire(redis: aioredis.Redis) -> None:
    clock = Clock(T0)
    store = KpiStore(redis, max_groups=10, clock_ms=clock)
    gw = await store.group("gateway", "10.0.0.1")
    inc = Increments()
    inc.add(T0, [ALL, gw], {"attempts": 2, "answered": 1})
    inc.add(T0 + 250_000, [ALL, gw], {"attempts": 1})
    await store.write(inc)
    clock.ms = T0 + 250_000
    five = await store.read(BY_NAME["5m"])
    assert five[ALL] == {"attempts": 3, "answered": 1}
    assert five[gw] == {"attempts": 3, "answered": 1}
    clock.ms = T0 + 300_000  # the first bucket has left the 5 min window
    assert (await store.read(BY_NAME["5m"]))[ALL] == {"attempts": 1}
    assert (await store.read(BY_NAME["1h"]))[ALL] == {"attempts": 3, "answered": 1}
    ttl = await redis.ttl(BY_NAME["5m"].key(BY_NAME["5m"].index(T0)))
    assert 300 < ttl <= 320  # expires by itself one bucket after it leaves


async def test_groups_beyond_the_cap_are_other(redis: aioredis.Redis) -> None:
    store = KpiStore(redis, max_groups=2)
    names = [await store.group("destination", n) for n in ("A", "B", "C", "A")]
    assert names == [("destination", "A"), ("destination", "B"), ("destination", "other"),
                     ("destination", "A")]  # fmt: skip
    # Another process (its own cache) sees the same cap.
    other = KpiStore(redis, max_groups=2)
    assert await other.group("destination", "D") == ("destination", "other")
    assert await other.group("destination", "B") == ("destination", "B")


async def test_feeder_counts_each_cdr_once(redis: aioredis.Redis) -> None:
    store = KpiStore(redis, max_groups=10)
    cdrs = [
        make_cdr(0, duration_s=30, answer_ms=1000, end_ms=31_000),
        make_cdr(1, answer_ms=0, duration_s=0, disconnect_cause=17, gateway="10.0.0.2"),
        make_cdr(2, answer_ms=0, duration_s=0, disconnect_cause=34, destination="FR"),
    ]
    for cdr in cdrs:
        await redis.xadd(CDR_STREAM, {"cdr": cdr.pack()})
    await redis.xadd(CDR_STREAM, {"cdr": b"not msgpack"})
    feeder = KpiFeeder(redis, store, group="kpi", consumer="t")
    assert await feeder.step(block_ms=None) == 4
    assert await feeder.step(block_ms=None) == 0  # acknowledged: never read again
    sums = await store.read(BY_NAME["5m"])
    assert sums[ALL] == {"attempts": 3, "answered": 1, "busy": 1, "failed": 1, "talk_s": 30,
                         "conv_ms": 30_000}  # fmt: skip
    assert sums[("gateway", "10.0.0.2")] == {"attempts": 1, "busy": 1}
    assert sums[("destination", "FR")] == {"attempts": 1, "failed": 1}
    assert feeder.outcomes == {"answered": 1, "busy": 1, "failed": 1}
    assert feeder.undecodable == 1
    # A second feeder in the same group (another host) gets nothing twice.
    other = KpiFeeder(redis, store, group="kpi", consumer="u")
    assert await other.step(block_ms=None) == 0


async def test_feeder_rereads_its_pending_entries_after_a_crash(redis: aioredis.Redis) -> None:
    store = KpiStore(redis, max_groups=10)
    await redis.xadd(CDR_STREAM, {"cdr": make_cdr(0).pack()})
    await redis.xgroup_create(CDR_STREAM, "kpi", id="0")
    # A feeder read the entry and died before its MULTI: the entry is pending.
    await redis.xreadgroup("kpi", "t", {CDR_STREAM: ">"}, count=10)
    restarted = KpiFeeder(redis, store, group="kpi", consumer="t")
    assert await restarted.step(block_ms=None) == 1
    assert (await store.read(BY_NAME["1h"]))[ALL]["attempts"] == 1
    assert await redis.xpending(CDR_STREAM, "kpi") == {
        "pending": 0, "min": None, "max": None, "consumers": []
    }  # fmt: skip


async def test_feeder_multi_is_atomic_with_the_ack(redis: aioredis.Redis) -> None:
    """On a single Redis the increments and the XACK are one MULTI: nothing half done."""
    store = KpiStore(redis, max_groups=10)
    assert store.transactional
    cdr = dataclasses.replace(make_cdr(0), gateway="10.9.9.9")
    await redis.xadd(CDR_STREAM, {"cdr": cdr.pack()})
    feeder = KpiFeeder(redis, store, group="kpi", consumer="t")
    calls: list[str] = []
    original = store.write

    async def spy(increments: Increments, *extra: tuple[object, ...]) -> None:
        calls.append(str([c[0] for c in extra]))
        await original(increments, *extra)

    store.write = spy  # type: ignore[method-assign]
    await feeder.step(block_ms=None)
    assert calls == ["['XACK']"]


async def test_destination_groups_are_the_invoices_groups(redis: aioredis.Redis) -> None:
    """[invoicing] destination_groups (one definition of groups for invoices and KPIs)."""
    from chargingd.invoicing.usage import group_of

    groups = {"Mobile": ("*_MOBILE",)}
    store = KpiStore(redis, max_groups=10)
    for i, destination in enumerate(("UK_MOBILE", "FR_MOBILE", "UK_FIXED")):
        await redis.xadd(CDR_STREAM, {"cdr": make_cdr(i, destination=destination).pack()})
    feeder = KpiFeeder(
        redis, store, group="kpi", consumer="t", destination_group=lambda d: group_of(d, groups)
    )
    await feeder.step(block_ms=None)
    sums = await store.read(BY_NAME["5m"])
    assert sums[("destination", "Mobile")]["attempts"] == 2
    assert sums[("destination", "UK_FIXED")]["attempts"] == 1


async def test_a_big_batch_is_summed_right_and_lets_the_loop_run(redis: aioredis.Redis) -> None:
    """240 CDRs (and 240 undecodable entries between them) in one read, in two 10 s
    buckets and two gateways: the sums per bucket are those of the CDRs one by one, and
    another task gets turns while they are decoded, not only before and after
    (docs/performance.md round 6c: one batch held the loop for up to ~25 ms)."""
    cdrs = [
        dataclasses.replace(
            make_cdr(i, **({"answer_ms": 0, "duration_s": 0} if i % 7 == 0 else {})),
            gateway=f"10.0.0.{i % 2}",
        )
        for i in range(240)
    ]
    for i, cdr in enumerate(cdrs):
        at_ms = T0 + (1_000 if i < 120 else 15_000) + i
        await redis.xadd(CDR_STREAM, {"cdr": cdr.pack()}, id=f"{at_ms}-0")
        await redis.xadd(CDR_STREAM, {"cdr": b"junk"}, id=f"{at_ms}-1")
    store = KpiStore(redis, max_groups=10, clock_ms=Clock(T0 + 15_000))
    feeder = KpiFeeder(redis, store, group="kpi", consumer="t")
    seen: set[int] = set()
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            seen.add(feeder.undecodable)  # how far the decoding got at this turn
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    assert await feeder.step(block_ms=None) == 480
    stop.set()
    await task
    assert feeder.undecodable == 240
    assert len(seen - {0, 240}) >= 480 // CHUNK - 1  # a turn every CHUNK entries

    def expected(part: list[CDR], gateway: str | None = None) -> dict[str, int]:
        out: dict[str, int] = {}
        for cdr in part:
            if gateway is None or cdr.gateway == gateway:
                for name, n in cdr_metrics(cdr).items():
                    if n:
                        out[name] = out.get(name, 0) + n
        return out

    newest = await store.read(BY_NAME["5m"], buckets=1)  # the bucket at T0 + 10 s
    assert newest[ALL] == expected(cdrs[120:])
    assert newest[("gateway", "10.0.0.1")] == expected(cdrs[120:], "10.0.0.1")
    for name in ("5m", "1h", "24h"):
        both = await store.read(BY_NAME[name])
        assert both[ALL] == expected(cdrs), name
        assert both[("gateway", "10.0.0.0")] == expected(cdrs, "10.0.0.0"), name
    assert sum(feeder.outcomes.values()) == 240


async def test_a_corrected_cdr_counts_only_what_changed(redis: aioredis.Redis) -> None:
    # A call closed provisionally (gateway restart after 103 s) and corrected by its late
    # Stop (200 s): one call, one row in the billing database, so one attempt here.
    closed = make_cdr(
        0, answer_ms=1000, end_ms=104_000, duration_s=103, disconnect_cause=0,
        status="gateway_restart", extra={},
    )  # fmt: skip
    corrected = dataclasses.replace(
        closed, end_ms=201_000, duration_s=200, disconnect_cause=16, status="normal",
        revision=1, extra={"provisional_usage_s": "103", "provisional_status": "gateway_restart"},
    )  # fmt: skip
    # A call reaped before any answer; its late Stop says the caller hung up (abandoned).
    reaped = make_cdr(1, answer_ms=0, duration_s=0, disconnect_cause=0, status="reaped", extra={})
    late = dataclasses.replace(
        reaped, disconnect_cause=16, status="normal", revision=1,
        extra={"provisional_usage_s": "0", "provisional_status": "reaped"},
    )  # fmt: skip
    for cdr in (closed, reaped, corrected, late):
        await redis.xadd(CDR_STREAM, {"cdr": cdr.pack()})
    store = KpiStore(redis, max_groups=10)
    feeder = KpiFeeder(redis, store, group="kpi", consumer="t")
    assert await feeder.step(block_ms=None) == 4
    sums = await store.read(BY_NAME["5m"])
    assert sums[ALL] == {"attempts": 2, "answered": 1, "abandoned": 1, "talk_s": 200,
                         "conv_ms": 200_000}  # fmt: skip
    assert feeder.outcomes == {"answered": 1, "unknown": 1, "abandoned": 1}
    assert feeder.statuses == {"gateway_restart": 1, "reaped": 1}
    assert feeder.talk_s == 200
