"""reserve.lua and sweep.lua on a real Redis: every refusal reason, partial vs
all-or-nothing grants, renewals, leases, expiry and the sweeper."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from fakes import Clock

from chargingd.ledger import (
    Grant,
    InvalidRequest,
    Ledger,
    Mode,
    RefusalReason,
    SessionClosed,
    Status,
)
from chargingd.ledger import keys as K

LEASE_MS = 60_000


@pytest.fixture(params=[True, False], ids=["batched", "unbatched"])
async def ledger(redis: aioredis.Redis, clock: Clock, request: pytest.FixtureRequest) -> Ledger:
    led = Ledger(redis, clock_ms=clock, batch_commands=request.param)
    await led.load_scripts()
    await led.create_account(
        "pre", mode=Mode.PREPAID, currency="EUR", balance_micros=1_000, max_calls=2, who="o"
    )
    await led.create_account(
        "post",
        mode=Mode.POSTPAID,
        currency="EUR",
        balance_micros=100,
        credit_limit_micros=500,
        who="o",
    )
    return led


async def test_grant_in_full(ledger: Ledger) -> None:
    grant = await ledger.reserve("pre", "s1", 300, lease_ms=LEASE_MS)
    assert grant == Grant(300, None, 700)
    assert grant.ok
    acc = await ledger.get_account("pre")
    assert (acc.reserved_micros, acc.live_sessions, acc.balance_micros) == (300, 1, 1_000)
    entry = (await ledger.audit("pre", count=1))[0]
    assert (entry.what, entry.details["session"], entry.details["amount"]) == (
        "reserve",
        "s1",
        "300",
    )
    assert (entry.before["reserved"], entry.after["reserved"]) == ("0", "300")


async def test_postpaid_available_includes_credit_limit(ledger: Ledger) -> None:
    assert await ledger.reserve("post", "s1", 550, lease_ms=LEASE_MS) == Grant(550, None, 50)
    assert await ledger.reserve("post", "s2", 600, lease_ms=LEASE_MS, partial=True) == Grant(
        50, None, 0
    )


async def test_unknown_account(ledger: Ledger) -> None:
    grant = await ledger.reserve("nobody", "s1", 300, lease_ms=LEASE_MS)
    assert grant == Grant(0, RefusalReason.UNKNOWN_ACCOUNT, 0)
    assert not grant.ok


@pytest.mark.parametrize("status", [Status.SUSPENDED, Status.BLOCKED, Status.CLOSED])
async def test_not_active_is_refused(ledger: Ledger, status: Status) -> None:
    await ledger.set_status("pre", status, who="op")
    grant = await ledger.reserve("pre", "s1", 300, lease_ms=LEASE_MS)
    assert (grant.granted_micros, grant.reason) == (0, RefusalReason.SUSPENDED)
    assert (await ledger.get_account("pre")).reserved_micros == 0


async def test_partial_grant_when_allowed(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 800, lease_ms=LEASE_MS)
    assert await ledger.reserve("pre", "s2", 500, lease_ms=LEASE_MS, partial=True) == Grant(
        200, None, 0
    )
    assert (await ledger.get_account("pre")).reserved_micros == 1_000


async def test_all_or_nothing_refuses_and_changes_nothing(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 800, lease_ms=LEASE_MS)
    grant = await ledger.reserve("pre", "s2", 500, lease_ms=LEASE_MS, partial=False)
    assert grant == Grant(0, RefusalReason.INSUFFICIENT_CREDIT, 200)
    acc = await ledger.get_account("pre")
    assert (acc.reserved_micros, acc.live_sessions) == (800, 1)


async def test_default_policy_comes_from_the_ledger(redis: aioredis.Redis, clock: Clock) -> None:
    strict = Ledger(redis, clock_ms=clock, partial_grants=False)
    await strict.create_account("a", mode=Mode.PREPAID, currency="EUR", balance_micros=10, who="o")
    grant = await strict.reserve("a", "s1", 11, lease_ms=LEASE_MS)
    assert grant.reason is RefusalReason.INSUFFICIENT_CREDIT
    # (Another session: s1's refusal is remembered, test_refusals_are_remembered.)
    assert (
        await strict.reserve("a", "s2", 11, lease_ms=LEASE_MS, partial=True)
    ).granted_micros == 10


async def test_refusals_are_remembered_for_a_retransmission(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """A new session refused for credit is refused again (same reason) on a
    retransmission, even once money arrived: any daemon answers the same."""
    led = Ledger(redis, clock_ms=clock, refusal_ttl_s=60)
    await led.load_scripts()
    await led.create_account("a", mode=Mode.PREPAID, currency="EUR", balance_micros=0, who="o")
    first = await led.reserve("a", "s1", 100, lease_ms=LEASE_MS)
    assert first.reason is RefusalReason.INSUFFICIENT_CREDIT
    await led.topup("a", 1_000, txn_id="t1", who="o")
    again = await led.reserve("a", "s1", 100, lease_ms=LEASE_MS)
    assert (again.reason, again.granted_micros) == (RefusalReason.INSUFFICIENT_CREDIT, 0)
    assert 0 < await redis.pttl(K.session_key("a", "s1")) <= 60_000
    assert (await led.reserve("a", "s2", 100, lease_ms=LEASE_MS)).granted_micros == 100


async def test_a_reserve_run_after_its_deadline_refuses_itself(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """Redis ran it after its caller gave up (a stall): it holds nothing, and says so
    to any retransmission."""
    led = Ledger(redis, clock_ms=clock, request_timeout_s=2.0)
    await led.load_scripts()
    await led.create_account("a", mode=Mode.PREPAID, currency="EUR", balance_micros=500, who="o")
    step = led.steps.reserve("a", "s1", 100, lease_ms=LEASE_MS, now_ms=clock(), deadline_ms=1)
    script = led._scripts["reserve"]
    reply = await script(keys=step.keys, args=step.argv)
    assert led.steps.grant(reply, "a", "s1").reason is RefusalReason.LATE
    assert (await led.get_account("a")).reserved_micros == 0
    assert (await led.reserve("a", "s1", 100, lease_ms=LEASE_MS)).reason is RefusalReason.LATE
    assert (await led.reserve("a", "s2", 100, lease_ms=LEASE_MS)).granted_micros == 100  # in time


async def test_refuse_drops_a_new_sessions_hold_and_remembers(
    redis: aioredis.Redis, clock: Clock
) -> None:
    led = Ledger(redis, clock_ms=clock)
    await led.load_scripts()
    await led.create_account("a", mode=Mode.PREPAID, currency="EUR", balance_micros=500, who="o")
    await led.reserve("a", "s1", 300, lease_ms=LEASE_MS)
    assert await led.refuse("a", "s1", "system_error") == "ok"
    acc = await led.get_account("a")
    assert (acc.reserved_micros, acc.balance_micros, acc.live_sessions) == (0, 500, 0)
    late = await led.reserve("a", "s1", 300, lease_ms=LEASE_MS)
    assert late.reason is RefusalReason.SYSTEM_ERROR
    await led.reserve("a", "s2", 100, lease_ms=LEASE_MS)
    await led.commit("a", "s2", 50)
    assert await led.refuse("a", "s2", "system_error") == "charged"  # a real call
    await led.release("a", "s2", 50)
    assert await led.refuse("a", "s2", "system_error") == "closed"


async def test_nothing_available_is_refused_even_with_partial(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 1_000, lease_ms=LEASE_MS)
    grant = await ledger.reserve("pre", "s2", 1, lease_ms=LEASE_MS, partial=True)
    assert grant == Grant(0, RefusalReason.INSUFFICIENT_CREDIT, 0)


async def test_concurrent_call_limit(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 10, lease_ms=LEASE_MS)
    await ledger.reserve("pre", "s2", 10, lease_ms=LEASE_MS)
    grant = await ledger.reserve("pre", "s3", 10, lease_ms=LEASE_MS)
    assert (grant.granted_micros, grant.reason) == (0, RefusalReason.TOO_MANY_CALLS)
    # A renewal of a live session is not a new call.
    assert (await ledger.reserve("pre", "s2", 20, lease_ms=LEASE_MS)).granted_micros == 20
    # new_session=False skips the limit (a renewal whose hold was already reclaimed).
    assert (await ledger.reserve("pre", "s3", 10, lease_ms=LEASE_MS, new_session=False)).ok
    await ledger.release("pre", "s1")
    await ledger.release("pre", "s2")
    assert (await ledger.reserve("pre", "s4", 10, lease_ms=LEASE_MS)).ok


async def test_a_new_sessions_own_hold_counts_when_it_has_one(ledger: Ledger) -> None:
    """A new session's hold is not read up front (a new call has none): a retransmitted
    request the session record did not answer (e.g. a partial grant) still gets its own
    hold counted, in grants and in refusals, and never holds twice."""
    assert await ledger.reserve("pre", "s1", 600, lease_ms=LEASE_MS) == Grant(600, None, 400)
    await ledger.reserve("pre", "s2", 100, lease_ms=LEASE_MS)  # max_calls (2) reached
    # The same request again: its hold replaced, not added, the call limit not applied.
    assert await ledger.reserve("pre", "s1", 900, lease_ms=LEASE_MS) == Grant(900, None, 0)
    acc = await ledger.get_account("pre")
    assert (acc.reserved_micros, acc.live_sessions) == (1_000, 2)
    refused = await ledger.reserve("pre", "s1", 5_000, lease_ms=LEASE_MS, partial=False)
    assert refused == Grant(0, RefusalReason.INSUFFICIENT_CREDIT, 900)  # its own 900 counted
    assert await ledger.reserve("pre", "s3", 1, lease_ms=LEASE_MS) == Grant(
        0, RefusalReason.TOO_MANY_CALLS, 0
    )
    await ledger.set_status("pre", Status.SUSPENDED, who="o")
    suspended = await ledger.reserve("pre", "s1", 100, lease_ms=LEASE_MS)
    assert suspended == Grant(0, RefusalReason.SUSPENDED, 900)
    assert (await ledger.get_account("pre")).reserved_micros == 1_000


async def test_renewal_replaces_the_hold(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 600, lease_ms=LEASE_MS)
    # Own hold counts as available to its renewal.
    assert await ledger.reserve("pre", "s1", 900, lease_ms=LEASE_MS) == Grant(900, None, 100)
    assert await ledger.reserve("pre", "s1", 100, lease_ms=LEASE_MS) == Grant(100, None, 900)
    acc = await ledger.get_account("pre")
    assert (acc.reserved_micros, acc.live_sessions) == (100, 1)


async def test_refused_renewal_keeps_the_previous_hold(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 600, lease_ms=LEASE_MS)
    grant = await ledger.reserve("pre", "s1", 5_000, lease_ms=LEASE_MS, partial=False)
    assert grant.reason is RefusalReason.INSUFFICIENT_CREDIT
    assert (await ledger.get_account("pre")).reserved_micros == 600


async def test_reserve_after_release_raises_session_closed(ledger: Ledger) -> None:
    await ledger.reserve("pre", "s1", 100, lease_ms=LEASE_MS)
    await ledger.release("pre", "s1", 10)
    with pytest.raises(SessionClosed):
        await ledger.reserve("pre", "s1", 100, lease_ms=LEASE_MS)
    assert (await ledger.get_account("pre")).reserved_micros == 0


@pytest.mark.parametrize(
    ("amount", "lease_ms", "session"),
    [(0, LEASE_MS, "s"), (-1, LEASE_MS, "s"), (10, 0, "s"), (10, LEASE_MS, ""), (1.0, 5, "s")],
)
async def test_reserve_validation(ledger: Ledger, amount: int, lease_ms: int, session: str) -> None:
    with pytest.raises(InvalidRequest):
        await ledger.reserve("pre", session, amount, lease_ms=lease_ms)
    assert (await ledger.get_account("pre")).reserved_micros == 0


async def test_reserve_reclaims_expired_holds_first(ledger: Ledger, clock: Clock) -> None:
    await ledger.reserve("pre", "old1", 600, lease_ms=1_000)
    await ledger.reserve("pre", "old2", 400, lease_ms=1_000)
    clock.now_ms += 1_000  # expiry is inclusive
    grant = await ledger.reserve("pre", "new", 1_000, lease_ms=LEASE_MS)
    assert grant == Grant(1_000, None, 0)
    acc = await ledger.get_account("pre")
    assert (acc.reserved_micros, acc.live_sessions) == (1_000, 1)
    entries = await ledger.audit("pre", count=3)
    assert [e.what for e in entries] == ["reserve", "reclaim", "reclaim"]
    assert {e.details["session"] for e in entries[1:]} == {"old1", "old2"}
    assert {e.why for e in entries[1:]} == {"lease expired"}


async def _reclaimed(ledger: Ledger, account: str = "pre") -> list[str]:
    return [e.details["session"] for e in await ledger.audit(account) if e.what == "reclaim"]


async def _lease_due(ledger: Ledger, account: str = "pre") -> int | None:
    raw = await ledger.redis.hget(K.acct_key(account), "lease_due")
    return None if raw is None else int(raw)


async def test_a_shorter_lease_than_the_others_is_reclaimed_at_its_expiry(
    ledger: Ledger, clock: Clock
) -> None:
    """Reserves look for expired leases only from the account's lease_due on: a lease
    shorter than every other one moves it earlier."""
    await ledger.reserve("pre", "long", 300, lease_ms=LEASE_MS)
    await ledger.reserve("pre", "short", 300, lease_ms=1_000)
    assert await _lease_due(ledger) == clock() + 1_000
    clock.now_ms += 1_000
    assert await ledger.reserve("pre", "next", 700, lease_ms=LEASE_MS) == Grant(700, None, 0)
    assert await _reclaimed(ledger) == ["short"]
    assert (await ledger.get_account("pre")).reserved_micros == 1_000


async def test_a_renewed_first_lease_does_not_hide_the_next_one(
    ledger: Ledger, clock: Clock
) -> None:
    """lease_due errs only early: renewing the first lease leaves it at the old expiry,
    the reserve then finds nothing expired and moves it to the next lease's expiry,
    which is reclaimed exactly when it is over."""
    t0 = clock()
    await ledger.reserve("pre", "a", 100, lease_ms=1_000)
    await ledger.reserve("pre", "b", 100, lease_ms=5_000)
    clock.now_ms += 500
    await ledger.reserve("pre", "a", 100, lease_ms=LEASE_MS, new_session=False)
    assert await _lease_due(ledger) == t0 + 1_000
    clock.now_ms += 500
    await ledger.reserve("pre", "c", 100, lease_ms=LEASE_MS, new_session=False)
    assert await _reclaimed(ledger) == [] and await _lease_due(ledger) == t0 + 5_000
    clock.now_ms += 3_999
    await ledger.reserve("pre", "c", 100, lease_ms=LEASE_MS, new_session=False)
    assert await _reclaimed(ledger) == []
    clock.now_ms += 1
    await ledger.reserve("pre", "c", 100, lease_ms=LEASE_MS, new_session=False)
    assert await _reclaimed(ledger) == ["b"]
    assert (await ledger.get_account("pre")).reserved_micros == 200


async def test_an_account_without_lease_due_is_swept_at_once(ledger: Ledger, clock: Clock) -> None:
    """An account written before lease_due existed (or by hand): the next reserve
    looks for expired leases and writes the field; a refusal writes it too."""
    await ledger.reserve("pre", "old", 400, lease_ms=1_000)
    await ledger.redis.hdel(K.acct_key("pre"), "lease_due")
    clock.now_ms += 1_000
    refused = await ledger.reserve("pre", "big", 5_000, lease_ms=LEASE_MS, partial=False)
    assert refused == Grant(0, RefusalReason.INSUFFICIENT_CREDIT, 1_000)
    assert await _reclaimed(ledger) == ["old"]
    assert await _lease_due(ledger) == 2**52  # no lease left
    await ledger.reserve("pre", "s1", 100, lease_ms=2_000)
    assert await _lease_due(ledger) == clock() + 2_000


async def test_more_expired_leases_than_one_reserve_reclaims(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """reclaim_per_reserve bounds one reserve's reclaims; the rest stay due and the
    following reserves take them, lowest expiry first, as before."""
    led = Ledger(redis, clock_ms=clock, reclaim_per_reserve=2)
    await led.load_scripts()
    await led.create_account("a", mode=Mode.PREPAID, currency="EUR", balance_micros=900, who="o")
    for i in range(5):
        await led.reserve("a", f"s{i}", 100, lease_ms=1_000 + i)
    clock.now_ms += 2_000
    await led.reserve("a", "n1", 100, lease_ms=LEASE_MS)
    assert await _reclaimed(led, "a") == ["s1", "s0"]  # newest first
    assert await _lease_due(led, "a") == clock() - 2_000 + 1_002  # s2's: still due
    await led.reserve("a", "n2", 100, lease_ms=LEASE_MS)
    await led.reserve("a", "n3", 100, lease_ms=LEASE_MS)
    assert await _reclaimed(led, "a") == ["s4", "s3", "s2", "s1", "s0"]
    assert await _lease_due(led, "a") == clock() + LEASE_MS
    assert (await led.get_account("a")).reserved_micros == 300


async def test_sweep_reclaims_expired_holds_on_every_account(
    ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    await ledger.reserve("pre", "s1", 100, lease_ms=1_000)
    await ledger.reserve("pre", "s2", 100, lease_ms=1_000)
    await ledger.reserve("post", "s3", 100, lease_ms=1_000)
    assert await ledger.sweep_expired() == 0  # nothing due yet
    clock.now_ms += 1_000 + ledger.hold_index_pad_ms
    assert await ledger.sweep_expired() == 3
    for account_id in ("pre", "post"):
        acc = await ledger.get_account(account_id)
        assert (acc.reserved_micros, acc.live_sessions) == (0, 0)
        entry = (await ledger.audit(account_id, count=1))[0]
        assert (entry.what, entry.who) == ("reclaim", "sweeper")
    assert await ledger.sweep_expired() == 0
    # Index entries stay for the grace period, then go.
    assert await redis.zcard(K.HOLD_INDEX_KEY) == 2
    clock.now_ms += ledger.hold_index_grace_ms
    assert await ledger.sweep_expired() == 0
    assert await redis.zcard(K.HOLD_INDEX_KEY) == 0


async def test_sweep_keeps_live_holds_and_their_index(
    ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    await ledger.reserve("pre", "short", 100, lease_ms=1_000)
    await ledger.reserve("pre", "long", 100, lease_ms=100_000)
    clock.now_ms += 100_000 + ledger.hold_index_pad_ms - 1
    assert await ledger.sweep_expired() == 0  # the index waits for the latest lease
    clock.now_ms += 1
    assert await ledger.sweep_expired() == 2
    assert await redis.zcard(K.HOLD_INDEX_KEY) == 1


async def test_sweep_respects_limit(ledger: Ledger, clock: Clock) -> None:
    for i in range(5):
        await ledger.reserve("post", f"s{i}", 10, lease_ms=1_000, new_session=False)
    clock.now_ms += 10_000
    assert await ledger.sweep_expired(limit=2) == 2
    assert (await ledger.get_account("post")).live_sessions == 3
    assert await ledger.sweep_expired() == 3
    assert (await ledger.get_account("post")).reserved_micros == 0


async def test_sweep_after_index_written_by_another_ledger(
    ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    """A hold indexed by one daemon is swept by another (the index lives in Redis)."""
    other = Ledger(redis, clock_ms=clock)
    await other.reserve("pre", "s1", 100, lease_ms=1_000)
    clock.now_ms += 10_000
    assert await ledger.sweep_expired() == 1
