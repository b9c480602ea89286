"""Money truth in credit control (issue 9 part A), on a real Redis and Ledger with a
moved clock: the cut tolerance and what overrun means (finding 1), the provisional
charge of a silent call and its late Stop's correction (finding 2), a replayed Stop
that meets another closer's lease (finding 13). Both paths: the fused scripts of a
single Redis and the step-by-step path of Redis Cluster.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import TimeoutError as RedisTimeoutError
from sessions_harness import (
    EUR,
    T0_MS,
    Clock,
    MakeSessions,
    RecordingCutter,
    add_account,
    call,
    make_sessions,
    read_cdrs,
    usage,
)

from chargingd.ledger import Ledger
from chargingd.sessions.ccapi import Authorized, CallInfo, RefusalCode, Refused, UsageKind
from chargingd.sessions.service import Sessions
from chargingd.sessions.spool import entry_to_report, orphan_fields, report_to_entry
from chargingd.sessions.store import ORPHANS, fin_key

PER_S = 10_000  # Berlin: 0.60 EUR a minute, billed per second
ANSWER_MS = T0_MS + 2_000


@pytest.fixture
def sessions(on_both_paths: MakeSessions, cutter: RecordingCutter) -> Sessions:
    return on_both_paths(cutter)


async def orphans(redis: aioredis.Redis) -> list[dict[bytes, bytes]]:
    entries: Any = await redis.xrange(ORPHANS)
    return [fields for _, fields in entries]


async def cut_at_100s(sessions: Sessions, ledger: Ledger, clock: Clock, sid: str) -> CallInfo:
    """1 EUR pays 100 s: a partial renewal at 60 s, the deadline at 100 s, the cut."""
    info = call(sid)
    clock.now_ms = T0_MS
    assert isinstance(await sessions.authorize(info), Authorized)
    clock.now_ms = ANSWER_MS
    await sessions.account(usage(info, UsageKind.START, 0, ANSWER_MS))
    clock.now_ms = ANSWER_MS + 60_000
    await sessions.account(usage(info, UsageKind.INTERIM, 60, clock.now_ms))
    clock.now_ms = ANSWER_MS + 100_200  # the cutter fires at the paid second
    assert await sessions.cutter.run_once() == 1
    return info


# -- finding 1: cut tolerance ------------------------------------------------------


@pytest.mark.parametrize("late_s", [1, 2])
async def test_stop_within_the_tolerance_after_a_cut_is_charged_what_was_paid(
    sessions: Sessions,
    ledger: Ledger,
    clock: Clock,
    cutter: RecordingCutter,
    redis: aioredis.Redis,
    late_s: int,
) -> None:
    await add_account(ledger, balance_micros=1 * EUR)
    info = await cut_at_100s(sessions, ledger, clock, "s1")
    assert [reason for _, reason in cutter.disconnects] == ["credit_cut"]
    stop_s = 100 + late_s  # the gateway obeyed; its Stop says a second or two more
    await sessions.account(usage(info, UsageKind.STOP, stop_s, ANSWER_MS + stop_s * 1000))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.duration_s, cdr.cost_micros) == ("credit_cut", stop_s, stop_s * PER_S)
    assert (cdr.charged_micros, cdr.charge_reason) == (1 * EUR, "cut_tolerance")
    account = await ledger.get_account("acc1")
    assert (account.balance_micros, account.reserved_micros) == (0, 0)


async def test_stop_past_the_tolerance_is_an_overrun_committed_as_debt(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    await add_account(ledger, balance_micros=1 * EUR)
    info = await cut_at_100s(sessions, ledger, clock, "s1")
    await sessions.account(usage(info, UsageKind.STOP, 103, ANSWER_MS + 103_000))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.cost_micros) == ("overrun", 103 * PER_S)
    assert cdr.charged_micros == 103 * PER_S
    assert cdr.charge_reason == "overrun" and cdr.extra["allowed_s"] == "100"
    account = await ledger.get_account("acc1")
    assert account.balance_micros == -3 * PER_S


async def test_gateway_without_interims_within_its_session_timeout_is_no_overrun(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    """10 EUR: a 75 s first hold and a 1000 s Session-Timeout; the gateway sends no
    Interim and stops at 400 s: charged in full, status normal."""
    await add_account(ledger, balance_micros=10 * EUR)
    info = call("s1")
    clock.now_ms = T0_MS
    answer = await sessions.authorize(info)
    assert isinstance(answer, Authorized) and answer.session_timeout_s == 1000
    await sessions.account(usage(info, UsageKind.START, 0, ANSWER_MS))
    clock.now_ms = ANSWER_MS + 400_000
    await sessions.account(usage(info, UsageKind.STOP, 400, clock.now_ms))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.charged_micros, cdr.charge_reason) == ("normal", 400 * PER_S, "")
    account = await ledger.get_account("acc1")
    assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 400 * PER_S, 0)


async def test_session_timeout_expiry_within_the_tolerance_is_a_credit_cut(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    """1 EUR: Session-Timeout 100 s; no Interim; the gateway's timer stops the call and
    its Stop says 101 s: charged what was paid, never below zero."""
    await add_account(ledger, balance_micros=1 * EUR)
    info = call("s1")
    clock.now_ms = T0_MS
    answer = await sessions.authorize(info)
    assert isinstance(answer, Authorized) and answer.session_timeout_s == 100
    await sessions.account(usage(info, UsageKind.START, 0, ANSWER_MS))
    clock.now_ms = ANSWER_MS + 101_000
    await sessions.account(usage(info, UsageKind.STOP, 101, clock.now_ms))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.charged_micros, cdr.charge_reason) == (
        "credit_cut",
        1 * EUR,
        "cut_tolerance",
    )
    assert (await ledger.get_account("acc1")).balance_micros == 0


async def test_money_told_twice_is_capped_never_below_zero(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    """Gateways without Interims. Call a holds 0.75 and is told 100 s (held + the 0.25
    still available); call b then holds that 0.25 (told 25 s). a stops at 90 s, within
    what it was told: no overrun, but the money for it is not there: capped, and the
    shortfall stays visible (cost > charged, reason capped)."""
    await add_account(ledger, balance_micros=1 * EUR)
    a, b = call("a"), call("b")
    clock.now_ms = T0_MS
    told = []
    for info in (a, b):
        answer = await sessions.authorize(info)
        assert isinstance(answer, Authorized)
        told.append(answer.session_timeout_s)
        await sessions.account(usage(info, UsageKind.START, 0, ANSWER_MS))
    assert told == [100, 25]
    clock.now_ms = ANSWER_MS + 90_000
    await sessions.account(usage(b, UsageKind.STOP, 25, ANSWER_MS + 25_000))
    await sessions.account(usage(a, UsageKind.STOP, 90, clock.now_ms))
    cdrs = {c.call_id: c for c in await read_cdrs(redis)}
    # b ran to the Session-Timeout its money set: credit_cut, as a second past it is.
    assert (cdrs["b"].status, cdrs["b"].charged_micros) == ("credit_cut", 25 * PER_S)
    assert (cdrs["a"].status, cdrs["a"].cost_micros) == ("normal", 90 * PER_S)
    assert (cdrs["a"].charged_micros, cdrs["a"].charge_reason) == (75 * PER_S, "capped")
    account = await ledger.get_account("acc1")
    assert (account.balance_micros, account.reserved_micros) == (0, 0)


# -- finding 2: provisional stale charge, late Stop ----------------------------------


async def silent_then_reaped(sessions: Sessions, clock: Clock, info: CallInfo) -> None:
    """Start, then nothing: reaped as stale 180 s later (stale_factor 3 x 60 s)."""
    clock.now_ms = T0_MS
    assert isinstance(await sessions.authorize(info), Authorized)
    clock.now_ms = ANSWER_MS
    await sessions.account(usage(info, UsageKind.START, 0, ANSWER_MS))
    clock.now_ms = ANSWER_MS + 180_001
    assert await sessions.reaper.run_once() == 1


@pytest.mark.parametrize(("stop_s", "charged_s"), [(200, 200), (30, 30)])
async def test_late_stop_corrects_the_provisional_charge_and_cdr(
    sessions: Sessions,
    ledger: Ledger,
    clock: Clock,
    redis: aioredis.Redis,
    stop_s: int,
    charged_s: int,
) -> None:
    """Reaped at 180 s, charged 75 s (the first grant caps the time since answer);
    the Stop then says 200 s (debit) or 30 s (refund)."""
    await add_account(ledger, balance_micros=10 * EUR)
    info = call("s1")
    await silent_then_reaped(sessions, clock, info)
    (stale,) = await read_cdrs(redis)
    assert (stale.status, stale.duration_s, stale.charged_micros) == ("stale", 75, 75 * PER_S)
    assert (stale.charge_reason, stale.revision) == ("provisional", 0)
    clock.advance(5)
    stop = usage(info, UsageKind.STOP, stop_s, ANSWER_MS + stop_s * 1000, disconnect_cause=16)
    await sessions.account(stop)
    await sessions.account(stop)  # retransmitted: corrects once
    _, final = await read_cdrs(redis)
    assert (final.call_id, final.revision, final.status) == ("s1", 1, "normal")
    assert (final.duration_s, final.disconnect_cause) == (stop_s, 16)
    assert (final.cost_micros, final.charged_micros) == (charged_s * PER_S, charged_s * PER_S)
    assert final.extra["corrected"] == "late_stop"
    assert final.extra["provisional_micros"] == str(75 * PER_S)
    account = await ledger.get_account("acc1")
    assert (account.balance_micros, account.reserved_micros) == (10 * EUR - charged_s * PER_S, 0)
    assert account.debits_micros == charged_s * PER_S  # a refund takes back its debit
    (entry,) = [e for e in await ledger.audit("acc1") if e.what == "correct"]
    assert entry.why == "late stop after stale"
    assert entry.details["amount"] == str((charged_s - 75) * PER_S)
    assert await orphans(redis) == []


async def test_late_stop_past_what_was_allowed_is_an_overrun(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    """1 EUR: Session-Timeout 100 s; reaped; the late Stop says 300 s: the debt is
    committed and flagged, not dropped."""
    await add_account(ledger, balance_micros=1 * EUR)
    info = call("s1")
    await silent_then_reaped(sessions, clock, info)
    await sessions.account(usage(info, UsageKind.STOP, 300, ANSWER_MS + 300_000))
    _, final = await read_cdrs(redis)
    assert (final.status, final.charged_micros, final.charge_reason) == (
        "overrun",
        300 * PER_S,
        "overrun",
    )
    assert (await ledger.get_account("acc1")).balance_micros == 1 * EUR - 300 * PER_S


async def test_late_interim_raises_a_provisional_charge_only_upward(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    await add_account(ledger, balance_micros=10 * EUR)
    info = call("s1")
    await silent_then_reaped(sessions, clock, info)
    await sessions.account(usage(info, UsageKind.INTERIM, 60, ANSWER_MS + 60_000))
    assert len(await read_cdrs(redis)) == 1  # less than the provisional 75 s: nothing
    await sessions.account(usage(info, UsageKind.INTERIM, 120, ANSWER_MS + 120_000))
    _, raised = await read_cdrs(redis)
    assert (raised.status, raised.duration_s, raised.revision) == ("stale", 120, 1)
    assert raised.charge_reason == "provisional"
    await sessions.account(usage(info, UsageKind.STOP, 150, ANSWER_MS + 150_000))
    *_, final = await read_cdrs(redis)
    assert (final.status, final.duration_s, final.revision) == ("normal", 150, 2)
    assert (await ledger.get_account("acc1")).balance_micros == 10 * EUR - 150 * PER_S


async def test_report_contradicting_a_closed_cdr_goes_to_orphans(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    """Never acknowledged and forgotten: a second Stop with more usage than the one
    that closed the call is kept with a reason; a plain retransmission is not."""
    await add_account(ledger, balance_micros=10 * EUR)
    info = call("s1")
    clock.now_ms = T0_MS
    await sessions.authorize(info)
    await sessions.account(usage(info, UsageKind.START, 0, ANSWER_MS))
    clock.now_ms = ANSWER_MS + 50_000
    await sessions.account(usage(info, UsageKind.STOP, 50, clock.now_ms))
    await sessions.account(usage(info, UsageKind.STOP, 50, clock.now_ms))
    assert await orphans(redis) == []
    await sessions.account(usage(info, UsageKind.STOP, 70, clock.now_ms))
    (orphan,) = await orphans(redis)
    assert (orphan[b"reason"], orphan[b"usage_s"]) == (b"stop_after_close", b"70")
    assert len(await read_cdrs(redis)) == 1
    assert (await ledger.get_account("acc1")).balance_micros == 10 * EUR - 50 * PER_S


# -- finding 13: a replayed Stop meets another closer's lease ------------------------


async def test_replayed_stop_waits_for_a_dead_closers_lease_then_closes_with_its_own_usage(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    """The closer died after the release (Redis went away before its CDR); its lease
    outlives the spool replay. The replayed Stop is kept until the lease is gone, then
    closes the call with the Stop's own usage and cause (not the reaper, not stale)."""
    await add_account(ledger, balance_micros=10 * EUR)
    info = call("s1")
    clock.now_ms = T0_MS
    await sessions.authorize(info)
    await sessions.account(usage(info, UsageKind.START, 0, ANSWER_MS))
    clock.now_ms = ANSWER_MS + 70_000
    stop = usage(info, UsageKind.STOP, 70, clock.now_ms, disconnect_cause=17)
    await ledger.release("acc1", "s1", 70 * PER_S)  # the dead closer's release ...
    await redis.set(fin_key("acc1", "s1"), "dead-closer", ex=30)  # ... and its lease
    sessions.spool.append(report_to_entry(stop))  # spooled while Redis was away
    await sessions.reaper.run_once()  # replay: the lease is held
    assert await read_cdrs(redis) == []
    assert sessions.spool.pending(), "the Stop is kept for the next pass"
    await redis.delete(fin_key("acc1", "s1"))  # the lease expired
    await sessions.reaper.run_once()
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.duration_s, cdr.disconnect_cause) == ("normal", 70, 17)
    assert cdr.charged_micros == 70 * PER_S
    assert (await ledger.get_account("acc1")).balance_micros == 10 * EUR - 70 * PER_S
    assert not sessions.spool.pending()


