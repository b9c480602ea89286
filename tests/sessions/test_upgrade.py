"""Calls live across the upgrade from the hash session records (before 6db408c).

The old records are written as the old code wrote them (``git show
6db408c^:chargingd/sessions/store.py``: a hash ``{a:ACC}:s:SID`` of the fields by
their full names, those at their default left out but state, integers as decimal
strings, the ids included, one expiry; later HSETs wrote some fields at their default
too), with every other key of the call as it was (the indexes and the ledger's holds
did not change). Then two daemons' upgrades run at once, and a new daemon's Sessions
drives the calls: a pending deadline fires, a Stop after the cut is charged with the
cut tolerance, normal Stops are charged (not adopted), silent calls are reaped with a
CDR, and a closed record still absorbs a retransmitted Stop.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgpack
import redis.asyncio as aioredis
from sessions_harness import (
    EUR,
    T0_MS,
    Clock,
    RecordingCutter,
    add_account,
    call,
    make_sessions,
    read_cdrs,
    usage,
)

from chargingd.ledger import Ledger
from chargingd.ledger.keys import account_tag
from chargingd.sessions.ccapi import Authorized, CallInfo, UsageKind
from chargingd.sessions.record import FIELDS, REQUIRED, SessionRecord
from chargingd.sessions.shards import locator_key
from chargingd.sessions.store import DEADLINES, lastseen_key, live_key, member, record_key
from chargingd.sessions.upgrade import upgrade_records

PER_S = 10_000  # Berlin: 0.60 EUR a minute, billed per second
ANSWER_MS = T0_MS + 2_000
CUT = [f"cut{i}" for i in range(4)]  # 1 EUR: a deadline at 100 s, pending at the upgrade
STOP = [f"stop{i}" for i in range(4)]  # 10 EUR: a Stop at 90 s after the upgrade
SILENT = [f"silent{i}" for i in range(4)]  # 10 EUR: never heard of again: reaped
CLOSED = "closed0"  # closed before the upgrade (its record kept for late accounting)


def old_key(account_id: str, session_id: str) -> str:
    """The old record_key (6db408c^)."""
    return f"{account_tag(account_id)}:s:{session_id}"


def old_pairs(rec: SessionRecord) -> dict[str, str | int]:
    """The old SessionRecord.sparse_pairs (6db408c^): fields that differ from their
    defaults, and state; the ids are fields too."""
    pairs: dict[str, str | int] = {}
    for name, _, default in FIELDS:
        value = getattr(rec, name)
        if name == "state" or default is REQUIRED or value != default:
            pairs[name] = value
    return pairs


async def downgrade(redis: aioredis.Redis, account_id: str, session_id: str) -> SessionRecord:
    """Replace the call's record by the hash the old code would hold for it."""
    key = record_key(account_id, session_id)
    raw = await redis.get(key)
    assert raw is not None
    rec = SessionRecord.unpack(account_id, session_id, raw)
    ttl_ms = await redis.pttl(key)
    assert ttl_ms > 0
    pairs = old_pairs(rec)
    if not rec.limited:
        # The old set_grant(deadline_ms=0) and update() HSET fields at their default.
        pairs |= {"limited": 0, "deadline_ms": 0, "cut_reason": ""}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        pipe.hset(old_key(account_id, session_id), mapping=pairs)
        pipe.pexpire(old_key(account_id, session_id), ttl_ms)
        await pipe.execute()
    return rec


def acc(session_id: str) -> str:
    return f"a-{session_id}"


def info_of(session_id: str) -> CallInfo:
    return call(session_id, user=f"u-{session_id}")


