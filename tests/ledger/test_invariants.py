"""DESIGN invariants 2 and 3 under real concurrency: several processes, each with its
own event loop and Redis client, hammer the same few accounts with reserves, duplicated
and reordered commits, replayed releases, abandoned holds, a sweeper and top-ups.

Afterwards, for every account: initial + topups - debits == balance, reserved == sum of
live holds, the balance never went below its floor (callers only commit what they hold,
so no overrun may happen), and the per-session debits add up to debits_micros.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
from collections import Counter
from typing import Any

import pytest
import redis.asyncio as aioredis

from chargingd.core.redisconn import EmbeddedRedis
from chargingd.ledger import CommitResult, Ledger, Mode
from chargingd.ledger import keys as K

PROCESSES = 4
TASKS_PER_PROCESS = 8
SESSIONS_PER_TASK = 8
LEASE_MS = 60_000
# (id, mode, balance, credit limit, max calls)
ACCOUNTS = (
    ("pre-a", Mode.PREPAID, 40_000, 0, 0),
    ("pre-b", Mode.PREPAID, 25_000, 0, 3),
    ("post-a", Mode.POSTPAID, 0, 30_000, 0),
    ("post-b", Mode.POSTPAID, 5_000, 15_000, 0),
    ("post-c", Mode.POSTPAID, 0, 2_000, 0),  # small: often drained to its floor
)
Report = dict[str, Any]


class Worker:
    """One process's share of the load; records what it saw for the final checks."""

    def __init__(self, ledger: Ledger, seed: int, proc: int) -> None:
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.proc = proc
        self.ops: Counter[str] = Counter()
        self.debits: dict[str, int] = {}  # "account/session" -> sum of debited_micros seen
        self.topups: dict[str, tuple[str, int]] = {}  # txn -> (account, amount)
        self.overruns = 0

    def _seen(self, account: str, sid: str, results: list[CommitResult]) -> None:
        key = f"{account}/{sid}"
        self.debits[key] = self.debits.get(key, 0) + sum(r.debited_micros for r in results)
        self.overruns += sum(r.overrun for r in results)

    async def session(self, account: str, sid: str) -> None:
        rng, ledger = self.rng, self.ledger
        grant = await ledger.reserve(account, sid, rng.randint(100, 3_000), lease_ms=LEASE_MS)
        self.ops["reserve"] += 1
        self.ops[f"grant:{grant.reason or 'ok'}"] += 1
        if not grant.ok:
            return
        committed, allowed = 0, grant.granted_micros
        for _ in range(rng.randint(1, 3)):
            targets = sorted(rng.randint(committed, allowed) for _ in range(3))
            sends = [*targets, rng.choice(targets)]  # one duplicate, then shuffled
            rng.shuffle(sends)
            results = await asyncio.gather(*(ledger.commit(account, sid, c) for c in sends))
            self.ops["commit"] += len(sends)
            self._seen(account, sid, list(results))
            committed = targets[-1]
            if rng.random() < 0.6:
                more = rng.randint(1, 2_000)
                renewal = await ledger.reserve(
                    account, sid, more, lease_ms=LEASE_MS, new_session=False
                )
                self.ops["reserve"] += 1
                if renewal.ok:  # the hold is now exactly the new grant
                    allowed = committed + renewal.granted_micros
        await self.finish(account, sid, committed, allowed)

    async def finish(self, account: str, sid: str, committed: int, allowed: int) -> None:
        rng, ledger = self.rng, self.ledger
        if rng.random() < 0.1:
            return  # left live: its hold must still be counted in reserved
        final = rng.choice([None, rng.randint(committed, allowed), allowed])
        calls = [ledger.release(account, sid, final)]
        if rng.random() < 0.4:
            calls.append(ledger.release(account, sid, final))  # replayed stop
        if rng.random() < 0.4:
            calls.append(ledger.commit(account, sid, rng.randint(committed, allowed)))  # late
        rng.shuffle(calls)
        results = await asyncio.gather(*calls)
        self.ops["release/commit"] += len(calls)
        self._seen(account, sid, list(results))

    async def abandoned(self, account: str, sid: str) -> None:
        """A hold whose gateway went silent: a short lease nobody renews."""
        await self.ledger.reserve(account, sid, self.rng.randint(50, 500), lease_ms=200)
        self.ops["reserve"] += 1

    async def topup(self, n: int) -> None:
        account = self.rng.choice(ACCOUNTS)[0]
        amount = self.rng.randint(1_000, 8_000)
        txn = f"p{self.proc}-t{n}"
        calls = [self.ledger.topup(account, amount, txn_id=txn, who="test") for _ in range(2)]
        await asyncio.gather(*calls)  # the same transaction twice, concurrently
        self.topups[txn] = (account, amount)

    async def task(self, t: int) -> None:
        for n in range(SESSIONS_PER_TASK):
            account = self.rng.choice(ACCOUNTS)[0]
            sid = f"p{self.proc}-t{t}-s{n}"
            if self.rng.random() < 0.1:
                await self.abandoned(account, sid)
            else:
                await self.session(account, sid)
            if self.rng.random() < 0.1:
                await self.topup(t * 100 + n)