# A usage line as the spool wrote it while CallInfo was a dataclass (asdict, before 8a).
OLD_LINE = (
    '{"call":{"account_hint":"acc1","call_origin":"answer","called":"0049301234567",'
    '"caller_ip":"192.0.2.7","calling":"+4930123","client":"gw1","conf_id":"cf",'
    '"default_account":"d","gateway":"10.0.0.1","lookup":["user","ani"],'
    '"nas_session_id":"n1","session_id":"s1","user_name":"alice"},"disconnect_cause":16,'
    '"event_ms":1700000070000,"kind":"stop","quality":[["mos","4.1"]],"sip_code":200,'
    '"terminate_cause":"User-Request","type":"usage","usage_reported":true,"usage_s":70}'
)


def test_a_line_spooled_by_the_old_code_still_loads() -> None:
    report = entry_to_report(json.loads(OLD_LINE))
    assert report.call == CallInfo(
        "s1", "alice", "+4930123", "0049301234567", "10.0.0.1", "gw1", "d", "cf",
        ("user", "ani"), "n1", "answer", "192.0.2.7", "acc1",
    )  # fmt: skip
    assert (report.kind, report.usage_s, report.quality) == (UsageKind.STOP, 70, (("mos", "4.1"),))
    assert json.dumps(report_to_entry(report), separators=(",", ":"), sort_keys=True) == OLD_LINE
    assert orphan_fields(report, "r", "radius")["call.lookup"] == "('user', 'ani')"


