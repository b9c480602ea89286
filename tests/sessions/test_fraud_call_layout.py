"""The fused authorize with the fraud rules reads its call as the daemon lays it out
(sessions/fused.py, fraud/engine.py Prepared.add_fused; docs/fraud-cost.md "Fourteenth
round"): the account check in the plain authorize's two packed arguments, read by the
ledger's check_packed.lua (each part of it compared: a mismatch of any one is stale,
nothing counted), and the values' ttls worked out by the script from the ops (not
sent): equal to the ones compiled.py works out, and the rules' own arguments read
where the call holds them (sessions/fused.py FRAUD_LAYOUT: the identity, number, its
hash and the caller IP's value as counted, a refusal remembered, a block written),
with a locator key or without, with a caller IP's value or without (the locator, last,
at KEYS[12] or [11]), by FCALL (Redis 7, a library) and by EVALSHA (the same code as a
script)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from fakes import Clock
from fraud_harness import make_fraud
from sessions_harness import add_account, make_sessions

from chargingd.fraud import keys as FK
from chargingd.fraud.engine import unpack_value
from chargingd.fraud.types import CallFacts
from chargingd.ledger import Ledger, Mode, Status
from chargingd.ledger import keys as K
from chargingd.ledger.steps import AccountCheck
from chargingd.sessions.fused import FirstGrant
from chargingd.sessions.record import SessionRecord
from chargingd.sessions.service import Sessions

# windows of different lengths per value: the account's longest 3,600 s (a live call's,
# make_fraud's; the caller IP's 7,200 s must not be taken for it), the caller IP's 7,200 s
RULES = [
    {"name": "fast", "kind": "velocity", "scope": "account", "max_calls": 50, "window_s": 60,
     "action": "refuse"},
    {"name": "range", "kind": "same_destination", "max_calls": 50, "window_s": 600,
     "range_digits": 2},
    {"name": "ids", "kind": "velocity", "scope": "identity", "max_calls": 50, "window_s": 300,
     "action": "refuse"},
    {"name": "dd", "kind": "distinct_destinations", "max_destinations": 50, "window_s": 300},
    {"name": "many", "kind": "concurrent", "max_calls": 50, "action": "refuse"},
    {"name": "ip", "kind": "velocity", "scope": "caller_ip", "max_calls": 50,
     "window_s": 7200, "action": "refuse"},
]  # fmt: skip
# a refusing rule from the third call, a blocking one from the fourth
STRICT = [
    {"name": "fast", "kind": "velocity", "scope": "account", "max_calls": 2, "window_s": 60,
     "action": "refuse"},
    {"name": "risky", "kind": "velocity", "scope": "identity", "max_calls": 3,
     "window_s": 60, "action": "block"},
]  # fmt: skip
GOOD = AccountCheck("retail", "EUR", "user:alice", "prepaid")


async def build(
    redis: aioredis.Redis,
    tmp_path: Path,
    *,
    fcall: bool,
    echo: bool = False,
    rules: list[dict[str, Any]] = RULES,
) -> tuple[Sessions, Any]:
    clock = Clock()
    ledger = Ledger(redis, clock_ms=clock, request_timeout_s=5.0)
    await ledger.load_scripts()
    base = make_sessions(redis, ledger, clock, tmp_path)
    engine = await make_fraud(redis, clock, rules, ledger=ledger)
    sessions = Sessions(
        redis=redis,
        ledger=ledger,
        pricer=base.pricer,
        cfg=base.cfg,
        clock_ms=clock,
        data_dir=tmp_path,
        fraud=engine,
        echo_class=("gw1",) if echo else (),  # no locator key: 8 keys before the rules'
    )
    await sessions.store.load_scripts()
    assert sessions.fused is not None
    if not fcall:  # the same code by EVALSHA (a Redis 6, a user without FCALL)
        sessions.fused.fraud_library.available = False
    await add_account(ledger, "acc1", identities=("user:alice", "user:carol"))
    return sessions, engine


async def authorize(
    sessions: Sessions, engine: Any, sid: str, check: AccountCheck | None
) -> tuple[FirstGrant, Any]:
    """One fused authorize of acc1 with this account check, straight to FusedPath."""
    now = engine.clock_ms()
    rec = SessionRecord(
        session_id=sid,
        account_id="acc1",
        user_name="alice",
        caller="",
        callee="+4930123456",
        destination="de",
        plan="retail",
        currency="EUR",
        gateway="10.0.0.1",
        client="gw1",
        auth_ms=now,
        last_seen_ms=now,
        held_micros=1000,
        paid_usage_s=60,
    )
    facts = CallFacts("acc1", sid, "+4930123456", "user:alice", "192.0.2.7", "retail")
    prepared = engine.prepare(facts)
    assert prepared is not None
    assert sessions.fused is not None
    out = await sessions.fused.authorize(rec, 1000, lease_ms=60_000, check=check, fraud=prepared)
    return out, prepared


@pytest.mark.parametrize("echo", [False, True], ids=["locator", "no-locator"])
@pytest.mark.parametrize("fcall", [True, False], ids=["fcall", "evalsha"])
async def test_the_packed_check_and_the_worked_out_ttls(
    redis7: aioredis.Redis, tmp_path: Path, fcall: bool, echo: bool
) -> None:
    sessions, engine = await build(redis7, tmp_path, fcall=fcall, echo=echo)
    await redis7.config_resetstat()
    out, prepared = await authorize(sessions, engine, "s1", GOOD)
    assert out.grant is not None and out.grant.ok and out.created == 1
    command = "fcall" if fcall else "evalsha"
    stats: dict[str, Any] = await redis7.info("commandstats")
    assert int(stats[f"cmdstat_{command}"]["calls"]) == 1
    assert prepared.ip_value != prepared.value  # a caller IP's value: KEYS[11]
    # the values live as long as compiled.py says (the script worked it out from the ops)
    plan = prepared.plan
    assert plan.ttl_ms == 3_660_000 and plan.ip_ttl_ms == 7_260_000
    assert plan.ttl_ms - 2000 < await redis7.pttl(prepared.value) <= plan.ttl_ms
    assert plan.ip_ttl_ms - 2000 < await redis7.pttl(prepared.ip_value) <= plan.ip_ttl_ms
    counted = await redis7.get(prepared.value)
    # the rules' arguments read where the call holds them: the identity's counter, the
    # number's range and hash, the caller IP's counter, the call live
    value = unpack_value(counted)
    assert [k.split("|", 1)[1] for k in value["h"]] == ["user:alice"]
    assert [k.split("|", 1)[1] for k in value["g"]] == ["+49301234"]
    assert [list(n) for n in value["n"].values()] == [[prepared.destination.member]]
    assert list(value["l"]) == ["s1"]
    assert len(unpack_value(await redis7.get(prepared.ip_value))["w"]) == 1
    assert bool(await redis7.keys("sess:lc:*")) is not echo  # the locator written or not

    # each part of the check, changed alone: stale, nothing counted, nothing held
    for n, check in enumerate(
        (
            AccountCheck("other", "EUR", "user:alice", "prepaid"),
            AccountCheck("retail", "USD", "user:alice", "prepaid"),
            AccountCheck("retail", "EUR", "user:alice", "postpaid"),
            AccountCheck("retail", "EUR", "user:bob", "prepaid"),
            AccountCheck("retail", "EUR", "user:alic", ""),  # a part of a listed one
            AccountCheck("retail\0EUR", "", "user:alice", ""),  # the parts run together
        )
    ):
        stale, _ = await authorize(sessions, engine, f"x{n}", check)
        assert stale.grant is None and stale.status == "" and stale.fraud is None, check
        assert await redis7.get(prepared.value) == counted, check
    assert (await sessions.ledger.get_account("acc1")).live_sessions == 1

    # any mode, another listed identity, nothing to check: granted, counted
    for n, check in enumerate(
        (
            AccountCheck("retail", "EUR", "user:carol", ""),
            AccountCheck("retail", "EUR", "", ""),
            None,
        )
    ):
        ok, _ = await authorize(sessions, engine, f"ok{n}", check)
        assert ok.grant is not None and ok.grant.ok and ok.created == 1, check
    assert await redis7.get(prepared.value) != counted
    assert (await sessions.ledger.get_account("acc1")).live_sessions == 4

    # a mode that changed: stale; an account not active: its status and reason
    await sessions.ledger.update_account("acc1", mode=Mode.POSTPAID, who="test")
    moved, _ = await authorize(sessions, engine, "m1", GOOD)
    assert moved.grant is None and moved.status == ""
    await sessions.ledger.update_account("acc1", mode=Mode.PREPAID, who="test")
    await sessions.ledger.set_status("acc1", Status.SUSPENDED, who="test", reason="dunning")
    before = await redis7.get(prepared.value)
    off, _ = await authorize(sessions, engine, "i1", GOOD)
    assert off.grant is None and off.status == "suspended" and off.reason == "dunning"
    assert await redis7.get(prepared.value) == before
    gone, _ = await authorize(sessions, engine, "g1", None)  # nothing checked: the reserve
    assert gone.grant is not None and not gone.grant.ok


async def test_a_gone_account_is_stale(redis7: aioredis.Redis, tmp_path: Path) -> None:
    sessions, engine = await build(redis7, tmp_path, fcall=True)
    await redis7.delete("{a:acc1}:acct")
    out, prepared = await authorize(sessions, engine, "s1", AccountCheck("", "", "", ""))
    assert out.grant is None and out.status == ""
    assert await redis7.get(prepared.value) is None
    assert FK.value_key("acc1") == prepared.value


@pytest.mark.parametrize("fcall", [True, False], ids=["fcall", "evalsha"])
async def test_a_refusal_remembered_and_a_block_written_where_the_call_says(
    redis7: aioredis.Redis, tmp_path: Path, fcall: bool
) -> None:
    """A refusing rule's answer is remembered for the ledger's refusal time (the
    wrapper's REFUSAL_TTL, put where fraud.lua reads it); a blocking rule blocks through
    the ledger's status step with the block step's arguments and the account's own acct
    and audit keys (the call's KEYS[1], [4])."""
    sessions, engine = await build(redis7, tmp_path, fcall=fcall, rules=STRICT)
    for n in range(2):
        out, prepared = await authorize(sessions, engine, f"s{n}", GOOD)
        assert out.grant is not None and out.grant.ok
    refused, prepared = await authorize(sessions, engine, "s2", GOOD)
    assert refused.grant is None and refused.fraud[0] == b"refuse"
    remembered = unpack_value(await redis7.get(prepared.value))["r"]["s2"]
    assert remembered[0] == "refuse|fast"
    refusal_ms = sessions.ledger.steps.refusal_ttl_ms
    assert remembered[1] == prepared.now_ms + refusal_ms and refusal_ms == 60_000
    audit = K.audit_key("acc1")
    before = await redis7.xlen(audit)
    blocked, _ = await authorize(sessions, engine, "s3", GOOD)
    assert blocked.grant is None and blocked.fraud[0] == b"block" and blocked.fraud[2] == 1
    account = await sessions.ledger.get_account("acc1")
    assert account.status is Status.BLOCKED
    entries = await redis7.xrange(audit, "-", "+")
    assert len(entries) == before + 1
    assert b"fraud rule risky" in b" ".join(entries[-1][1].values())