async def _sweeper(ledger: Ledger, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await ledger.sweep_expired()
        await asyncio.sleep(0.05)


async def _work(url: str, proc: int) -> Report:
    client = aioredis.Redis.from_url(url)
    # The wall clock: leases really expire. Odd processes send one script per round trip.
    ledger = Ledger(client, batch_commands=proc % 2 == 0)
    worker = Worker(ledger, seed=1_000 + proc, proc=proc)
    stop = asyncio.Event()
    sweeper = asyncio.create_task(_sweeper(ledger, stop)) if proc == 0 else None
    try:
        await asyncio.gather(*(worker.task(t) for t in range(TASKS_PER_PROCESS)))
    finally:
        stop.set()
        if sweeper is not None:
            await sweeper
        await client.aclose()
    return {
        "ops": dict(worker.ops),
        "debits": worker.debits,
        "topups": worker.topups,
        "overruns": worker.overruns,
    }


def _run_worker(args: tuple[str, int]) -> Report:
    return asyncio.run(_work(*args))


async def _setup(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        await client.flushall()
        ledger = Ledger(client)
        await ledger.load_scripts()
        for account_id, mode, balance, limit, max_calls in ACCOUNTS:
            await ledger.create_account(
                account_id,
                mode=mode,
                currency="EUR",
                balance_micros=balance,
                credit_limit_micros=limit,
                max_calls=max_calls,
                who="test",
            )
    finally:
        await client.aclose()


async def _check(url: str, reports: list[Report]) -> None:
    client = aioredis.Redis.from_url(url)
    ledger = Ledger(client)
    try:
        debits = {k: v for r in reports for k, v in r["debits"].items()}
        topups: Counter[str] = Counter()
        for report in reports:
            for account, amount in report["topups"].values():
                topups[account] += amount
        for account_id, mode, *_ in ACCOUNTS:
            acc = await ledger.get_account(account_id)
            assert acc.initial_balance_micros + acc.topups_micros - acc.debits_micros == (
                acc.balance_micros
            )
            assert acc.topups_micros == topups[account_id]  # each txn applied once
            holds = await client.hvals(K.holds_key(account_id))
            assert acc.reserved_micros == sum(int(h) for h in holds)
            assert acc.live_sessions == len(holds) == await client.zcard(K.leases_key(account_id))
            floor = -acc.credit_limit_micros if mode is Mode.POSTPAID else 0
            assert acc.balance_micros >= floor
            assert acc.reserved_micros >= 0
            mine = {k: v for k, v in debits.items() if k.startswith(f"{account_id}/")}
            in_redis = 0
            for key, seen in mine.items():
                stored = await client.hget(K.session_key(account_id, key.split("/")[1]), "debited")
                assert int(stored or 0) == seen, key  # each debit applied once, as reported
                in_redis += seen
            assert in_redis == acc.debits_micros
            await _check_audit(ledger, acc.id, acc.credit_limit_micros)
    finally:
        await client.aclose()


async def _check_audit(ledger: Ledger, account_id: str, credit_limit: int) -> None:
    """Every audited money change is consistent with its before/after snapshots, and the
    credit rule only ever suspended at the floor and lifted above it."""
    for entry in await ledger.audit(account_id, count=100_000):
        b, a, x = entry.before, entry.after, entry.details
        if entry.what in ("commit", "release"):
            assert int(b["balance"]) - int(a["balance"]) == int(x["amount"]), entry
            assert x["overrun"] == "0", entry
        if a.get("reserved"):
            assert int(a["reserved"]) >= 0, entry
        if a.get("status_reason") == "credit" and b.get("status_reason") != "credit":
            assert int(a["balance"]) <= -credit_limit, entry
        if b.get("status_reason") == "credit" and a.get("status") == "active":
            assert int(a["balance"]) > -credit_limit, entry


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_invariants_under_multiprocess_load(redis_server: EmbeddedRedis) -> None:
    url = redis_server.url
    asyncio.run(_setup(url))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(PROCESSES) as pool:
        reports = pool.map(_run_worker, [(url, p) for p in range(PROCESSES)])
    ops: Counter[str] = Counter()
    for report in reports:
        ops.update(report["ops"])
    money_ops = ops["reserve"] + ops["commit"] + ops["release/commit"]
    assert money_ops >= 1_000, ops
    # The workload really met every branch it is meant to exercise.
    assert ops["grant:ok"] > 0 and ops["grant:insufficient_credit"] > 0, ops
    assert sum(r["overruns"] for r in reports) == 0
    asyncio.run(_check(url, reports))
