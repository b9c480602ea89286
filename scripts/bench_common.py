"""What several benchmarks share: their Redis, counting round trips, seeding accounts."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from redis.asyncio.connection import AbstractConnection, ConnectionPool

from chargingd.alerts import Alerts
from chargingd.alerts.store import AlertStore
from chargingd.core.config import FraudConfig, SessionsConfig
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.fraud import Fraud
from chargingd.ledger import Ledger, Mode
from chargingd.ledger.thin import ThinPool


class RoundTrips:
    """Counts writes to Redis sockets: one per pipeline or single command (a round trip),
    on redis-py's connections and the batcher's thin ones (their pool's ``sent``: a
    compiled ThinConnection's methods cannot be wrapped)."""

    sent = 0
    pools: ClassVar[list[ConnectionPool]] = []

    @classmethod
    def install(cls) -> None:
        original = AbstractConnection.send_packed_command

        async def counted(
            self: AbstractConnection, command: object, check_health: bool = True
        ) -> None:
            cls.sent += 1
            await original(self, command, check_health)  # type: ignore[arg-type]

        AbstractConnection.send_packed_command = counted  # type: ignore[method-assign]
        init = ConnectionPool.__init__

        def recorded(self: ConnectionPool, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            cls.pools.append(self)

        ConnectionPool.__init__ = recorded  # type: ignore[method-assign]

    @classmethod
    def count(cls) -> int:
        thins: list[ThinPool] = [
            thin for pool in cls.pools for thin in getattr(pool, "_chargingd_thin", ())
        ]
        return cls.sent + sum(thin.sent for thin in thins)


def sized_sid(i: int, size: int, default: str) -> str:
    """A session id of ``size`` bytes for call i, unique per call (0: ``default``, the
    bench's own). 36: a UUID's form, as a gateway's Acct-Session-Id or h323-conf-id and
    the load bench's; otherwise 'c' and i in hex, zero-padded (docs/fraud-cost.md
    "Twenty-third round": what the live calls' key length costs)."""
    if size <= 0:
        return default
    i &= 0xFFFFFFFFFFFF
    if size == 36:
        return f"{i & 0xFFFFFFFF:08x}-9d1c-4c1e-a0b2-c0ffee{i >> 8 & 0xFFFFFF:06x}"
    return f"c{i:0{size - 1}x}"[-size:] if size > 1 else f"{i % 10}"


async def seed_prepaid(ledger: Ledger, accounts: int) -> None:
    """Prepaid accounts acc0..accN-1 (identity user:uN, tariff retail) that never run out."""
    for a in range(accounts):
        await ledger.create_account(
            f"acc{a}",
            mode=Mode.PREPAID,
            currency="EUR",
            balance_micros=10**12,
            tariff="retail",
            identities=(f"user:u{a}",),
            who="bench",
        )


@contextlib.contextmanager
def bench_redis(url: str, tmp: Path) -> Iterator[str]:
    """``url``, or an embedded redis-server in ``tmp`` for the run (stopped after)."""
    if url:
        yield url
        return
    server = EmbeddedRedis(tmp, appendfsync="no")
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


async def default_fraud(
    client: Any, ledger: Ledger, clock: Callable[[], int], local_values: int = 16_384
) -> Fraud:
    """The default fraud rule set, as `[fraud] enabled = true` ships it, on a single
    Redis, its scripts loaded (the benchmarks' rules-on side); ``local_values`` 0: the
    rules always in Redis's Lua (before the seventeenth round)."""
    store = AlertStore(
        client,
        clock_ms=clock,
        dedup_window_s=3600,
        retention_s=7200,
        calls_kept=50,
        stream_maxlen=100_000,
    )
    fraud = Fraud(
        FraudConfig(enabled=True, local_values=local_values),
        redis=client,
        ledger=ledger,
        alerts=Alerts(store),
        clock_ms=clock,
        live_ttl_s=SessionsConfig().session_ttl_s,
        single_redis=True,
    )
    await fraud.load_scripts()
    return fraud
