"""`chargingd export`: run the CDR exporter on its own (``--once``: drain and exit).

It uses the configured Redis, or the daemon's embedded one (started if it is not
running), and the configured billing database (the embedded PostgreSQL by default).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys

import psycopg
import redis.asyncio as aioredis
import uvloop
from redis.exceptions import RedisError

from chargingd.billing.db import BillingDB, BillingDBError
from chargingd.billing.exporter import Exporter
from chargingd.core.config import Config, ConfigError, load_config
from chargingd.core.logs import setup_logging
from chargingd.core.redisconn import EmbeddedRedis, RedisClient, connect, wait_ready

log = logging.getLogger("chargingd.exporter")


def configure_parser(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", metavar="PATH", help="TOML config file (default: built-in defaults)"
    )
    parser.add_argument(
        "--once", action="store_true", help="export what the stream holds now, then exit"
    )


def run(name: str, args: argparse.Namespace) -> int:
    """`chargingd export`: 0 when done (or stopped), 1 on failure, 2 on a bad config."""
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"chargingd export: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg.server.log_level)
    try:
        return uvloop.run(_export_main(cfg, once=args.once))
    except (BillingDBError, RedisError, OSError, RuntimeError, psycopg.Error) as exc:
        log.error("chargingd export failed: %s", exc)
        return 1


async def _export_main(cfg: Config, *, once: bool) -> int:
    async with contextlib.AsyncExitStack() as stack:
        redis = await open_redis(cfg, stack)
        db = await BillingDB.from_config(cfg)
        stack.push_async_callback(db.close)
        exporter = Exporter(redis, cfg, db=db)
        if once:
            try:
                handled = await exporter.drain()
            finally:
                await exporter.close()
            status = await exporter.status()
            print(json.dumps({"handled": handled, **status}, sort_keys=True))
            return 0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await exporter.start()
        log.info("chargingd export running (consumer %s)", exporter.consumer)
        await stop.wait()
        await exporter.stop()
    return 0


async def open_redis(cfg: Config, stack: contextlib.AsyncExitStack) -> RedisClient:
    """The configured Redis; with none, the daemon's embedded one (started if not running)."""
    url: str | None = None
    if not cfg.redis.url and not cfg.redis.cluster_nodes:
        embedded = EmbeddedRedis(
            cfg.data_path, port=cfg.redis.embedded_port, appendfsync=cfg.redis.embedded_appendfsync
        )
        url = embedded.url
        if not embedded.socket_path.exists() or not await _answers(url):
            await asyncio.to_thread(embedded.start)
            stack.callback(embedded.stop)
    client = connect(cfg.redis, url)
    stack.push_async_callback(client.aclose)
    await wait_ready(client)
    return client


async def _answers(url: str) -> bool:
    client = aioredis.Redis.from_url(url, socket_connect_timeout=1.0)
    try:
        return bool(await client.ping())
    except (RedisError, OSError):
        return False
    finally:
        await client.aclose()
