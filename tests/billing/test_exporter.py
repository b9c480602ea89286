"""The CDR exporter against a real Redis and a real PostgreSQL (pgserver)."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis
from cdr_factory import make_cdr
from rich.console import Console

from chargingd.billing.cdr import CDR, CDR_STREAM
from chargingd.billing.csvspool import CsvSpool
from chargingd.billing.db import BillingDB
from chargingd.billing.exporter import Exporter, group_backlog
from chargingd.core.config import Config, config_from_dict
from chargingd.core.redisconn import EmbeddedRedis

GROUP = "exporter"


def _cfg(pg_url: str, **export: Any) -> Config:
    return config_from_dict({"billing": {"db_url": pg_url}, "export": export}, "<test>")


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[BillingDB]:
    database = await BillingDB.open(pg_url)
    yield database
    await database.close()


async def _xadd(redis: aioredis.Redis, payloads: list[bytes]) -> None:
    pipe = redis.pipeline(transaction=False)
    for raw in payloads:
        pipe.xadd(CDR_STREAM, {"cdr": raw})
    await pipe.execute()


async def _pending(redis: aioredis.Redis) -> int:
    summary: Any = await redis.xpending(CDR_STREAM, GROUP)
    return int(summary["pending"])


async def _keys(db: BillingDB) -> list[tuple[str, str]]:
    async def work(conn: Any) -> list[tuple[str, str]]:
        cur = await conn.execute("SELECT source, call_id FROM cdrs ORDER BY source, call_id")
        return list(await cur.fetchall())

    rows: list[tuple[str, str]] = await db.run(work)
    return rows


async def test_drain_stores_every_cdr_once_and_acks(
    redis: aioredis.Redis, db: BillingDB, pg_url: str
) -> None:
    cdrs = [make_cdr(i) for i in range(300)]
    # A live session that crashed re-sends two CDRs: stored once.
    await _xadd(redis, [c.pack() for c in cdrs] + [cdrs[5].pack(), cdrs[77].pack()])
    exporter = Exporter(redis, _cfg(pg_url, batch_size=64, consumer="t1"), db=db)
    handled = await exporter.drain()
    assert handled == 302
    assert len(await _keys(db)) == 300
    assert sorted(await _keys(db)) == sorted((c.source, c.call_id) for c in cdrs)
    assert await _pending(redis) == 0
    status = await exporter.status()
    assert status["exported"] == 300
    assert status["duplicates"] == 2
    assert status["pending"] == 0 and status["undelivered"] == 0
    assert status["behind_s"] == 0.0
    assert status["last_exported_id"]
    # Running again finds nothing.
    assert await exporter.drain() == 0


async def test_runs_as_a_component(redis: aioredis.Redis, db: BillingDB, pg_url: str) -> None:
    exporter = Exporter(redis, _cfg(pg_url, batch_size=50, block_ms=100, consumer="t2"), db=db)
    await exporter.start()
    try:
        await _xadd(redis, [make_cdr(i).pack() for i in range(120)])
        deadline = time.monotonic() + 10
        while await db.count_cdrs() < 120 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await db.count_cdrs() == 120
        status = await exporter.status()
        assert status["running"] is True
    finally:
        await exporter.stop()
    assert await _pending(redis) == 0


async def test_lag_is_visible(redis: aioredis.Redis, db: BillingDB, pg_url: str) -> None:
    exporter = Exporter(redis, _cfg(pg_url, consumer="t3"), db=db, clock_s=lambda: time.time() + 30)
    await exporter.drain()  # creates the group on an empty stream
    await _xadd(redis, [make_cdr(i).pack() for i in range(10)])
    status = await exporter.status()
    assert status["undelivered"] == 10
    assert status["pending"] == 0
    assert 29 <= status["behind_s"] <= 40


class _AckedBetween:
    """The real client, with another consumer of the group (the second daemon's
    exporter) acknowledging every pending entry right after this one's XINFO GROUPS."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis

    def __getattr__(self, name: str) -> Any:
        return getattr(self.redis, name)

    async def xinfo_groups(self, stream: str) -> Any:
        groups = await self.redis.xinfo_groups(stream)
        pending = await self.redis.xpending_range(stream, GROUP, "-", "+", 100)
        await self.redis.xack(stream, GROUP, *[p["message_id"] for p in pending])
        return groups


