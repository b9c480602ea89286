"""Credit modes for gateways without Interim-Updates (sessions/modes.py): hold_all
holds the money behind the whole Session-Timeout at authorize, own_timer renews on
chargingd's own timer and cuts when the money runs out. Real Redis, real Ledger,
the fused path and the step-by-step (Redis Cluster) path both."""

from __future__ import annotations

import asyncio
from pathlib import Path

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
from chargingd.sessions.ccapi import Authorized, CallInfo, Refused, UsageKind
from chargingd.sessions.service import Sessions
from chargingd.sessions.store import DEADLINES, member

PER_S = 10_000  # Berlin: 0.60 EUR a minute, billed per second
MODES = {"kam": "hold_all", "own": "own_timer"}
# A short stale window (2 x 10 s) and Session-Timeout cap (60 s) keep the numbers small.
CFG = {
    "interim_interval_s": 10,
    "grant_margin_s": 5,
    "max_grant_s": 30,
    "stale_factor": 2,
    "max_session_s": 60,
    "reap_grace_s": 10,
    "disconnect_retries": 3,
    "disconnect_backoff_s": 1.0,
}


@pytest.fixture
def cutter() -> RecordingCutter:
    return RecordingCutter()


@pytest.fixture(params=["fused", "step_by_step"])
def sessions(
    request: pytest.FixtureRequest,
    redis: aioredis.Redis,
    ledger: Ledger,
    clock: Clock,
    tmp_path: Path,
    cutter: RecordingCutter,
) -> Sessions:
    made = make_sessions(redis, ledger, clock, tmp_path, cutter, credit_modes=MODES, **CFG)
    if request.param == "step_by_step":
        made.step_by_step()
    return made


async def balance(ledger: Ledger, account_id: str = "acc1") -> tuple[int, int, int]:
    acc = await ledger.get_account(account_id)
    return acc.balance_micros, acc.reserved_micros, acc.live_sessions


async def answer(sessions: Sessions, info: CallInfo, answer_ms: int) -> None:
    await sessions.account(usage(info, UsageKind.START, 0, answer_ms))


async def stop(sessions: Sessions, clock: Clock, info: CallInfo, answer_ms: int, s: int) -> None:
    clock.now_ms = max(clock.now_ms, answer_ms + s * 1000)
    await sessions.account(usage(info, UsageKind.STOP, s, answer_ms + s * 1000))


