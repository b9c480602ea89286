"""The commands that need components built from the config (export, rerate, mediate):
load the config, build through the Factory, hand the parts to the package that runs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from datetime import datetime

import psycopg
import uvloop
from redis.exceptions import RedisError

from chargingd.app.factory import Factory
from chargingd.billing import exportcli, lookup, rerate
from chargingd.billing.db import BillingDBError
from chargingd.core.config import Config, ConfigError, load_config
from chargingd.core.exits import EXIT_MEDIATE_FAILED, EXIT_UNAVAILABLE
from chargingd.core.logs import setup_logging
from chargingd.core.loops import SERVICE_DOWN
from chargingd.ledger import Ledger, LedgerError, UnknownAccount
from chargingd.mediation import cli as mediation_cli
from chargingd.mediation.store import CdrStore, DbStore
from chargingd.rating.loaders import TariffLoadError

log = logging.getLogger("chargingd.exporter")


def _load(command: str, path: str | None) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"chargingd {command}: {exc}", file=sys.stderr)
        return None


def _unavailable(command: str, exc: BaseException) -> int:
    """Redis or the billing database could not be reached: exit 69 (EX_UNAVAILABLE), the
    same code in every command, never one a command uses for a finding (docs/operations.md)."""
    print(f"chargingd {command}: {exc}", file=sys.stderr)
    return EXIT_UNAVAILABLE


def run_export(name: str, args: argparse.Namespace) -> int:
    """`chargingd export`: 0 when done (or stopped), 1 on failure, 2 on a bad config,
    69 Redis or the database unreachable."""
    cfg = _load("export", args.config)
    if cfg is None:
        return 2
    setup_logging(cfg.server.log_level)
    try:
        return uvloop.run(_export(Factory(cfg), once=args.once))
    except SERVICE_DOWN as exc:
        log.error("chargingd export failed: %s", exc)
        return EXIT_UNAVAILABLE
    except (BillingDBError, RedisError, OSError, RuntimeError, psycopg.Error) as exc:
        log.error("chargingd export failed: %s", exc)
        return 1


async def _export(factory: Factory, *, once: bool) -> int:
    async with contextlib.AsyncExitStack() as stack:
        redis = await factory.open_redis(stack, owner=False)
        db = await factory.billing_db()
        stack.push_async_callback(db.close)
        return await exportcli.export(factory.exporter(redis.client, db=db), once=once)


def run_rerate(name: str, args: argparse.Namespace) -> int:
    """`chargingd rerate`: 0 done, 1 failure, 2 bad config or arguments, 69 Redis or
    the database unreachable."""
    cfg = _load("rerate", args.config)
    if cfg is None:
        return 2
    try:
        start, end = rerate.parse_when(args.start), rerate.parse_when(args.end, end=True)
        if end <= start:  # a usage error like a bad date, found before anything opens
            raise rerate.RerateError("--to must be after --from")
    except rerate.RerateError as exc:
        print(f"chargingd rerate: {exc}", file=sys.stderr)
        return 2
    setup_logging("warning" if cfg.server.log_level == "info" else cfg.server.log_level)
    failures = (rerate.RerateError, BillingDBError, LedgerError, RedisError, OSError, psycopg.Error)
    try:
        result: int = uvloop.run(_rerate(Factory(cfg), args, start, end))
    except BrokenPipeError:
        raise  # the reader of stdout went away: main() exits 141 quietly (not a failure, 1)
    except TariffLoadError as exc:
        # --plan or a [rating] plan that cannot load: a usage or config error, found
        # while pricing, before anything is recorded (it was a traceback, exit 1).
        print(f"chargingd rerate: {exc}", file=sys.stderr)
        return 2
    except SERVICE_DOWN as exc:
        return _unavailable("rerate", exc)
    except failures as exc:
        print(f"chargingd rerate: {exc}", file=sys.stderr)
        return 1
    return result


async def _rerate(
    factory: Factory, args: argparse.Namespace, start: datetime, end: datetime
) -> int:
    async with contextlib.AsyncExitStack() as stack:
        db = await factory.billing_db()
        stack.push_async_callback(db.close)
        ledger: Ledger | None = None
        unseen = bool(args.account) and not await lookup.account_known(db, args.account)
        if rerate.needs_ledger(args) or unseen:
            redis = await factory.open_redis(stack, owner=False)
            ledger = await factory.open_ledger(redis.client)
        if unseen and ledger is not None:
            try:  # a new account with no call yet lives in the ledger alone
                await ledger.get_account(args.account)
            except UnknownAccount:
                # It reported "0 CDRs would change", exit 0: a mistyped id looked like
                # an account whose prices had not changed (as report usage and assure).
                raise rerate.RerateError(f"no account {args.account!r}") from None
        return await rerate.rerate(factory.cfg, args, db, ledger, start, end)


def run_mediate(name: str, args: argparse.Namespace) -> int:
    """`chargingd mediate`: 0 all rows stored, 1 some rejected, 2 usage or config error,
    69 Redis or the database unreachable, 70 failed part way for another reason. Both
    were a traceback and exit 1, which says "rows rejected" here: a cron job took a
    database outage for bad rows."""
    try:
        return asyncio.run(
            mediation_cli.main(args, open_ledger=_mediation_ledger, open_store=_mediation_store)
        )
    except BrokenPipeError:
        raise  # the summary's reader went away: main() exits 141 (not 70, "failed part way")
    except SERVICE_DOWN as exc:
        return _unavailable("mediate", exc)
    except (BillingDBError, LedgerError, RedisError, OSError, psycopg.Error) as exc:
        print(f"chargingd mediate: failed: {exc}", file=sys.stderr)
        return EXIT_MEDIATE_FAILED


@contextlib.asynccontextmanager
async def _mediation_ledger(cfg: Config) -> AsyncIterator[Ledger]:
    factory = Factory(cfg)
    async with contextlib.AsyncExitStack() as stack:
        redis = await factory.open_redis(stack, owner=False)
        yield await factory.open_ledger(redis.client)


@contextlib.asynccontextmanager
async def _mediation_store(cfg: Config) -> AsyncIterator[CdrStore]:
    db = await Factory(cfg).billing_db()
    try:
        yield DbStore(db)
    finally:
        await db.close()