async def test_backlog_read_while_another_consumer_acknowledges(redis: aioredis.Redis) -> None:
    """XINFO says entries are pending, XPENDING a moment later finds none (acknowledged
    in between, as two daemons' exporters sharing the group do): a backlog of nothing,
    not a failed pass (AttributeError on the summary's empty oldest id, seen on a
    cluster soak: the exporter's pass and the monitoring sample both failed)."""
    await redis.xgroup_create(CDR_STREAM, GROUP, id="0", mkstream=True)
    await _xadd(redis, [make_cdr(i).pack() for i in range(5)])
    await redis.xreadgroup(GROUP, "other", {CDR_STREAM: ">"}, count=5)
    assert await _pending(redis) == 5
    backlog = await group_backlog(_AckedBetween(redis), CDR_STREAM, GROUP, time.time())  # type: ignore[arg-type]
    assert backlog is not None
    assert (backlog["pending"], backlog["undelivered"], backlog["behind_s"]) == (0, 0, 0.0)


async def test_undecodable_cdrs_go_to_dead_letters(
    redis: aioredis.Redis, db: BillingDB, pg_url: str
) -> None:
    bad = [
        b"\xc1 not msgpack",
        msgpack.packb({"source": "radius", "call_id": "x"}),  # missing fields
        make_cdr(2, cost_micros="12").pack(),  # wrong type
        make_cdr(3, call_id="nul\x00byte").pack(),  # PostgreSQL text refuses NUL
    ]
    await _xadd(redis, [make_cdr(10).pack(), *bad, make_cdr(11).pack()])
    await redis.xadd(CDR_STREAM, {"other": b"field"})
    exporter = Exporter(redis, _cfg(pg_url, consumer="t4"), db=db)
    assert await exporter.drain() == 7
    assert await _keys(db) == [("radius", "call-10"), ("radius", "call-11")]
    dead: Any = await redis.xrange("cdr:dead")
    assert len(dead) == 5
    reasons = [fields[b"reason"].decode() for _id, fields in dead]
    assert any("missing" in r for r in reasons)
    assert any("cost_micros must be an integer" in r for r in reasons)
    assert any("no 'cdr' field" in r for r in reasons)
    assert any("NUL" in r or "0x00" in r for r in reasons)
    assert all(fields[b"id"] for _id, fields in dead)
    assert (await exporter.status())["dead_letters"] == 5
    assert await _pending(redis) == 0


async def test_a_cdr_from_a_newer_exporter_is_stored_not_dead_lettered(
    redis: aioredis.Redis, db: BillingDB, pg_url: str
) -> None:
    """Rolling upgrade: a CDR with a field this version does not know keeps its known
    fields (forward compatible, like SessionRecord) instead of going to dead letters."""
    newer = msgpack.packb({**make_cdr(1).__dict__, "fraud_score": 7, "leg": "b"})
    assert CDR.unpack(newer) == make_cdr(1)
    await _xadd(redis, [newer])
    exporter = Exporter(redis, _cfg(pg_url, consumer="t4b"), db=db)
    assert await exporter.drain() == 1
    assert await _keys(db) == [("radius", "call-1")]
    assert await redis.xlen("cdr:dead") == 0