# -- hold_all ----------------------------------------------------------------------------
async def test_hold_all_holds_the_whole_session_timeout_and_a_second_call_gets_the_rest(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    await add_account(ledger, balance_micros=1 * EUR)  # 100 s
    first = await sessions.authorize(call("c1", client="kam"))
    assert isinstance(first, Authorized)
    assert first.session_timeout_s == 60  # max_session_s: 0.60 of the 1.00 held
    assert await balance(ledger) == (1 * EUR, 60 * PER_S, 1)
    second = await sessions.authorize(call("c2", client="kam"))
    assert isinstance(second, Authorized)
    # Only what is left: the first call's money is never promised again.
    assert (second.session_timeout_s, second.credit_micros) == (40, 40 * PER_S)
    third = await sessions.authorize(call("c3", client="kam"))
    assert isinstance(third, Refused) and third.message == "insufficient credit"
    rec = await sessions.store.find("c2")
    assert rec is not None and (rec.limited, rec.deadline_ms) == (0, 0)  # nothing to cut
    # What each was told is what it holds (sessions/settle.py's allowance), both paths.
    told = [(await sessions.store.find(c)).credit_micros for c in ("c1", "c2")]  # type: ignore[union-attr]
    assert told == [60 * PER_S, 40 * PER_S]

    # Both calls run to their Session-Timeouts, no Interim: charged in full, never below 0;
    # c2's was the money running out (credit_cut), c1's max_session_s (normal).
    await answer(sessions, call("c1", client="kam"), T0_MS)
    await answer(sessions, call("c2", client="kam"), T0_MS)
    assert await redis.zcard(DEADLINES) == 0
    await stop(sessions, clock, call("c2", client="kam"), T0_MS, 40)
    await stop(sessions, clock, call("c1", client="kam"), T0_MS, 60)
    assert await balance(ledger) == (0, 0, 0)
    cdrs = {c.call_id: c for c in await read_cdrs(redis)}
    assert {k: (c.status, c.charged_micros, c.charge_reason) for k, c in cdrs.items()} == {
        "c1": ("normal", 60 * PER_S, ""),
        "c2": ("credit_cut", 40 * PER_S, ""),
    }


async def test_concurrent_hold_all_calls_never_share_money(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    """Twelve calls of one prepaid account authorized at once, each then running its
    whole Session-Timeout without an Interim: the timeouts sum to what the money pays
    for, and the account ends at exactly zero."""
    await add_account(ledger, balance_micros=int(2.5 * EUR))  # 250 s
    infos = [call(f"c{i}", client="kam") for i in range(12)]
    answers = await asyncio.gather(*(sessions.authorize(info) for info in infos))
    granted = [(i, a) for i, a in zip(infos, answers, strict=True) if isinstance(a, Authorized)]
    assert sum(a.session_timeout_s for _, a in granted) == 250
    assert all(isinstance(a, Refused) for a in answers if not isinstance(a, Authorized))
    assert (await balance(ledger))[1] == 250 * PER_S
    for info, _ in granted:
        await answer(sessions, info, T0_MS)
    await asyncio.gather(
        *(stop(sessions, clock, info, T0_MS, a.session_timeout_s) for info, a in granted)
    )
    assert await balance(ledger) == (0, 0, 0)
    cdrs = await read_cdrs(redis)
    told = {info.session_id: a.session_timeout_s for info, a in granted}
    # Each ran to its Session-Timeout: the money's (credit_cut) or max_session_s's (normal).
    assert len(cdrs) == len(granted)
    assert all(c.status == ("normal" if told[c.call_id] == 60 else "credit_cut") for c in cdrs)
    assert sum(c.charged_micros for c in cdrs) == int(2.5 * EUR)


async def test_hold_all_interim_keeps_the_whole_timeout_held(
    sessions: Sessions, ledger: Ledger
) -> None:
    await add_account(ledger, balance_micros=1 * EUR)
    info = call("c1", client="kam")
    assert isinstance(await sessions.authorize(info), Authorized)
    await answer(sessions, info, T0_MS)
    await sessions.account(usage(info, UsageKind.INTERIM, 20, T0_MS + 20_000))
    # 20 s committed, the other 40 s of the Session-Timeout still held.
    assert await balance(ledger) == (1 * EUR - 20 * PER_S, 40 * PER_S, 1)
    second = await sessions.authorize(call("c2", client="kam"))
    assert isinstance(second, Authorized) and second.session_timeout_s == 40


async def test_silent_hold_all_call_is_reaped_only_after_its_timeout_and_grace(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    await add_account(ledger, balance_micros=1 * EUR)
    await add_account(ledger, "acc2", balance_micros=1 * EUR, identities=("user:bob",))
    kam, gw = call("k1", client="kam"), call("g1", user="bob")
    for info in (kam, gw):
        assert isinstance(await sessions.authorize(info), Authorized)
        await answer(sessions, info, T0_MS)
    clock.now_ms = T0_MS + 21_000  # past the stale window (2 x 10 s)
    assert await sessions.reaper.run_once() == 1  # the interim client's call only
    assert [c.call_id for c in await read_cdrs(redis)] == ["g1"]
    clock.now_ms = T0_MS + 69_000  # Session-Timeout 60 s + grace 10 s not over yet
    assert await sessions.reaper.run_once() == 0
    clock.now_ms = T0_MS + 70_002
    assert await sessions.reaper.run_once() == 1
    cdr = (await read_cdrs(redis))[-1]
    # Provisional: what its Session-Timeout allowed (a late Stop corrects it).
    assert (cdr.call_id, cdr.status, cdr.duration_s) == ("k1", "stale", 60)
    assert (cdr.charged_micros, cdr.charge_reason) == (60 * PER_S, "provisional")
    assert await balance(ledger) == (1 * EUR - 60 * PER_S, 0, 0)


async def test_hold_all_call_longer_than_the_stale_window_is_charged_in_full(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis
) -> None:
    await add_account(ledger, balance_micros=1 * EUR)
    info = call("k1", client="kam")
    assert isinstance(await sessions.authorize(info), Authorized)
    await answer(sessions, info, T0_MS)
    for seconds in (21, 42):  # two reaper passes past the stale window
        clock.now_ms = T0_MS + seconds * 1000
        assert await sessions.reaper.run_once() == 0
    await stop(sessions, clock, info, T0_MS, 45)
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.duration_s, cdr.charged_micros) == ("normal", 45, 45 * PER_S)
    assert await balance(ledger) == (1 * EUR - 45 * PER_S, 0, 0)


# -- own_timer ---------------------------------------------------------------------------
async def test_own_timer_holds_its_session_timeout_and_cuts_at_the_paid_second(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis, cutter: RecordingCutter
) -> None:
    await add_account(ledger, balance_micros=int(0.40 * EUR))  # 40 s
    info = call("o1", client="own")
    first = await sessions.authorize(info)
    assert isinstance(first, Authorized) and first.session_timeout_s == 40
    # The money behind the whole Session-Timeout is held: no other call is told it.
    assert (first.credit_micros, await balance(ledger)) == (40 * PER_S, (40 * PER_S, 40 * PER_S, 1))
    answer_ms = T0_MS + 1_000
    clock.now_ms = answer_ms
    await answer(sessions, info, answer_ms)
    rec = await sessions.store.find("o1")
    # The timer at the end of the paid usage as the gateway measures it: its
    # whole-second answer time may be up to 999 ms early.
    assert rec is not None and rec.deadline_ms == answer_ms + 40_999
    assert await redis.zscore(DEADLINES, member("acc1", "o1")) == answer_ms + 40_999
    clock.now_ms = answer_ms + 40_998
    await sessions.cutter.run_once()
    assert cutter.disconnects == []
    clock.now_ms = answer_ms + 40_999
    await sessions.cutter.run_once()  # re-checked: no more money, cut
    assert [(ref.session_id, why) for ref, why in cutter.disconnects] == [("o1", "credit_cut")]
    await stop(sessions, clock, info, answer_ms, 41)  # the gateway obeyed, a second late
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.duration_s, cdr.charged_micros) == ("credit_cut", 41, 40 * PER_S)
    assert await balance(ledger) == (0, 0, 0)


async def test_own_timer_renews_at_its_deadline_when_money_came(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis, cutter: RecordingCutter
) -> None:
    """A top-up during the call: at the timer chargingd holds the next grant and moves
    the deadline instead of cutting (the gateway may run on: its Session-Timeout
    stays what it was told, which the money behind it still pays for)."""
    await add_account(ledger, balance_micros=int(0.20 * EUR))
    info = call("o1", client="own")
    first = await sessions.authorize(info)
    assert isinstance(first, Authorized) and first.session_timeout_s == 20
    await answer(sessions, info, T0_MS)
    await ledger.topup("acc1", int(0.20 * EUR), txn_id="t1", who="test")
    clock.now_ms = T0_MS + 20_999
    await sessions.cutter.run_once()
    assert cutter.disconnects == []
    rec = await sessions.store.find("o1")
    # Renewed for its age (20 s) and the next grant (15 s).
    assert rec is not None and (rec.paid_usage_s, rec.deadline_ms) == (35, T0_MS + 35_999)
    await stop(sessions, clock, info, T0_MS, 20)
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.charged_micros) == ("normal", 20 * PER_S)
    assert await balance(ledger) == (20 * PER_S, 0, 0)


