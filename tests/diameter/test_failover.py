"""A client failing over between two chargingd processes (one Redis) and back: the
cumulative usage of the call is the sum of every report, wherever it was answered."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from diameter_client import open_client
from diameter_harness import Running, diameter_config, running_frontend
from sessions_harness import EUR, add_account, read_cdrs

from chargingd.diameter import client as cl
from chargingd.diameter import codec as dc
from chargingd.diameter.dictionary import A
from chargingd.diameter.frontend import DiameterFrontend
from chargingd.sessions.idle import FinalUsage

CALLER = "+4930555000"
BERLIN = "tel:+4930123456"  # 10_000 micros a second
RETRANSMITTED = dc.FLAG_R | dc.FLAG_P | dc.FLAG_T  # RFC 6733 §3: sent again after failover


@pytest.fixture
async def running(redis: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_frontend(redis, tmp_path) as r:
        await add_account(r.ledger, balance_micros=10 * EUR, identities=(f"ani:{CALLER}",))
        yield r


@pytest.fixture
async def second(running: Running) -> AsyncIterator[DiameterFrontend]:
    """Another chargingd process's frontend: its own memory, the same Redis."""
    cfg = running.sessions.cfg
    other = DiameterFrontend(
        diameter_config(),
        running.sessions,
        running.sessions.store.send,
        validity_time_s=cfg.interim_interval_s,
        session_ttl_s=cfg.session_ttl_s,
        closed_ttl_s=cfg.closed_ttl_s,
        final_usage=FinalUsage.of(running.sessions),
    )
    await other.start()
    try:
        yield other
    finally:
        await other.stop(grace_s=1.0)


async def test_failover_and_back_charges_every_report(
    running: Running, second: DiameterFrontend
) -> None:
    a = await open_client(running.port)
    b = await open_client(second.port)
    c = cl.Call("failback", calling=CALLER, called=BERLIN)
    assert (await a.ccr(c, 1, 0, requested_s=60)).result == 2001
    assert (await a.ccr(c, 2, 1, used_s=30, requested_s=60)).result == 2001
    # The link to the first process flaps: the client sends #2 to the second ...
    assert (await b.ccr(c, 2, 2, used_s=30, requested_s=60)).result == 2001
    # ... and comes back to the first for #3 and the end.
    assert (await a.ccr(c, 2, 3, used_s=30, requested_s=60)).result == 2001
    assert (await a.ccr(c, 3, 4, used_s=10)).result == 2001
    [cdr] = await read_cdrs(running.redis)
    assert cdr.duration_s == 100
    account = await running.ledger.get_account("acc1")
    assert account.debits_micros == 100 * 10_000
    assert (account.balance_micros, account.reserved_micros) == (10 * EUR - 1_000_000, 0)
    await a.close()
    await b.close()


class _Gate:
    """The credit API, with the first usage report held until ``open`` is set (a process
    whose Redis round trip stalls past the client's Tx)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.held = asyncio.Event()
        self.open = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def account(self, report: Any) -> None:
        if report.usage_s and not self.held.is_set():
            self.held.set()
            await self.open.wait()
        await self._inner.account(report)


async def test_a_late_answer_after_failover_does_not_roll_the_state_back(
    running: Running, second: DiameterFrontend
) -> None:
    """RFC 4006 §5.1 / §13: the first process stalls on #2; after Tx the client sends #2
    again (T flag) to the second, which answers it and #3. The first then finishes #2
    and wrote its older state over dia:cc, so when the client came back to it (#4, the
    CCR-T) the 30 s of #3 were lost: a 130 s call charged 100 s."""
    gate = _Gate(running.frontend.app.credit)
    running.frontend.app.credit = gate  # type: ignore[assignment]
    a = await open_client(running.port)
    b = await open_client(second.port)
    c = cl.Call("late-write", calling=CALLER, called=BERLIN)
    assert (await a.ccr(c, 1, 0, requested_s=60)).result == 2001
    stalled = asyncio.create_task(a.ccr(c, 2, 1, used_s=30, requested_s=60))
    await asyncio.wait_for(gate.held.wait(), 5)
    again = await b.ccr(c, 2, 1, used_s=30, requested_s=60, flags=RETRANSMITTED)
    assert again.result == 2001
    assert (await b.ccr(c, 2, 2, used_s=30, requested_s=60)).result == 2001
    gate.open.set()
    assert (await stalled).result == 2001  # the client has its answer already: dropped
    assert (await a.ccr(c, 2, 3, used_s=30, requested_s=60)).result == 2001
    assert (await a.ccr(c, 3, 4, used_s=40)).result == 2001
    [cdr] = await read_cdrs(running.redis)
    assert (cdr.duration_s, cdr.charged_micros) == (130, 130 * 10_000)
    account = await running.ledger.get_account("acc1")
    assert account.debits_micros == cdr.charged_micros
    assert account.reserved_micros == 0
    await a.close()
    await b.close()


