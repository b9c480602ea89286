"""`chargingd assure` in the app: open the billing database and (for a reconciliation)
the daemon's Redis from the config, build the assurance Context, run."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import cast

import psycopg
import uvloop
from redis.asyncio import Redis
from redis.exceptions import RedisError

from chargingd.app.commands import _load, _unavailable
from chargingd.app.factory import Factory
from chargingd.assurance import AssuranceError, Context, Sources
from chargingd.assurance import cli as assure_cli
from chargingd.assurance.pricing import CallPricer, TariffLookup
from chargingd.billing import lookup
from chargingd.billing.db import BillingDB, BillingDBError
from chargingd.billing.journal import JournalExport
from chargingd.core.config import Config
from chargingd.core.logs import setup_logging
from chargingd.core.loops import SERVICE_DOWN
from chargingd.ledger import Ledger, LedgerError, UnknownAccount
from chargingd.rating.loaders import TariffLoadError
from chargingd.sessions.shards import stored_shards
from chargingd.sessions.store import SessionStore

_FAILURES = (
    AssuranceError, BillingDBError, LedgerError, RedisError, OSError, psycopg.Error,
    TariffLoadError,
)  # fmt: skip


def sources(cfg: Config) -> Sources:
    """The mediation sources of the config and the live sources they are compared with."""
    return Sources(
        switch={
            name: (s.charge, s.match_source, s.match_on, s.rate)
            for name, s in cfg.mediation.sources.items()
        },
        clients=dict(cfg.assurance.source_clients),
    )


def run(name: str, args: argparse.Namespace) -> int:
    """`chargingd assure`: 0 done, 3 leakage over the threshold, 1 failed, 2 usage/config,
    69 Redis or the database unreachable (never 3: a cron job alerts on 3)."""
    problem = assure_cli.usage_error(args)
    if problem is not None:
        print(f"chargingd {name}: {problem}", file=sys.stderr)
        return 2
    cfg = _load(name, args.config)
    if cfg is None:
        return 2
    setup_logging("warning" if cfg.server.log_level == "info" else cfg.server.log_level)
    try:
        result: int = uvloop.run(_assure(Factory(cfg), args))
    except AssuranceError as exc:
        print(f"chargingd {name}: {exc}", file=sys.stderr)
        return 2
    except SERVICE_DOWN as exc:
        return _unavailable(name, exc)
    except _FAILURES as exc:
        print(f"chargingd {name}: {exc}", file=sys.stderr)
        return 1
    return result


async def _assure(factory: Factory, args: argparse.Namespace) -> int:
    cfg = factory.cfg
    async with contextlib.AsyncExitStack() as stack:
        db = await factory.billing_db()
        stack.push_async_callback(db.close)
        if args.list or args.show is not None:
            return await assure_cli.stored(db, args)
        params = assure_cli.run_params(args, cfg.assurance, cfg.invoicing.time_zone)
        redis = await factory.open_redis(stack, owner=False)
        ledger = await factory.open_ledger(redis.client)
        if args.account is not None and not await _account_exists(db, ledger, args.account):
            # An empty run, exit 0, looked like an account with nothing wrong; refused
            # before anything is stored, exit 1 as `--show` of no run.
            print(f"chargingd assure: no such account {args.account!r}", file=sys.stderr)
            return 1
        journal = JournalExport(redis.client)

        async def sync_journal() -> int:
            return await journal.drain(db)

        ctx = Context(
            db=db,
            redis=redis.client,
            sessions=SessionStore(
                cast(Redis, redis.client),
                session_ttl_s=cfg.sessions.session_ttl_s,
                closed_ttl_s=cfg.sessions.closed_ttl_s,
                batch_commands=False,
                shards=await stored_shards(redis.client, cfg.sessions.lastseen_shards),
                # as open_ledger agreed it with the deployment (factory.cfg)
                compact_records=bool(factory.cfg.sessions.compact_records),
            ),
            pricer=CallPricer(cfg.rating, _tariff_lookup(ledger)),
            sources=sources(cfg),
            export_group=cfg.export.group,
            dead_letters=cfg.export.dead_letter_stream,
            sync_journal=sync_journal,
        )
        alerts = factory.alerts(redis.client)
        await alerts.start()
        stack.push_async_callback(alerts.stop)
        return await assure_cli.assure(
            ctx, params, args, now_ms=factory.clock_ms, who=f"cli:{os.getuid()}", alerts=alerts
        )


async def _account_exists(db: BillingDB, ledger: Ledger, account_id: str) -> bool:
    """The ledger has it, or the billing database keeps a trace of it (CDRs, journal):
    an account gone from Redis is still reconciled."""
    try:
        await ledger.get_account(account_id)
    except UnknownAccount:
        return await lookup.account_known(db, account_id)
    return True


def _tariff_lookup(ledger: Ledger) -> TariffLookup:
    async def tariff_of(account_id: str) -> str | None:
        try:
            return (await ledger.get_account(account_id)).tariff
        except (UnknownAccount, LedgerError):
            return None

    return tariff_of