async def test_own_timer_call_whose_stop_is_lost_is_not_renewed_until_the_account_is_dry(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis, cutter: RecordingCutter
) -> None:
    """Its switch ended it at its Session-Timeout (60 s) but the Stop never came (the
    switch restarted, RADIUS was down): the own timer renews once at its deadline (the
    switch's timer may be a second late), then cuts instead of renewing for the call's
    age at every deadline. Seen before: renewed until all 5.00 EUR were held, reaped
    as 500 s, the account emptied by one lost Stop."""
    await add_account(ledger, balance_micros=5 * EUR)  # 500 s
    info = call("o1", client="own")
    first = await sessions.authorize(info)
    assert isinstance(first, Authorized) and first.session_timeout_s == 60
    await answer(sessions, info, T0_MS)
    for second in range(1, 600):
        clock.now_ms = T0_MS + second * 1000 - 1
        await sessions.cutter.run_once()
        await sessions.reaper.run_once()
    # Renewed once at 60.999 s (for its age and a 30 s grant), cut at 90.999 s.
    assert [(ref.session_id, why) for ref, why in cutter.disconnects] == [("o1", "credit_cut")]
    (cdr,) = await read_cdrs(redis)
    # Provisional, by the reaper's rule: capped by what was held, and by the
    # Session-Timeout its switch ends it at (a late Stop corrects it).
    assert (cdr.status, cdr.duration_s, cdr.charge_reason) == ("stale", 60, "provisional")
    assert await balance(ledger) == (5 * EUR - cdr.charged_micros, 0, 0)
    assert cdr.charged_micros == 60 * PER_S


