"""The Interim's fused script (session_renew.lua): its reserve takes the session hash's
flags and the session's hold from the commit before it (commit.lua hands them over as
ARGV.known, ARGV.hold) instead of reading them again. The scripts before that change
(renew_before/: commit.lua, reserve.lua, session_renew.lua as they were) and the
current ones must leave the same stored state and answer the same, packet for packet,
on random sequences of authorizes, Starts, Interims and Stops of a few calls on
prepaid and postpaid accounts running out of money, with retransmissions, packets out
of order and leases left to expire (the reserve's sweep may reclaim the session's own
hold: then it reads the hold again)."""

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
    make_ledger,
    make_sessions,
    redis_state,
    usage,
)

from chargingd.ledger import Mode
from chargingd.sessions.ccapi import UsageKind

BEFORE = Path(__file__).parent / "renew_before"
_FILES = importlib.resources.files


def _tree_before(tmp: Path) -> dict[str, Path]:
    """Copies of the packages' Lua with the three scripts as they were."""
    changed = {
        "chargingd.ledger": ("commit.lua", "reserve.lua"),
        "chargingd.sessions": ("session_renew.lua",),
    }
    return lua_tree_before(tmp, BEFORE, changed)


async def _sequence(redis: aioredis.Redis, tmp: Path, seed: int) -> tuple[list[Any], Any]:
    """One random sequence on a flushed Redis: the answers and the state at the end
    (and after every tenth step)."""
    rng = random.Random(seed)
    await redis.flushall()
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp)
    await add_account(ledger, "acc1", balance_micros=rng.randrange(EUR // 5, 3 * EUR))
    await ledger.create_account(
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
    answers: list[Any] = []
    states = []
    for step in range(120):
        info = calls[rng.randrange(len(calls))]
        sid = info.session_id
        clock.advance(rng.choice((0, 1, 5, 20, 45, 60, 90, 300, 700)))
        if sid not in used:
            answers.append(answer_of(await sessions.authorize(info)))
            used[sid] = 0
            if rng.random() < 0.8:
                await sessions.account(usage(info, UsageKind.START, 0, clock.now_ms))
            continue
        last = used[sid]
        pick = rng.random()
        if last < 0 or pick < 0.15:  # a retransmission, a late packet
            kind = rng.choice((UsageKind.INTERIM, UsageKind.STOP))
            at = max(abs(last), 0)
        elif pick < 0.8:
            kind = UsageKind.INTERIM
            at = last + rng.choice((0, 10, 30, 60, 120, 240))
            used[sid] = at
        else:
            kind = UsageKind.STOP
            at = last + rng.choice((0, 5, 30))
            used[sid] = -at - 1 if at else -1
        report = usage(info, kind, at, clock.now_ms)
        answers.append((step, kind.value, await sessions.account(report)))
        if rng.random() < 0.2:  # the same packet again at once
            answers.append((step, "again", await sessions.account(report)))
        if step % 10 == 9:
            states.append(await redis_state(redis, ordered_fields=False))
    states.append(await redis_state(redis, ordered_fields=False))
    names = sorted(lib.name for lib in sessions.fused.libraries) if sessions.fused else []
    return answers, (states, names)


async def _compare(
    redis: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    answers_now, (states_now, names_now) = await _sequence(redis, tmp_path / "now", seed)
    roots = _tree_before(tmp_path / "before")
    monkeypatch.setattr(
        importlib.resources, "files", lambda package: roots.get(str(package)) or _FILES(package)
    )
    answers_before, (states_before, names_before) = await _sequence(redis, tmp_path / "was", seed)
    monkeypatch.undo()
    assert names_now != names_before  # the renew library's code differs: both ran
    assert answers_now == answers_before
    assert len(states_now) == len(states_before)
    for now, before in zip(states_now, states_before, strict=True):
        assert now == before
    # the sequences did renew, refuse and close: the comparison means something
    final = states_now[-1]
    audit = [v for k, (kind, v, _) in final.items() if kind == "stream" and b"audit" in k]
    assert audit, sorted(final)


@pytest.mark.parametrize("seed", range(6))
async def test_renew_by_evalsha_stores_what_the_scripts_before_did(
    redis: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    await _compare(redis, tmp_path, monkeypatch, seed)


@pytest.mark.parametrize("seed", range(6, 12))
async def test_renew_by_fcall_stores_what_the_scripts_before_did(
    redis7: aioredis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    await _compare(redis7, tmp_path, monkeypatch, seed)
