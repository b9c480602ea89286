"""Deadlines, the call cutter, top-ups, operator kills, the reaper, gateway restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
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
from chargingd.sessions.ccapi import Authorized, CallInfo, UsageKind
from chargingd.sessions.service import Sessions
from chargingd.sessions.store import DEADLINES, member

PER_S = 10_000  # Berlin: 0.60 EUR a minute, billed per second
ANSWER_MS = T0_MS + 2_000


@pytest.fixture
def cutter() -> RecordingCutter:
    return RecordingCutter()


@pytest.fixture
def sessions(
    redis: aioredis.Redis, ledger: Ledger, clock: Clock, tmp_path: Path, cutter: RecordingCutter
) -> Sessions:
    return make_sessions(
        redis, ledger, clock, tmp_path, cutter, disconnect_retries=3, disconnect_backoff_s=1.0
    )


async def start_call(
    sessions: Sessions, clock: Clock, info: CallInfo, *, interim_s: int = 60
) -> None:
    """Authorize at T0, answer at ANSWER_MS, one interim ``interim_s`` later."""
    clock.now_ms = T0_MS
    assert isinstance(await sessions.authorize(info), Authorized)
    clock.now_ms = ANSWER_MS
    await sessions.account(usage(info, UsageKind.START, 0, ANSWER_MS))
    clock.now_ms = ANSWER_MS + interim_s * 1000
    await sessions.account(usage(info, UsageKind.INTERIM, interim_s, clock.now_ms))


async def limited_call(sessions: Sessions, ledger: Ledger, clock: Clock) -> CallInfo:
    """1 EUR pays 100 s; the renewal at 60 s gets 0.40 of the 0.75 asked: deadline at 100 s."""
    await add_account(ledger, balance_micros=1 * EUR)
    info = call("s1")
    await start_call(sessions, clock, info)
    return info


async def test_partial_grant_sets_deadline_and_cutter_fires_at_it(
    sessions: Sessions, ledger: Ledger, clock: Clock, cutter: RecordingCutter, redis: aioredis.Redis
) -> None:
    info = await limited_call(sessions, ledger, clock)
    rec = await sessions.store.find("s1")
    assert rec is not None
    assert (rec.limited, rec.held_micros, rec.paid_usage_s) == (1, 40 * PER_S, 100)
    assert rec.deadline_ms == ANSWER_MS + 100_000
    assert await redis.zscore(DEADLINES, member("acc1", "s1")) == ANSWER_MS + 100_000
    clock.now_ms = ANSWER_MS + 99_999
    assert await sessions.cutter.run_once() == 0
    assert cutter.disconnects == []
    clock.now_ms = ANSWER_MS + 100_000
    assert await sessions.cutter.run_once() == 1
    assert [(ref.session_id, ref.gateway, reason) for ref, reason in cutter.disconnects] == [
        ("s1", "10.0.0.1", "credit_cut")
    ]
    assert await sessions.cutter.run_once() == 0  # claimed once, fired once
    await sessions.account(usage(info, UsageKind.STOP, 100, ANSWER_MS + 100_000))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.cost_micros, cdr.duration_s) == ("credit_cut", 1 * EUR, 100)
    account = await ledger.get_account("acc1")
    assert (account.balance_micros, account.reserved_micros) == (0, 0)


async def test_failed_disconnect_is_retried_with_backoff_and_bounded(
    sessions: Sessions, ledger: Ledger, clock: Clock, cutter: RecordingCutter, redis: aioredis.Redis
) -> None:
    await limited_call(sessions, ledger, clock)
    cutter.fail_next = 1
    clock.now_ms = ANSWER_MS + 100_000
    await sessions.cutter.run_once()
    assert len(cutter.disconnects) == 1
    assert await redis.zscore(DEADLINES, member("acc1", "s1")) == clock.now_ms + 1000
    clock.advance(0.999)
    await sessions.cutter.run_once()
    assert len(cutter.disconnects) == 1  # not before the back-off
    clock.advance(0.001)
    await sessions.cutter.run_once()
    assert len(cutter.disconnects) == 2  # second attempt confirmed
    assert await redis.zscore(DEADLINES, member("acc1", "s1")) is None
    rec = await sessions.store.find("s1")
    assert rec is not None and (rec.cut_attempts, rec.cut_ok) == (2, 1)


async def test_disconnect_gives_up_after_configured_attempts(
    sessions: Sessions, ledger: Ledger, clock: Clock, cutter: RecordingCutter
) -> None:
    await limited_call(sessions, ledger, clock)
    cutter.fail_next = 100
    clock.now_ms = ANSWER_MS + 100_000
    for _ in range(10):
        await sessions.cutter.run_once()
        clock.advance(10)
    assert len(cutter.disconnects) == 3  # disconnect_retries
    assert {reason for _, reason in cutter.disconnects} == {"credit_cut"}


async def test_topup_recomputes_the_deadline_and_retimes_the_call(
    sessions: Sessions, ledger: Ledger, clock: Clock, cutter: RecordingCutter, redis: aioredis.Redis
) -> None:
    """A top-up moves the deadline to the end of what is now paid, never clears it: a
    gateway that sends no more Interims is re-checked there (renewed while money
    lasts), and its Session-Timeout is told again (CoA)."""
    await limited_call(sessions, ledger, clock)
    clock.now_ms = ANSWER_MS + 61_000
    await ledger.topup("acc1", 5 * EUR, txn_id="t1", who="test")
    assert await sessions.on_topup("acc1") == 1
    # Renewed for its age (61 s) + a 75 s grant: 136 s paid for, the deadline there.
    assert await redis.zscore(DEADLINES, member("acc1", "s1")) == ANSWER_MS + 136_000
    # 6 EUR in all (0.60 debited + hold + the rest available) pays 600 s.
    assert [(ref.session_id, t) for ref, t in cutter.timeouts] == [("s1", 600)]
    rec = await sessions.store.find("s1")
    assert rec is not None and (rec.limited, rec.credit_micros) == (0, 6 * EUR)
    clock.now_ms = ANSWER_MS + 136_000  # no Interim came: the cutter renews, no cut
    await sessions.cutter.run_once()
    assert cutter.disconnects == []
    moved = await redis.zscore(DEADLINES, member("acc1", "s1"))
    assert moved is not None and moved > clock.now_ms


async def test_small_topup_moves_the_deadline(
    sessions: Sessions, ledger: Ledger, clock: Clock, cutter: RecordingCutter, redis: aioredis.Redis
) -> None:
    await limited_call(sessions, ledger, clock)
    clock.now_ms = ANSWER_MS + 61_000
    await ledger.topup("acc1", 30 * PER_S, txn_id="t1", who="test")
    assert await sessions.on_topup("acc1") == 1
    assert await redis.zscore(DEADLINES, member("acc1", "s1")) == ANSWER_MS + 130_000
    assert [t for _, t in cutter.timeouts] == [130]
    clock.now_ms = ANSWER_MS + 100_000
    await sessions.cutter.run_once()
    assert cutter.disconnects == []
    clock.now_ms = ANSWER_MS + 130_000
    await sessions.cutter.run_once()
    assert [reason for _, reason in cutter.disconnects] == ["credit_cut"]


async def test_topup_on_another_daemon_is_seen_at_the_deadline(
    sessions: Sessions, ledger: Ledger, clock: Clock, cutter: RecordingCutter, redis: aioredis.Redis
) -> None:
    """No on_topup call here: the cutter re-checks the money before cutting."""
    await limited_call(sessions, ledger, clock)
    await ledger.topup("acc1", 5 * EUR, txn_id="t1", who="test")
    clock.now_ms = ANSWER_MS + 100_000
    await sessions.cutter.run_once()
    assert cutter.disconnects == []
    rec = await sessions.store.find("s1")
    assert rec is not None and rec.limited == 0


async def test_operator_kill(
    sessions: Sessions, ledger: Ledger, clock: Clock, cutter: RecordingCutter, redis: aioredis.Redis
) -> None:
    await add_account(ledger)
    info = call("s1")
    await start_call(sessions, clock, info)
    assert await sessions.kill_session("nope") is False
    assert await sessions.kill_session("s1") is True
    assert [(ref.session_id, reason) for ref, reason in cutter.disconnects] == [("s1", "killed")]
    await sessions.account(usage(info, UsageKind.STOP, 65, ANSWER_MS + 65_000))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.cost_micros) == ("killed", 65 * PER_S)
    assert await sessions.kill_session("s1") is False  # closed


async def test_cut_account_cuts_every_live_call(
    sessions: Sessions, ledger: Ledger, clock: Clock, cutter: RecordingCutter
) -> None:
    await add_account(ledger)
    for sid in ("a", "b"):
        await start_call(sessions, clock, call(sid))
    assert await sessions.cut_account("acc1") == 2
    assert sorted(ref.session_id for ref, _ in cutter.disconnects) == ["a", "b"]
    assert len(await sessions.list_sessions()) == 2  # live until their Stop


async def test_reaper_charges_a_silent_session_provisionally(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    """The documented rule: time since answer, capped by what was granted (60 s
    debited + a 75 s hold = 135 s), never below the reported usage; flagged."""
    await add_account(ledger)
    await start_call(sessions, clock, call("s1"))
    last_seen = clock.now_ms
    clock.now_ms = last_seen + 180_000  # stale_factor 3 x 60 s: not yet
    assert await sessions.reaper.run_once() == 0
    clock.now_ms = last_seen + 180_001
    assert await sessions.reaper.run_once() == 1
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.duration_s, cdr.cost_micros) == ("stale", 135, 135 * PER_S)
    assert (cdr.charged_micros, cdr.charge_reason) == (135 * PER_S, "provisional")
    assert cdr.extra["provisional"] == "1"
    account = await ledger.get_account("acc1")
    assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 135 * PER_S, 0)
    assert await sessions.reaper.run_once() == 0
    assert await sessions.list_sessions() == []


async def test_reaper_charges_nothing_for_a_call_never_answered(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    await add_account(ledger)
    clock.now_ms = T0_MS
    assert isinstance(await sessions.authorize(call("s1")), Authorized)
    clock.advance(181)
    assert await sessions.reaper.run_once() == 1
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.duration_s, cdr.charged_micros) == ("stale", 0, 0)
    account = await ledger.get_account("acc1")
    assert (account.balance_micros, account.reserved_micros) == (10 * EUR, 0)


async def test_accounting_on_closes_the_gateways_sessions(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    await add_account(ledger)
    await start_call(sessions, clock, call("a", gateway="10.0.0.1"), interim_s=60)
    await start_call(sessions, clock, call("b", gateway="10.0.0.1"), interim_s=120)
    await start_call(sessions, clock, call("c", gateway="10.0.0.2"))
    await sessions.gateway_restarted("10.0.0.1", "gw1")
    cdrs = sorted(await read_cdrs(redis), key=lambda c: c.call_id)
    assert [(c.call_id, c.status, c.cost_micros) for c in cdrs] == [
        ("a", "gateway_restart", 60 * PER_S),
        ("b", "gateway_restart", 120 * PER_S),
    ]
    assert [r.session_id for r in await sessions.list_sessions()] == ["c"]


async def test_accounting_on_charges_up_to_the_restart_and_spares_calls_begun_after(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    """A NAS reboot: a call without an Interim yet is charged from its answer to the
    restart's event time (capped by what it paid for, as the reaper's estimate), not
    the 0 s it last reported; a call authorized after that event (the Accounting-On
    arrived late: Acct-Delay-Time) is a call of the restarted gateway and lives on."""
    await add_account(ledger)
    old = call("old")
    assert isinstance(await sessions.authorize(old), Authorized)
    clock.now_ms = ANSWER_MS
    await sessions.account(usage(old, UsageKind.START, 0, ANSWER_MS))
    restart_ms = ANSWER_MS + 50_000
    clock.now_ms = restart_ms + 1_000
    new = call("new")
    assert isinstance(await sessions.authorize(new), Authorized)
    clock.now_ms = restart_ms + 3_000  # the Accounting-On arrives, 3 s late
    await sessions.gateway_restarted("10.0.0.1", "gw1", event_ms=restart_ms)
    (cdr,) = await read_cdrs(redis)
    assert (cdr.call_id, cdr.status, cdr.duration_s) == ("old", "gateway_restart", 50)
    assert (cdr.charged_micros, cdr.end_ms) == (50 * PER_S, restart_ms)
    assert [r.session_id for r in await sessions.list_sessions()] == ["new"]
    acc = await ledger.get_account("acc1")
    assert (acc.debits_micros, acc.live_sessions) == (50 * PER_S, 1)


@pytest.mark.parametrize("behind_ms", [None, 3_600_000])
async def test_accounting_on_from_a_nas_clock_not_yet_set_still_closes_its_calls(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis, behind_ms: int | None
) -> None:
    """A NAS that reboots before its clock is set sends an Event-Timestamp of 1970 (or
    an hour behind): not believed (further back than clock skew and delays explain),
    the restart is the arrival. Believed, every call it lost was spared as the
    restarted gateway's and left live, for the reaper to charge up to its
    Session-Timeout."""
    await add_account(ledger)
    old = call("old")
    assert isinstance(await sessions.authorize(old), Authorized)
    clock.now_ms = ANSWER_MS
    await sessions.account(usage(old, UsageKind.START, 0, ANSWER_MS))
    clock.now_ms = arrival_ms = ANSWER_MS + 50_000
    event_ms = 1_000 if behind_ms is None else arrival_ms - behind_ms
    await sessions.gateway_restarted("10.0.0.1", "gw1", event_ms=event_ms)
    (cdr,) = await read_cdrs(redis)
    assert (cdr.call_id, cdr.status, cdr.duration_s) == ("old", "gateway_restart", 50)
    assert (cdr.charged_micros, cdr.end_ms) == (50 * PER_S, arrival_ms)
    assert await sessions.list_sessions() == []
    acc = await ledger.get_account("acc1")
    assert (acc.debits_micros, acc.reserved_micros, acc.live_sessions) == (50 * PER_S, 0, 0)


async def test_background_tasks_run_until_stopped(
    redis: aioredis.Redis, ledger: Ledger, clock: Clock, tmp_path: Path, cutter: RecordingCutter
) -> None:
    """Sessions.run drives the cutter and the reaper on their own intervals."""
    sessions = make_sessions(
        redis, ledger, clock, tmp_path, cutter, cutter_interval_s=0.01, reaper_interval_s=0.01
    )
    await limited_call(sessions, ledger, clock)
    await add_account(ledger, "acc2", identities=("user:bob",))
    await start_call(sessions, clock, call("silent", user="bob"))
    clock.now_ms = ANSWER_MS + 60_000 + 180_001  # past the deadline, and stale
    stop = asyncio.Event()
    task = asyncio.create_task(sessions.run(stop))
    for _ in range(500):
        if cutter.disconnects and await read_cdrs(redis):
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert ("s1", "credit_cut") in [(r.session_id, why) for r, why in cutter.disconnects]
    assert {c.status for c in await read_cdrs(redis)} == {"stale"}


async def test_disconnect_backoff_counts_from_the_end_of_each_exchange(
    redis: aioredis.Redis, ledger: Ledger, clock: Clock, tmp_path: Path
) -> None:
    """An exchange that takes 15 s (RFC 5176 retransmissions to a silent gateway) must
    not leave the next attempt already due: 1, 2, 4 s of quiet after each."""

    class SlowSilentGateway(RecordingCutter):
        async def disconnect(self, ref: Any, reason: str) -> bool:
            clock.advance(15)
            return await super().disconnect(ref, reason)

    slow = SlowSilentGateway(fail_next=100)
    sessions = make_sessions(
        redis, ledger, clock, tmp_path, slow, disconnect_retries=4, disconnect_backoff_s=1.0
    )
    await limited_call(sessions, ledger, clock)
    clock.now_ms = ANSWER_MS + 100_000
    quiet_ms = []
    for _ in range(3):
        await sessions.cutter.run_once()
        ended_ms = clock.now_ms
        retry_ms = await redis.zscore(DEADLINES, member("acc1", "s1"))
        assert retry_ms is not None
        quiet_ms.append(int(retry_ms) - ended_ms)
        clock.now_ms = int(retry_ms)
    assert quiet_ms == [1000, 2000, 4000]


async def test_a_due_deadline_rechecked_by_one_daemon_is_not_cut_again_by_another(
    redis: aioredis.Redis, ledger: Ledger, clock: Clock, tmp_path: Path
) -> None:
    """Daemon A claims the due deadline, re-checks the money (none came) and is still
    sending its Disconnect-Request when daemon B's cutter passes: B must not find the
    entry due again (the recheck used to write it back with its past time)."""

    class SlowGateway(RecordingCutter):
        def __init__(self) -> None:
            super().__init__()
            self.entered = asyncio.Event()
            self.release = asyncio.Event()

        async def disconnect(self, ref: Any, reason: str) -> bool:
            self.entered.set()
            await self.release.wait()
            return await super().disconnect(ref, reason)

    gateway_a, gateway_b = SlowGateway(), RecordingCutter()
    daemon_a = make_sessions(redis, ledger, clock, tmp_path / "a", gateway_a)
    daemon_b = make_sessions(redis, ledger, clock, tmp_path / "b", gateway_b)
    await limited_call(daemon_a, ledger, clock)
    clock.now_ms = ANSWER_MS + 100_000
    cutting = asyncio.create_task(daemon_a.cutter.run_once())
    await asyncio.wait_for(gateway_a.entered.wait(), 5)
    assert await daemon_b.cutter.run_once() == 0
    gateway_a.release.set()
    assert await cutting == 1
    assert gateway_b.disconnects == [] and len(gateway_a.disconnects) == 1


async def test_topup_retimes_a_full_grant_call_its_money_bounded(
    sessions: Sessions, ledger: Ledger, clock: Clock, cutter: RecordingCutter, redis: aioredis.Redis
) -> None:
    """1 EUR pays 100 s: the first grant (75 s) is whole, so no deadline, but the gateway
    was told Session-Timeout 100 and hangs up there. A top-up before any partial
    renewal must tell it the new Session-Timeout (CoA), or the call ends at 100 s with
    the money there (seen end to end: no CoA-Request reached the gateway)."""
    await add_account(ledger, balance_micros=1 * EUR)
    info = call("s1")
    clock.now_ms = T0_MS
    answer = await sessions.authorize(info)
    assert isinstance(answer, Authorized) and answer.session_timeout_s == 100
    clock.now_ms = ANSWER_MS
    await sessions.account(usage(info, UsageKind.START, 0, ANSWER_MS))
    rec = await sessions.store.find("s1")
    assert rec is not None and (rec.limited, rec.deadline_ms) == (0, 0)
    clock.now_ms = ANSWER_MS + 30_000
    await ledger.topup("acc1", 5 * EUR, txn_id="t1", who="test")
    assert await sessions.on_topup("acc1") == 1
    # 6 EUR in all (held 0.75 + the rest available) pays 600 s.
    assert [(ref.session_id, t) for ref, t in cutter.timeouts] == [("s1", 600)]
    rec = await sessions.store.find("s1")
    assert rec is not None and (rec.credit_micros, rec.deadline_ms) == (6 * EUR, 0)
    assert await redis.zscore(DEADLINES, member("acc1", "s1")) is None
    # Nothing more to tell: no second CoA for money already told.
    assert await sessions.on_topup("acc1") == 0
    assert len(cutter.timeouts) == 1
    # The gateway obeys the new Session-Timeout: a 400 s call is charged in full.
    clock.now_ms = ANSWER_MS + 400_000
    await sessions.account(usage(info, UsageKind.STOP, 400, clock.now_ms))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.charged_micros) == ("normal", 400 * PER_S)


async def test_topup_leaves_a_call_told_the_longest_session_alone(
    sessions: Sessions, ledger: Ledger, clock: Clock, cutter: RecordingCutter
) -> None:
    """A call told max_session_s needs no CoA, whatever money comes."""
    await add_account(ledger, balance_micros=1000 * EUR)
    await start_call(sessions, clock, call("s1"))
    await ledger.topup("acc1", 5 * EUR, txn_id="t1", who="test")
    assert await sessions.on_topup("acc1") == 0
    assert cutter.timeouts == []


async def test_topup_retimes_a_limited_call_whose_next_grant_is_paid_already(
    redis: aioredis.Redis, ledger: Ledger, clock: Clock, tmp_path: Path
) -> None:
    """Per-minute billing: 2.50 EUR pays 120 s; the Interim at 70 s commits it all and
    the call is limited, its deadline at 120 s. A top-up at 75 s renews for 75 s + a
    35 s grant = 110 s, which the committed minutes pay already, so the deadline stays
    where it was. The gateway must still be told the longer Session-Timeout (CoA; a
    Diameter client its RAR, or it ends the call at the Final-Unit-Indication it
    holds): before, nothing was sent and the call ended at 120 s with 5 EUR there."""
    cutter = RecordingCutter()
    sessions = make_sessions(redis, ledger, clock, tmp_path, cutter, interim_interval_s=20)
    await add_account(ledger, balance_micros=2_500_000)
    info = call("s1", called="+4940123456")  # DE: 0.10 + 1.20 EUR per started minute
    clock.now_ms = T0_MS
    first = await sessions.authorize(info)
    assert isinstance(first, Authorized) and first.session_timeout_s == 120
    clock.now_ms = ANSWER_MS
    await sessions.account(usage(info, UsageKind.START, 0, ANSWER_MS))
    clock.now_ms = ANSWER_MS + 70_000
    await sessions.account(usage(info, UsageKind.INTERIM, 70, clock.now_ms))
    rec = await sessions.store.find("s1")
    assert rec is not None and (rec.limited, rec.deadline_ms) == (1, ANSWER_MS + 120_000)
    clock.now_ms = ANSWER_MS + 75_000
    await ledger.topup("acc1", 5 * EUR, txn_id="t1", who="test")
    assert await sessions.on_topup("acc1") == 1
    # 7.50 EUR in all pays 6 started minutes: 0.10 + 6 x 1.20.
    assert [(ref.session_id, t) for ref, t in cutter.timeouts] == [("s1", 360)]
    rec = await sessions.store.find("s1")
    assert rec is not None and rec.credit_micros == 7_500_000
    clock.now_ms = ANSWER_MS + 200_000
    await sessions.account(usage(info, UsageKind.STOP, 200, clock.now_ms))
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.duration_s, cdr.cost_micros) == ("normal", 200, 4_900_000)
    account = await ledger.get_account("acc1")
    assert (account.balance_micros, account.reserved_micros) == (2_600_000, 0)
