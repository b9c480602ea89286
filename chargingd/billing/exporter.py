"""The CDR exporter: Redis stream ``cdr:stream`` -> PostgreSQL (and rotated CSV files).

A consumer group reads batches; each batch is stored in one transaction and only
acknowledged (XACK) after COMMIT, so a crash anywhere loses nothing, and the
idempotent insert on (source, call_id) stores nothing twice. On start it first
re-reads its own pending entries, and it periodically claims (XAUTOCLAIM) entries
left pending by dead consumers. An undecodable CDR goes to a dead-letter stream with
its reason and is acknowledged. A second loop copies the ledger's journal to the
database (billing/journal.py) every [export] journal_interval_s. Runs inside
``chargingd serve`` (``build_exporter``) or as ``chargingd export``
(chargingd.billing.exportcli).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from chargingd.billing.cdr import CDR, CDR_STREAM
from chargingd.billing.csvspool import CsvSpool
from chargingd.billing.db import BillingDB, validate_cdr
from chargingd.billing.journal import JournalExport
from chargingd.core.config import Config
from chargingd.core.loops import run_every
from chargingd.core.redisconn import RedisClient, block_below_timeout
from chargingd.core.status import ComponentStats

log = logging.getLogger("chargingd.exporter")

CLAIM_INTERVAL_S = 5.0
LAG_INTERVAL_S = 1.0
MAX_BACKOFF_S = 10.0
STOP_GRACE_S = 5.0
DEAD_LETTER_MAXLEN = 100_000  # about; the oldest dead letters are trimmed first
# The counters of status() (and of `server.status`), present from the start.
COUNTERS = ("exported", "duplicates", "dead_letters", "claimed", "batches", "errors", "trimmed",
            "journal_entries")  # fmt: skip

Entry = tuple[bytes, dict[bytes, bytes] | None]


def _id_key(entry_id: str) -> tuple[int, int]:
    """A stream id as a comparable (ms, seq); "" sorts first."""
    if not entry_id:
        return (-1, -1)
    ms, _, seq = entry_id.partition("-")
    return (int(ms), int(seq or 0))


def _id_ms(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


@dataclass
class Batch:
    """One read of the stream, decoded: CDRs to store, entries to dead-letter, ids to ack."""

    ids: list[bytes] = field(default_factory=list)
    cdrs: list[CDR] = field(default_factory=list)
    cdr_ids: list[bytes] = field(default_factory=list)  # the entry id of each CDR
    dead: list[tuple[bytes, bytes, str]] = field(default_factory=list)  # id, raw, reason

    def add(self, entry_id: bytes, fields: dict[bytes, bytes] | None) -> None:
        self.ids.append(entry_id)
        if not fields:
            return  # deleted from the stream while pending: nothing left to store
        raw = fields.get(b"cdr")
        if raw is None:
            self.dead.append((entry_id, b"", "no 'cdr' field"))
            return
        try:
            cdr = CDR.unpack(raw)
            validate_cdr(cdr)
        except Exception as exc:  # bad input boundary: any decode failure is data
            self.dead.append((entry_id, raw, f"{type(exc).__name__}: {exc}"[:500]))
            return
        self.cdrs.append(cdr)
        self.cdr_ids.append(entry_id)


class Exporter:
    """Drains the CDR stream into the billing database; a daemon component.

    ``db`` may be given (tests, the export command); otherwise it is opened from the
    config in the background, retrying while the database is unreachable.
    """

    name = "exporter"

    def __init__(
        self,
        redis: RedisClient,
        cfg: Config,
        *,
        db: BillingDB | None = None,
        stats: ComponentStats | None = None,
        clock_s: Callable[[], float] = time.time,
        stream: str = CDR_STREAM,
    ) -> None:
        self.redis = redis
        self.cfg = cfg
        self.xcfg = cfg.export
        self.db = db
        self._owns_db = db is None
        self.stats = stats or ComponentStats()
        # Every documented counter is shown from the start, 0 until it counts
        # (docs/billing.md "Lag"): a script reading `exported` of a pass that found
        # nothing gets 0, not a missing key.
        for counter in COUNTERS:
            self.stats.counters.setdefault(counter, 0)
        self.clock_s = clock_s
        self.stream = stream
        self.consumer = self.xcfg.consumer or socket.gethostname()
        self.csv: CsvSpool | None = None
        if self.xcfg.csv_dir:
            self.csv = CsvSpool(
                Path(self.xcfg.csv_dir),
                name=self.consumer,
                rotate_rows=self.xcfg.csv_rotate_rows,
                rotate_s=self.xcfg.csv_rotate_s,
                clock_s=clock_s,
            )
        self.last_exported_id = ""
        self.last_error = ""
        self._recovering = True  # re-read our own pending entries first
        self._group_ready = False
        self._last_claim_s = 0.0
        self._last_lag_s = 0.0
        self._lag: dict[str, Any] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # The ledger's journal -> ledger_journal, in a loop of its own (billing/journal.py).
        interval = self.xcfg.journal_interval_s
        self.journal = JournalExport(redis) if interval > 0 else None
        self._journal_task: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------
    async def start(self) -> None:
        self._stop.clear()
        self._task = asyncio.create_task(self._run(), name="cdr-exporter")
        if self.journal is not None:
            loop = run_every(
                self._stop, self.xcfg.journal_interval_s, self._journal_pass, log=log,
                what="journal export", retry_s=0.5, retry_max_s=MAX_BACKOFF_S,
            )  # fmt: skip
            self._journal_task = asyncio.create_task(loop, name="journal-exporter")

    async def stop(self) -> None:
        """Finish the batch in hand, publish the CSV file, close the database."""
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, self.xcfg.block_ms / 1000 + STOP_GRACE_S)
            except TimeoutError:
                log.warning("exporter did not stop in time; cancelled (entries stay pending)")
            self._task = None
        if self._journal_task is not None:
            try:
                await asyncio.wait_for(self._journal_task, STOP_GRACE_S)
            except TimeoutError:
                log.warning("journal export did not stop in time; cancelled (copied next time)")
            self._journal_task = None
        await self.close()

    async def close(self) -> None:
        if self.csv is not None:
            self.csv.close()
        if self._owns_db and self.db is not None:
            await self.db.close(stop_embedded_server=True)
            self.db = None

    async def _run(self) -> None:
        # XREADGROUP blocks up to block_ms, so the next pass follows at once; after a
        # failure the loop waits 0.5 s, doubling up to MAX_BACKOFF_S.
        await run_every(
            self._stop, 0, self._pass, log=log, what="exporter",
            retry_s=0.5, retry_max_s=MAX_BACKOFF_S,
        )  # fmt: skip

    async def _journal_pass(self) -> None:
        if self.journal is None or self.db is None:
            return  # the CDR loop opens the database
        self.stats.inc("journal_entries", await self.journal.step(self.db))

    async def _pass(self) -> None:
        try:
            await self.step(block=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep exporting whatever one batch did
            self.stats.inc("errors")
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._recovering = True
            self._group_ready = False  # the stream may have been deleted (NOGROUP)
            # The lag in server.status is refreshed by a pass that got through; during
            # a database outage, when CDRs pile up, it stayed at its last value (0).
            try:
                await self.refresh_lag()
            except Exception:  # Redis down too: the error below says why
                log.debug("exporter: lag not refreshed", exc_info=True)
            raise

    # -- one step -------------------------------------------------------------------
    async def _prepare(self) -> BillingDB:
        if self.db is None:
            self.db = await BillingDB.from_config(self.cfg)
        if not self._group_ready:
            try:
                await self.redis.xgroup_create(self.stream, self.xcfg.group, id="0", mkstream=True)
                log.info("exporter: created consumer group %s on %s", self.xcfg.group, self.stream)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._group_ready = True
        return self.db

    async def step(self, *, block: bool) -> int:
        """Export one batch: own pending entries first, then claimed, then new ones.

        Returns how many stream entries were handled (0: nothing to do).
        """
        db = await self._prepare()
        handled = 0
        if self._recovering:
            entries = await self._read("0", block_ms=None)
            if entries:
                return await self._export(db, entries)
            self._recovering = False
        now = time.monotonic()
        if now - self._last_claim_s >= CLAIM_INTERVAL_S:
            self._last_claim_s = now
            handled = await self._claim(db)
            if handled:
                return handled
        entries = await self._read(">", block_ms=self._block_ms() if block else None)
        if entries:
            handled = await self._export(db, entries)
        if self.csv is not None and self.csv.due():
            self.csv.rotate()
        if now - self._last_lag_s >= LAG_INTERVAL_S:
            self._last_lag_s = now
            await self.refresh_lag()
            if self.xcfg.trim_stream:
                await self.trim()
        return handled

    async def trim(self) -> int:
        """Drop entries every consumer group has acknowledged; returns how many."""
        try:
            groups: Any = await self.redis.xinfo_groups(self.stream)
        except ResponseError:
            return 0  # no stream
        needed: list[tuple[int, int]] = []
        for group in groups:
            name = _text(group.get("name"))
            needed.append(_id_key(_text(group.get("last-delivered-id")) or "0-0"))
            if int(group.get("pending") or 0):
                summary: Any = await self.redis.xpending(self.stream, name)
                needed.append(_id_key(_text(summary["min"])))
        if not needed:
            return 0
        ms, seq = min(needed)
        if ms <= 0 and seq <= 0:
            return 0
        # XTRIM MINID (Redis >= 6.2) drops ids below the oldest one still needed.
        trimmed = int(await self.redis.xtrim(self.stream, minid=f"{ms}-{seq}"))
        self.stats.inc("trimmed", trimmed)
        return trimmed

    async def drain(self) -> int:
        """Export what the stream holds now (``export --once``), then return.

        Entries added meanwhile may be exported too; it stops at the stream's end as
        it was at the start, so a busy stream cannot keep it running forever.
        """
        total = 0
        self._last_claim_s = 0.0
        end = await self._stream_end()
        while True:
            handled = await self.step(block=False)
            total += handled
            if handled == 0 and not self._recovering:
                break
            if not self._recovering and _id_key(self.last_exported_id) >= end:
                break  # own pending and claimable entries come first, so all are done
        if self.csv is not None:
            self.csv.rotate()
        await self.refresh_lag()
        if self.xcfg.trim_stream:
            await self.trim()
        if self.journal is not None and self.db is not None:
            self.stats.inc("journal_entries", await self.journal.drain(self.db))
        return total

    async def _stream_end(self) -> tuple[int, int]:
        try:
            info: Any = await self.redis.xinfo_stream(self.stream)
        except ResponseError:
            return (0, 0)  # no stream yet
        return _id_key(_text(info.get("last-generated-id")))

    def _block_ms(self) -> int:
        # Stay under the client's socket timeout, or a quiet stream looks like an error.
        return block_below_timeout(self.redis, self.xcfg.block_ms)

    async def _read(self, from_id: str, *, block_ms: int | None) -> list[Entry]:
        reply: Any = await self.redis.xreadgroup(
            self.xcfg.group,
            self.consumer,
            {self.stream: from_id},
            count=self.xcfg.batch_size,
            block=block_ms,
        )
        if not reply:
            return []
        entries: list[Entry] = reply[0][1]
        return entries

    async def _claim(self, db: BillingDB) -> int:
        """Take over entries a dead consumer left pending for claim_idle_ms (XAUTOCLAIM)."""
        reply: Any = await self.redis.xautoclaim(
            self.stream,
            self.xcfg.group,
            self.consumer,
            min_idle_time=self.xcfg.claim_idle_ms,
            start_id="0-0",
            count=self.xcfg.batch_size,
        )
        entries: list[Entry] = reply[1] if reply else []
        if not entries:
            return 0
        self.stats.inc("claimed", len(entries))
        log.warning("exporter: claimed %d entries from dead consumers", len(entries))
        self._last_claim_s = 0.0  # there may be more: claim again next step
        return await self._export(db, entries)

    async def _export(self, db: BillingDB, entries: list[Entry]) -> int:
        batch = Batch()
        for entry_id, fields in entries:
            batch.add(entry_id, fields)
        inserted = await self._store(db, batch)
        # A single Redis: the dead letters and the acknowledgement in one MULTI. On Redis
        # Cluster the two streams are in different slots (one MULTI would be CROSSSLOT):
        # the dead letters first, then the acknowledgement, so a crash between the two
        # can write a dead letter twice (the entry is delivered again), never lose one.
        single = isinstance(self.redis, Redis)
        pipe = self.redis.pipeline(transaction=single)
        for entry_id, raw, reason in batch.dead:
            pipe.xadd(
                self.xcfg.dead_letter_stream,
                {"id": entry_id, "stream": self.stream, "reason": reason, "cdr": raw},
                maxlen=DEAD_LETTER_MAXLEN,
                approximate=True,
            )
        if not single and batch.dead:
            await pipe.execute()
            pipe = self.redis.pipeline(transaction=False)
        pipe.xack(self.stream, self.xcfg.group, *batch.ids)
        await pipe.execute()
        for entry_id, _raw, reason in batch.dead:
            log.warning("exporter: entry %s dead-lettered: %s", entry_id.decode(), reason)
        self.stats.inc("batches")
        self.stats.inc("exported", inserted)
        self.stats.inc("duplicates", len(batch.cdrs) - inserted)
        self.stats.inc("dead_letters", len(batch.dead))
        self.last_exported_id = batch.ids[-1].decode()
        return len(entries)

    async def _store(self, db: BillingDB, batch: Batch) -> int:
        before_commit = self.csv.write if self.csv is not None else None
        try:
            return await db.store_cdrs(batch.cdrs, before_commit=before_commit)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            log.warning("exporter: batch refused (%s); storing CDRs one by one", exc)
        # One CDR the database refuses must not block the others.
        inserted = 0
        kept: list[CDR] = []
        for cdr, entry_id in zip(batch.cdrs, batch.cdr_ids, strict=True):
            try:
                inserted += await db.store_cdrs([cdr], before_commit=before_commit)
                kept.append(cdr)
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                batch.dead.append((entry_id, cdr.pack(), f"refused by the database: {exc}"[:500]))
        batch.cdrs = kept
        return inserted

    # -- visibility ---------------------------------------------------------------
    async def refresh_lag(self) -> dict[str, Any]:
        """Pending, not yet delivered and age of the oldest unexported CDR (seconds)."""
        backlog = await group_backlog(self.redis, self.stream, self.xcfg.group, self.clock_s())
        lag: dict[str, Any] = backlog or {"pending": 0, "undelivered": 0, "behind_s": 0.0}
        self._lag = lag
        self.stats.set("pending", lag["pending"])
        self.stats.set("undelivered", lag["undelivered"])
        self.stats.set("behind_ms", int(lag["behind_s"] * 1000))
        return lag

    async def status(self) -> dict[str, Any]:
        """Counters, last exported id and lag, for the daemon's server.status."""
        try:
            lag = await self.refresh_lag()
        except Exception as exc:  # status must answer even when Redis is down
            lag = dict(self._lag, error=str(exc))
        return {
            "stream": self.stream,
            "group": self.xcfg.group,
            "consumer": self.consumer,
            "running": self._task is not None and not self._task.done(),
            "database": self.db is not None,
            "last_exported_id": self.last_exported_id,
            "last_error": self.last_error,
            **dict(self.stats.counters),
            **lag,
        }


