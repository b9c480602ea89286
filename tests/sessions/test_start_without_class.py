"""Review of round 14 (close-cas): a Start is now noted on the record the fused
authorize held, found by the session id alone. Acct-Session-Ids collide across
gateways (Cisco's are per-gateway counters: test_class_duplicate_stop.py), and an
echo_class client may be a CIDR block of several gateways. Its packet without Class
was found by a search of its own gateway's last-seen shard (Accounting._without_class);
now it is noted on whichever call of that id this process authorized last."""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis
from fakes import T0_MS
from sessions_harness import (
    BERLIN,
    BERLIN_PER_S,
    EUR,
    Clock,
    add_account,
    call,
    make_ledger,
    make_sessions,
    read_cdrs,
    usage,
)

from chargingd.sessions.ccapi import Authorized, UsageKind


async def test_a_start_without_class_is_noted_on_its_own_gateways_call(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Client gw1 (echo_class, two gateways) has call X of A on 10.0.0.1 and, authorized
    a moment later, call X of B on 10.0.0.2 (still ringing). 10.0.0.1 sends A's Start
    without Class, then A's Stop (Class A) without Acct-Session-Time (usage from the
    event times, as Kamailio's acc): A's call must be answered and charged 60 s, B's
    untouched."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", identities=("user:alice",))
    await add_account(ledger, "B", identities=("user:bob",))
    sessions = make_sessions(redis, ledger, clock, tmp_path, echo_class=("gw1",))
    await sessions.store.load_scripts()
    a_call = call("X", user="alice", called=BERLIN, client="gw1", gateway="10.0.0.1")
    b_call = call("X", user="bob", called=BERLIN, client="gw1", gateway="10.0.0.2")
    assert isinstance(await sessions.authorize(a_call), Authorized)
    clock.advance(1)
    assert isinstance(await sessions.authorize(b_call), Authorized)
    clock.advance(1)
    answer_ms = T0_MS + 2_000
    # A's Start, its Class not echoed (the case Accounting._without_class searches for)
    await sessions.account(usage(a_call, UsageKind.START, 0, answer_ms))
    a_rec = await sessions.store.get("A", "X")
    b_rec = await sessions.store.get("B", "X")
    assert a_rec is not None and b_rec is not None
    assert b_rec.answer_ms == 0, f"B's ringing call got A's answer time {b_rec.answer_ms}"
    assert a_rec.answer_ms == answer_ms, "A's Start was not noted on A's call"
    clock.advance(60)
    a_stop = usage(
        a_call.replace(account_hint="A"),
        UsageKind.STOP,
        0,
        answer_ms + 60_000,
        usage_reported=False,
    )
    await sessions.account(a_stop)
    (cdr,) = [c for c in await read_cdrs(redis) if c.account_id == "A"]
    assert cdr.duration_s == 60 and cdr.charged_micros == 60 * BERLIN_PER_S
    assert (await ledger.get_account("A")).balance_micros == 10 * EUR - 60 * BERLIN_PER_S


async def test_a_start_without_class_moves_no_money_between_colliding_calls(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """The same two calls, accounted by event times (no Acct-Session-Time): A talks 60 s,
    B never answers (its Stop, Class B, a 487 after 61 s of ringing). A pays 60 s, B
    nothing."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", identities=("user:alice",))
    await add_account(ledger, "B", identities=("user:bob",))
    sessions = make_sessions(redis, ledger, clock, tmp_path, echo_class=("gw1",))
    await sessions.store.load_scripts()
    a_call = call("X", user="alice", called=BERLIN, client="gw1", gateway="10.0.0.1")
    b_call = call("X", user="bob", called=BERLIN, client="gw1", gateway="10.0.0.2")
    assert isinstance(await sessions.authorize(a_call), Authorized)
    clock.advance(1)
    assert isinstance(await sessions.authorize(b_call), Authorized)
    clock.advance(1)
    answer_ms = T0_MS + 2_000
    await sessions.account(usage(a_call, UsageKind.START, 0, answer_ms))  # no Class
    clock.advance(60)
    end_ms = answer_ms + 60_000
    a_acct, b_acct = a_call.replace(account_hint="A"), b_call.replace(account_hint="B")
    await sessions.account(usage(a_acct, UsageKind.STOP, 0, end_ms, usage_reported=False))
    await sessions.account(
        usage(b_acct, UsageKind.STOP, 0, end_ms, usage_reported=False, sip_code=487)
    )
    charged = {c.account_id: c.charged_micros for c in await read_cdrs(redis)}
    assert charged == {"A": 60 * BERLIN_PER_S, "B": 0}, charged
