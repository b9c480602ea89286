"""A Stop's closed mark written whole (session_set.lua's ARGV[5..6], round 14a): the
closer knows the record's stored value from its release script, so the closed record
is packed here and written as it is while that value is still the stored one; any
other value is merged in Lua as before. Real Redis; both stored layouts."""

from __future__ import annotations

import random
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

from chargingd.billing.cdr import CdrStatus
from chargingd.sessions.ccapi import Authorized, UsageKind
from chargingd.sessions.close import Ending, SessionCloser
from chargingd.sessions.record import SessionRecord, fields_map
from chargingd.sessions.service import Sessions
from chargingd.sessions.store import CLOSED, LIVE, record_key


def _record(rnd: random.Random, sid: str) -> SessionRecord:
    return SessionRecord.build(
        session_id=sid,
        account_id="acc1",
        user_name=rnd.choice(("alice", "bob@example.org", "")),
        caller=rnd.choice(("", "+4930999")),
        callee="+4930123456",
        destination="DE_BERLIN",
        plan="retail",
        currency="EUR",
        gateway="10.0.0.1",
        client="gw1",
        auth_ms=T0_MS,
        answer_ms=rnd.choice((0, T0_MS + 1_000)),
        last_seen_ms=T0_MS + rnd.choice((0, 5_000, 90_000)),
        last_usage_s=rnd.choice((0, 30, 90)),
        debited_micros=rnd.choice((0, 300_000)),
        held_micros=rnd.choice((0, 1, 600_000)),
        credit_micros=rnd.choice((0, 5 * EUR)),
        nas_session_id=rnd.choice(("", "nas-1")),
        cut_reason=rnd.choice(("", "credit_cut")),
        adopted=rnd.choice((0, 1, 2)),
    )


def _closed_fields(rnd: random.Random, rec: SessionRecord) -> dict[str, str | int]:
    return {
        "reported_usage_s": rec.last_usage_s,
        "last_usage_s": rec.last_usage_s + rnd.choice((0, 5)),
        "status": rnd.choice((CdrStatus.NORMAL, CdrStatus.CREDIT_CUT, CdrStatus.OVERRUN)),
        "cost_micros": rnd.choice((0, 12_345)),
        "charged_micros": rnd.choice((0, 12_000)),
        "provisional": rnd.choice((0, 1)),
        "cdr_revision": rnd.choice((0, 2)),
        "state": CLOSED,
    }


@pytest.mark.parametrize("compact", [False, True])
async def test_whole_closed_record_equals_the_merged_one(
    redis: aioredis.Redis, tmp_path: Path, compact: bool
) -> None:
    """The closed record written whole decodes exactly as the one merged in Lua, with
    the same expiry; a stored value that moved meanwhile is merged, never overwritten."""
    clock = Clock()
    sessions = make_sessions(
        redis, await make_ledger(redis, clock), clock, tmp_path, compact_records=compact
    )
    store = sessions.store
    assert store.layout.compact is compact
    rnd = random.Random(14)
    for i in range(200):
        rec = _record(rnd, f"w{i}")
        fields = _closed_fields(rnd, rec)
        stored = rec.pack(layout=store.layout)
        merged_key, whole_key = record_key("acc1", f"m{i}"), record_key("acc1", rec.session_id)
        await redis.set(merged_key, stored, ex=600)
        await redis.set(whole_key, stored, ex=600)
        moved = i % 4 == 0  # another writer came between the release and the mark
        if moved:
            other = rec.replace(cut_reason="killed", cut_attempts=1)
            await redis.set(merged_key, other.pack(layout=store.layout), ex=600)
            await redis.set(whole_key, other.pack(layout=store.layout), ex=600)
        new = rec.replace(**fields).pack(layout=store.layout)
        ttl = store.closed_ttl_s
        merged_rec = rec.replace(session_id=f"m{i}")
        assert await store.send([store._setting(merged_rec, fields, ttl)]) == [1]
        assert await store.send([store._setting(rec, fields, ttl, whole=(stored, new))]) == [1]
        got = await redis.get(whole_key)
        assert got is not None
        if not moved:
            assert got == new  # written as it is: the fast path
        want = await redis.get(merged_key)
        assert want is not None
        assert SessionRecord.unpack("acc1", rec.session_id, got) == SessionRecord.unpack(
            "acc1", f"m{i}", want
        ).replace(session_id=rec.session_id)
        if moved:
            assert SessionRecord.unpack("acc1", rec.session_id, got).cut_reason == "killed"
        assert 0 < await redis.ttl(whole_key) <= ttl
        assert await redis.ttl(merged_key) == await redis.ttl(whole_key)


