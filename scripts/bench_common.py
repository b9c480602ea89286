"""What several benchmarks share: their Redis, counting round trips, seeding accounts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from redis.asyncio.connection import AbstractConnection, ConnectionPool

from chargingd.core.redisconn import EmbeddedRedis
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