async def group_backlog(
    redis: RedisClient, stream: str, group: str, now_s: float
) -> dict[str, Any] | None:
    """A consumer group's backlog: ``pending`` (read, not acknowledged), ``undelivered``
    (capped at 10001), ``behind_s`` (age of the oldest of them) and
    ``last_delivered_id``; None when the stream or the group does not exist."""
    try:
        groups: Any = await redis.xinfo_groups(stream)
    except ResponseError:
        return None  # no stream yet
    mine = [g for g in groups if _text(g.get("name")) == group]
    if not mine:
        return None
    last = _text(mine[0].get("last-delivered-id")) or "0-0"
    after: Any = await redis.xrange(stream, min=f"({last}", max="+", count=10_001)
    oldest = [_id_ms(after[0][0])] if after else []
    pending = int(mine[0].get("pending") or 0)
    if pending:
        summary: Any = await redis.xpending(stream, group)
        # Newer than XINFO's count: another consumer of the group (a worker, a second
        # daemon) may have acknowledged them in between, leaving no oldest entry.
        pending = int(summary.get("pending") or 0)
        if pending and summary.get("min") is not None:
            oldest.append(_id_ms(summary["min"]))
    behind_s = round(max(0.0, now_s - min(oldest) / 1000), 3) if oldest else 0.0
    return {
        "pending": pending,
        "undelivered": len(after),
        "last_delivered_id": last,
        "behind_s": behind_s,
    }


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)