async def test_whole_closed_record_of_a_gone_record_writes_nothing(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    clock = Clock()
    sessions = make_sessions(redis, await make_ledger(redis, clock), clock, tmp_path)
    rec = _record(random.Random(1), "gone")
    stored = rec.pack()
    whole = (stored, rec.replace(state=CLOSED).pack())
    setting = sessions.store._setting(rec, {"state": CLOSED}, 60, whole=whole)
    assert await sessions.store.send([setting]) == [0]
    assert await redis.exists(record_key("acc1", "gone")) == 0


async def _answered(sessions: Sessions, sid: str) -> None:
    info = call(sid)
    assert isinstance(await sessions.authorize(info), Authorized)
    await sessions.account(usage(info, UsageKind.START, 0, T0_MS))


@pytest.mark.parametrize("compact", [False, True])
@pytest.mark.parametrize("noted", [True, False])
@pytest.mark.parametrize(("balance", "usage_s"), [(10 * EUR, 100), (3 * EUR // 5, 62)])
async def test_a_stop_closes_the_record_whole(
    redis: aioredis.Redis, tmp_path: Path, compact: bool, noted: bool, balance: int, usage_s: int
) -> None:
    """Through Sessions: the Stop's closed record is the one the closer packed (its
    stored value, byte for byte: no merge in Lua), the record the merge of the closed
    fields gives, its CDR and money as before. Both release paths: the Stop noted on a
    held record, and session_close (the record not held: another daemon's Start); a
    call paid in full, and one whose 100 s cost more than the 0.60 EUR there was
    (charged less than its cost: capped)."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path, compact_records=compact)
    await sessions.store.load_scripts()
    await add_account(ledger, balance_micros=balance)
    await _answered(sessions, "s1")
    if not noted:
        sessions.store.uncache("s1")  # as a daemon that did not see the Start
    held = sessions.store.cached("s1") is not None  # (not for a limited call: deadline set)
    assert held == (noted and balance == 10 * EUR)
    clock.advance(usage_s)
    info = call("s1")
    before = await script_runs(redis)
    closed_with: list[tuple[object, ...]] = []  # session_set's ARGV
    stopped_with: list[tuple[object, ...]] = []  # session_stop's ARGV
    send = sessions.store.send
    assert sessions.fused is not None
    stop = (sessions.fused.stop_library.name, sessions.fused._stop.sha)  # FCALL, EVALSHA

    async def spying(commands: list[tuple[object, ...]], **kw: object) -> list[object]:
        for command in commands:
            if command[0] == "EVALSHA" and command[1] == sessions.store._set.sha:
                closed_with.append(command[3 + int(command[2]) :])  # type: ignore[call-overload]
            if command[1] in stop:
                stopped_with.append(command[3 + int(command[2]) :])  # type: ignore[call-overload]
        return await send(commands, **kw)  # type: ignore[arg-type]

    sessions.store.send = spying  # type: ignore[method-assign]
    await sessions.account(usage(info, UsageKind.STOP, usage_s, T0_MS + usage_s * 1000))
    # noted: one script, the release with the Stop noted and the close (the CDR and the
    # closed record as the closer built them: paid in full); else touch, close, mark
    assert await script_runs(redis) - before == (1 if held else 3)
    (cdr,) = await read_cdrs(redis)
    assert cdr.duration_s == usage_s and cdr.cost_micros == usage_s * BERLIN_PER_S
    assert cdr.charged_micros == min(balance, cdr.cost_micros)
    stored = await redis.get(record_key("acc1", "s1"))
    if held:
        assert not closed_with  # no session_set: the closed record came with the Stop
        ((_token, _before, live, *_release, sent_cdr, total, whole, _acc, _who),) = stopped_with
        assert sent_cdr == cdr.pack() and total == cdr.charged_micros
        ttl = sessions.store.closed_ttl_s
        closing = {
            **SessionCloser.closed_fields(cdr, Ending(0, cdr.status)),
            "reported_usage_s": usage_s,
            "state": CLOSED,
        }
        fields = fields_map(closing, sessions.store.layout)
        assert 0 < await redis.ttl(record_key("acc1", "s1")) <= ttl
    else:
        ((ttl, fields, _sid, _acc, live, whole),) = closed_with  # type: ignore[misc]
    assert whole == stored  # the closer's closed record, as it packed it
    # ... the record session_set.lua's merge of the same fields gives (a scratch key)
    await redis.set("scratch", live)  # type: ignore[arg-type]
    assert await redis.evalsha(sessions.store._set.sha, 1, "scratch", ttl, fields) == 1  # type: ignore[arg-type]
    merged = await redis.get("scratch")
    rec = SessionRecord.unpack("acc1", "s1", stored)
    assert rec == SessionRecord.unpack("acc1", "s1", merged)
    assert rec.state == CLOSED and rec.reported_usage_s == usage_s == rec.last_usage_s
    assert rec.status == cdr.status and rec.charged_micros == cdr.charged_micros
    assert rec.cost_micros == cdr.cost_micros
    account = await ledger.get_account("acc1")
    assert account.balance_micros == balance - cdr.charged_micros
    assert account.reserved_micros == 0
    # a late duplicate Stop reads the closed record and charges nothing more
    await sessions.account(usage(info, UsageKind.STOP, usage_s, T0_MS + usage_s * 1000))
    assert len(await read_cdrs(redis)) == 1
    assert (await ledger.get_account("acc1")).balance_micros == account.balance_micros
    assert rec.state != LIVE
