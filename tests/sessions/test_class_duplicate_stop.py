"""A Stop whose Class names an account with a record for its id is that record's:
never re-applied under the locator or the identity (review3 #4).

Acct-Session-Ids collide across gateways (Cisco's are per-gateway counters), so the
same id may be a closed call of one account and a live call of another.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from fakes import T0_MS
from sessions_harness import (
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
from chargingd.sessions.store import LIVE


async def test_duplicate_stop_with_class_never_closes_another_accounts_call(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Acct-Session-Ids collide across gateways (Cisco's are per-gateway counters;
    accounting.py handles "a reused id, now another account's"). Call X of account A
    through gw1 (echo_class: Class = chargingd:A, no locator) ends; call X of account B
    through gw2 (no echo_class: locator X -> B) is live. gw1 retransmits A's Stop (its
    Accounting-Response was lost), Class = A: A's record is found CLOSED, but
    Accounting._not_live sees the locator name B and re-applies the packet WITHOUT its
    Class: B's live call is closed with A's usage and charged for it."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", identities=("user:alice",))
    await add_account(ledger, "B", identities=("user:bob",))
    sessions = make_sessions(redis, ledger, clock, tmp_path, echo_class=("gw1",))
    a_call = call("X", user="alice", client="gw1", gateway="10.0.0.1")
    b_call = call("X", user="bob", client="gw2", gateway="10.0.0.2")
    assert isinstance(await sessions.authorize(a_call), Authorized)
    a_acct = a_call.replace(account_hint="A")  # the echoed Class
    await sessions.account(usage(a_acct, UsageKind.START, 0, T0_MS))
    clock.advance(5)
    assert isinstance(await sessions.authorize(b_call), Authorized)
    await sessions.account(usage(b_call, UsageKind.START, 0, clock()))
    clock.advance(25)
    a_stop = usage(a_acct, UsageKind.STOP, 30, T0_MS + 30_000)
    await sessions.account(a_stop)
    b_before = await sessions.store.get("B", "X")
    assert b_before is not None and b_before.state == LIVE
    await sessions.account(a_stop)  # gw1's retransmission of A's Stop (Class = A)
    b_after = await sessions.store.get("B", "X")
    assert b_after is not None and b_after.state == LIVE, (
        f"B's live call closed by A's duplicate Stop: state {b_after and b_after.state},"
        f" B debited {EUR * 10 - (await ledger.get_account('B')).balance_micros} micros"
    )
    a_cdrs = [c for c in await read_cdrs(redis) if c.account_id == "A"]
    assert len(a_cdrs) == 1, "A's Stop was written twice"


async def _two_calls_x(redis: aioredis.Redis, tmp_path: Path) -> tuple[Any, Any, Any, Any]:
    """A's call X through gw1 (echo_class) ended; B's call X through gw2 (locator) live."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    await add_account(ledger, "A", identities=("user:alice",))
    await add_account(ledger, "B", identities=("user:bob",))
    sessions = make_sessions(redis, ledger, clock, tmp_path, echo_class=("gw1",))
    a_call = call("X", user="alice", client="gw1", gateway="10.0.0.1")
    b_call = call("X", user="bob", client="gw2", gateway="10.0.0.2")
    assert isinstance(await sessions.authorize(a_call), Authorized)
    a_acct = a_call.replace(account_hint="A")
    await sessions.account(usage(a_acct, UsageKind.START, 0, T0_MS))
    clock.advance(5)
    assert isinstance(await sessions.authorize(b_call), Authorized)
    await sessions.account(usage(b_call, UsageKind.START, 0, clock()))
    clock.advance(25)
    await sessions.account(usage(a_acct, UsageKind.STOP, 30, T0_MS + 30_000))
    return sessions, ledger, a_call, a_acct


async def _b_untouched(sessions: Any, ledger: Any) -> None:
    b = await sessions.store.get("B", "X")
    assert b is not None and b.state == LIVE, "B's live call closed by A's Stop"
    assert (await ledger.get_account("B")).balance_micros == 10 * EUR
    assert await sessions.store.locate("X", fresh=True) == "B"  # B's locator kept


async def test_duplicate_stop_without_class_never_closes_another_accounts_call(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """gw1 retransmits A's Stop without its Class (a gateway that forgot it): the
    locator of X is B's (gw2): an echo_class client's calls have none, so it is never
    read for them; A's closed record (found by the identity) absorbs the duplicate."""
    sessions, ledger, a_call, _ = await _two_calls_x(redis, tmp_path)
    await sessions.account(usage(a_call, UsageKind.STOP, 30, T0_MS + 30_000))
    await _b_untouched(sessions, ledger)
    assert [c.account_id for c in await read_cdrs(redis)] == ["A"]


async def test_stop_with_class_after_its_record_expired_never_closes_another_accounts_call(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """A's closed record is gone (closed_ttl_s) when gw1 sends its Stop again, Class = A:
    looked for as without Class (gw1's last-seen zset, else adopted by the identity),
    never by B's locator."""
    sessions, ledger, _, a_acct = await _two_calls_x(redis, tmp_path)
    await redis.delete("{a:A}:r:X")
    await sessions.account(usage(a_acct, UsageKind.STOP, 30, T0_MS + 30_000))
    await _b_untouched(sessions, ledger)


async def test_duplicate_stop_without_class_never_closes_a_held_call_of_another_client(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    """As above, with B's record held by this process (the noted path: held by the
    session id alone, as last stored after B's Interims) when gw1's Class-less
    duplicate arrives: a held record of another client is not used."""
    sessions, _, a_call, _ = await _two_calls_x(redis, tmp_path)
    b_call = call("X", user="bob", client="gw2", gateway="10.0.0.2")
    clock = sessions.clock_ms
    for usage_s in (10, 20):  # the second one noted on the held record
        clock.advance(10)
        await sessions.account(usage(b_call, UsageKind.INTERIM, usage_s, clock()))
    b_rec = await sessions.store.get("B", "X")
    assert b_rec is not None
    sessions.store.cache(b_rec, await redis.get("{a:B}:r:X"))  # held as last stored
    clock.advance(20)  # a usage of 30 s fits B's call too
    await sessions.account(usage(a_call, UsageKind.STOP, 30, T0_MS + 30_000))
    b = await sessions.store.get("B", "X")
    assert b is not None and b.state == LIVE and b.last_usage_s == 20, b and b.state
    assert [c.account_id for c in await read_cdrs(redis)] == ["A"]
