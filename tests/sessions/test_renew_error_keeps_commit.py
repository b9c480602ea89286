"""An Interim's commit leaves its writes of the session's hold and the account to the
reserve after it in the same script (round 17a, docs/performance.md: commit.lua,
reserve.lua ARGV.pending). A reserve that fails with an error (here: the account's
leases key is not a sorted set, so its ZADD raises WRONGTYPE after the commit debited)
must still leave the commit's writes made, as when the commit wrote them itself: the
account debited as its journal entry and audit say, and the error raised to the caller
(session_renew.lua runs the reserve in pcall, makes what is pending, raises again).
By FCALL (redis 7) and by EVALSHA (the embedded 6.2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError
from sessions_harness import (
    EUR,
    Clock,
    add_account,
    call,
    make_ledger,
    make_sessions,
    usage,
)

from chargingd.ledger import keys as K
from chargingd.sessions.ccapi import Authorized, UsageKind


async def _failing_renewal(redis: aioredis.Redis, tmp_path: Path) -> dict[str, Any]:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await add_account(ledger, balance_micros=5 * EUR)
    info = call("e1")
    assert isinstance(await sessions.authorize(info), Authorized)
    await sessions.account(usage(info, UsageKind.START, 0, clock.now_ms))
    before = await ledger.get_account("acc1")
    # the reserve's ZADD of the lease fails; the commit before it reads no lease
    leases = K.leases_key("acc1")
    await redis.delete(leases)
    await redis.set(leases, "not a sorted set")
    # no lease due (the account's lease_due put past the Interim): the reserve does not
    # sweep (no read of the leases before its grant), its HSET of the hold is made,
    # then its ZADD of the lease fails
    clock.advance(10_000)
    await redis.hset(K.acct_key("acc1"), "lease_due", str(clock.now_ms + 3_600_000))
    with pytest.raises(ResponseError, match="WRONGTYPE"):
        await sessions.account(usage(info, UsageKind.INTERIM, 10, clock.now_ms))
    await redis.delete(leases)  # (get_account counts the leases)
    after = await ledger.get_account("acc1")
    journal: Any = await redis.xrevrange(K.journal_key("acc1"), count=1)
    audit = [e for e in await ledger.audit("acc1", count=10) if e.what == "commit"]
    debited: Any = await redis.hget(K.session_key("acc1", "e1"), "debited")
    return {"before": before, "after": after, "journal": journal, "audit": audit,
            "debited": int(debited)}  # fmt: skip


def _check(seen: dict[str, Any]) -> None:
    before, after = seen["before"], seen["after"]
    debit = seen["debited"]
    assert debit > 0  # the commit ran: the ledger session says so
    # ... and the account says the same as the journal and the audit
    assert after.balance_micros == before.balance_micros - debit
    assert after.debits_micros == before.debits_micros + debit
    ((_, fields),) = seen["journal"]
    assert fields[b"k"] == b"debit" and int(fields[b"a"]) == -debit
    assert int(fields[b"b"]) == after.balance_micros
    assert int(fields[b"n"]) == after.topups_micros - after.debits_micros
    (commit,) = seen["audit"]
    assert commit.after["balance"] == str(after.balance_micros)
    # the hold less the debit, as the commit left it (the reserve's grant not made)
    assert after.reserved_micros == before.reserved_micros - debit


async def test_a_failing_reserve_leaves_the_commit_made_by_fcall(
    redis7: aioredis.Redis, tmp_path: Path
) -> None:
    await redis7.config_resetstat()
    _check(await _failing_renewal(redis7, tmp_path))
    info: Any = await redis7.info("commandstats")
    assert int(info["cmdstat_fcall"]["calls"]) >= 2


async def test_a_failing_reserve_leaves_the_commit_made_by_evalsha(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    _check(await _failing_renewal(redis, tmp_path))
