"""The ledger's machinery: its Redis client, its Lua scripts and how one is called
(batched in this tick's pipeline or on its own), and Redis's clock.

chargingd.ledger.accounts adds account administration on top, chargingd.ledger.ledger
the money scripts; ``Ledger`` is the one class others use.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from chargingd.core.clock import wall_ms
from chargingd.ledger import codec as C
from chargingd.ledger.batch import CommandBatcher
from chargingd.ledger.steps import StepBuilder, session_deadline_ms

CLOCK_SYNC_S = 60.0  # how often the sweeper measures Redis's clock again

_SCRIPTS = (
    "reserve",
    "commit",
    "release",
    "sweep",
    "get",
    "create",
    "update",
    "status",
    "topup",
    "identities_claim",
    "identities_drop",
    "hold_index_drop",
    "txn_claim",
    "txn_unclaim",
    "usage",
    "correct",
    "refuse",
)


class LedgerBase:
    """What every ledger method stands on: the Redis client, the scripts, the batcher.

    ``clock_ms`` is injected (tests move time); scripts receive now_ms as ARGV so
    Redis replication and tests stay deterministic.
    """

    def __init__(
        self,
        redis: object,
        *,
        clock_ms: Callable[[], int] | None = None,
        audit_max_entries: int = 100_000,
        txn_ttl_s: int = 90 * 86400,
        partial_grants: bool = True,
        session_ttl_s: int = 7 * 86400,
        reclaim_per_reserve: int = 8,
        hold_index_pad_ms: int = 5_000,
        hold_index_grace_ms: int = 30_000,
        audit_holds: bool = True,
        batch_commands: bool | None = None,
        request_timeout_s: float | None = None,
        refusal_ttl_s: int = 60,
        batch_early: int = 16,
    ) -> None:
        """Optional extras beyond the contract: partial_grants (reserve's default policy
        for a direct caller; sessions pass partial=True on every path),
        session_ttl_s (tombstone/debit record lifetime), reclaim_per_reserve, the hold
        index pad/grace (see sweep_expired), audit_holds (audit reserve too),
        batch_commands (pipeline each loop tick's calls; default: on unless a cluster;
        batch_early: CommandBatcher's early),
        request_timeout_s (the Redis command timeout: a new session's reserve that runs
        later than half of it after it was sent refuses itself; None: never) and
        refusal_ttl_s (how long a new session's refusal is remembered)."""
        self.redis: Redis = redis  # type: ignore[assignment]
        self.clock_ms = clock_ms or wall_ms
        self.audit_max = str(audit_max_entries)
        self.txn_ttl_ms = str(txn_ttl_s * 1000)
        self.partial_grants = partial_grants
        self.session_ttl_ms = str(session_ttl_s * 1000)
        self.reclaim_per_reserve = str(reclaim_per_reserve)
        self.hold_index_pad_ms = hold_index_pad_ms
        self.hold_index_grace_ms = hold_index_grace_ms
        self.audit_holds = "1" if audit_holds else "0"
        # The one builder of reserve/commit/release arguments, for this class and for
        # the fused scripts of sessions/ alike.
        self.steps = StepBuilder(
            audit_max=self.audit_max,
            session_ttl_ms=self.session_ttl_ms,
            reclaim_per_reserve=self.reclaim_per_reserve,
            audit_holds=self.audit_holds,
            partial_grants=partial_grants,
            hold_index_pad_ms=hold_index_pad_ms,
            refusal_ttl_ms=refusal_ttl_s * 1000,
        )
        # A new session's reserve must run within half the command timeout of being
        # sent (the other half carries its answer back), on Redis's clock: the offset
        # between this process's wall clock and Redis's TIME is measured (sync_clock).
        self.late_after_ms = int(request_timeout_s * 500) if request_timeout_s else 0
        self.redis_offset_ms = 0
        self._synced_s = 0.0
        if batch_commands is None:
            batch_commands = isinstance(redis, Redis)
        self._batcher = CommandBatcher(self.redis, early=batch_early) if batch_commands else None
        self._scripts: dict[str, AsyncScript] = {
            name: self.redis.register_script(C.load_script_source(name)) for name in _SCRIPTS
        }

    @property
    def batcher(self) -> CommandBatcher | None:
        """This tick's pipeline, shared with the session store so one request's commands
        (ledger and session alike) ride in one round trip; None when not batching."""
        return self._batcher

    async def load_scripts(self) -> None:
        """Register every .lua script once (SCRIPT LOAD); EVALSHA reloads on NOSCRIPT."""
        for script in self._scripts.values():
            await self.redis.script_load(script.script)
        await self.sync_clock()

    async def sync_clock(self) -> int:
        """Measure Redis's clock against this process's (the offset new-session
        deadlines are written in); returns the offset in ms."""
        if not self.late_after_ms:
            return 0
        before = time.time()
        seconds, micros = await self.redis.time()
        after = time.time()
        redis_ms = int(seconds) * 1000 + int(micros) // 1000
        self.redis_offset_ms = redis_ms - int((before + after) * 500)
        self._synced_s = after
        return self.redis_offset_ms

    def new_session_deadline_ms(self) -> int:
        """Until when (Redis's clock) a new session's reserve sent now may run; 0: any
        time (no request timeout configured)."""
        return session_deadline_ms(self.late_after_ms, self.redis_offset_ms)

    def _call(self, name: str, keys: list[str], args: list[Any]) -> Awaitable[Any]:
        """EVALSHA one script: queued in this tick's pipeline, or sent on its own."""
        script = self._scripts[name]
        if self._batcher is None:
            return script(keys=keys, args=args)
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        return self._batcher.submit(command, retry=lambda: script(keys=keys, args=args))

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._call(name, keys, args)
