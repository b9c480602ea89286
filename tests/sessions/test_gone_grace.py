"""A locator (or last-seen entry) whose record is not there is dropped only if it is
still not there a grace period (GONE_GRACE_S) later: on Redis Cluster a create sends
its record and its indexes to different nodes in one pipeline, so the locator can land
first, and a start's reshard (or an Accounting-On) meeting it then would leave the call
without a locator. A closed record's locator is dropped at once.

The in-flight create is played on a single Redis: the call is authorized by the
Cluster path's steps, then its record is taken away and written back by a task of its
own once reshard has looked (as the record's node answers after the locator's).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sessions_harness import (
    EUR,
    Clock,
    add_account,
    call,
    make_ledger,
    make_sessions,
    seen_count,
)

from chargingd.sessions.ccapi import Authorized
from chargingd.sessions.indexes import GONE_GRACE_S, record_key
from chargingd.sessions.service import Sessions
from chargingd.sessions.shards import locator_key
from chargingd.sessions.store import live_key
from chargingd.sessions.upgrade import upgrade_and_log

GRACE_S = 1.0  # reshard's in these tests (the daemon's: GONE_GRACE_S)


async def started(redis: aioredis.Redis, tmp_path: Path) -> tuple[Sessions, Clock]:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", identities=("user:alice",), balance_micros=1000 * EUR)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    sessions.step_by_step()  # the Redis Cluster path's steps
    return sessions, clock


async def in_flight(redis: aioredis.Redis, sid: str) -> tuple[bytes, int]:
    """Take the call's record away, as if its create's record write had not landed
    yet (its locator, entry and id have); returns what puts it back."""
    key = record_key("A", sid)
    blob, ttl_ms = await redis.get(key), await redis.pttl(key)
    assert blob is not None and ttl_ms > 0
    await redis.delete(key)
    return blob, ttl_ms


class FirstLook(logging.Handler):
    """Set when reshard has looked once and found records gone (its log line)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.done = asyncio.Event()
        self.gone = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "have no session record" in record.getMessage():
            assert isinstance(record.args, tuple)
            self.gone = int(record.args[0])
            self.done.set()


@pytest.fixture
def first_look(caplog: pytest.LogCaptureFixture) -> Iterator[FirstLook]:
    caplog.set_level(logging.INFO, logger="chargingd.sessions.upgrade")
    handler = FirstLook()
    logger = logging.getLogger("chargingd.sessions.upgrade")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


async def test_a_record_that_lands_within_the_grace_keeps_its_locator(
    redis: aioredis.Redis, tmp_path: Path, first_look: FirstLook
) -> None:
    """The record is written (by another task) after reshard's first look found it
    gone, within the grace: the locator stays, and the call is located; the one whose
    record never comes is dropped, after the grace."""
    sessions, _ = await started(redis, tmp_path)
    for sid in ("landing", "never"):
        assert isinstance(await sessions.authorize(call(sid)), Authorized)
    blob, ttl_ms = await in_flight(redis, "landing")
    await in_flight(redis, "never")

    async def record_lands() -> None:
        await asyncio.wait_for(first_look.done.wait(), 10)
        await redis.set(record_key("A", "landing"), blob, px=ttl_ms)

    began = time.monotonic()
    await asyncio.gather(upgrade_and_log(redis, grace_s=GRACE_S), record_lands())
    took_s = time.monotonic() - began
    assert first_look.gone == 2  # both were seen gone at the first look
    assert took_s >= GRACE_S - 0.05  # looked again a grace later
    assert await redis.hget(locator_key("landing"), "landing") == b"A"
    assert await redis.hget(locator_key("never"), "never") is None
    sessions.store._located.clear()
    assert await sessions.store.locate("landing", fresh=True) == "A"


async def test_a_record_that_never_lands_loses_its_locator(
    redis: aioredis.Redis, tmp_path: Path, first_look: FirstLook
) -> None:
    sessions, _ = await started(redis, tmp_path)
    assert isinstance(await sessions.authorize(call("never")), Authorized)
    await in_flight(redis, "never")
    began = time.monotonic()
    await upgrade_and_log(redis, grace_s=GRACE_S)
    assert time.monotonic() - began >= GRACE_S - 0.05
    assert first_look.gone == 1
    assert await redis.hget(locator_key("never"), "never") is None


async def test_a_closed_records_locator_is_dropped_without_waiting(
    redis: aioredis.Redis, tmp_path: Path, first_look: FirstLook
) -> None:
    """Closed (an older daemon's close leaves the new field): dropped at the first look,
    no wait even at the daemon's grace; a live call's stays."""
    sessions, clock = await started(redis, tmp_path)
    for sid in ("closed", "live"):
        assert isinstance(await sessions.authorize(call(sid)), Authorized)
    rec = await sessions.store.get("A", "closed")
    assert rec is not None
    await sessions.close_session(rec, usage_s=0, end_ms=clock(), status="killed")
    await redis.hset(locator_key("closed"), "closed", "A")  # as the older daemon left it
    began = time.monotonic()
    await upgrade_and_log(redis)  # GONE_GRACE_S
    assert time.monotonic() - began < GONE_GRACE_S / 2
    assert not first_look.done.is_set()
    assert await redis.hget(locator_key("closed"), "closed") is None
    assert await redis.hget(locator_key("live"), "live") == b"A"


async def test_accounting_on_keeps_a_new_entry_whose_record_is_not_there_yet(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """An Accounting-On (or a listing) meeting a just-written entry whose record has not
    landed leaves it, its locator and its id; one written a grace earlier goes."""
    sessions, clock = await started(redis, tmp_path)
    assert isinstance(await sessions.authorize(call("expired")), Authorized)
    await redis.delete(record_key("A", "expired"))  # expired unclosed, long ago
    clock.advance(GONE_GRACE_S)
    assert isinstance(await sessions.authorize(call("landing")), Authorized)
    blob, ttl_ms = await in_flight(redis, "landing")
    assert await sessions.list_sessions() == []
    await sessions.gateway_restarted("10.0.0.1", "gw1")
    assert await redis.hkeys(live_key("A")) == [b"landing"]
    assert await redis.hget(locator_key("expired"), "expired") is None
    assert await redis.hget(locator_key("landing"), "landing") == b"A"
    assert await seen_count(redis, "10.0.0.1") == 1
    await redis.set(record_key("A", "landing"), blob, px=ttl_ms)  # it lands
    assert [r.session_id for r in await sessions.list_sessions()] == ["landing"]
