"""An authorize whose hold was written but whose next write never left the process.

On the step-by-step path (Redis Cluster) and for a partial first grant on the fused
path, the hold is reserved first and the session record written after it. When the
connection is gone for that second write (``CommandNotSent``: e.g. the account's master
died between the two during a failover), the gateway is refused, so the hold must be
undone too (spooled, replayed once Redis answers), not left held until its lease ends.
Seen as 0.75 left reserved after tests/cluster/test_cluster_failover.py under load.
"""

from __future__ import annotations

from typing import Any

import pytest
from sessions_harness import (
    EUR,
    T0_MS,
    Clock,
    MakeSessions,
    RecordingCutter,
    add_account,
    call,
)

from chargingd.ledger import Ledger
from chargingd.ledger.thin import CommandNotSent
from chargingd.sessions.ccapi import Authorized, RefusalCode, Refused
from chargingd.sessions.service import Sessions

UNAVAILABLE = Refused(RefusalCode.SYSTEM_ERROR, "charging unavailable")


def spooled(sessions: Sessions) -> int:
    return sum(len(path.read_text().splitlines()) for path in sessions.spool.pending())


@pytest.fixture
def sessions(on_both_paths: MakeSessions) -> Sessions:
    return on_both_paths(RecordingCutter())


def record_write_not_sent(sessions: Sessions) -> list[str]:
    """The record's write fails as if no connection could be had (the hold before it
    went through): the store's create on this instance raises CommandNotSent."""
    tried: list[str] = []

    async def create(rec: Any, **_: Any) -> bool:
        tried.append(rec.session_id)
        raise CommandNotSent("no connection to 127.0.0.1:1")

    sessions.store.create = create  # type: ignore[method-assign]
    return tried


async def test_a_hold_whose_record_was_never_sent_is_undone(
    sessions: Sessions, ledger: Ledger, clock: Clock
) -> None:
    # 0.30 EUR pays 30 s of the 0.01 EUR/s destination: a partial first grant, so the
    # fused path also reserves first and writes the record after it.
    await add_account(ledger, balance_micros=EUR * 30 // 100)
    clock.now_ms = T0_MS
    tried = record_write_not_sent(sessions)
    answer = await sessions.authorize(call("s1"))
    assert answer == UNAVAILABLE
    assert tried == ["s1"]  # the hold went through; the record's write was the one lost
    held = await ledger.get_account("acc1")
    assert held.reserved_micros > 0  # what the undo is for
    del sessions.store.create  # the connection is back: the class's own method again
    await sessions.reaper.run_once()  # replays the spool: the undo
    account = await ledger.get_account("acc1")
    assert (account.reserved_micros, account.live_sessions) == (0, 0)
    assert account.balance_micros == EUR * 30 // 100
    assert await sessions.store.find("s1") is None
    # Once undone the session id stays refused: a late copy of the request takes nothing.
    assert await sessions.authorize(call("s1")) == UNAVAILABLE
    assert (await ledger.get_account("acc1")).reserved_micros == 0


async def test_nothing_sent_at_all_spools_no_undo(
    sessions: Sessions, ledger: Ledger, clock: Clock
) -> None:
    """A first write that never left the process holds nothing: no undo is spooled (an
    outage would otherwise fill the spool with one per refused call), and the same
    session id is accepted once Redis answers."""
    await add_account(ledger, balance_micros=10 * EUR)
    clock.now_ms = T0_MS

    async def not_sent(*_: Any, **__: Any) -> Any:
        raise CommandNotSent("no connection to 127.0.0.1:1")

    # The fused path sends its script through the store, the step-by-step one its
    # reserve through the ledger (both plain Python objects in either build: a compiled
    # class's method cannot be replaced, tests/app/test_compiled.py).
    fused = sessions.authorizer.fused is not None
    target: Any = sessions.store if fused else sessions.ledger
    name = "send" if fused else "reserve"
    setattr(target, name, not_sent)
    assert await sessions.authorize(call("s1")) == UNAVAILABLE
    assert spooled(sessions) == 0
    delattr(target, name)
    assert isinstance(await sessions.authorize(call("s1")), Authorized)