async def test_calls_live_across_the_upgrade_continue_as_calls(
    redis: aioredis.Redis, ledger: Ledger, clock: Clock, tmp_path: Path
) -> None:
    everyone = [*CUT, *STOP, *SILENT, CLOSED]
    for sid in everyone:
        balance = 1 * EUR if sid in CUT else 10 * EUR
        await add_account(ledger, acc(sid), balance_micros=balance, identities=(f"user:u-{sid}",))
    # The old daemon: every call authorized, answered and one Interim at 60 s, at once.
    old = make_sessions(redis, ledger, clock, tmp_path / "old", RecordingCutter())
    clock.now_ms = T0_MS
    answers = await asyncio.gather(*(old.authorize(info_of(s)) for s in everyone))
    assert all(isinstance(a, Authorized) for a in answers)
    clock.now_ms = ANSWER_MS
    await asyncio.gather(
        *(old.account(usage(info_of(s), UsageKind.START, 0, ANSWER_MS)) for s in everyone)
    )
    clock.now_ms = ANSWER_MS + 60_000
    await asyncio.gather(
        *(old.account(usage(info_of(s), UsageKind.INTERIM, 60, clock.now_ms)) for s in everyone)
    )
    closed_stop = usage(info_of(CLOSED), UsageKind.STOP, 60, clock.now_ms)
    await old.account(closed_stop)
    assert len(await read_cdrs(redis)) == 1
    for sid in CUT:
        assert await redis.zscore(DEADLINES, member(acc(sid), sid)) == ANSWER_MS + 100_000

    before: dict[str, SessionRecord] = {}
    ttls: dict[str, int] = {}
    for sid in everyone:
        before[sid] = await downgrade(redis, acc(sid), sid)
        ttls[sid] = await redis.pttl(old_key(acc(sid), sid))
    assert before[CUT[0]].limited == 1 and before[CLOSED].state == "closed"

    # What the reviewer found: the new code does not see the old records.
    new = make_sessions(redis, ledger, clock, tmp_path / "new", cutter := RecordingCutter())
    assert await new.store.get(acc(STOP[0]), STOP[0]) is None

    # Two daemons starting at once: each record converted once, by one of them.
    first, second = await asyncio.gather(upgrade_records(redis), upgrade_records(redis))
    assert first.live + second.live == len(everyone) - 1
    assert first.closed + second.closed == 1
    assert first.kept_new + second.kept_new + first.foreign + second.foreign == 0
    assert [k async for k in redis.scan_iter(match="{a:*}:s:*", _type="hash")] == []
    for sid in everyone:
        assert await new.store.get(acc(sid), sid) == before[sid]  # same fields
        stored = msgpack.unpackb(await redis.get(record_key(acc(sid), sid)), raw=False)
        # As the new code stores it: defaults left out, integers as integers.
        assert stored == before[sid].stored()
        want = before[sid].stored()
        assert {k: type(v) for k, v in stored.items()} == {k: type(v) for k, v in want.items()}
        ttl = await redis.pttl(record_key(acc(sid), sid))
        assert ttls[sid] - 2_000 < ttl <= ttls[sid]  # same expiry
    for sid in [*CUT, *STOP, *SILENT]:  # the indexes, as the old code left them
        assert await redis.hexists(live_key(acc(sid)), sid)
        assert await redis.hget(locator_key(sid), sid) == acc(sid).encode()
        assert await redis.zscore(lastseen_key("10.0.0.1", sid), member(acc(sid), sid)) == (
            ANSWER_MS + 60_000
        )
    again = await upgrade_records(redis)
    assert (again.upgraded, again.kept_new) == (0, 0)

    # The pending deadlines fire: each call cut for credit, once.
    clock.now_ms = ANSWER_MS + 100_000
    assert await new.cutter.run_once() == len(CUT)
    assert sorted((ref.session_id, why) for ref, why in cutter.disconnects) == [
        (sid, "credit_cut") for sid in CUT
    ]
    # Their Stops a second late (cut tolerance) and the normal Stops, at once.
    clock.now_ms = ANSWER_MS + 101_000
    stops = [usage(info_of(s), UsageKind.STOP, 101, clock.now_ms) for s in CUT]
    stops += [usage(info_of(s), UsageKind.STOP, 90, ANSWER_MS + 90_000) for s in STOP]
    await asyncio.gather(*(new.account(s) for s in stops))
    # The silent calls are reaped (stale_factor 3 x 60 s after their last Interim).
    clock.now_ms = ANSWER_MS + 60_000 + 180_001
    assert await new.reaper.run_once() == len(SILENT)
    # A retransmission of the Stop of the call closed before the upgrade: no new CDR.
    await new.account(closed_stop)

    cdrs = {c.call_id: c for c in await read_cdrs(redis)}
    assert sorted(cdrs) == sorted(everyone)
    assert len(await read_cdrs(redis)) == len(everyone)
    for sid, c in cdrs.items():
        assert "adopted" not in c.extra, sid
    for sid in CUT:
        c = cdrs[sid]
        assert (c.status, c.duration_s, c.cost_micros) == ("credit_cut", 101, 101 * PER_S)
        assert (c.charged_micros, c.charge_reason) == (1 * EUR, "cut_tolerance")
    for sid in STOP:
        c = cdrs[sid]
        assert (c.status, c.duration_s, c.charged_micros) == ("normal", 90, 90 * PER_S)
    for sid in SILENT:
        c = cdrs[sid]
        assert (c.status, c.duration_s, c.charged_micros) == ("stale", 135, 135 * PER_S)
        assert (c.charge_reason, c.extra["provisional"]) == ("provisional", "1")
    expected: dict[str, Any] = {s: 0 for s in CUT}
    expected |= {s: 10 * EUR - 90 * PER_S for s in STOP}
    expected |= {s: 10 * EUR - 135 * PER_S for s in SILENT}
    expected[CLOSED] = 10 * EUR - 60 * PER_S
    for sid, balance in expected.items():
        account = await ledger.get_account(acc(sid))
        assert (account.balance_micros, account.reserved_micros) == (balance, 0), sid
    assert await new.list_sessions() == []