class _LostAfter:
    """The credit API; the process fails right after a direct debit's START or STOP (no
    answer leaves: a crash, or dia:cc's write failing)."""

    def __init__(self, inner: Any, kind: str) -> None:
        self._inner = inner
        self._kind = kind

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def account(self, report: Any) -> None:
        await self._inner.account(report)
        if report.kind == self._kind:
            raise ConnectionError(f"lost after the {self._kind}")


@pytest.mark.parametrize("lost_after", ["stop", "start"])
async def test_a_direct_debit_sent_again_after_its_answer_was_lost(
    running: Running, second: DiameterFrontend, lost_after: str
) -> None:
    """RFC 4006 §8.15 TERMINATE_OR_BUFFER: a client without an answer to its EVENT
    re-sends it with the T flag, possibly to another server. The debit was done, so
    the answer is what it did (2001, 30 s), not 5012 "session id already used" (the
    client then refused or gave a service already paid for). Debited once, one CDR.
    Lost after the START (the hold made, no debit yet): the re-sent EVENT finishes it."""
    running.frontend.app.credit = _LostAfter(running.frontend.app.credit, lost_after)  # type: ignore[assignment]
    a = await open_client(running.port)
    b = await open_client(second.port)
    c = cl.Call("event-lost", calling=CALLER, called=BERLIN)
    assert (await a.ccr(c, 4, 0, requested_s=30)).result == 5012
    again = await b.ccr(c, 4, 0, requested_s=30, flags=RETRANSMITTED)
    assert (again.result, again.granted) == (2001, 30)
    assert (await b.ccr(c, 4, 0, requested_s=30, flags=RETRANSMITTED)).granted == 30
    # The Session-Id reused for another debit is still refused, nothing moves.
    reused = await b.ccr(c, 4, 0, requested_s=20)
    assert reused.result == 5004
    [cdr] = await read_cdrs(running.redis)
    account = await running.ledger.get_account("acc1")
    assert (cdr.duration_s, cdr.charged_micros) == (30, 30 * 10_000)
    assert (account.debits_micros, account.reserved_micros) == (cdr.charged_micros, 0)
    await a.close()
    await b.close()


async def test_the_cca_tells_the_client_it_may_fail_over(
    running: Running, second: DiameterFrontend
) -> None:
    """RFC 4006 §8.4 / §5.7: without CC-Session-Failover a client takes
    FAILOVER_NOT_SUPPORTED and, on Tx expiry, applies its CCFH (TERMINATE: the call is
    dropped) instead of sending the CCR to its alternate server, although the session
    is in Redis for every chargingd. Every CCA says FAILOVER_SUPPORTED; the CCR sent
    on to the other process (T flag) and the rest of the call are charged once."""
    a = await open_client(running.port)
    b = await open_client(second.port)
    c = cl.Call("may-fail-over", calling=CALLER, called=BERLIN)
    first = await a.ccr(c, 1, 0, requested_s=60)
    failover = first.msg.get(A.CC_SESSION_FAILOVER)
    assert failover is not None and failover.u32() == 1  # FAILOVER_SUPPORTED
    assert (await a.ccr(c, 2, 1, used_s=30, requested_s=60)).result == 2001
    # The first process stops answering: #2 goes to the alternate (T flag, RFC 6733 §3).
    assert (await b.ccr(c, 2, 2, used_s=30, requested_s=60, flags=RETRANSMITTED)).result == 2001
    end = await b.ccr(c, 3, 3, used_s=5)
    assert end.msg.get(A.CC_SESSION_FAILOVER) is not None
    [cdr] = await read_cdrs(running.redis)
    account = await running.ledger.get_account("acc1")
    assert (cdr.duration_s, account.debits_micros, account.reserved_micros) == (65, 650_000, 0)
    await a.close()
    await b.close()
