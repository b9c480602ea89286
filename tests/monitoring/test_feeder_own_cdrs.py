"""The KPI feeder counts the CDRs its own process wrote from what the closer told it
(KpiFeeder.remember, wired by serve.py with [monitoring] on), not by decoding them
again: the same windows and counters as a feeder that decodes every entry
(docs/performance.md, round 16b). Real Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from cdr_factory import make_cdr
from fakes import T0_MS, Clock
from sessions_harness import add_account, call, make_ledger, make_sessions, usage

from chargingd.billing.cdr import CDR, CDR_STREAM, CdrStatus
from chargingd.monitoring import feeder as feeder_module
from chargingd.monitoring.feeder import KpiFeeder, cdr_metrics
from chargingd.monitoring.outcomes import OUTCOMES
from chargingd.monitoring.windows import KpiStore
from chargingd.sessions.ccapi import Authorized, UsageKind


def _varied(rnd: random.Random, i: int) -> CDR:
    """Answered or not, causes and SIP codes, quality figures in and out of range, a
    CdrStatus member or a plain str, corrected revisions, several gateways and
    destinations."""
    answered = rnd.random() < 0.6
    extra: dict[str, str] = {}
    if rnd.random() < 0.3:
        extra["sip_code"] = str(rnd.choice((200, 408, 480, 486, 487, 503, 603)))
    for name in ("pdd_ms", "mos", "jitter_ms", "loss_pct"):
        if rnd.random() < 0.3:
            extra[name] = rnd.choice(("1200", "3.9", "-1", "x", "450.5", "1e9"))
    status: str = rnd.choice((CdrStatus.NORMAL, CdrStatus.STALE, "normal", CdrStatus.OVERRUN))
    duration_s = rnd.randrange(1, 300) if answered else 0
    # (an end before the answer: a gateway's clock; its conversation time is 0)
    end_ms = T0_MS + 2_000 + rnd.choice((duration_s * 1000 + rnd.randrange(1000), -1000))
    cdr = make_cdr(
        i,
        answer_ms=0 if not answered else T0_MS + 2_000,
        end_ms=end_ms,
        duration_s=duration_s,
        disconnect_cause=rnd.choice((0, 16, 17, 18, 21, 34)),
        gateway=f"10.0.0.{rnd.randrange(3)}",
        destination=rnd.choice(("DE_FIX", "UK_MOBILE", "FR")),
        status=status,
        extra=extra,
    )
    if rnd.random() < 0.15:  # a late Stop's correction of a provisional close
        cdr = dataclasses.replace(
            cdr,
            revision=1,
            extra={**extra, "provisional_usage_s": str(rnd.randrange(0, 200)),
                   "provisional_status": "stale"},
        )  # fmt: skip
    return cdr


async def _windows(redis: aioredis.Redis) -> dict[bytes, Any]:
    keys = sorted([key async for key in redis.scan_iter("kpi:*")])
    return {key: await redis.hgetall(key) for key in keys if await redis.type(key) == b"hash"}


async def _feed_all(
    redis: aioredis.Redis, cdrs: list[CDR], *, own: bool
) -> tuple[KpiFeeder, dict[bytes, Any]]:
    await redis.flushall()
    feeder = KpiFeeder(redis, KpiStore(redis, max_groups=10), group="kpi", consumer="t")
    for i, cdr in enumerate(cdrs):
        entry_id = await redis.xadd(CDR_STREAM, {"cdr": cdr.pack()}, id=f"{T0_MS + i}-0")
        if own:
            feeder.remember(entry_id, cdr)
    while await feeder.step(block_ms=None):
        pass
    return feeder, await _windows(redis)


async def test_remembered_cdrs_count_as_decoded_ones(redis: aioredis.Redis) -> None:
    rnd = random.Random(16)
    cdrs = [_varied(rnd, i) for i in range(600)]
    decoding, decoded_windows = await _feed_all(redis, cdrs, own=False)
    told, told_windows = await _feed_all(redis, cdrs, own=True)
    assert decoding.recalled == 0 and told.recalled == len(cdrs)
    assert told_windows == decoded_windows
    assert len(decoded_windows) == 3 and len(decoded_windows[min(decoded_windows)]) > 50
    assert told.outcomes == decoding.outcomes and sum(told.outcomes.values()) > 0
    assert told.statuses == decoding.statuses and told.talk_s == decoding.talk_s > 0
    # the statuses as a decoded CDR holds them: plain str, never a CdrStatus member
    assert {type(status) for status in told.statuses} == {str}
    assert told.undecodable == decoding.undecodable == 0
    # ... and what the rules say CDR by CDR (the feeder's loop before round 16b)
    outcomes: dict[str, int] = {}
    statuses: dict[str, int] = {}
    talk_s = 0
    total: dict[str, int] = {}
    for cdr in cdrs:
        metrics = cdr_metrics(cdr)
        for kind in OUTCOMES:
            if metrics.get(kind, 0) > 0:
                outcomes[kind] = outcomes.get(kind, 0) + metrics[kind]
        if cdr.revision == 0:
            statuses[cdr.status] = statuses.get(cdr.status, 0) + 1
        talk_s += max(0, metrics.get("talk_s", 0))
        for name, n in metrics.items():
            total[name] = total.get(name, 0) + n
    assert told.outcomes == outcomes and told.statuses == statuses and told.talk_s == talk_s
    hour = decoded_windows[min(decoded_windows)]  # kpi:1h: every CDR in one bucket
    every = {k.split(b"\x1f")[-1].decode(): int(v) for k, v in hour.items() if k.startswith(b"all")}
    assert every == {name: n for name, n in total.items() if n}
    assert told._recent == {}  # each summary used once


async def test_what_the_feeder_does_not_read_is_dropped_at_the_cap(
    redis: aioredis.Redis, monkeypatch: Any
) -> None:
    """A feeder that stalls keeps at most RECENT_MAX summaries; what it dropped is
    decoded from the stream, counted the same."""
    monkeypatch.setattr(feeder_module, "RECENT_MAX", 8)
    rnd = random.Random(3)
    cdrs = [_varied(rnd, i) for i in range(20)]
    _, decoded_windows = await _feed_all(redis, cdrs, own=False)
    told, told_windows = await _feed_all(redis, cdrs, own=True)
    assert told.recalled == 20 - 16  # dropped at the 9th and the 17th
    assert told_windows == decoded_windows


async def test_a_stop_tells_its_feeder_of_the_cdr(redis: aioredis.Redis, tmp_path: Path) -> None:
    """Through Sessions: the closer hands the CDR and its stream entry id to
    ``cdr_written``; the feeder wired there counts the call without decoding it."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await sessions.store.load_scripts()
    await add_account(ledger)
    feeder = KpiFeeder(redis, KpiStore(redis, max_groups=10), group="kpi", consumer="t")
    told: list[tuple[bytes, CDR]] = []

    def written(entry_id: bytes, cdr: CDR) -> None:
        told.append((entry_id, cdr))
        feeder.remember(entry_id, cdr)

    sessions.store.cdr_written = written
    info = call("s1")
    assert isinstance(await sessions.authorize(info), Authorized)
    await sessions.account(usage(info, UsageKind.START, 0, T0_MS))
    clock.advance(95)
    await sessions.account(usage(info, UsageKind.STOP, 95, T0_MS + 95_000))
    ((entry_id, cdr),) = told
    ((stream_id, fields),) = await redis.xrange(CDR_STREAM)
    assert stream_id == entry_id
    assert CDR.unpack(fields[b"cdr"]) == cdr
    assert await feeder.step(block_ms=None) == 1
    assert feeder.recalled == 1 and feeder.outcomes == {"answered": 1}
    assert feeder.talk_s == 95


