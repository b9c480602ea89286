"""RateLimitedLog: the first failure at once, one line per interval with a count, one on
recovery; and run_every logs a failing loop that way (no traceback per pass)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from chargingd.billing.errors import DatabaseUnavailable
from chargingd.core.loops import run_every
from chargingd.core.ratelog import RateLimitedLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_one_line_per_interval_with_counts_and_one_on_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    out = RateLimitedLog(logging.getLogger("t.ratelog"), interval_s=10, clock_s=clock)
    caplog.set_level(logging.INFO, "t.ratelog")
    for _ in range(801):  # 80 failures a second for 10 s (0.0125 s: exact in binary)
        out.failure("redis down at authorize", RedisConnectionError("refused"))
        out.failure("reaper pass failed", "no Redis")
        clock.now += 0.0125
    assert out.failing("redis down at authorize")
    lines = _lines(caplog)
    assert lines[:2] == [
        "redis down at authorize: ConnectionError: refused",
        "reaper pass failed: no Redis",
    ]
    assert len(lines) == 4  # the first of each kind, then one each after 10 s
    assert lines[2] == (
        "redis down at authorize: ConnectionError: refused"
        " (800 more in the last 10 s; 801 since 10 s ago)"
    )
    out.recovered("redis down at authorize")
    out.recovered("redis down at authorize")  # a second success says nothing
    assert _lines(caplog)[4:] == ["redis down at authorize: recovered after 801 failures in 10.0 s"]
    assert not out.failing("redis down at authorize") and out.failing("reaper pass failed")
    out.failure("redis down at authorize", "again")  # a new outage starts a new count
    assert _lines(caplog)[5] == "redis down at authorize: again"
    assert all(r.exc_info is None for r in caplog.records)


async def test_run_every_logs_a_failing_loop_once_then_its_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("t.loop")
    caplog.set_level(logging.INFO, "t.loop")
    stop = asyncio.Event()
    passes = 0

    async def one_pass() -> None:
        nonlocal passes
        passes += 1
        if passes == 60:
            stop.set()
        if passes <= 30:
            raise RedisConnectionError("Error 111 connecting. Connection refused.")
        if 40 <= passes < 50:
            raise KeyError("bug")

    await asyncio.wait_for(run_every(stop, 0.001, one_pass, log=log, what="cutter"), 30)
    lines = _lines(caplog)
    assert lines == [
        "cutter pass failed: ConnectionError: Error 111 connecting. Connection refused.",
        lines[1],
        "cutter pass failed: KeyError: 'bug'",
        lines[3],
    ]
    assert lines[1].startswith("cutter pass failed: recovered after 30 failures in ")
    assert lines[3].startswith("cutter pass failed: recovered after 10 failures in ")
    # Redis being away needs no traceback; the unexpected error shows one, once.
    assert [r.exc_info is not None for r in caplog.records] == [False, False, True, False]


async def test_an_unreachable_billing_database_logs_no_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`chargingd serve` with [billing] db_url on a port nothing listens on printed the
    exporter's whole retry path as a traceback under 'exporter pass failed:
    DatabaseUnavailable: cannot connect ...' (docs/operations.md: a server simply
    being away logs no traceback)."""
    log = logging.getLogger("t.db")
    caplog.set_level(logging.INFO, "t.db")
    stop = asyncio.Event()
    passes = 0

    async def one_pass() -> None:
        nonlocal passes
        passes += 1
        if passes == 3:
            stop.set()
        raise DatabaseUnavailable("cannot connect to the billing database: refused")

    await asyncio.wait_for(run_every(stop, 0.001, one_pass, log=log, what="exporter"), 30)
    assert _lines(caplog)[0] == (
        "exporter pass failed: DatabaseUnavailable: cannot connect to the billing database: refused"
    )
    assert all(r.exc_info is None for r in caplog.records)


def test_failures_between_successes_are_one_episode_with_settle(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One shard of a Redis Cluster away (failing over, or taking no writes): requests
    for the other shards succeed between the failures. Without ``settle_s`` each success
    ended the episode and the next failure began one: 2 lines per flip (a live daemon
    logged 50 lines in 15 s of a failover), not the one line per interval promised."""
    clock = Clock()
    out = RateLimitedLog(logging.getLogger("t.settle"), interval_s=10, clock_s=clock, settle_s=1)
    caplog.set_level(logging.INFO, "t.settle")
    kind = "redis unreachable at authorize"
    for _ in range(641):  # 10 s, a failure then a success every 1/64 s (exact in binary)
        out.failure(kind, "NoReplicasError: no replicas")
        clock.now += 1 / 128
        out.recovered(kind)
        clock.now += 1 / 128
    assert _lines(caplog) == [
        f"{kind}: NoReplicasError: no replicas",
        f"{kind}: recovered after 1 failures in 0.0 s",  # not yet known to flap
        f"{kind}: NoReplicasError: no replicas (640 more in the last 10 s; 641 since 10 s ago)",
    ]
    assert out.failing(kind)
    clock.now += 30.0  # a success once none failed for settle_s ends it, once
    out.recovered(kind)
    out.recovered(kind)
    # the outage's length: to its last failure
    assert _lines(caplog)[3:] == [f"{kind}: recovered after 641 failures in 10.0 s"]
    assert not out.failing(kind)
    clock.now += 5.0
    out.failure(kind, "again")  # long after: a new outage, a line at once
    assert _lines(caplog)[4:] == [f"{kind}: again"]


def test_settle_keeps_a_plain_outage_ending_at_its_first_success(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whole Redis away: no success between the failures, so the first success ends the
    episode at once, as without settle_s."""
    clock = Clock()
    out = RateLimitedLog(logging.getLogger("t.plain"), interval_s=10, clock_s=clock, settle_s=1)
    caplog.set_level(logging.INFO, "t.plain")
    for _ in range(5):
        out.failure("k", "down")
        clock.now += 0.25
    out.recovered("k")
    assert _lines(caplog) == ["k: down", "k: recovered after 5 failures in 1.2 s"]
    assert not out.failing("k")
