"""The KPI feeder: reads every CDR of ``cdr:stream`` once and adds it to the windows.

Its own consumer group (``[monitoring] kpi_group``) beside the exporter's, so the
request path pays nothing: a call is counted when its CDR is written, in the bucket
of the stream entry's time (chargingd's clock, not the gateway's). On a single Redis
the increments and the XACK commit in one MULTI/EXEC: a crash never counts a CDR
twice nor loses one (pending entries are re-read at start). On Redis Cluster the
increments commit first, then the XACK: a crash between them counts that batch
twice (at-least-once). Entries left pending by a consumer that is gone are claimed
after ``CLAIM_IDLE_MS``. The exporter trims the stream only below what every group
has acknowledged, so the feeder never misses a CDR the exporter has stored.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError

from chargingd.billing.cdr import CDR, CDR_STREAM
from chargingd.core.loops import run_every, wait_or_stop
from chargingd.core.redisconn import RedisClient, block_below_timeout
from chargingd.monitoring.outcomes import (
    ANSWERED,
    OUTCOMES,
    conversation_ms,
    outcome,
    quality,
)
from chargingd.monitoring.windows import ALL, RESOLUTIONS, Group, Increments, KpiStore

log = logging.getLogger("chargingd.monitoring")

BATCH = 500
BLOCK_MS = 1000
CLAIM_IDLE_MS = 60_000
CLAIM_EVERY = 30  # passes
# After a batch smaller than BATCH the feeder waits this long before reading again, so
# that under load it reads hundreds of CDRs per pass (their increments merge into one
# pipeline) instead of a round trip and a MULTI/EXEC per call; the windows are
# 5-minute buckets and the page refreshes every second, so 0.25 s late is invisible.
SETTLE_S = 0.25
MILLI = 1000
CHUNK = 32  # CDRs decoded between two turns of the event loop
# Every resolution's bucket is a whole number of the finest: CDRs of one finest bucket
# fall in one bucket of each resolution, so they can be summed before the spread.
FINEST_MS = min(res.bucket_s for res in RESOLUTIONS) * 1000


def cdr_metrics(cdr: CDR) -> dict[str, int]:
    """What one CDR adds to its groups: an attempt, its outcome, times, quality sums.

    A corrected CDR (revision > 0: a late Stop or Interim after the reaper or a gateway
    restart, sessions/late.py) is the same call as the revision it replaces, which was
    counted already: it adds only what changed (no second attempt; its outcome and talk
    time minus the replaced revision's, which its extra describes). Counting it whole
    showed one call as two attempts and its talk time twice in ASR and ACD, while the
    billing database holds one row.
    """
    metrics = _call_metrics(cdr)
    if cdr.revision > 0:
        for name, n in _call_metrics(_replaced(cdr)).items():
            metrics[name] = metrics.get(name, 0) - n
        metrics = {name: n for name, n in metrics.items() if n}
    return metrics


def _replaced(cdr: CDR) -> CDR:
    """The revision a corrected CDR replaces, as far as its extra tells: the
    provisional usage, no cause and no quality figures (a provisional close has none),
    and an end at the answer plus that usage."""
    usage_s = _int(cdr.extra.get("provisional_usage_s"))
    return dataclasses.replace(
        cdr,
        duration_s=usage_s,
        end_ms=cdr.answer_ms + usage_s * 1000 if cdr.answer_ms else cdr.end_ms,
        disconnect_cause=0,
        status=cdr.extra.get("provisional_status", cdr.status),
        extra={},
        revision=cdr.revision - 1,
    )


def _int(text: str | None) -> int:
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0


def _call_metrics(cdr: CDR) -> dict[str, int]:
    kind = outcome(cdr)
    metrics = {"attempts": 1, kind: 1}
    if kind == ANSWERED:
        metrics["talk_s"] = cdr.duration_s
        metrics["conv_ms"] = conversation_ms(cdr)
    for name, value in quality(cdr):
        metrics[f"{name}_n"] = 1
        metrics[f"{name}_sum"] = round(value * MILLI)
    return metrics


class KpiFeeder:
    """Consumer of cdr:stream feeding the KPI windows; counts what it saw for /metrics."""

    name = "kpi-feeder"

    def __init__(
        self,
        redis: RedisClient,
        store: KpiStore,
        *,
        group: str,
        consumer: str = "",
        stream: str = CDR_STREAM,
        destination_group: Callable[[str], str] = str,
        settle_s: float = SETTLE_S,
    ) -> None:
        """``destination_group``: the group of a tariff destination id (the invoices'
        [invoicing] destination_groups; by default the id itself); ``settle_s``: the
        pause after a partial batch (see SETTLE_S)."""
        self.settle_s = settle_s
        self.redis: Any = redis
        self.destination_group = destination_group
        self._groups: dict[str, str] = {}
        self.store = store
        self.group = group
        self.consumer = consumer or socket.gethostname()
        self.stream = stream
        # Cumulative, this process: outcome -> calls, CDR status -> calls, talk seconds.
        self.outcomes: dict[str, int] = {}
        self.statuses: dict[str, int] = {}
        self.talk_s = 0
        self.undecodable = 0
        self._group_ready = False
        self._recovering = True
        self._passes = 0

    async def run(self, stop: asyncio.Event) -> None:
        async def one_pass() -> None:
            if await self.step() < BATCH and self.settle_s > 0:
                await wait_or_stop(stop, self.settle_s)

        await run_every(
            stop, 0, one_pass, log=log, what="kpi feeder", retry_s=0.5, retry_max_s=10.0
        )

    async def step(self, *, block_ms: int | None = BLOCK_MS) -> int:
        """One batch: own pending entries first, then claimed ones, then new ones."""
        await self._prepare()
        self._passes += 1
        if self._recovering:
            entries = await self._read("0", None)
            if entries:
                return await self._feed(entries)
            self._recovering = False
        if self._passes % CLAIM_EVERY == 0:
            claimed = await self._claim()
            if claimed:
                return await self._feed(claimed)
        entries = await self._read(">", block_ms)
        return await self._feed(entries) if entries else 0

    async def _prepare(self) -> None:
        if self._group_ready:
            return
        try:
            # "$"-less: a new group starts at the stream's beginning, so CDRs written
            # before the first start (or while it was off) are counted by their time.
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _read(self, from_id: str, block_ms: int | None) -> list[Any]:
        try:
            if block_ms is not None:  # under the socket timeout: quiet is no error
                block_ms = block_below_timeout(self.redis, block_ms)
            reply = await self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: from_id}, count=BATCH, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # the stream was deleted: make the group again
                self._group_ready = False
            raise
        return list(reply[0][1]) if reply else []

    async def _claim(self) -> list[Any]:
        reply = await self.redis.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=CLAIM_IDLE_MS,
            start_id="0-0",
            count=BATCH,
        )
        return list(reply[1]) if reply else []

    def _group_of(self, destination: str) -> str:
        group = self._groups.get(destination)
        if group is None:
            if len(self._groups) > 100_000:
                self._groups.clear()
            group = self._groups[destination] = self.destination_group(destination)
        return group

    async def _feed(self, entries: list[Any]) -> int:
        # The CDRs of a batch are summed per (10 s bucket, groups) first, then spread
        # over the resolutions once per sum (not once per CDR); and the loop gets a
        # turn every CHUNK entries: a batch of 500 decoded in one go held every request
        # in flight for up to ~25 ms (docs/performance.md, round 6c).
        sums: dict[tuple[int, tuple[Group, ...]], dict[str, int]] = {}
        seen: list[tuple[CDR, dict[str, int]]] = []
        for done, (entry_id, fields) in enumerate(entries, 1):
            if done % CHUNK == 0:
                await asyncio.sleep(0)
            cdr = _decode(fields)
            if cdr is None:
                self.undecodable += 1
                continue
            at_ms = int(entry_id.split(b"-", 1)[0])
            groups = (
                ALL,
                await self.store.group("gateway", cdr.gateway),
                await self.store.group("destination", self._group_of(cdr.destination)),
            )
            metrics = cdr_metrics(cdr)
            total = sums.setdefault((at_ms - at_ms % FINEST_MS, groups), {})
            for name, n in metrics.items():
                total[name] = total.get(name, 0) + n
            seen.append((cdr, metrics))
        increments = Increments()
        for (bucket_ms, in_groups), summed in sums.items():
            increments.add(bucket_ms, in_groups, summed)
        ids = [entry_id for entry_id, _ in entries]
        xack = ("XACK", self.stream, self.group, *ids)
        if self.store.transactional:
            await self.store.write(increments, xack)
        else:
            await self.store.write(increments)
            await self.redis.xack(self.stream, self.group, *ids)
        for cdr, metrics in seen:
            # Counters only rise: a correction adds what it raised (an outcome it
            # turned the call into, more talk time), and ends no second call.
            for kind in OUTCOMES:
                if metrics.get(kind, 0) > 0:
                    self.outcomes[kind] = self.outcomes.get(kind, 0) + metrics[kind]
            if cdr.revision == 0:
                self.statuses[cdr.status] = self.statuses.get(cdr.status, 0) + 1
            self.talk_s += max(0, metrics.get("talk_s", 0))
        return len(entries)


def _decode(fields: dict[bytes, bytes] | None) -> CDR | None:
    """The CDR of a stream entry; None when it is gone or undecodable (the exporter
    dead-letters those; they count as no call here)."""
    raw = (fields or {}).get(b"cdr")
    if raw is None:
        return None
    try:
        return CDR.unpack(raw)
    except Exception:  # bad input boundary: a foreign or corrupt entry is data
        return None
