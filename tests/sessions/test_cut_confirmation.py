"""A CDR says ``killed`` or ``credit_cut`` only once the cut was confirmed: the gateway
answered it (cut_ok), or the call's Stop says it ended at the cut. A cut nobody
answered leaves the call live (logged, retried); its Stop, long after, is charged
as the rules say, with cut_reason and cut_confirmed = 0 in the CDR. Several calls of
one account at once, the ledger against the CDRs."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sessions_harness import (
    EUR,
    T0_MS,
    Clock,
    add_account,
    call,
    make_sessions,
    read_cdrs,
    usage,
)

from chargingd.ledger import Ledger
from chargingd.sessions.ccapi import Authorized, CallInfo, SessionRef, UsageKind
from chargingd.sessions.service import Sessions

PER_S = 10_000  # Berlin: 0.60 EUR a minute, billed per second


@dataclass
class Gateway:
    """A ccapi.CallCutter whose gateway answers the cuts of some calls only (the others
    go unanswered: no listener, a lost packet)."""

    deaf_to: set[str] = field(default_factory=set)
    asked: list[str] = field(default_factory=list)

    async def disconnect(self, ref: SessionRef, reason: str) -> bool:
        await asyncio.sleep(0)
        self.asked.append(ref.session_id)
        return ref.session_id not in self.deaf_to

    async def change_timeout(self, ref: SessionRef, session_timeout_s: int) -> bool:
        return False


@pytest.fixture
def gateway() -> Gateway:
    return Gateway()


@pytest.fixture
def sessions(
    redis: aioredis.Redis, ledger: Ledger, clock: Clock, tmp_path: Path, gateway: Gateway
) -> Sessions:
    made = make_sessions(
        redis,
        ledger,
        clock,
        tmp_path,
        disconnect_retries=2,
        disconnect_backoff_s=1.0,
        credit_modes={"own": "own_timer"},
        interim_interval_s=10,
        grant_margin_s=5,
        max_grant_s=30,
        stale_factor=2,
    )
    made.attach_call_cutter(gateway)
    return made


async def start(sessions: Sessions, info: CallInfo) -> None:
    assert isinstance(await sessions.authorize(info), Authorized)
    await sessions.account(usage(info, UsageKind.START, 0, T0_MS))


async def stop_at(sessions: Sessions, clock: Clock, info: CallInfo, s: int) -> None:
    clock.now_ms = max(clock.now_ms, T0_MS + s * 1000)
    await sessions.account(usage(info, UsageKind.STOP, s, T0_MS + s * 1000))


async def ledger_story(ledger: Ledger, redis: aioredis.Redis, account_id: str) -> None:
    """Invariant 7: what the ledger took equals the CDRs' charged_micros."""
    acc = await ledger.get_account(account_id)
    charged = sum(c.charged_micros for c in await read_cdrs(redis) if c.account_id == account_id)
    assert acc.initial_balance_micros - acc.balance_micros == charged
    assert acc.reserved_micros == 0 and acc.live_sessions == 0


