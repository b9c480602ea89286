"""A Start noted on the record its authorize wrote (round 14b): the daemon keeps what the
fused authorize stored (its bytes but for the credit pair the script appends), so the
Start is noted in Python (noting.py) and written by session_note.lua while that value is
still the stored one, instead of session_touch's decode and re-encode in Lua. Real
Redis, real Ledger; two Sessions objects stand for two daemons."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis
from fakes import T0_MS, Clock
from sessions_harness import (
    BERLIN_PER_S,
    EUR,
    add_account,
    call,
    make_ledger,
    make_sessions,
    read_cdrs,
    script_runs,
    usage,
)

from chargingd.sessions import store as store_module
from chargingd.sessions.ccapi import Authorized, UsageKind
from chargingd.sessions.record import SessionRecord
from chargingd.sessions.service import Sessions
from chargingd.sessions.store import LIVE, record_key

MODES = {"kam": "hold_all", "own": "own_timer"}


async def _daemon(redis: aioredis.Redis, clock: Clock, path: Path, compact: bool) -> Sessions:
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(
        redis, ledger, clock, path, credit_modes=MODES, compact_records=compact
    )
    await sessions.store.load_scripts()
    return sessions


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("client", ["gw1", "kam", "own"])
async def test_the_authorized_record_is_held_as_stored(
    redis: aioredis.Redis, tmp_path: Path, compact: bool, client: str
) -> None:
    """What the store keeps of an authorize is the stored value byte for byte, and the
    record it decodes to (the credit the script appended: held + available, or held
    only for hold_all and own_timer clients)."""
    clock = Clock()
    sessions = await _daemon(redis, clock, tmp_path, compact)
    await add_account(sessions.ledger, balance_micros=700 * EUR + 123)
    for i in range(3):
        sid = f"a{i}"
        assert isinstance(await sessions.authorize(call(sid, client=client)), Authorized)
        held = sessions.store.cached(sid)
        stored = await redis.get(record_key("acc1", sid))
        assert stored is not None and held is not None
        assert held[0] == "acc1" and held[1] == stored
        assert held[2] == SessionRecord.unpack("acc1", sid, stored)
        assert held[2].credit_micros > 0


@pytest.mark.parametrize("compact", [False, True])
async def test_a_start_is_one_small_script_and_writes_what_touch_would(
    redis: aioredis.Redis, tmp_path: Path, compact: bool
) -> None:
    """Daemon A authorized both calls and notes the Start of one; daemon B (which holds
    nothing) touches the other's: the two records agree, and A's Start ran
    session_note, not session_touch."""
    clock = Clock()
    a = await _daemon(redis, clock, tmp_path / "a", compact)
    b = await _daemon(redis, clock, tmp_path / "b", compact)
    await add_account(a.ledger)
    for sid in ("held", "touched"):
        assert isinstance(await a.authorize(call(sid)), Authorized)
    clock.advance(3)
    note_sha, touch_sha = a.store._note.sha, a.store._touch.sha
    before = await redis.info("commandstats")
    sent: list[str] = []
    send = a.store.send

    async def spying(commands: list[tuple[object, ...]], **kw: object) -> list[object]:
        sent.extend(str(c[1]) for c in commands if c[0] == "EVALSHA")
        return await send(commands, **kw)  # type: ignore[arg-type]

    a.store.send = spying  # type: ignore[method-assign]
    start_ms = T0_MS + 3_000
    await a.account(usage(call("held").replace(nas_session_id="n1"), UsageKind.START, 0, start_ms))
    assert sent == [note_sha]
    assert touch_sha not in sent
    b.store.uncache("touched")
    await b.account(
        usage(call("touched").replace(nas_session_id="n1"), UsageKind.START, 0, start_ms)
    )
    after = await redis.info("commandstats")
    assert after["cmdstat_evalsha"]["calls"] - before["cmdstat_evalsha"]["calls"] == 2
    held = await a.store.get("acc1", "held")
    touched = await b.store.get("acc1", "touched")
    assert held is not None and touched is not None
    assert held.state == LIVE and held.nas_session_id == "n1"
    assert held.last_seen_ms == clock.now_ms and held.answer_ms == touched.answer_ms
    assert held == touched.replace(session_id="held", credit_micros=held.credit_micros)
    # A holds the Start's value: its Interim is noted too (one script: the renew)
    assert a.store.cached("held") is not None
    clock.advance(60)
    runs = await script_runs(redis)
    await a.account(usage(call("held"), UsageKind.INTERIM, 60, start_ms + 60_000))
    assert await script_runs(redis) - runs == 1
    clock.advance(30)
    await a.account(usage(call("held"), UsageKind.STOP, 90, start_ms + 90_000))
    (cdr,) = await read_cdrs(redis)
    assert cdr.duration_s == 90 and cdr.charged_micros == 90 * BERLIN_PER_S


async def test_a_record_written_after_the_authorize_is_touched(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Another writer between the authorize and the Start (another daemon's cut mark):
    session_note writes nothing, the touch path notes the Start on the record as it is."""
    clock = Clock()
    a = await _daemon(redis, clock, tmp_path / "a", False)
    b = await _daemon(redis, clock, tmp_path / "b", False)
    await add_account(a.ledger)
    assert isinstance(await a.authorize(call("s1")), Authorized)
    rec = await b.store.get("acc1", "s1")
    assert rec is not None
    await b.store.update(rec, cut_reason="killed", cut_attempts=1)
    clock.advance(2)
    before = await script_runs(redis, "evalsha")
    await a.account(usage(call("s1"), UsageKind.START, 0, T0_MS + 2_000))
    # the note (refused), the touch, then what a Start of a cut call sends again
    assert await script_runs(redis, "evalsha") - before >= 2
    now = await a.store.get("acc1", "s1")
    assert now is not None
    assert now.cut_reason == "killed"  # kept: not overwritten by the held value
    assert now.last_seen_ms == clock.now_ms and now.answer_ms == T0_MS + 2_000