def test_a_summary_holds_what_cdr_metrics_says() -> None:
    """_summary's short way (an answered first CDR without quality figures) and its
    long one give cdr_metrics' values, in its order, and the status as a plain str."""
    rnd = random.Random(7)
    short = 0
    for i in range(2000):
        cdr = _varied(rnd, i)
        gateway, destination, metrics, revision, status = feeder_module._summary(cdr)
        assert metrics == tuple(x for pair in cdr_metrics(cdr).items() for x in pair)
        assert (gateway, destination, revision) == (cdr.gateway, cdr.destination, cdr.revision)
        assert status == cdr.status and type(status) is str
        short += cdr.revision == 0 and cdr.answer_ms > 0 and not cdr.extra.keys() & {"mos"}
    assert short > 200


async def test_a_cdr_told_after_the_feeder_read_it_is_not_kept(redis: aioredis.Redis) -> None:
    """The feeder's blocked read can be answered before the closer takes its XADD's
    reply: that entry was counted decoded already, and its summary, kept, would wait
    for a read that never comes (until the cap's clear drops it and every summary still
    to be read with it). Not kept; one told before its read is still used."""
    feeder = KpiFeeder(redis, KpiStore(redis, max_groups=10), group="kpi", consumer="t")
    rnd = random.Random(5)
    first, second = _varied(rnd, 0), _varied(rnd, 1)
    read_first = await redis.xadd(CDR_STREAM, {"cdr": first.pack()})
    while await feeder.step(block_ms=None):
        pass
    feeder.remember(read_first, first)  # told late: read and counted already
    assert feeder._recent == {} and feeder.undecodable == 0
    read_second = await redis.xadd(CDR_STREAM, {"cdr": second.pack()})
    feeder.remember(read_second, second)  # told in time
    assert await feeder.step(block_ms=None) == 1
    assert feeder.recalled == 1 and feeder._recent == {}
    # ids of other lengths (their sequence numbers): compared as numbers
    ms = int(read_second.split(b"-")[0]) + 1
    for seq in (9, 10):
        await redis.xadd(CDR_STREAM, {"cdr": first.pack()}, id=f"{ms}-{seq}")
    assert await feeder.step(block_ms=None) == 2
    feeder.remember(f"{ms}-9".encode(), first)  # before the last read (ms-10): not kept
    assert feeder._recent == {}
    feeder.remember(f"{ms}-11".encode(), first)  # after it: kept
    feeder.remember(f"{ms + 1}-0".encode(), first)
    assert len(feeder._recent) == 2


