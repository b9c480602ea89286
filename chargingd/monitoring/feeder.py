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
from itertools import chain
from typing import Any

from redis.exceptions import ResponseError

from chargingd.billing.cdr import CDR, CDR_STREAM
from chargingd.core.loops import run_every, wait_or_stop
from chargingd.core.redisconn import RedisClient, block_below_timeout
from chargingd.monitoring.outcomes import (
    ANSWERED,
    OUTCOMES,
    QUALITY_RANGES,
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
_QUALITY = frozenset(QUALITY_RANGES)
_OUTCOMES = frozenset(OUTCOMES)
# CDRs this process wrote and the feeder has not read yet (KpiFeeder.remember): at most
# this many; past it (the feeder stalled) they are dropped at once, and read from the
# stream as any other process's.
RECENT_MAX = 8192
# What the feeder counts of a CDR: gateway, destination, its metrics in cdr_metrics'
# order as one flat tuple (name, n, name, n, ...), revision, status (a plain str, as
# decoded). Atomic values only, the inner tuple made first: the collector stops
# tracking both at its first young collection (a tuple of pairs made by tuple() stayed
# tracked into the older generations: +6k instructions of the collector a Stop).
Summary = tuple[str, str, tuple[Any, ...], int, str]


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
    if kind == ANSWERED:
        metrics = {
            "attempts": 1,
            kind: 1,
            "talk_s": cdr.duration_s,
            "conv_ms": conversation_ms(cdr),
        }
    else:
        metrics = {"attempts": 1, kind: 1}
    if not _QUALITY.isdisjoint(cdr.extra):  # (most CDRs carry no quality figure)
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
        # stream entry id -> Summary of the CDRs this process wrote (remember)
        self._recent: dict[bytes, Summary] = {}
        self.recalled = 0  # CDRs counted from what remember kept, not decoded
        # The last entry id a new-entries read (">") delivered here (b"": none yet): an
        # entry up to it was read already (remember: told too late, nothing to keep).
        self._read_to = b""

    async def run(self, stop: asyncio.Event) -> None:
        async def one_pass() -> None:
            if await self.step() < BATCH and self.settle_s > 0:
                await wait_or_stop(stop, self.settle_s)

        await run_every(
            stop, 0, one_pass, log=log, what="kpi feeder", retry_s=0.5, retry_max_s=10.0
        )

    def remember(self, entry_id: bytes, cdr: CDR) -> None:
        """A CDR this process has just written to the stream as ``entry_id`` (the
        sessions' closer, on the feeder's process): when the feeder reads that entry it
        counts this summary instead of decoding the entry (the same values: the entry
        is this CDR packed). Never raises into the closer: what it cannot summarise is
        decoded from the stream as before. An entry this feeder has read already (its
        blocked read answered before the closer's XADD reply was taken: 24 of 200 calls
        in tests/monitoring/test_feeder_own_cdrs.py's concurrent run without this
        check) is not kept: none would take it but the cap's clear, which drops the
        ones still to come with it."""
        read_to = self._read_to
        try:
            # (ids of one length: their bytes compare as their numbers, ms of 13 digits
            # from 2001 to 2286; else parsed. Either way a wrong answer costs a decode
            # or a summary kept until the cap, never a count.)
            if len(entry_id) == len(read_to):
                if entry_id <= read_to:
                    return
            elif read_to and _id_order(entry_id) <= _id_order(read_to):
                return
            summary = _summary(cdr)
        except Exception:  # (a CDR cdr_metrics cannot read: the feeder meets it decoded)
            return
        recent = self._recent
        if len(recent) >= RECENT_MAX:
            recent.clear()
        recent[entry_id] = summary

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
        if not entries:
            return 0
        read_to = self._read_to = entries[-1][0]  # (before _feed: its awaits let the closer in)
        fed = await self._feed(entries)
        if self._recent:  # what is left up to the read went to another consumer: dropped
            self._drop_up_to(read_to)
        return fed

    def _drop_up_to(self, read_to: bytes) -> None:
        """Drop the summaries of entries up to ``read_to`` (this read's last): left after
        its batch, they were delivered to another consumer of the group (a daemon on
        another host), which counted them; no read here will take them. From the
        oldest kept, up to the first after it (kept in the order written, but for
        closers answered out of order: one such left waits for the cap's clear)."""
        recent = self._recent
        size = len(read_to)
        done = []
        for entry_id in recent:
            if len(entry_id) == size:
                if entry_id > read_to:
                    break
            elif _id_order(entry_id) > _id_order(read_to):
                break
            done.append(entry_id)
        for entry_id in done:
            del recent[entry_id]

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
                self._read_to = b""  # (a new stream's ids start again)
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

    def _known(self, entry_id: bytes, fields: dict[bytes, bytes] | None) -> Summary | None:
        """The Summary of an entry: the one remember kept, else its CDR decoded (None
        when it is undecodable: counted)."""
        known = self._recent.pop(entry_id, None) if self._recent else None
        if known is not None:
            self.recalled += 1
            return known
        cdr = _decode(fields)
        if cdr is None:
            self.undecodable += 1
            return None
        return _summary(cdr)

    async def _feed(self, entries: list[Any]) -> int:
        # The CDRs of a batch are summed per (10 s bucket, groups) first, then spread
        # over the resolutions once per sum (not once per CDR); and the loop gets a
        # turn every CHUNK entries: a batch of 500 decoded in one go held every request
        # in flight for up to ~25 ms (docs/performance.md, round 6c). A batch's groups
        # are asked once per (gateway, destination), and what the counters for /metrics
        # gain is summed here and added once the write is done (round 16b).
        sums: dict[tuple[int, tuple[Group, ...]], dict[str, int]] = {}
        groups_of: dict[tuple[str, str], tuple[Group, ...]] = {}
        outcomes: dict[str, int] = {}
        statuses: dict[str, int] = {}
        talk_s = 0
        for done, (entry_id, fields) in enumerate(entries, 1):
            if done % CHUNK == 0:
                await asyncio.sleep(0)
            known = self._known(entry_id, fields)
            if known is None:
                continue
            gateway, destination, metrics, revision, status = known
            at_ms = int(entry_id.split(b"-", 1)[0])
            pair = (gateway, destination)
            groups = groups_of.get(pair)
            if groups is None:
                groups = groups_of[pair] = (
                    ALL,
                    await self.store.group("gateway", gateway),
                    await self.store.group("destination", self._group_of(destination)),
                )
            total = sums.setdefault((at_ms - at_ms % FINEST_MS, groups), {})
            talk_s += _tally(metrics, total, outcomes)
            if revision == 0:
                statuses[status] = statuses.get(status, 0) + 1
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
        for kind, n in outcomes.items():
            self.outcomes[kind] = self.outcomes.get(kind, 0) + n
        for status, n in statuses.items():
            self.statuses[status] = self.statuses.get(status, 0) + n
        self.talk_s += talk_s
        return len(entries)


def _tally(metrics: tuple[Any, ...], total: dict[str, int], outcomes: dict[str, int]) -> int:
    """Add a CDR's metrics to its sum and its outcome to ``outcomes``; its talk time
    for /metrics. Counters only rise: a correction adds what it raised (an outcome it
    turned the call into, more talk time), and ends no second call."""
    talk_s = 0
    pairs = iter(metrics)
    for name, n in zip(pairs, pairs, strict=True):  # (name, n, name, n, ...)
        total[name] = total.get(name, 0) + n
        if n > 0:
            if name in _OUTCOMES:
                outcomes[name] = outcomes.get(name, 0) + n
            elif name == "talk_s":
                talk_s = n
    return talk_s


def _id_order(entry_id: bytes) -> tuple[int, int]:
    """A stream entry id ("MS-SEQ") as the numbers it is ordered by ((-1, -1): not
    one, before any)."""
    ms, _, seq = entry_id.partition(b"-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return -1, -1


def _summary(cdr: CDR) -> Summary:
    """What the feeder counts of ``cdr`` (see Summary)."""
    answer_ms = cdr.answer_ms
    first = cdr.revision == 0 and answer_ms > 0 and cdr.duration_s > 0
    if first and _QUALITY.isdisjoint(cdr.extra):
        # an answered call's first CDR without quality figures (most of them):
        # cdr_metrics' values without its calls (~10k instructions interpreted);
        # tests/monitoring/test_feeder_own_cdrs.py compares the two on varied CDRs
        conv_ms = cdr.end_ms - answer_ms
        metrics: tuple[Any, ...] = ("attempts", 1, ANSWERED, 1, "talk_s", cdr.duration_s,
                                    "conv_ms", conv_ms if conv_ms > 0 else 0)  # fmt: skip
    else:
        metrics = tuple(chain.from_iterable(cdr_metrics(cdr).items()))
    # (a CdrStatus member is a str subclass: its plain str, as a decoded CDR holds)
    return cdr.gateway, cdr.destination, metrics, cdr.revision, "".join((cdr.status,))


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