async def test_claims_entries_of_a_dead_consumer(
    redis: aioredis.Redis, db: BillingDB, pg_url: str
) -> None:
    await redis.xgroup_create(CDR_STREAM, GROUP, id="0", mkstream=True)
    await _xadd(redis, [make_cdr(i).pack() for i in range(40)])
    got: Any = await redis.xreadgroup(GROUP, "dead-host", {CDR_STREAM: ">"}, count=25)
    ids = [entry_id for entry_id, _ in got[0][1]]
    # The dead consumer has been silent for two minutes (XCLAIM ... IDLE).
    await redis.xclaim(CDR_STREAM, GROUP, "dead-host", 0, ids, idle=120_000)
    exporter = Exporter(redis, _cfg(pg_url, consumer="alive", claim_idle_ms=60_000), db=db)
    await exporter.drain()
    assert await db.count_cdrs() == 40
    assert await _pending(redis) == 0
    assert (await exporter.status())["claimed"] == 25


async def test_database_down_keeps_entries_and_recovers(
    redis: aioredis.Redis, db: BillingDB, pg_url: str
) -> None:
    await _xadd(redis, [make_cdr(i).pack() for i in range(30)])
    broken = BillingDB("postgresql://nobody@127.0.0.1:9/none", connect_timeout_s=1)
    exporter = Exporter(redis, _cfg(pg_url, consumer="t5", block_ms=50), db=broken)
    await exporter.start()
    deadline = time.monotonic() + 10
    while exporter.stats.get("errors") < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert exporter.stats.get("errors") >= 1
    assert "DatabaseUnavailable" in exporter.last_error
    exporter.db = db  # the database is back
    while await db.count_cdrs() < 30 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await exporter.stop()
    assert await db.count_cdrs() == 30
    assert await _pending(redis) == 0


async def test_lag_in_status_grows_while_the_database_is_down(
    redis: aioredis.Redis, db: BillingDB, pg_url: str
) -> None:
    """server.status shows the exporter's counters: during an outage, when CDRs pile up,
    pending/undelivered/behind_ms must say so (they stayed 0: only a pass that got
    through refreshed them)."""
    await _xadd(redis, [make_cdr(i).pack() for i in range(30)])
    await asyncio.sleep(0.05)
    broken = BillingDB("postgresql://nobody@127.0.0.1:9/none", connect_timeout_s=1)
    exporter = Exporter(redis, _cfg(pg_url, consumer="t5lag", block_ms=50), db=broken)
    await exporter.start()
    deadline = time.monotonic() + 10
    while exporter.stats.get("errors") < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await exporter.stop()
    counters = exporter.stats.counters
    assert counters["pending"] + counters["undelivered"] == 30
    assert counters["behind_ms"] > 0
    assert await db.count_cdrs() == 0


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _write_config(tmp_path: Path, redis_url: str, pg_url: str, csv_dir: Path) -> Path:
    path = tmp_path / "export.toml"
    path.write_text(
        f'[server]\ndata_dir = "{tmp_path}"\nlog_level = "warning"\n'
        f'[redis]\nurl = "{redis_url}"\n'
        f'[billing]\ndb_url = "{pg_url}"\n'
        f'[export]\nbatch_size = 50\nconsumer = "crashy"\ncsv_dir = "{csv_dir}"\n'
        "csv_rotate_rows = 80\n"
    )
    return path