async def test_concurrent_calls_leave_no_summary_behind(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Calls closing while the feeder runs (its reads blocked on the stream, as in the
    daemon): every CDR counted once, and nothing left kept once the feeder caught up."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await sessions.store.load_scripts()
    await add_account(ledger, balance_micros=10**12)
    feeder = KpiFeeder(redis, KpiStore(redis, max_groups=10), group="kpi", consumer="t", settle_s=0)
    sessions.store.cdr_written = feeder.remember
    stop = asyncio.Event()
    task = asyncio.create_task(feeder.run(stop))

    async def one(sid: str) -> None:
        info = call(sid)
        assert isinstance(await sessions.authorize(info), Authorized)
        await sessions.account(usage(info, UsageKind.START, 0, T0_MS))
        await sessions.account(usage(info, UsageKind.STOP, 5, T0_MS + 5_000))

    try:
        for k in range(20):
            await asyncio.gather(*(one(f"s{k}-{i}") for i in range(10)))
            await asyncio.sleep(0.01)
        for _ in range(200):  # until the feeder has counted every CDR
            if feeder.outcomes.get("answered") == 200:
                break
            await asyncio.sleep(0.01)
    finally:
        stop.set()
        await task
    assert feeder.outcomes == {"answered": 200} and feeder.talk_s == 5 * 200
    assert feeder._recent == {}
    assert feeder.recalled > 0


async def test_summaries_of_entries_another_consumer_read_are_dropped(
    redis: aioredis.Redis,
) -> None:
    """Daemons on several hosts share the group: an entry this process wrote may be
    delivered to another's feeder, which counts it. Its summary here is dropped once
    this feeder's own reads have passed it (else it stayed until the cap's clear)."""
    store = KpiStore(redis, max_groups=10)
    here = KpiFeeder(redis, store, group="kpi", consumer="here")
    there = KpiFeeder(redis, store, group="kpi", consumer="there")
    rnd = random.Random(9)
    cdrs = [_varied(rnd, i) for i in range(3)]
    ids = []
    for cdr in cdrs[:2]:
        ids.append(await redis.xadd(CDR_STREAM, {"cdr": cdr.pack()}))
        here.remember(ids[-1], cdr)
    assert await there.step(block_ms=None) == 2  # both went to the other host
    ids.append(await redis.xadd(CDR_STREAM, {"cdr": cdrs[2].pack()}))
    here.remember(ids[-1], cdrs[2])
    assert len(here._recent) == 3
    assert await here.step(block_ms=None) == 1
    assert here.recalled == 1 and here._recent == {}
    assert there.recalled == 0 and here.undecodable == there.undecodable == 0