async def test_the_calls_authorized_last_are_kept(
    redis: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most FRESH_MAX: the oldest authorizes are forgotten first, and a forgotten
    call's Start is touched (the same record either way)."""
    monkeypatch.setattr(store_module, "FRESH_MAX", 3)
    clock = Clock()
    sessions = await _daemon(redis, clock, tmp_path, False)
    await add_account(sessions.ledger)
    for i in range(8):
        assert isinstance(await sessions.authorize(call(f"c{i}")), Authorized)
    kept = [i for i in range(8) if sessions.store.cached(f"c{i}") is not None]
    assert kept == [5, 6, 7]
    for i in range(8):
        await sessions.account(usage(call(f"c{i}"), UsageKind.START, 0, T0_MS))
        rec = await sessions.store.get("acc1", f"c{i}")
        assert rec is not None and rec.answer_ms == T0_MS and rec.state == LIVE


async def test_a_full_table_of_held_records_drops_its_oldest_tenth(
    redis: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most MAX_HELD live records held: when full, the tenth held longest is dropped
    (not every one: a wipe sent each live call's next packet to the read path at once),
    and a dropped call's Interim still applies (read from Redis)."""
    monkeypatch.setattr(store_module, "MAX_HELD", 20)
    clock = Clock()
    sessions = await _daemon(redis, clock, tmp_path, False)
    await add_account(sessions.ledger, balance_micros=1000 * EUR)
    for i in range(25):
        assert isinstance(await sessions.authorize(call(f"h{i}")), Authorized)
        await sessions.account(usage(call(f"h{i}"), UsageKind.START, 0, T0_MS))
    held = [i for i in range(25) if f"h{i}" in sessions.store._records]
    # full at 20: h20 dropped h0 and h1, h22 dropped h2 and h3, h24 h4 and h5
    assert held == list(range(6, 25))
    clock.advance(30)
    for i in (0, 24):  # one read back from Redis, one held
        await sessions.account(usage(call(f"h{i}"), UsageKind.INTERIM, 30, T0_MS))
        rec = await sessions.store.get("acc1", f"h{i}")
        assert rec is not None and rec.last_usage_s == 30 and rec.state == LIVE
