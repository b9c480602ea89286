"""The accounting scripts with fewer instructions (docs/performance.md, round 13a):
commit.lua and release.lua format each figure once and append their audit and
journal entries without argument tables (common.lua's audit_x, journal_x); the
reserve of an Interim takes the commit's figures as numbers; session_renew.lua,
session_stop.lua and session_close.lua hand the ledger their own ARGV (moved down in
place) instead of copies. The scripts before that change (acct_before/: as they were
at 6d5ee21, which wrote LEGACY records only: the daemons here write that layout) and
the current ones must leave the same stored state (every key, every
audit and journal entry) and answer the same, packet for packet, on random sequences
of authorizes, Starts, Interims and Stops of a few calls on prepaid and postpaid
accounts running out of money (suspended at their floor, topped up again), sent to
two daemons (one holds the record and notes the packet in the script, the other
touches it first), with retransmissions, packets out of order, leases left to expire
(the sweeps of the reserve and the release), and the ledger's own reserve, commit and
release called directly with both policies; with the holds audited or not, the audit
stream capped or not."""

from __future__ import annotations

import importlib.resources
import random
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from fakes import Clock
from sessions_harness import (
    EUR,
    add_account,
    answer_of,
    call,
    lua_tree_before,
    make_sessions,
    read_cdrs,
    redis_state,
    usage,
)

from chargingd.ledger import Ledger, LedgerError, Mode
from chargingd.sessions.ccapi import UsageKind

BEFORE = Path(__file__).parent / "acct_before"
_FILES = importlib.resources.files
CHANGED = {
    "chargingd.ledger": ("common.lua", "commit.lua", "release.lua", "reserve.lua"),
    "chargingd.sessions": ("session_renew.lua", "session_stop.lua", "session_close.lua"),
}


# Round 17a (docs/performance.md): session_renew.lua and session_stop.lua take this
# process's values from their code (11 and 7 arguments, not 27 and 12), convert the
# cost and now once, and an applied Interim answers 1; the commit's writes of the hold
# and the account are merged into the reserve's (commit.lua, reserve.lua: ARGV.pending);
# the scripts as they were before
# (acct17_before/, main at 3b1ca6a), their arguments rebuilt in their head as they took
# them (as in acct_before/ and renew_before/, which compare the earlier rounds).
BEFORE_17A = Path(__file__).parent / "acct17_before"
CHANGED_17A = {
    "chargingd.ledger": ("commit.lua", "reserve.lua"),
    "chargingd.sessions": ("session_renew.lua", "session_stop.lua"),
}
ROUNDS = {"13a": (BEFORE, CHANGED), "17a": (BEFORE_17A, CHANGED_17A)}


def _tree_before(tmp: Path, round_: str = "13a") -> dict[str, Path]:
    """Copies of the packages' Lua with the changed scripts as they were."""
    before, changed = ROUNDS[round_]
    return lua_tree_before(tmp, before, changed)


async def _ledger(redis: aioredis.Redis, clock: Clock, audit_holds: bool, capped: bool) -> Ledger:
    ledger = Ledger(
        redis, clock_ms=clock, audit_holds=audit_holds, audit_max_entries=100_000 if capped else 0
    )
    await ledger.load_scripts()
    return ledger