async def test_kills_of_concurrent_calls_show_only_where_the_gateway_confirmed(
    sessions: Sessions,
    ledger: Ledger,
    clock: Clock,
    redis: aioredis.Redis,
    gateway: Gateway,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await add_account(ledger, balance_micros=10 * EUR)
    infos = [call(f"k{i}") for i in range(4)]
    await asyncio.gather(*(start(sessions, i) for i in infos))
    gateway.deaf_to = {"k1", "k3"}
    clock.now_ms = T0_MS + 20_000
    caplog.set_level(logging.WARNING, "chargingd.cutter")
    assert await sessions.cut_account("acc1") == 4
    assert "cut of k1 (killed) at 10.0.0.1 not confirmed" in caplog.text
    for rec in await sessions.list_sessions():  # all live until their Stops
        assert (rec.cut_reason, rec.cut_ok) == ("killed", int(rec.session_id in ("k0", "k2")))
    # The retry after the back-off goes unanswered too, then the cutter gives up.
    clock.now_ms = T0_MS + 21_500
    await sessions.cutter.run_once()
    assert sorted(gateway.asked) == ["k0", "k1", "k1", "k2", "k3", "k3"]
    assert "giving up cutting k1" in caplog.text
    # k0/k2 ended at the kill; k1 too (the gateway cut it, its answer was lost: its
    # Stop says it ended at the cut); k3 ran on for a minute.
    await asyncio.gather(*(stop_at(sessions, clock, infos[i], 20) for i in (0, 1, 2)))
    await stop_at(sessions, clock, infos[3], 80)
    cdrs = {c.call_id: c for c in await read_cdrs(redis)}
    assert {k: (c.status, c.extra["cut_confirmed"]) for k, c in cdrs.items()} == {
        "k0": ("killed", "1"),
        "k1": ("killed", "1"),
        "k2": ("killed", "1"),
        "k3": ("normal", "0"),
    }
    assert cdrs["k3"].extra["cut_reason"] == "killed"
    assert cdrs["k3"].charged_micros == 80 * PER_S  # it ran: charged for what it ran
    await ledger_story(ledger, redis, "acc1")


async def test_a_gateway_that_never_got_the_cut_and_obeys_its_session_timeout_is_no_overrun(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis, gateway: Gateway
) -> None:
    """Two interim calls told Session-Timeouts from the same 0.40 EUR (the interim
    backstop); the gateway answers the cut of one only. The confirmed one is
    credit_cut and within the money; the other never got its cut and ends at the
    Session-Timeout it was told: it obeyed all it heard, so it is charged within that
    (at most what the account can give: capped), never overrun, never below zero."""
    await add_account(ledger, balance_micros=int(0.40 * EUR))  # 40 s
    infos = [call("i1"), call("i2")]
    told = {}
    for info in infos:
        answer = await sessions.authorize(info)
        assert isinstance(answer, Authorized)
        told[info.session_id] = answer.session_timeout_s
        await sessions.account(usage(info, UsageKind.START, 0, T0_MS))
    assert told == {"i1": 40, "i2": 25}  # the same money told twice: interim mode
    gateway.deaf_to = {"i2"}
    cut_at: dict[str, int] = {}
    for second in range(1, 26):
        clock.now_ms = T0_MS + second * 1000
        if second % 10 == 0:
            for info in infos:
                if info.session_id not in cut_at:
                    await sessions.account(usage(info, UsageKind.INTERIM, second, clock.now_ms))
        await sessions.cutter.run_once()
        for sid in gateway.asked:
            cut_at.setdefault(sid, second)
    assert sorted(cut_at) == ["i1", "i2"]
    assert cut_at["i2"] < told["i2"]
    await stop_at(sessions, clock, infos[0], cut_at["i1"])
    await stop_at(sessions, clock, infos[1], told["i2"])  # its Session-Timeout
    cdrs = {c.call_id: c for c in await read_cdrs(redis)}
    assert (cdrs["i1"].status, cdrs["i1"].extra["cut_confirmed"]) == ("credit_cut", "1")
    assert cdrs["i2"].extra["cut_confirmed"] == "0"
    assert cdrs["i2"].status != "overrun" and cdrs["i2"].charge_reason != "overrun"
    acc = await ledger.get_account("acc1")
    assert acc.balance_micros == 0  # all the money, and not a micro of debt
    await ledger_story(ledger, redis, "acc1")


async def test_a_stale_call_after_an_unanswered_kill_is_not_killed(
    sessions: Sessions, ledger: Ledger, clock: Clock, redis: aioredis.Redis, gateway: Gateway
) -> None:
    await add_account(ledger, balance_micros=10 * EUR)
    info = call("s1")
    await start(sessions, info)
    gateway.deaf_to = {"s1"}
    assert await sessions.kill_session("s1") is False
    clock.now_ms = T0_MS + 60_000
    assert await sessions.reaper.run_once() == 1
    (cdr,) = await read_cdrs(redis)
    assert (cdr.status, cdr.extra["cut_reason"], cdr.extra["cut_confirmed"]) == (
        "stale",
        "killed",
        "0",
    )