async def test_live_stop_meeting_a_lease_is_spooled_not_dropped(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    await add_account(ledger, balance_micros=10 * EUR)
    info = call("s1")
    clock.now_ms = T0_MS
    await sessions.authorize(info)
    await sessions.account(usage(info, UsageKind.START, 0, ANSWER_MS))
    await redis.set(fin_key("acc1", "s1"), "another-closer", ex=30)
    await sessions.account(usage(info, UsageKind.STOP, 40, ANSWER_MS + 40_000))
    assert await read_cdrs(redis) == [] and sessions.spool.pending()
    await redis.delete(fin_key("acc1", "s1"))
    await sessions.reaper.run_once()
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.duration_s) == ("normal", 40)


# -- finding 12: an authorize whose answer never came back ---------------------------


async def test_undo_of_an_authorize_whose_reply_was_lost(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    """Redis ran the authorize but its reply came too late: the gateway was refused.
    The undo (spooled, replayed once Redis answers) leaves no hold and no record, and
    a copy of the request that runs even later is refused the same way."""
    await add_account(ledger, balance_micros=10 * EUR)
    clock.now_ms = T0_MS
    assert isinstance(await sessions.authorize(call("s1")), Authorized)
    sessions.spool.append({"type": "undo_authorize", "account_id": "acc1", "session_id": "s1"})
    await sessions.reaper.run_once()  # replays the spool
    assert await sessions.store.find("s1") is None
    account = await ledger.get_account("acc1")
    assert (account.reserved_micros, account.live_sessions) == (0, 0)
    late = await sessions.authorize(call("s1"))
    assert late == Refused(RefusalCode.SYSTEM_ERROR, "charging unavailable")
    assert (await ledger.get_account("acc1")).reserved_micros == 0
    clock.advance(400)
    assert await sessions.reaper.run_once() == 0 and await read_cdrs(redis) == []


async def test_undo_never_touches_a_call_accounting_shows_real(
    sessions: Sessions, ledger: Ledger, clock: Clock
) -> None:
    await add_account(ledger, balance_micros=10 * EUR)
    info = call("s1")
    clock.now_ms = T0_MS
    await sessions.authorize(info)
    await sessions.account(usage(info, UsageKind.START, 0, ANSWER_MS))
    assert await sessions.undo_authorize("acc1", "s1") is False
    rec = await sessions.store.find("s1")
    assert rec is not None and rec.held_micros > 0
    assert (await ledger.get_account("acc1")).reserved_micros == rec.held_micros


async def test_undo_of_a_refused_copy_keeps_the_authorize_another_daemon_accepted(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    """The gateway sent its Access-Request to two daemons. Daemon A accepted it; B's
    copy timed out on the hold's write (a cluster master paused, step by step: B never
    sent a record) and B refused, spooling an undo. The undo ran once the master
    answered, before the call's Start: it dropped A's hold and record, the Start was
    adopted "without authorize" and the call ended `overrun` with its money never held
    (cluster money soak, seed 9). A record B never sent is A's: kept."""
    await add_account(ledger, balance_micros=10 * EUR)
    info = call("s1")
    clock.now_ms = T0_MS
    assert isinstance(await sessions.authorize(info), Authorized)  # daemon A's answer
    held = (await ledger.get_account("acc1")).reserved_micros
    entry = {"type": "undo_authorize", "account_id": "acc1", "session_id": "s1"}
    sessions.spool.append(entry | {"record_sent": False})  # B's, replayed now
    await sessions.reaper.run_once()
    rec = await sessions.store.find("s1")
    assert rec is not None and rec.held_micros == held > 0
    assert (await ledger.get_account("acc1")).reserved_micros == held
    await sessions.account(usage(info, UsageKind.START, 0, ANSWER_MS))
    await sessions.account(usage(info, UsageKind.STOP, 30, ANSWER_MS + 30_000))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.duration_s) == ("normal", 30)
    assert (await ledger.get_account("acc1")).reserved_micros == 0


async def test_a_copy_refused_on_its_holds_write_does_not_undo_the_accepted_call(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis, tmp_path: Path
) -> None:
    """Daemon B (step by step) gets the copy; its hold's write times out (the master
    paused): refused, and the undo it spools says its record was never sent."""
    await add_account(ledger, balance_micros=10 * EUR)
    info = call("s1")
    clock.now_ms = T0_MS
    assert isinstance(await sessions.authorize(info), Authorized)  # daemon A's answer
    held = (await ledger.get_account("acc1")).reserved_micros
    b = make_sessions(redis, ledger, clock, tmp_path / "b")
    b.step_by_step()

    async def stalled(*_: Any, **__: Any) -> Any:
        raise RedisTimeoutError("Timeout reading from 127.0.0.1:1")

    b.store.find = b.store.get = _nothing  # type: ignore[method-assign]  # A's not seen yet
    ledger.reserve = stalled  # type: ignore[method-assign]
    refused = await b.authorize(info)
    del ledger.reserve, b.store.find, b.store.get
    assert refused == Refused(RefusalCode.SYSTEM_ERROR, "charging unavailable")
    await b.reaper.run_once()  # replays B's spool: the undo
    rec = await sessions.store.find("s1")
    assert rec is not None and rec.held_micros == held > 0
    assert (await ledger.get_account("acc1")).reserved_micros == held


async def _nothing(*_: Any, **__: Any) -> None:
    return None


async def test_refused_for_less_than_a_second_is_refused_again_not_reused(
    sessions: Sessions, ledger: Ledger, clock: Clock
) -> None:
    """Finding 9's cause: a grant too small for one second used to close the ledger
    session, so the retransmission heard "session id already used"."""
    await add_account(ledger, balance_micros=5_000)  # half a second at 0.01 per second
    first = await sessions.authorize(call("s1"))
    await ledger.topup("acc1", 1 * EUR, txn_id="t1", who="test")
    again = await sessions.authorize(call("s1"))
    refused = Refused(RefusalCode.INSUFFICIENT_CREDIT, "insufficient credit")
    assert first == again == refused
    assert (await ledger.get_account("acc1")).reserved_micros == 0