async def test_topup_leaves_own_timer_and_hold_all_calls_as_they_were_told(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis, cutter: RecordingCutter
) -> None:
    """Their gateway cannot be told a new Session-Timeout: a top-up neither holds
    more for them nor moves their timer (the own timer re-checks at its deadline)."""
    await add_account(ledger, balance_micros=int(0.20 * EUR))
    info = call("o1", client="own")
    assert isinstance(await sessions.authorize(info), Authorized)
    await answer(sessions, info, T0_MS)
    await ledger.topup("acc1", 1 * EUR, txn_id="t1", who="test")
    assert await sessions.on_topup("acc1") == 0
    rec = await sessions.store.find("o1")
    assert rec is not None and (rec.deadline_ms, rec.credit_micros) == (T0_MS + 20_999, 20 * PER_S)
    assert (cutter.timeouts, (await balance(ledger))[1]) == ([], 20 * PER_S)


async def test_two_concurrent_own_timer_calls_split_the_money_at_authorize(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis, cutter: RecordingCutter
) -> None:
    """Both are told Session-Timeouts from money no other call was told (60 s, the
    longest, and the 40 s left); each is cut at its paid second: 0.00."""
    await add_account(ledger, balance_micros=1 * EUR)  # 100 s
    infos = [call("o1", client="own"), call("o2", client="own")]
    answers = await asyncio.gather(*(sessions.authorize(i) for i in infos))
    told = sorted(a.session_timeout_s for a in answers if isinstance(a, Authorized))
    assert told == [40, 60]
    for info in infos:
        await answer(sessions, info, T0_MS)
    cut_at: dict[str, int] = {}
    for second in range(1, 70):
        clock.now_ms = T0_MS + second * 1000
        await sessions.cutter.run_once()
        for ref, _ in cutter.disconnects:
            cut_at.setdefault(ref.session_id, second)
    assert sorted(cut_at.values()) == [41, 61]
    await asyncio.gather(*(stop(sessions, clock, i, T0_MS, cut_at[i.session_id]) for i in infos))
    cdrs = await read_cdrs(redis)
    assert {c.status for c in cdrs} == {"credit_cut"}
    # Each cut in the second after its paid usage (the answer's whole-second slack):
    # within the cut tolerance, charged what was paid.
    assert {c.charge_reason for c in cdrs} == {"cut_tolerance"}
    assert sum(c.charged_micros for c in cdrs) == 1 * EUR
    assert await balance(ledger) == (0, 0, 0)