async def _direct(ledger: Ledger, rng: random.Random, step: int, done: dict[str, int]) -> Any:
    """The ledger's own reserve, commit and release (the step-by-step path's scripts),
    on sessions of their own (a released one is not reserved again)."""
    acc = rng.choice(("acc1", "acc2"))
    slot = f"{acc}/{rng.randrange(3)}"
    pick = rng.random()
    policy = rng.choice(("cap", "debt"))
    try:
        if slot not in done or pick < 0.3:
            done.setdefault(slot, step)  # the slot's session: d + the step that opened it
            amount = rng.choice((EUR // 20, EUR // 2, 2 * EUR))
            lease_ms = rng.choice((5_000, 600_000))
            grant = await ledger.reserve(acc, f"d{done[slot]}", amount, lease_ms=lease_ms)
            return (step, "reserve", grant)
        sid = f"d{done[slot]}"
        if pick < 0.75:
            cost = rng.choice((0, EUR // 50, EUR // 5, EUR)) * (step % 7)
            return (step, "commit", await ledger.commit(acc, sid, cost, policy=policy))
        final = rng.choice((None, EUR // 10 * (step % 5)))
        del done[slot]
        return (step, "release", await ledger.release(acc, sid, final, policy=policy))
    except LedgerError as exc:
        return (step, type(exc).__name__, str(exc))


async def _sequence(
    redis: aioredis.Redis, tmp: Path, seed: int, audit_holds: bool
) -> tuple[list[Any], Any]:
    """One random sequence on a flushed Redis: the answers and the state at the end
    (and after every tenth step)."""
    rng = random.Random(seed)
    await redis.flushall()
    clock = Clock()
    capped = seed % 2 == 0
    ledgers = [await _ledger(redis, clock, audit_holds, capped) for _ in range(2)]
    daemons = [
        make_sessions(redis, ledger, clock, tmp / str(i), compact_records=False)
        for i, ledger in enumerate(ledgers)
    ]
    await add_account(ledgers[0], "acc1", balance_micros=rng.randrange(EUR // 5, 3 * EUR))
    await ledgers[0].create_account(
        "acc2",
        mode=Mode.POSTPAID,
        currency="EUR",
        balance_micros=rng.randrange(-EUR // 2, EUR // 2),
        credit_limit_micros=EUR // 2,
        tariff="retail",
        identities=("user:bob",),
        who="test",
    )
    calls = [call(f"r{i}", user=("alice", "bob")[i % 2]) for i in range(6)]
    used: dict[str, int] = {}  # the usage last reported per call (-1: stopped)
    direct: dict[str, int] = {}
    answers: list[Any] = []
    states = []
    for step in range(150):
        clock.advance(rng.choice((0, 1, 5, 20, 45, 60, 90, 300, 700)))
        # mostly the daemon that authorized the call (it holds the record: noted)
        sessions = daemons[0] if rng.random() < 0.75 else daemons[1]
        pick = rng.random()
        if pick < 0.12:
            answers.append(await _direct(ledgers[0], rng, step, direct))
            continue
        if pick < 0.15:
            acc = rng.choice(("acc1", "acc2"))
            amount = rng.choice((EUR // 10, EUR))
            answers.append(
                (step, "topup", await ledgers[0].topup(acc, amount, txn_id=f"t{step}", who="t"))
            )
            continue
        info = calls[rng.randrange(len(calls))]
        sid = info.session_id
        if sid not in used:
            answers.append(answer_of(await daemons[0].authorize(info)))
            used[sid] = 0
            if rng.random() < 0.8:
                await daemons[0].account(usage(info, UsageKind.START, 0, clock.now_ms))
            continue
        last = used[sid]
        pick = rng.random()
        if last < 0 or pick < 0.15:  # a retransmission, a late packet
            kind = rng.choice((UsageKind.INTERIM, UsageKind.STOP))
            at = max(abs(last), 0)
        elif pick < 0.8:
            kind = UsageKind.INTERIM
            at = last + rng.choice((0, 10, 30, 60, 120, 240, 600))
            used[sid] = at
        else:
            kind = UsageKind.STOP
            at = last + rng.choice((0, 5, 30, 300, 900))  # past the grant: capped or debt
            used[sid] = -at - 1 if at else -1
        report = usage(info, kind, at, clock.now_ms)
        answers.append((step, kind.value, await sessions.account(report)))
        if rng.random() < 0.2:  # the same packet again at once, maybe at the other daemon
            answers.append((step, "again", await rng.choice(daemons).account(report)))
        if step % 10 == 9:
            states.append(await redis_state(redis))
    states.append(await redis_state(redis))
    names = sorted(
        lib.name for sessions in daemons if sessions.fused for lib in sessions.fused.libraries
    )
    return answers, (states, names)


async def _compare(
    redis: aioredis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    seed: int,
    audit_holds: bool,
    round_: str = "13a",
) -> None:
    now = await _sequence(redis, tmp_path / "now", seed, audit_holds)
    roots = _tree_before(tmp_path / "before", round_)
    monkeypatch.setattr(
        importlib.resources, "files", lambda package: roots.get(str(package)) or _FILES(package)
    )
    before = await _sequence(redis, tmp_path / "was", seed, audit_holds)
    monkeypatch.undo()
    answers_now, (states_now, names_now) = now
    answers_before, (states_before, names_before) = before
    assert names_now != names_before  # the libraries' code differs: both ran
    assert answers_now == answers_before
    assert len(states_now) == len(states_before)
    for state_now, state_before in zip(states_now, states_before, strict=True):
        assert state_now == state_before
    # the sequences committed, released, swept and audited: the comparison means something
    final = states_now[-1]
    streams = {k: v for k, (kind, v, _) in final.items() if kind == "stream"}
    audit = [entry for k, v in streams.items() if k.endswith(b":audit") for entry in v]
    whats = {dict(entry)[b"what"] for entry in audit}
    assert b"release" in whats, whats
    assert any(k.endswith(b":journal") for k in streams), sorted(streams)


@pytest.mark.parametrize("seed", range(6))
async def test_accounting_by_evalsha_stores_what_the_scripts_before_did(
    redis: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    await _compare(redis, tmp_path, monkeypatch, seed, audit_holds=seed % 3 == 0)


@pytest.mark.parametrize("seed", range(6, 12))
async def test_accounting_by_fcall_stores_what_the_scripts_before_did(
    redis7: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    await _compare(redis7, tmp_path, monkeypatch, seed, audit_holds=seed % 3 == 0)


async def _promised_twice(redis: aioredis.Redis, tmp: Path, audit_holds: bool) -> Any:
    """Two calls on one prepaid account, each told the account's money; the first
    spends it, then the second stops within what it was told: its release is capped
    (policy cap, the money not there), by session_stop.lua on the daemon that holds the
    record and by session_close.lua on the other one."""
    await redis.flushall()
    clock = Clock()
    ledgers = [await _ledger(redis, clock, audit_holds, True) for _ in range(2)]
    daemons = [
        make_sessions(redis, ledger, clock, tmp / str(i), compact_records=False)
        for i, ledger in enumerate(ledgers)
    ]
    # 200 s at 0.60 a minute: each call holds 75 s and is told all it may use (held +
    # available): the first 200 s, the second 125 s
    await add_account(ledgers[0], "acc1", balance_micros=2 * EUR)
    answers: list[Any] = []
    for n, stopper in enumerate(daemons):
        first, second = call(f"p{n}a"), call(f"p{n}b")
        for info in (first, second):
            answers.append(answer_of(await daemons[0].authorize(info)))
            await daemons[0].account(usage(info, UsageKind.START, 0, clock.now_ms))
        clock.advance(150)
        answers.append(await daemons[0].account(usage(first, UsageKind.INTERIM, 150, clock.now_ms)))
        answers.append(await stopper.account(usage(second, UsageKind.STOP, 100, clock.now_ms)))
        answers.append(await daemons[0].account(usage(first, UsageKind.STOP, 151, clock.now_ms)))
        await ledgers[0].topup("acc1", 2 * EUR, txn_id=f"t{n}", who="t")
    cdrs = [(cdr.status, cdr.cost_micros, cdr.charged_micros) for cdr in await read_cdrs(redis)]
    return answers, await redis_state(redis), cdrs


async def _compare_capped(
    redis: aioredis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    audit_holds: bool,
    round_: str = "13a",
) -> None:
    now = await _promised_twice(redis, tmp_path / "now", audit_holds)
    roots = _tree_before(tmp_path / "before", round_)
    monkeypatch.setattr(
        importlib.resources, "files", lambda package: roots.get(str(package)) or _FILES(package)
    )
    before = await _promised_twice(redis, tmp_path / "was", audit_holds)
    monkeypatch.undo()
    assert now == before
    # the second calls' releases were capped: charged less than their cost
    assert [charged < cost for _, cost, charged in now[2][0::2]] == [True, True], now[2]


async def test_capped_stops_by_evalsha_store_what_the_scripts_before_did(
    redis: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _compare_capped(redis, tmp_path, monkeypatch, audit_holds=False)


async def test_capped_stops_by_fcall_store_what_the_scripts_before_did(
    redis7: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _compare_capped(redis7, tmp_path, monkeypatch, audit_holds=True)


@pytest.mark.parametrize("seed", range(20, 24))
async def test_17a_accounting_by_evalsha_stores_what_the_scripts_before_did(
    redis: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    await _compare(redis, tmp_path, monkeypatch, seed, seed % 3 == 0, "17a")


@pytest.mark.parametrize("seed", range(24, 30))
async def test_17a_accounting_by_fcall_stores_what_the_scripts_before_did(
    redis7: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    await _compare(redis7, tmp_path, monkeypatch, seed, seed % 3 == 0, "17a")


@pytest.mark.parametrize("audit_holds", [False, True])
async def test_17a_capped_stops_store_what_the_scripts_before_did(
    redis: aioredis.Redis,
    redis7: aioredis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    audit_holds: bool,
) -> None:
    for n, server in enumerate((redis, redis7)):
        await _compare_capped(server, tmp_path / str(n), monkeypatch, audit_holds, "17a")
