"""An Interim or a Stop of a call whose record this process holds is noted in Python
and written by the renew or close script itself (sessions/noting.py): one script per
packet. Real Redis, real Ledger, real tariff; two Sessions objects stand for two
daemons sharing the Redis."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import msgpack
import pytest
import redis.asyncio as aioredis
from sessions_harness import (
    BERLIN,
    BERLIN_PER_S,
    EUR,
    MUNICH,
    T0_MS,
    Clock,
    add_account,
    call,
    make_ledger,
    make_sessions,
    read_cdrs,
    script_runs,
    usage,
)

from chargingd.billing.cdr import CdrStatus
from chargingd.sessions.ccapi import Authorized, UsageKind
from chargingd.sessions.noting import note
from chargingd.sessions.record import SessionRecord
from chargingd.sessions.service import Sessions
from chargingd.sessions.settle import CAPPED
from chargingd.sessions.store import INVALID, LIVE, record_key


async def test_note_agrees_with_session_touch(redis: aioredis.Redis, tmp_path: Path) -> None:
    """The Python note and session_touch.lua give the same record, or both refuse."""
    clock = Clock()
    sessions = make_sessions(redis, await make_ledger(redis, clock), clock, tmp_path)
    store = sessions.store
    rnd = random.Random(15)
    refused = 0
    for i in range(400):
        sid = f"n{i}"
        rec = SessionRecord.build(
            session_id=sid,
            account_id="acc1",
            user_name="alice",
            caller="",
            callee="+4930123456",
            destination="DE_BERLIN",
            plan="retail",
            currency="EUR",
            gateway="10.0.0.1",
            client="gw1",
            auth_ms=T0_MS,
            answer_ms=rnd.choice((0, T0_MS + 1_000)),
            last_usage_s=rnd.choice((0, 30, 90)),
            nas_session_id=rnd.choice(("", "old")),
        )
        stored = rec.pack()
        await redis.set(record_key("acc1", sid), stored, ex=600)
        packet = {
            "usage_s": rnd.choice((0, 29, 30, 60, 91, 400, 10_000)),
            "now_ms": T0_MS + rnd.choice((0, 5_000, 120_000)),
            "answer_ms": rnd.choice((0, T0_MS + 2_000)),
            "nas_session_id": rnd.choice(("", "nas-1")),
            "call_origin": rnd.choice(("", "answer")),
        }
        noted = note(stored, rec, **packet)
        state, last, touched = await store.touch("acc1", sid, **packet)
        if noted is None:
            refused += 1
            assert (state, last, touched) == (INVALID, rec.last_usage_s, None)
            assert await redis.get(record_key("acc1", sid)) == stored  # nothing changed
            continue
        assert state == LIVE and touched == noted.rec and last == noted.rec.last_usage_s
        assert noted.after() == (touched, noted.after()[1])
        assert SessionRecord.unpack("acc1", sid, noted.after()[1]) == touched
    assert 0 < refused < 400


async def _answered_call(sessions: Sessions, sid: str = "s1", called: str = BERLIN) -> None:
    info = call(sid, called=called)
    assert isinstance(await sessions.authorize(info), Authorized)
    await sessions.account(usage(info, UsageKind.START, 0, T0_MS))


async def test_interim_and_stop_run_one_script_each(redis: aioredis.Redis, tmp_path: Path) -> None:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await sessions.store.load_scripts()  # as a daemon's start (Functions libraries too)
    await add_account(ledger)
    await _answered_call(sessions)
    info = call("s1")
    for usage_s in (60, 120):
        clock.advance(60)
        before = await script_runs(redis)
        await sessions.account(usage(info, UsageKind.INTERIM, usage_s, T0_MS + usage_s * 1000))
        assert await script_runs(redis) - before == 1  # the renew, with the interim noted
        assert (await ledger.get_account("acc1")).debits_micros == usage_s * BERLIN_PER_S
        held = sessions.store.cached("s1")  # as stored, and decoded the same
        assert held is not None and held[1] == await redis.get(record_key("acc1", "s1"))
        assert held[2] == SessionRecord.unpack("acc1", "s1", held[1])
        assert held[2].last_usage_s == usage_s
        assert held[2].debited_micros == usage_s * BERLIN_PER_S
    clock.advance(10)
    before = await script_runs(redis)
    stop = usage(info.replace(nas_session_id="n1"), UsageKind.STOP, 130, T0_MS + 130_000)
    await sessions.account(stop)
    # the close with the Stop noted, the CDR and the closed mark (with the live
    # locator's drop): one script
    assert await script_runs(redis) - before == 1
    (cdr,) = await read_cdrs(redis)
    assert cdr.duration_s == 130 and cdr.charged_micros == 130 * BERLIN_PER_S
    rec = await sessions.store.get("acc1", "s1")
    assert rec is not None and rec.state == "closed" and rec.reported_usage_s == 130
    assert rec.nas_session_id == "n1" and rec.last_seen_ms == clock.now_ms
    account = await ledger.get_account("acc1")
    assert account.balance_micros == 10 * EUR - 130 * BERLIN_PER_S
    assert account.reserved_micros == 0


async def test_another_writer_between_packets_is_seen(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Daemon A holds the record as its Start left it; daemon B's interim and a cut
    change it. A's later packets are then priced from the record as it is."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    daemon_a = make_sessions(redis, ledger, clock, tmp_path / "a")
    daemon_b = make_sessions(redis, await make_ledger(redis, clock), clock, tmp_path / "b")
    await add_account(ledger)
    await _answered_call(daemon_a)
    info = call("s1")
    clock.advance(130)
    await daemon_b.account(usage(info, UsageKind.INTERIM, 120, T0_MS + 120_000))
    # An older interim reaches A: it must not move the usage back nor charge again.
    await daemon_a.account(usage(info, UsageKind.INTERIM, 60, T0_MS + 60_000))
    assert (await ledger.get_account("acc1")).debits_micros == 120 * BERLIN_PER_S
    rec = await daemon_a.store.get("acc1", "s1")
    assert rec is not None and rec.last_usage_s == 120
    clock.advance(60)
    await daemon_a.account(usage(info, UsageKind.INTERIM, 180, T0_MS + 180_000))
    assert (await ledger.get_account("acc1")).debits_micros == 180 * BERLIN_PER_S
    # The operator's kill, confirmed by the gateway, written by daemon B.
    rec = await daemon_b.store.get("acc1", "s1")
    assert rec is not None
    await daemon_b.store.update(rec, cut_reason=CdrStatus.KILLED, cut_attempts=1, cut_ok=1)
    clock.advance(10)
    await daemon_a.account(usage(info, UsageKind.STOP, 185, T0_MS + 185_000))
    (cdr,) = await read_cdrs(redis)
    assert cdr.status == CdrStatus.KILLED and cdr.duration_s == 185
    assert cdr.extra["cut_reason"] == CdrStatus.KILLED
    account = await ledger.get_account("acc1")
    assert account.balance_micros == 10 * EUR - 185 * BERLIN_PER_S
    assert account.reserved_micros == 0


async def test_stop_is_noted_with_the_release(redis: aioredis.Redis, tmp_path: Path) -> None:
    """A closer that dies after the release (before its CDR) leaves the Stop's usage on
    the record, as the touch did: the reaper that closes it later charges that usage.
    (A Stop paid in full is released, its CDR written and its record closed by one
    script: no such window. Here the account was spent down to the call's 75 s hold
    meanwhile, so the release takes less than the 100 s cost and the closer builds the
    CDR from what it took.)"""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await add_account(ledger)
    await _answered_call(sessions)
    hold = (await ledger.get_account("acc1")).reserved_micros
    assert hold == 75 * BERLIN_PER_S
    await ledger.adjust("acc1", hold - 10 * EUR, txn_id="spent", who="test", why="elsewhere")
    info = call("s1")
    clock.advance(100)

    async def dies(*_args: object, **_kw: object) -> None:
        raise RuntimeError("closer died")

    sessions.store.append_cdr_and_close = dies  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await sessions.account(usage(info, UsageKind.STOP, 100, T0_MS + 100_000))
    rec = await sessions.store.get("acc1", "s1")
    assert rec is not None and rec.state == LIVE
    assert rec.last_usage_s == 100 and rec.last_seen_ms == clock.now_ms
    reaper = make_sessions(redis, await make_ledger(redis, clock), clock, tmp_path / "r")
    await redis.delete("{a:acc1}:s:s1:fin")  # the dead closer's lease expired
    cdr = await reaper.close_session(
        rec, usage_s=rec.last_usage_s, end_ms=clock.now_ms, status=CdrStatus.STALE
    )
    assert cdr is not None and cdr.duration_s == 100
    assert cdr.cost_micros == 100 * BERLIN_PER_S and cdr.charged_micros == hold
    assert cdr.charge_reason == CAPPED
    assert (await ledger.get_account("acc1")).balance_micros == 0


@pytest.mark.parametrize("balance", [3 * EUR // 2, 2 * EUR, 3 * EUR])
async def test_short_money_noted_and_touched_paths_agree(
    redis: aioredis.Redis, tmp_path: Path, balance: int
) -> None:
    """Partial renewals (the script notes the packet, Python writes the grant), a
    deadline and a Stop past the money: the same money, records and CDRs as the touch
    path (the held records forgotten before every packet). Below 2.50 EUR the first
    grant is partial already: the Start writes the deadline, and the interim after it
    reads the record again (session_touch)."""
    results, scripts = [], []
    for noted in (True, False):
        await redis.flushall()
        await redis.config_resetstat()
        clock = Clock()
        ledger = await make_ledger(redis, clock)
        sessions = make_sessions(redis, ledger, clock, tmp_path)
        await add_account(ledger, balance_micros=balance)
        info = call("s1", called=MUNICH)
        assert isinstance(await sessions.authorize(info), Authorized)
        for kind, usage_s in [
            (UsageKind.START, 0),
            (UsageKind.INTERIM, 30),
            (UsageKind.INTERIM, 60),
            (UsageKind.INTERIM, 50),  # reordered
            (UsageKind.STOP, 95),
        ]:
            clock.advance(30)
            if not noted:
                sessions.store._records.clear()
            await sessions.account(usage(info, kind, usage_s, T0_MS + usage_s * 1000))
        scripts.append(await script_runs(redis))
        account = await ledger.get_account("acc1")
        cdrs = await read_cdrs(redis)
        rec = await sessions.store.get("acc1", "s1")
        audit = [(e.what, e.details.get("amount")) for e in await ledger.audit("acc1")]
        results.append((dataclasses.replace(account, updated_ms=0), cdrs, rec, audit))
    assert results[0] == results[1]
    assert scripts[0] < scripts[1] or balance < 5 * EUR // 2
    account, (cdr,), rec, _ = results[0]
    assert account.reserved_micros == 0 and cdr.duration_s == 95
    assert rec is not None and rec.state == "closed"


async def test_record_with_fields_of_a_newer_version_is_not_rewritten_whole(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """A field this version does not know (written by a newer one during a rolling
    upgrade) survives the interim: such a record is not held, the scripts merge into it."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await add_account(ledger)
    info = call("s1")
    assert isinstance(await sessions.authorize(info), Authorized)
    key = record_key("acc1", "s1")
    fields = msgpack.unpackb(await redis.get(key), raw=False, strict_map_key=False)
    fields |= {"zz": "newer"}
    await redis.set(key, msgpack.packb(fields, use_bin_type=True), keepttl=True)
    await sessions.account(usage(info, UsageKind.START, 0, T0_MS))
    assert sessions.store.cached("s1") is None
    clock.advance(60)
    await sessions.account(usage(info, UsageKind.INTERIM, 60, T0_MS + 60_000))
    stored = msgpack.unpackb(await redis.get(key), raw=False, strict_map_key=False)
    usage_code = sessions.store.layout.codes["last_usage_s"]
    assert stored["zz"] == "newer" and stored[usage_code] == 60
    assert (await ledger.get_account("acc1")).debits_micros == 60 * BERLIN_PER_S
