"""Shared pieces of the credit-control tests: a real tariff, a real Ledger on a real
Redis, a movable clock and a recording CallCutter (real asyncio, no mocks)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from fakes import T0_MS, Clock

from chargingd.billing.cdr import CDR, CDR_STREAM
from chargingd.core.config import SessionsConfig
from chargingd.ledger import Ledger, Mode
from chargingd.rating.durations import NS_PER_S
from chargingd.rating.model import (
    ANY_SUBJECT,
    DestinationRate,
    PlanEntry,
    PrefixIndex,
    Rate,
    RateSlot,
    RatingActivation,
    RatingPlan,
    RatingProfile,
)
from chargingd.rating.plan import TariffPlan
from chargingd.sessions.ccapi import Authorized, CallInfo, SessionRef, UsageKind, UsageReport
from chargingd.sessions.pricing import Pricer
from chargingd.sessions.service import Sessions
from chargingd.sessions.shards import shard_keys, stored_shards

# make(cutter, **make_sessions options) -> Sessions (tests/sessions/conftest.py on_both_paths)
MakeSessions = Callable[..., Sessions]

EUR = 1_000_000
BERLIN_PER_S = 10_000  # the harness tariff's Berlin rate: 0.60 EUR/min, per second
BERLIN = "030123456"  # 0.60 EUR/min per second  -> +4930123456
MUNICH = "089123456"  # 1.20 EUR/min per minute + 0.10 connect fee


def make_plan(plan_id: str = "retail", currency: str = "EUR") -> TariffPlan:
    """A small real tariff: Berlin per second, the rest of Germany per minute."""
    idx = PrefixIndex()
    idx.add("4930", "DE_BERLIN")
    idx.add("49", "DE")
    per_second = Rate("R_SEC", (RateSlot(0, Decimal("0.60"), 60 * NS_PER_S, NS_PER_S),))
    per_minute = Rate(
        "R_MIN",
        (RateSlot(0, Decimal("1.20"), 60 * NS_PER_S, 60 * NS_PER_S),),
        connect_fee=Decimal("0.10"),
    )
    plan = RatingPlan.build(
        "RP_RETAIL",
        [
            PlanEntry(DestinationRate("DE_BERLIN", per_second)),
            PlanEntry(DestinationRate("DE", per_minute)),
        ],
    )
    since = datetime(2000, 1, 1, tzinfo=UTC)
    profile = RatingProfile("", "call", ANY_SUBJECT, (RatingActivation(since, plan),))
    return TariffPlan(plan_id, idx, [profile], currency=currency)


@dataclass
class RecordingCutter:
    """A ccapi.CallCutter that records what it was asked; fails on demand."""

    fail_next: int = 0  # answer False this many times
    coa: bool = True
    disconnects: list[tuple[SessionRef, str]] = field(default_factory=list)
    timeouts: list[tuple[SessionRef, int]] = field(default_factory=list)

    async def disconnect(self, ref: SessionRef, reason: str) -> bool:
        await asyncio.sleep(0)
        self.disconnects.append((ref, reason))
        if self.fail_next:
            self.fail_next -= 1
            return False
        return True

    async def change_timeout(self, ref: SessionRef, session_timeout_s: int) -> bool:
        await asyncio.sleep(0)
        self.timeouts.append((ref, session_timeout_s))
        return self.coa


def session_config(**overrides: Any) -> SessionsConfig:
    # compact_records: the layout a new deployment writes (a daemon resolves it against
    # Redis at start: sessions/layoutchoice.py; Sessions alone takes unset as LEGACY)
    values: dict[str, Any] = {
        "interim_interval_s": 60,
        "grant_margin_s": 15,
        "compact_records": True,
    }
    values.update(overrides)
    return SessionsConfig(**values)


async def make_ledger(redis: aioredis.Redis, clock: Clock) -> Ledger:
    ledger = Ledger(redis, clock_ms=clock)
    await ledger.load_scripts()
    return ledger


def make_sessions(
    redis: aioredis.Redis,
    ledger: Ledger,
    clock: Clock,
    data_dir: Path,
    cutter: RecordingCutter | None = None,
    credit_modes: dict[str, str] | None = None,
    echo_class: tuple[str, ...] = (),
    plans: tuple[TariffPlan, ...] = (),
    **cfg: Any,
) -> Sessions:
    """``plans``: more tariffs (by their id) beside the default "retail" (EUR)."""
    plan = make_plan()
    return Sessions(
        redis=redis,
        ledger=ledger,
        pricer=Pricer({"retail": plan} | {p.id: p for p in plans}, default=plan),
        cfg=session_config(**cfg),
        clock_ms=clock,
        data_dir=data_dir,
        call_cutter=cutter,
        credit_modes=credit_modes,
        echo_class=echo_class,
    )


async def add_account(
    ledger: Ledger,
    account_id: str = "acc1",
    *,
    balance_micros: int = 10 * EUR,
    identities: tuple[str, ...] = ("user:alice",),
    mode: Mode = Mode.PREPAID,
    tariff: str = "retail",
    max_calls: int = 0,
    currency: str = "EUR",
) -> None:
    await ledger.create_account(
        account_id,
        mode=mode,
        currency=currency,
        balance_micros=balance_micros,
        tariff=tariff,
        max_calls=max_calls,
        identities=identities,
        who="test",
    )


def call(
    session_id: str,
    *,
    user: str = "alice",
    called: str = BERLIN,
    calling: str = "",
    gateway: str = "10.0.0.1",
    client: str = "gw1",
    default_account: str = "",
    lookup: tuple[str, ...] = ("user", "ani", "default"),
) -> CallInfo:
    return CallInfo(
        session_id=session_id,
        user_name=user,
        calling=calling,
        called=called,
        gateway=gateway,
        client=client,
        default_account=default_account,
        lookup=lookup,
    )


def usage(info: CallInfo, kind: UsageKind, usage_s: int, event_ms: int, **kw: Any) -> UsageReport:
    return UsageReport(call=info, kind=kind, usage_s=usage_s, event_ms=event_ms, **kw)


async def read_cdrs(redis: aioredis.Redis) -> list[CDR]:
    entries = await redis.xrange(CDR_STREAM)
    return [CDR.unpack(fields[b"cdr"]) for _, fields in entries]


def call_worker(url: str, worker: int, calls: int, data_dir: str, out: Any) -> None:
    """One daemon process: its own loop, Ledger and Sessions, ``calls`` calls at once.

    Puts (worker, authorized session ids, refused count, lowest balance seen) on ``out``.
    """
    out.put(asyncio.run(_worker_calls(url, worker, calls, Path(data_dir))))


async def _worker_calls(
    url: str, worker: int, calls: int, data_dir: Path
) -> tuple[int, list[str], int, int]:
    pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=32, timeout=20)
    client = aioredis.Redis(connection_pool=pool)
    clock = Clock()
    ledger = await make_ledger(client, clock)
    sessions = make_sessions(client, ledger, clock, data_dir, RecordingCutter())
    lowest = [10**18]
    try:
        results = await asyncio.gather(
            *(_one_call(sessions, ledger, f"w{worker}-c{i}", i, lowest) for i in range(calls))
        )
    finally:
        await client.aclose()
    authorized = [sid for sid in results if sid]
    return worker, authorized, calls - len(authorized), lowest[0]


async def _one_call(
    sessions: Sessions, ledger: Ledger, sid: str, index: int, lowest: list[int]
) -> str:
    """A gateway that honours its grants: it stops where the money held for it ends."""
    info = call(sid, user="shared")
    answer = await sessions.authorize(info)
    if not isinstance(answer, Authorized):
        return ""
    await sessions.account(usage(info, UsageKind.START, 0, T0_MS))
    desired_s = 30 + (index * 7) % 120
    rec = await sessions.store.find(sid)
    assert rec is not None
    paid_s = rec.paid_usage_s
    if desired_s > 60 and paid_s >= 60:
        interim = usage(info, UsageKind.INTERIM, 60, T0_MS + 60_000)
        await sessions.account(interim)
        await sessions.account(interim)  # retransmission
        rec = await sessions.store.find(sid)
        assert rec is not None
        paid_s = rec.paid_usage_s
    final_s = min(desired_s, paid_s)
    stop = usage(info, UsageKind.STOP, final_s, T0_MS + final_s * 1000)
    await asyncio.gather(sessions.account(stop), sessions.account(stop))  # duplicate Stop
    account = await ledger.get_account("shared")
    lowest[0] = min(lowest[0], account.balance_micros)
    return sid


async def seen_entries(redis: Any, gateway: str) -> dict[bytes, float]:
    """Every last-seen entry of ``gateway`` (all its shards): member -> score."""
    out: dict[bytes, float] = {}
    for key in shard_keys(gateway, await stored_shards(redis)):
        out |= dict(await redis.zrange(key, 0, -1, withscores=True))
    return out


async def seen_count(redis: Any, gateway: str) -> int:
    """How many last-seen entries ``gateway`` has (all its shards)."""
    return sum([await redis.zcard(k) for k in shard_keys(gateway, await stored_shards(redis))])


_FILES = resources.files  # (tests monkeypatch importlib.resources.files: the original)


def lua_tree_before(
    tmp: Path, before: Path, changed: dict[str, tuple[str, ...]]
) -> dict[str, Path]:
    """Copies of the packages' Lua (package -> its copy's root) with the ``changed``
    scripts as they were (copies kept in ``before``): what an old-against-new test runs."""
    roots = {}
    for package, names in changed.items():
        root = tmp / package
        shutil.copytree(Path(str(_FILES(package))) / "lua", root / "lua")
        for name in names:
            shutil.copy(before / name, root / "lua" / name)
        roots[package] = root
    return roots


async def redis_state(redis: aioredis.Redis, *, ordered_fields: bool = True) -> dict[bytes, Any]:
    """Every key: its value (a stream's entries without their ids: their fields in order,
    or sorted when ``ordered_fields`` is false) and whether it expires."""
    out: dict[bytes, Any] = {}
    for key in sorted(await redis.keys("*")):
        kind = (await redis.type(key)).decode()
        value: Any
        if kind == "string":
            value = await redis.get(key)
        elif kind == "hash":
            value = sorted((await redis.hgetall(key)).items())
        elif kind == "zset":
            value = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = sorted(await redis.smembers(key))
        elif kind == "list":
            value = await redis.lrange(key, 0, -1)
        elif kind == "stream":
            entries = [list(fields.items()) for _, fields in await redis.xrange(key)]
            value = entries if ordered_fields else [sorted(e) for e in entries]
        else:
            raise AssertionError(f"{key!r}: {kind}")
        out[key] = (kind, value, await redis.pttl(key) > 0)
    return out


def answer_of(result: Any) -> Any:
    """An authorize's answer as old-against-new tests compare it."""
    if isinstance(result, Authorized):
        return ("authorized", result.session_timeout_s)
    return (type(result).__name__, getattr(result, "reason", result))


async def script_runs(redis: aioredis.Redis, command: str = "") -> int:
    """How many scripts Redis has run (EVALSHA and FCALL: the fused scripts' libraries
    on Redis 7+), or ``command``'s calls alone."""
    stats = await redis.info("commandstats")
    names = (command,) if command else ("evalsha", "fcall")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in names)
