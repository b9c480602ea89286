"""Review of the money and CDR paths: crash windows, absurd usage, replays."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sessions_harness import (
    EUR,
    T0_MS,
    Clock,
    MakeSessions,
    RecordingCutter,
    add_account,
    call,
    read_cdrs,
    usage,
)

from chargingd.ledger import Ledger
from chargingd.sessions.ccapi import Authorized, UsageKind
from chargingd.sessions.reaper import Reaper
from chargingd.sessions.service import Sessions
from chargingd.sessions.spool import Spool, report_to_entry
from chargingd.sessions.store import DEADLINES, ORPHANS, fin_key, lastseen_key, member

PER_S = 10_000  # Berlin: 0.60 EUR a minute, billed per second
ANSWER_MS = T0_MS + 2_000


@pytest.fixture
def sessions(on_both_paths: MakeSessions) -> Sessions:
    return on_both_paths(RecordingCutter())


async def orphan_reasons(redis: aioredis.Redis) -> list[bytes]:
    entries: Any = await redis.xrange(ORPHANS)
    return [fields[b"reason"] for _, fields in entries]


async def answered(sessions: Sessions, clock: Clock, sid: str, interim_s: int = 60) -> None:
    info = call(sid)
    clock.now_ms = T0_MS
    assert isinstance(await sessions.authorize(info), Authorized)
    clock.now_ms = ANSWER_MS
    await sessions.account(usage(info, UsageKind.START, 0, ANSWER_MS))
    clock.now_ms = ANSWER_MS + interim_s * 1000
    await sessions.account(usage(info, UsageKind.INTERIM, interim_s, clock.now_ms))


async def test_reaper_retries_a_session_whose_closer_died(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    """A closer that died holding the close lease must not make the reaper drop the
    session from its index for ever: once the lease is gone, the next pass closes it."""
    await add_account(ledger)
    await answered(sessions, clock, "s1")
    await redis.set(fin_key("acc1", "s1"), "dead-closer", ex=30)  # crashed mid-close
    clock.advance(181)
    assert await sessions.reaper.run_once() == 0  # the lease is held: not now
    assert await redis.zscore(lastseen_key("10.0.0.1", "s1"), member("acc1", "s1")) is not None
    await redis.delete(fin_key("acc1", "s1"))  # the lease expired
    clock.advance(181)  # the next reaper window
    assert await sessions.reaper.run_once() == 1
    (cdr,) = await read_cdrs(redis)
    # Provisional: the time since answer, capped by the grant (60 s debited + 75 s held).
    assert (cdr.call_id, cdr.status, cdr.duration_s) == ("s1", "stale", 135)
    assert (cdr.cost_micros, cdr.charged_micros) == (135 * PER_S, 135 * PER_S)
    assert cdr.charge_reason == "provisional"
    account = await ledger.get_account("acc1")
    assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 135 * PER_S, 0)


async def test_reaper_that_dies_mid_close_leaves_the_session_to_another(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    """Daemon A claims a stale session and dies inside close (after the release, before
    the CDR): the session must still end in one CDR, closed by the next reaper."""
    await add_account(ledger)
    await answered(sessions, clock, "s1")

    async def dies(rec: Any, **kw: Any) -> None:
        await ledger.release(rec.account_id, rec.session_id, 60 * PER_S)
        raise asyncio.CancelledError  # the process is gone: nothing after this runs

    dying = Reaper(
        store=sessions.store,
        close=dies,
        clock_ms=clock,
        stale_ms=180_000,
        spool=sessions.spool,
        replay=sessions.replay_entry,
    )
    clock.advance(181)
    with pytest.raises(asyncio.CancelledError):
        await dying.run_once()
    clock.advance(181)  # the lease of the dead closer (30 s) is long gone
    await redis.delete(fin_key("acc1", "s1"))
    assert await sessions.reaper.run_once() == 1
    (cdr,) = await read_cdrs(redis)
    # Provisional: the time since answer, capped by the grant (60 s debited + 75 s held).
    assert (cdr.call_id, cdr.status, cdr.duration_s) == ("s1", "stale", 135)
    assert (cdr.cost_micros, cdr.charged_micros) == (135 * PER_S, 135 * PER_S)
    assert cdr.charge_reason == "provisional"
    account = await ledger.get_account("acc1")
    assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 135 * PER_S, 0)
    assert await sessions.list_sessions() == []


@pytest.mark.parametrize("kind", [UsageKind.INTERIM, UsageKind.STOP])
async def test_absurd_session_time_changes_no_money(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis, kind: UsageKind
) -> None:
    """Acct-Session-Time 2^32-1 (136 years) is a broken gateway, not a call: it is kept
    as an orphan with its reason and the session keeps its last sane usage."""
    await add_account(ledger)
    await answered(sessions, clock, "s1")
    before = await ledger.get_account("acc1")
    clock.advance(60)
    await sessions.account(usage(call("s1"), kind, 2**32 - 1, clock.now_ms))
    after = await ledger.get_account("acc1")
    assert after.balance_micros == before.balance_micros
    rec = await sessions.store.find("s1")
    assert rec is not None and rec.last_usage_s == 60 and rec.state == "live"
    assert await orphan_reasons(redis) == [b"invalid_usage"]
    assert await read_cdrs(redis) == []


async def test_absurd_session_time_is_not_adopted(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    await add_account(ledger)
    before = await ledger.get_account("acc1")
    await sessions.account(usage(call("x1"), UsageKind.STOP, 2**32 - 1, clock.now_ms))
    after = await ledger.get_account("acc1")
    assert after.balance_micros == before.balance_micros
    assert await sessions.store.find("x1") is None
    assert await orphan_reasons(redis) == [b"invalid_usage"]


async def test_negative_usage_changes_nothing(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    await add_account(ledger)
    await answered(sessions, clock, "s1")
    before = await ledger.get_account("acc1")
    await sessions.account(usage(call("s1"), UsageKind.INTERIM, -5, clock.now_ms))
    await sessions.account(usage(call("s2"), UsageKind.STOP, -5, clock.now_ms))
    assert (await ledger.get_account("acc1")).balance_micros == before.balance_micros
    assert await sessions.store.find("s2") is None
    assert await orphan_reasons(redis) == [b"invalid_usage"] * 2


async def test_empty_session_id_is_orphaned(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    await add_account(ledger)
    before = await ledger.get_account("acc1")
    await sessions.account(usage(call(""), UsageKind.STOP, 30, clock.now_ms))
    assert (await ledger.get_account("acc1")).balance_micros == before.balance_micros
    assert await orphan_reasons(redis) == [b"invalid_session_id"]


async def test_interim_after_stop_and_replayed_stop_change_nothing(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    await add_account(ledger)
    await answered(sessions, clock, "s1")
    stop = usage(call("s1"), UsageKind.STOP, 90, ANSWER_MS + 90_000)
    await sessions.account(stop)
    after_stop = await ledger.get_account("acc1")
    assert after_stop.balance_micros == 10 * EUR - 90 * PER_S
    await sessions.account(usage(call("s1"), UsageKind.INTERIM, 120, ANSWER_MS + 120_000))
    await sessions.account(stop)
    await sessions.gateway_restarted("10.0.0.1", "gw1")
    clock.advance(10_000)
    assert await sessions.reaper.run_once() == 0
    account = await ledger.get_account("acc1")
    assert (account.balance_micros, account.reserved_micros) == (after_stop.balance_micros, 0)
    assert len(await read_cdrs(redis)) == 1


DEAD_PID = 2**22 + 12345  # no such process


async def test_spool_a_replayer_died_with_is_replayed(tmp_path: Path) -> None:
    """A daemon killed mid-replay leaves sessions-P.jsonl.replay-Q: still owed."""
    (tmp_path / f"sessions-{DEAD_PID}.jsonl.replay-{DEAD_PID + 1}").write_text('{"n":1}\n{"n":2}\n')
    seen: list[int] = []

    async def handler(entry: dict[str, int]) -> None:
        seen.append(entry["n"])

    mine = Spool(tmp_path, max_entries=10)
    assert await mine.replay(handler) == 2
    assert await mine.replay(handler) == 0
    assert seen == [1, 2]
    assert list(tmp_path.iterdir()) == []


async def test_cancelled_replay_keeps_what_it_did_not_replay(tmp_path: Path) -> None:
    mine = Spool(tmp_path, max_entries=10)
    for n in (1, 2, 3):
        mine.append({"n": n})
    seen: list[int] = []

    async def shutdown_at_2(entry: dict[str, int]) -> None:
        if entry["n"] == 2:
            raise asyncio.CancelledError
        seen.append(entry["n"])

    with pytest.raises(asyncio.CancelledError):
        await mine.replay(shutdown_at_2)
    assert await mine.replay(_recorder(seen)) == 2
    assert seen == [1, 2, 3]


def _recorder(seen: list[int]) -> Any:
    async def handler(entry: dict[str, int]) -> None:
        seen.append(entry["n"])

    return handler


async def test_unchargeable_spooled_stop_does_not_block_the_spool(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    """A spooled Stop that can never be rated (its plan is no longer loaded) is kept as
    an orphan; the Stops spooled behind it are still replayed and charged."""
    await add_account(ledger)
    await answered(sessions, clock, "s1")
    await answered(sessions, clock, "s2")
    rec = await sessions.store.get("acc1", "s1")
    assert rec is not None
    await sessions.store.update(rec, plan="withdrawn")
    for sid in ("s1", "s2"):
        stop = usage(call(sid), UsageKind.STOP, 90, ANSWER_MS + 90_000)
        sessions.spool.append(report_to_entry(stop))
    await sessions.reaper.run_once()
    assert await sessions.reaper.run_once() == 0
    (cdr,) = await read_cdrs(redis)
    assert (cdr.call_id, cdr.cost_micros) == ("s2", 90 * PER_S)
    assert await orphan_reasons(redis) == [b"unknown_plan"]
    assert not sessions.spool.path.exists()


async def test_stop_of_a_session_whose_plan_is_gone_is_orphaned(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    await add_account(ledger)
    await answered(sessions, clock, "s1")
    before = await ledger.get_account("acc1")
    rec = await sessions.store.get("acc1", "s1")
    assert rec is not None
    await sessions.store.update(rec, plan="withdrawn")
    await sessions.account(usage(call("s1"), UsageKind.STOP, 90, ANSWER_MS + 90_000))
    assert (await ledger.get_account("acc1")).balance_micros == before.balance_micros
    assert await orphan_reasons(redis) == [b"unknown_plan"]


async def test_usage_longer_than_the_call_has_existed_changes_no_money(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    """A Stop claiming 20 hours on a call authorized 2 minutes ago is refused whole."""
    await add_account(ledger, balance_micros=1000 * EUR)
    await answered(sessions, clock, "s1")
    before = await ledger.get_account("acc1")
    await sessions.account(usage(call("s1"), UsageKind.STOP, 72_000, clock.now_ms))
    assert (await ledger.get_account("acc1")).balance_micros == before.balance_micros
    rec = await sessions.store.find("s1")
    assert rec is not None and (rec.state, rec.last_usage_s) == ("live", 60)
    assert await orphan_reasons(redis) == [b"invalid_usage"]
    # The real Stop still closes it, once.
    await sessions.account(usage(call("s1"), UsageKind.STOP, 70, ANSWER_MS + 70_000))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.duration_s, cdr.cost_micros) == (70, 70 * PER_S)


async def test_cutter_that_dies_before_a_retried_kill_leaves_it_to_another(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    """An operator kill whose first Disconnect failed is retried from the deadline
    index; a daemon that claims the retry and dies must not lose the kill."""
    await add_account(ledger)
    await answered(sessions, clock, "s1")
    first = RecordingCutter(fail_next=1)
    sessions.cutter.frontend = first
    assert not await sessions.kill_session("s1")
    retry_ms = await redis.zscore(DEADLINES, member("acc1", "s1"))
    assert retry_ms is not None and retry_ms > clock.now_ms

    async def dies(ref: Any, reason: str) -> bool:
        raise asyncio.CancelledError  # the process is gone

    dead = RecordingCutter()
    dead.disconnect = dies  # type: ignore[method-assign]
    sessions.cutter.frontend = dead
    clock.now_ms = int(retry_ms)
    with pytest.raises(asyncio.CancelledError):
        await sessions.cutter.run_once()
    alive = RecordingCutter()
    sessions.cutter.frontend = alive
    assert await sessions.cutter.run_once() == 0  # not before the back-off
    clock.advance(60)
    assert await sessions.cutter.run_once() == 1
    assert [(ref.session_id, reason) for ref, reason in alive.disconnects] == [("s1", "killed")]
    assert await redis.zscore(DEADLINES, member("acc1", "s1")) is None
    await sessions.account(usage(call("s1"), UsageKind.STOP, 70, ANSWER_MS + 70_000))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.cost_micros) == ("killed", 70 * PER_S)