def _export_once(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "chargingd", "export", "--config", str(config), "--once"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


class AckHoldingProxy:
    """A TCP proxy in front of Redis that forwards everything until the Nth write that
    carries an XACK: that one it holds back (never sent) and says so. The exporter behind
    it has then committed a batch to PostgreSQL and not acknowledged it in Redis."""

    def __init__(self, upstream_unix: str, hold_at: int) -> None:
        self.upstream = upstream_unix
        self.hold_at = hold_at
        self.acks = 0
        self.holding = asyncio.Event()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
        back = asyncio.create_task(self._pipe(up_reader, writer))
        try:
            while chunk := await reader.read(65536):
                if b"XACK" in chunk:
                    self.acks += 1
                    if self.acks >= self.hold_at:
                        self.holding.set()
                        continue  # held back: Redis never sees this acknowledgement
                up_writer.write(chunk)
                await up_writer.drain()
        except ConnectionError:
            pass
        finally:
            back.cancel()
            up_writer.close()
            writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass


@pytest.mark.slow
async def test_crash_between_commit_and_ack_loses_and_doubles_nothing(
    redis: aioredis.Redis,
    redis_server: EmbeddedRedis,
    db: BillingDB,
    pg_url: str,
    tmp_path: Path,
) -> None:
    cdrs = [make_cdr(i) for i in range(200)]
    await _xadd(redis, [c.pack() for c in cdrs])
    csv_dir = tmp_path / "csv"
    env = dict(os.environ)
    # A real exporter process, SIGKILLed right after its 2nd COMMIT: the proxy holds
    # back the XACK that follows it, and the test kills the process then.
    proxy = AckHoldingProxy(str(redis_server.socket_path), hold_at=2)
    port = await proxy.start()
    crash_config = _write_config(tmp_path, f"redis://127.0.0.1:{port}", pg_url, csv_dir)
    cmd = [sys.executable, "-m", "chargingd", "export", "--config", str(crash_config)]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        await asyncio.wait_for(proxy.holding.wait(), 60)
        proc.kill()
        _, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        await proxy.close()
    assert proc.returncode == -9, stderr
    config = _write_config(tmp_path, redis_server.url, pg_url, csv_dir)
    assert await db.count_cdrs() == 100
    assert await _pending(redis) == 50  # committed but never acknowledged
    assert list(csv_dir.glob(".cdrs-crashy.csv.tmp"))  # the file in progress survives

    done = _export_once(config, env)
    assert done.returncode == 0, done.stderr
    assert sorted(await _keys(db)) == sorted((c.source, c.call_id) for c in cdrs)
    assert await _pending(redis) == 0
    usage = [u for a in range(3) for u in await db.usage(f"acct-{a}")]
    assert sum(u.calls for u in usage) == 200
    assert sum(u.cost_micros for u in usage) == sum(c.cost_micros for c in cdrs)
    # The CSV files hold every CDR exactly once too, and no file is left half-written.
    rows = [r for f in sorted(csv_dir.glob("cdrs-*.csv")) for r in _csv_rows(f)]
    assert sorted(r["call_id"] for r in rows) == sorted(c.call_id for c in cdrs)
    assert not list(csv_dir.glob("*.tmp"))


def test_csv_rotates_by_rows_and_time(tmp_path: Path) -> None:
    now = [1_000_000.0]
    spool = CsvSpool(tmp_path, name="x", rotate_rows=3, rotate_s=60, clock_s=lambda: now[0])
    spool.write([make_cdr(i) for i in range(3)])
    assert spool.due()
    first = spool.rotate()
    assert first is not None and first.name.startswith("cdrs-x-")
    spool.write([make_cdr(3)])
    assert not spool.due()
    now[0] += 61
    assert spool.due()
    second = spool.rotate()
    assert second is not None and second != first
    assert spool.rotate() is None  # nothing new: no empty file
    spool.close()
    files = sorted(tmp_path.glob("cdrs-*.csv"))
    assert files == sorted([first, second])
    rows = [_csv_rows(f) for f in files]
    assert [len(r) for r in rows] == [3, 1] or [len(r) for r in rows] == [1, 3]
    row = next(r for rs in rows for r in rs if r["call_id"] == "call-0")
    assert row["cost"] == "0.600000"
    assert row["start_utc"] == "2026-11-04T10:00:00.000Z"
    assert not list(tmp_path.glob(".*.tmp"))


async def test_csv_writes_a_correction_of_a_call_already_in_the_file(
    redis: aioredis.Redis, db: BillingDB, pg_url: str, tmp_path: Path
) -> None:
    # A call closed provisionally (60 s) and corrected by its late Stop (90 s, revision
    # 1) in the same CSV file: the database replaces the row; the file must say so too.
    csv_dir = tmp_path / "csv"
    exporter = Exporter(redis, _cfg(pg_url, csv_dir=str(csv_dir), consumer="x"), db=db)
    provisional = make_cdr(0, duration_s=60, status="gateway_restart")
    await _xadd(redis, [provisional.pack(), make_cdr(1).pack()])
    await exporter.drain()
    corrected = CDR(**{**provisional.__dict__, "duration_s": 90, "status": "normal",
                       "revision": 1})  # fmt: skip
    await _xadd(redis, [corrected.pack(), corrected.pack()])  # and a redelivery
    exporter._last_claim_s = 0.0
    while await exporter.step(block=False):
        pass
    await exporter.close()
    rows = [r for f in sorted(csv_dir.glob("cdrs-*.csv")) for r in _csv_rows(f)]
    calls = [(r["call_id"], r["duration_s"], r["status"], r["revision"]) for r in rows]
    assert calls == [("call-0", "60", "gateway_restart", "0"), ("call-1", "61", "normal", "0"),
                     ("call-0", "90", "normal", "1")]  # fmt: skip
    # After a crash the continued file still knows which revision it holds.
    spool = CsvSpool(tmp_path / "again", name="x", rotate_rows=100, rotate_s=0)
    spool.write([provisional, corrected])
    assert spool._fh is not None
    spool._fh.close()
    again = CsvSpool(tmp_path / "again", name="x", rotate_rows=100, rotate_s=0)
    again.write([provisional, corrected, make_cdr(1)])
    published = again.rotate()
    assert published is not None
    assert [(r["call_id"], r["revision"]) for r in _csv_rows(published)] == [
        ("call-0", "0"), ("call-0", "1"), ("call-1", "0")]  # fmt: skip


def test_csv_continues_a_file_left_by_a_crash(tmp_path: Path) -> None:
    spool = CsvSpool(tmp_path, name="x", rotate_rows=100, rotate_s=0)
    spool.write([make_cdr(i) for i in range(5)])
    # Crash: the process dies without close() (the OS closes its file), and the last
    # write was cut mid-line.
    assert spool._fh is not None
    spool._fh.close()
    with open(spool.tmp_path, "a") as fh:
        fh.write("radius,call-99,acct-0,+49")
    again = CsvSpool(tmp_path, name="x", rotate_rows=100, rotate_s=0)
    again.write([make_cdr(i) for i in range(3, 8)])  # 3 and 4 are redelivered
    published = again.rotate()
    assert published is not None
    ids = [r["call_id"] for r in _csv_rows(published)]
    assert ids == [f"call-{i}" for i in range(8)]


async def test_exporter_runs_inside_the_daemon(
    redis_server: EmbeddedRedis, redis: aioredis.Redis, db: BillingDB, pg_url: str, tmp_path: Path
) -> None:
    """`chargingd serve` runs the exporter: CDRs reach PostgreSQL, counters in status."""
    from chargingd.admin.server import AsyncAdminClient
    from chargingd.app.serve import Daemon

    cfg = config_from_dict(
        {
            "server": {"data_dir": str(tmp_path)},
            "redis": {"url": redis_server.url},
            "billing": {"db_url": pg_url},
            "export": {"block_ms": 100, "consumer": "daemon"},
            "radius": {"enabled": False},  # never bind the real 1812/1813 in tests
        }
    )
    daemon = Daemon(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await _xadd(redis, [make_cdr(i).pack() for i in range(25)])
        deadline = time.monotonic() + 10
        while await db.count_cdrs() < 25 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await db.count_cdrs() == 25
        async with AsyncAdminClient(cfg.admin_socket) as client:
            status = await client.call("server.status", {})
        assert status["components"]["exporter"]["exported"] == 25
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    assert await _pending(redis) == 0


def test_exporter_can_stay_out_of_serve() -> None:
    from types import SimpleNamespace

    from chargingd.app.factory import Factory
    from chargingd.app.serve import build_exporter

    cfg = config_from_dict({"export": {"run_in_serve": False}})
    rt = SimpleNamespace(cfg=cfg, factory=Factory(cfg), redis=None, probes={})
    component = build_exporter(rt)  # type: ignore[arg-type]
    assert not isinstance(component, Exporter)
    assert component.name == "exporter"


async def test_status_shows_the_lag_of_an_exporter_run_outside_serve(
    redis_server: EmbeddedRedis, redis: aioredis.Redis, db: BillingDB, pg_url: str, tmp_path: Path
) -> None:
    """With [export] run_in_serve = false (`chargingd export` elsewhere) server.status
    said nothing about the export: the issue's "its lag is visible in server status"
    held only for an exporter inside serve. The group's backlog is read from Redis."""
    from chargingd.admin.render import render_status
    from chargingd.admin.server import AsyncAdminClient
    from chargingd.app.serve import Daemon

    cfg = config_from_dict(
        {
            "server": {"data_dir": str(tmp_path)},
            "redis": {"url": redis_server.url},
            "billing": {"db_url": pg_url},
            "export": {"run_in_serve": False, "block_ms": 100, "consumer": "elsewhere"},
            "radius": {"enabled": False},
        }
    )
    outside = Exporter(redis, cfg, db=db)
    await redis.xgroup_create(CDR_STREAM, "exporter", id="0", mkstream=True)
    daemon = Daemon(cfg)
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(stop))
    try:
        await _xadd(redis, [make_cdr(i).pack() for i in range(3)])
        deadline = time.monotonic() + 10
        while not Path(cfg.admin_socket).exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # the oldest CDR is at least this old
        async with AsyncAdminClient(cfg.admin_socket) as client:
            status = await client.call("server.status", {})
        backlog = status["export_backlog"]
        assert (backlog["group"], backlog["undelivered"], backlog["pending"]) == ("exporter", 3, 0)
        assert backlog["behind_s"] >= 0.2
        console = Console(width=400, record=True)
        render_status(console, status)
        assert "exporter backlog" in console.export_text()
        assert await outside.drain() == 3  # the exporter elsewhere drains it
        async with AsyncAdminClient(cfg.admin_socket) as client:
            status = await client.call("server.status", {})
        assert status["export_backlog"]["undelivered"] == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_recreates_the_group_when_the_stream_is_deleted(
    redis: aioredis.Redis, db: BillingDB, pg_url: str
) -> None:
    exporter = Exporter(redis, _cfg(pg_url, block_ms=50, consumer="t6"), db=db)
    await exporter.start()
    try:
        await _xadd(redis, [make_cdr(1).pack()])
        deadline = time.monotonic() + 10
        while await db.count_cdrs() < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await redis.delete(CDR_STREAM)  # an operator deleted the stream: NOGROUP
        await asyncio.sleep(0.2)
        await _xadd(redis, [make_cdr(2).pack()])
        while await db.count_cdrs() < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await db.count_cdrs() == 2
    finally:
        await exporter.stop()


async def test_drain_stops_at_the_end_of_a_busy_stream(
    redis: aioredis.Redis, db: BillingDB, pg_url: str
) -> None:
    await _xadd(redis, [make_cdr(i).pack() for i in range(100)])
    producing = asyncio.Event()

    async def produce() -> None:
        i = 100
        while not producing.is_set():
            await _xadd(redis, [make_cdr(k).pack() for k in range(i, i + 20)])
            i += 20
            await asyncio.sleep(0)

    producer = asyncio.create_task(produce())
    try:
        exporter = Exporter(redis, _cfg(pg_url, batch_size=10, consumer="t7"), db=db)
        handled = await asyncio.wait_for(exporter.drain(), 20)
    finally:
        producing.set()
        await producer
    assert handled >= 100
    assert await db.count_cdrs() == handled


async def test_trims_what_every_group_has_acknowledged(
    redis: aioredis.Redis, db: BillingDB, pg_url: str
) -> None:
    await _xadd(redis, [make_cdr(i).pack() for i in range(300)])
    # Another consumer group (fraud monitoring, say) has read only the first 50.
    await redis.xgroup_create(CDR_STREAM, "fraud", id="0")
    got: Any = await redis.xreadgroup("fraud", "f1", {CDR_STREAM: ">"}, count=50)
    await redis.xack(CDR_STREAM, "fraud", *[entry_id for entry_id, _ in got[0][1]])
    exporter = Exporter(redis, _cfg(pg_url, consumer="t8"), db=db)
    await exporter.drain()
    assert await db.count_cdrs() == 300
    fraud_last = got[0][1][-1][0].decode()
    unread: Any = await redis.xrange(CDR_STREAM, min=f"({fraud_last}", max="+")
    assert len(unread) == 250  # nothing "fraud" still needs is gone
    assert await redis.xlen(CDR_STREAM) <= 300
    # Once "fraud" has read everything too, the stream can be trimmed down.
    await redis.xreadgroup("fraud", "f1", {CDR_STREAM: ">"}, count=1000)
    await redis.xgroup_destroy(CDR_STREAM, "fraud")
    assert await exporter.trim() > 0
    assert await redis.xlen(CDR_STREAM) < 50  # approximate (~): whole stream nodes


@pytest.mark.slow
async def test_export_command_runs_until_sigterm(
    redis: aioredis.Redis,
    redis_server: EmbeddedRedis,
    db: BillingDB,
    pg_url: str,
    tmp_path: Path,
) -> None:
    config = _write_config(tmp_path, redis_server.url, pg_url, tmp_path / "csv")
    cmd = [sys.executable, "-m", "chargingd", "export", "--config", str(config)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        await _xadd(redis, [make_cdr(i).pack() for i in range(60)])
        deadline = time.monotonic() + 20
        while await db.count_cdrs() < 60 and time.monotonic() < deadline:
            assert proc.poll() is None
            await asyncio.sleep(0.05)
        assert await db.count_cdrs() == 60
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0, stderr
    # A clean stop publishes the CSV file in progress.
    assert not list((tmp_path / "csv").glob("*.tmp"))
    assert sum(len(_csv_rows(f)) for f in (tmp_path / "csv").glob("cdrs-*.csv")) == 60


async def test_export_once_reports_every_documented_counter_on_an_empty_stream(
    redis: aioredis.Redis, redis_server: EmbeddedRedis, pg_url: str, tmp_path: Path
) -> None:
    # docs/billing.md "Lag": `chargingd export --once` prints exported, duplicates,
    # dead_letters, claimed, batches, errors, trimmed, pending, undelivered, behind_s,
    # last_exported_id, last_error. A monitoring script reading `.exported` of a run
    # that found nothing new (the daemon's own exporter had drained the stream) got no
    # key at all: the counters were only printed once they had counted something.
    config = _write_config(tmp_path, redis_server.url, pg_url, tmp_path / "csv")
    done = _export_once(config, dict(os.environ))
    assert done.returncode == 0, done.stderr
    status = json.loads(done.stdout)
    documented = ("exported", "duplicates", "dead_letters", "claimed", "batches", "errors",
                  "trimmed", "pending", "undelivered", "behind_s", "last_exported_id",
                  "last_error")  # fmt: skip
    assert [key for key in documented if key not in status] == []
    assert {key: status[key] for key in documented[:7]} == dict.fromkeys(documented[:7], 0)


def test_the_csv_columns_are_the_ones_docs_billing_lists_in_order() -> None:
    # docs/billing.md said charged, charge, charge_reason were the CSV's "last three
    # columns"; revision comes after them. A billing import that took the last three
    # by position read charge as the amount and revision as the reason.
    from chargingd.billing.csvspool import COLUMNS

    doc = (Path(__file__).resolve().parents[2] / "docs" / "billing.md").read_text()
    listed = re.search(r"naming the columns, in this order: (.*?)\. ", doc, re.S)
    assert listed is not None, "docs/billing.md lists no CSV columns"
    assert tuple(re.findall(r"`(\w+)`", listed.group(1))) == COLUMNS
    assert "as its last\nthree columns" not in doc
