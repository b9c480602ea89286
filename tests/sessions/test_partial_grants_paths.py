"""`[ledger] partial_grants` means the same on every path of a call.

A call's grants are always partial grants (docs/credit-control.md, "Partial grants"): a call
that can afford only part of a grant gets that part and a deadline where it ends, on
the fused scripts (a single Redis: sessions/fused.py's constants) and step by step
(Redis Cluster, scripts unavailable: Grants.renew, Authorizer._reserve_first_steps)
alike. ``partial_grants`` is the ledger's default for a direct Ledger.reserve caller
only. Here the same call runs through both paths, with ``partial_grants`` false and
true, on the embedded Redis 6.2 (EVALSHA) and on a 7 (FCALL): the same answers, holds,
deadlines, debits, balance, CDR and audit trail. (Before, the fused path took the
ledger's default: with it false, a renewal the account could pay only in part was
refused there, its deadline earlier, and a first grant it could pay only in part was
refused while the step path granted it.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from fraud_harness import make_fraud
from sessions_harness import (
    BERLIN,
    BERLIN_PER_S,
    EUR,
    Clock,
    add_account,
    call,
    make_sessions,
    read_cdrs,
    usage,
)

from chargingd.ledger import Ledger
from chargingd.sessions.ccapi import Authorized, UsageKind
from chargingd.sessions.service import Sessions
from chargingd.sessions.store import DEADLINES

# interim 60 s + margin 15 s (sessions_harness.session_config): the first grant, and
# every grant of a call younger than 150 s, is 75 s of usage
GRANT_S = 75
ANSWER_AFTER_S = 2  # ringing


# [fraud] rules that never fire here: the authorize takes the fraud wrapper's script
# (session_authorize_fraud.lua, its reserve's constants the plain authorize's) or the
# rules' own script first, step by step
LENIENT = [
    {"name": "fast", "kind": "velocity", "scope": "account", "max_calls": 50, "window_s": 60,
     "action": "refuse"},
    {"name": "many", "kind": "concurrent", "max_calls": 50, "action": "refuse"},
]  # fmt: skip


async def _sessions(
    redis: aioredis.Redis,
    tmp_path: Path,
    clock: Clock,
    *,
    partial_grants: bool,
    fused: bool,
    fraud: str = "",
) -> tuple[Ledger, Sessions]:
    """``fraud``: "" no rules; "here" the rules evaluated in this process (the plain
    authorize's script); "lua" in the fused wrapper's script (local_values = 0)."""
    ledger = Ledger(redis, clock_ms=clock, partial_grants=partial_grants)
    await ledger.load_scripts()
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    if fraud:
        local_values = 0 if fraud == "lua" else 16_384
        engine = await make_fraud(redis, clock, LENIENT, ledger=ledger, local_values=local_values)
        base = sessions
        sessions = Sessions(
            redis=redis,
            ledger=ledger,
            pricer=base.pricer,
            cfg=base.cfg,
            clock_ms=clock,
            data_dir=tmp_path,
            fraud=engine,
        )
    assert sessions.fused is not None  # a single Redis: the fused path unless told
    await sessions.store.load_scripts()  # as a daemon's start (Functions on a 7)
    if not fused:
        sessions.step_by_step()  # the Redis-Cluster path
        assert sessions.authorizer.fused is None and sessions.grants.fused is None
    return ledger, sessions


async def _state(redis: aioredis.Redis, ledger: Ledger, sessions: Sessions) -> dict[str, Any]:
    """What a step left: the call's grant on its record, its deadline entry, the money."""
    rec = await sessions.store.get("acc1", "s1")
    assert rec is not None
    account = await ledger.get_account("acc1")
    return {
        "state": rec.state,
        "held": rec.held_micros,
        "debited": rec.debited_micros,
        "paid_usage_s": rec.paid_usage_s,
        "limited": rec.limited,
        "deadline_ms": rec.deadline_ms,
        "credit": rec.credit_micros,
        "deadline_entry": await redis.zscore(DEADLINES, rec.member),
        "balance": account.balance_micros,
        "reserved": account.reserved_micros,
        "debits": account.debits_micros,
    }


async def _run(
    redis: aioredis.Redis,
    tmp_path: Path,
    *,
    partial_grants: bool,
    fused: bool,
    balance_micros: int,
    interims: tuple[int, ...],
    stop_s: int,
    known: bool,
    fraud: str = "",
) -> dict[str, Any]:
    """One call (after a warm-up call when ``known``: the caller's one-round-trip
    authorize), step by step as a gateway sends it; what each step answered and left."""
    await redis.flushall()
    clock = Clock()
    ledger, sessions = await _sessions(
        redis, tmp_path, clock, partial_grants=partial_grants, fused=fused, fraud=fraud
    )
    await add_account(ledger, balance_micros=balance_micros)
    if known:  # a call that never rang through: the caller is known, nothing charged
        warm = call("w0")
        assert isinstance(await sessions.authorize(warm), Authorized)
        await sessions.account(usage(warm, UsageKind.FAILED, 0, clock.now_ms))
        assert (await ledger.get_account("acc1")).reserved_micros == 0
    info = call("s1", called=BERLIN)
    answer = await sessions.authorize(info)
    steps: list[Any] = [answer]
    if not isinstance(answer, Authorized):
        return {"steps": steps}
    steps.append(await _state(redis, ledger, sessions))
    answer_ms = clock.advance(ANSWER_AFTER_S)
    await sessions.account(usage(info, UsageKind.START, 0, answer_ms))
    steps.append(await _state(redis, ledger, sessions))
    for usage_s in interims:
        clock.now_ms = answer_ms + usage_s * 1000
        await sessions.account(usage(info, UsageKind.INTERIM, usage_s, clock.now_ms))
        steps.append(await _state(redis, ledger, sessions))
    clock.now_ms = answer_ms + stop_s * 1000
    await sessions.account(usage(info, UsageKind.STOP, stop_s, clock.now_ms))
    steps.append(await _state(redis, ledger, sessions))
    (cdr,) = [c for c in await read_cdrs(redis) if c.call_id == "s1"]
    audit = [(e.what, e.details.get("amount")) for e in await ledger.audit("acc1")]
    return {
        "steps": steps,
        "answer_ms": answer_ms,
        "cdr": (cdr.status, cdr.duration_s, cdr.cost_micros),
        "audit": audit,
        "record": await sessions.store.get("acc1", "s1"),
    }


async def _both_paths(redis: aioredis.Redis, tmp_path: Path, **scenario: Any) -> dict[str, Any]:
    """The scenario on the fused path and step by step: the same in everything."""
    fused = await _run(redis, tmp_path / "fused", fused=True, **scenario)
    step = await _run(redis, tmp_path / "step", fused=False, **scenario)
    for n, (f, s) in enumerate(zip(fused["steps"], step["steps"], strict=True)):
        assert f == s, f"step {n}: fused {f} != step by step {s}"
    assert fused == step
    return fused


@pytest.fixture(params=["redis", "redis7"])
def server(request: pytest.FixtureRequest) -> aioredis.Redis:
    """The embedded Redis 6.2 (the fused scripts by EVALSHA) or a 7 (by FCALL)."""
    client: aioredis.Redis = request.getfixturevalue(request.param)
    return client


@pytest.mark.parametrize("partial_grants", [False, True])
async def test_renewal_paid_in_part_is_granted_in_part_on_both_paths(
    server: aioredis.Redis, tmp_path: Path, partial_grants: bool
) -> None:
    """1 EUR at 0.60 EUR/min: the first grant (75 s, 0.75) in full; the Interim at 60 s
    commits 0.60 and asks 0.75 for the next 75 s where 0.40 is left: 0.40 held, the
    deadline at 100 s (where the money ends); the Interim at 90 s gets the last 0.10;
    the Stop at 100 s costs all of it."""
    seen = await _both_paths(
        server,
        tmp_path,
        partial_grants=partial_grants,
        balance_micros=1 * EUR,
        interims=(60, 90),
        stop_s=100,
        known=False,
    )
    answer, first, start, at60, at90, stop = seen["steps"]
    answer_ms = seen["answer_ms"]
    assert isinstance(answer, Authorized)
    assert answer.session_timeout_s == 100 and answer.credit_micros == 1 * EUR
    assert (first["held"], first["limited"], first["deadline_ms"]) == (GRANT_S * BERLIN_PER_S, 0, 0)
    assert (start["held"], start["deadline_ms"]) == (GRANT_S * BERLIN_PER_S, 0)
    # the renewal paid in part: what is left held, the deadline where it ends
    assert (at60["debited"], at60["held"], at60["limited"]) == (600_000, 400_000, 1)
    assert at60["deadline_ms"] == answer_ms + 100_000 == at60["deadline_entry"]
    assert (at60["balance"], at60["reserved"]) == (400_000, 400_000)
    assert (at90["debited"], at90["held"], at90["deadline_ms"]) == (
        900_000,
        100_000,
        answer_ms + 100_000,
    )
    assert (stop["state"], stop["balance"], stop["reserved"], stop["debits"]) == (
        "closed", 0, 0, 1 * EUR,
    )  # fmt: skip
    assert seen["cdr"] == ("credit_cut", 100, 1 * EUR)  # ran to what its money paid


@pytest.mark.parametrize("known", [False, True])
@pytest.mark.parametrize("partial_grants", [False, True])
async def test_first_grant_paid_in_part_is_granted_in_part_on_both_paths(
    server: aioredis.Redis, tmp_path: Path, partial_grants: bool, known: bool
) -> None:
    """0.50 EUR where the first grant asks 0.75: 0.50 held, Session-Timeout 50 s, the
    deadline at the answer + 50 s; the Interim at 30 s gets the 0.20 left; the Stop at
    50 s costs all of it. ``known``: the caller's one-round-trip authorize (the
    account checked in the script), else the first lookup's."""
    seen = await _both_paths(
        server,
        tmp_path,
        partial_grants=partial_grants,
        balance_micros=EUR // 2,
        interims=(30,),
        stop_s=50,
        known=known,
    )
    answer, first, start, at30, stop = seen["steps"]
    answer_ms = seen["answer_ms"]
    assert isinstance(answer, Authorized)
    assert answer.session_timeout_s == 50 and answer.credit_micros == EUR // 2
    assert (first["held"], first["paid_usage_s"], first["limited"]) == (EUR // 2, 50, 1)
    assert (start["deadline_ms"], start["deadline_entry"]) == (answer_ms + 50_000,) * 2
    assert (at30["debited"], at30["held"], at30["limited"]) == (300_000, 200_000, 1)
    assert at30["deadline_ms"] == answer_ms + 50_000
    assert (stop["state"], stop["balance"], stop["reserved"], stop["debits"]) == (
        "closed", 0, 0, EUR // 2,
    )  # fmt: skip
    assert seen["cdr"] == ("credit_cut", 50, EUR // 2)  # ran to what its money paid


@pytest.mark.parametrize("rules", ["here", "lua"])
@pytest.mark.parametrize("known", [False, True])
@pytest.mark.parametrize("partial_grants", [False, True])
async def test_first_grant_paid_in_part_with_the_fraud_rules_on_both_paths(
    server: aioredis.Redis, tmp_path: Path, partial_grants: bool, known: bool, rules: str
) -> None:
    """The same with [fraud] on (rules that do not fire), fused: the rules evaluated
    here and the plain authorize, or the rules in the wrapper's script
    (session_authorize_fraud.lua, its reserve's constants the plain authorize's);
    step by step: the rules' own script, then the reserve."""
    seen = await _both_paths(
        server,
        tmp_path,
        partial_grants=partial_grants,
        balance_micros=EUR // 2,
        interims=(30,),
        stop_s=50,
        known=known,
        fraud=rules,
    )
    answer, first, *_ = seen["steps"]
    assert isinstance(answer, Authorized)
    assert answer.session_timeout_s == 50 and answer.credit_micros == EUR // 2
    assert (first["held"], first["limited"]) == (EUR // 2, 1)
    assert seen["cdr"] == ("credit_cut", 50, EUR // 2)  # ran to what its money paid
