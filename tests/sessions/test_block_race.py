"""A block (a fraud rule on another daemon, an operator) that lands between an
authorize's reserve and its record write: its cut of the account's live calls cannot
see that call yet, so the record write refuses it (the ledger's account check runs in
the record script). The fused script writes a full grant's record with its reserve;
a partial grant (every hold_all call of an account with less than max_session_s of
money) and the step-by-step path write it afterwards. Both paths (the fixture)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from sessions_harness import EUR, Clock, RecordingCutter, add_account, call

from chargingd.ledger import Ledger, Status
from chargingd.sessions.ccapi import Authorized, RefusalCode, Refused
from chargingd.sessions.service import Sessions
from tests.sessions.test_credit_modes import cutter, sessions  # noqa: F401


async def test_a_call_authorized_while_its_account_is_blocked_is_refused_not_left_uncut(
    sessions: Sessions,  # noqa: F811
    ledger: Ledger,
    clock: Clock,
    redis: aioredis.Redis,
    cutter: RecordingCutter,  # noqa: F811
) -> None:
    await add_account(ledger, balance_micros=int(0.30 * EUR))  # < max_session_s: partial
    create = sessions.store.create
    cut: list[int] = []

    async def create_after_a_block(rec: Any, **kw: Any) -> bool:
        # Another daemon blocks the account now and cuts its live calls.
        await ledger.set_status("acc1", Status.BLOCKED, who="fraud", why="rule", reason="fraud")
        cut.append(await sessions.cut_account("acc1"))
        return await create(rec, **kw)

    sessions.store.create = create_after_a_block  # type: ignore[method-assign]
    answer = await sessions.authorize(call("k1", client="kam"))
    assert cut == [0]  # the block found no live call to cut ...
    # ... so the call is refused as the blocked account's calls are, and holds nothing.
    assert answer == Refused(RefusalCode.FRAUD, "account blocked"), answer
    assert not isinstance(answer, Authorized)
    assert await sessions.store.find("k1") is None
    assert await redis.hget("{a:acc1}:holds", "k1") is None
    acc = await ledger.get_account("acc1")
    assert acc.reserved_micros == 0
    assert acc.balance_micros == int(0.30 * EUR)
    # A retransmission gets a refusal too (the account check, or the remembered one).
    again = await sessions.authorize(call("k1", client="kam"))
    assert isinstance(again, Refused)


async def test_a_call_written_before_the_block_is_cut_by_it(
    sessions: Sessions,  # noqa: F811
    ledger: Ledger,
    redis: aioredis.Redis,
    cutter: RecordingCutter,  # noqa: F811
) -> None:
    """The other order: the record first, then the block; the block's cut finds it."""
    await add_account(ledger, balance_micros=int(0.30 * EUR))
    assert isinstance(await sessions.authorize(call("k1", client="kam")), Authorized)
    await ledger.set_status("acc1", Status.BLOCKED, who="fraud", why="rule", reason="fraud")
    assert await sessions.cut_account("acc1") == 1
    assert [ref.session_id for ref, _ in cutter.disconnects] == ["k1"]


async def test_a_retransmission_racing_a_block_keeps_the_live_calls_hold_for_its_cut(
    sessions: Sessions,  # noqa: F811
    ledger: Ledger,
    redis: aioredis.Redis,
    cutter: RecordingCutter,  # noqa: F811
) -> None:
    """A live call's Access-Request again while a block lands: its record stays as it
    was (the block's cut ends it and its close releases the hold), never undone."""
    await add_account(ledger, balance_micros=int(0.30 * EUR))
    first = await sessions.authorize(call("k1", client="kam"))
    assert isinstance(first, Authorized)
    held = await redis.hget("{a:acc1}:holds", "k1")
    create = sessions.store.create
    cut: list[int] = []

    async def create_after_a_block(rec: Any, **kw: Any) -> bool:
        await ledger.set_status("acc1", Status.BLOCKED, who="fraud", why="rule", reason="fraud")
        cut.append(await sessions.cut_account("acc1"))
        return await create(rec, **kw)

    sessions.store.create = create_after_a_block  # type: ignore[method-assign]
    again = await sessions.authorize(call("k1", client="kam"))
    if not cut:
        # The fused script found the live record: answered from it, nothing reserved
        # nor written (no window for a block between the two); the block comes after.
        assert sessions.fused is not None and again == first
        await ledger.set_status("acc1", Status.BLOCKED, who="fraud", why="rule", reason="fraud")
        cut.append(await sessions.cut_account("acc1"))
    assert cut == [1]  # the block's cut found the live call
    assert await redis.hget("{a:acc1}:holds", "k1") == held
    assert await sessions.store.find("k1") is not None
