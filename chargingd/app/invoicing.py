"""Invoicing in the app: the `invoice`, `report`, `cdr` and `db` commands, and the
daemon's billing parts (the admin socket's billing database, the dunning loop).

Commands open the billing database from the config (the embedded PostgreSQL unless
[billing] db_url is set) and, when they need it, the ledger (the daemon's Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psycopg
import uvloop
from redis.exceptions import RedisError

from chargingd.app.commands import _load, _unavailable
from chargingd.app.factory import Factory
from chargingd.billing import lookup
from chargingd.billing.db import BillingDBError, database_url
from chargingd.core.config import Config
from chargingd.core.logs import setup_logging
from chargingd.core.loops import SERVICE_DOWN, Disabled
from chargingd.invoicing import Books
from chargingd.invoicing import cli as invoicing_cli
from chargingd.invoicing.dunning import Dunning
from chargingd.ledger import Ledger, LedgerError, UnknownAccount
from chargingd.rating.loaders import TariffLoadError, load_configured
from chargingd.rating.plan import TariffPlan

log = logging.getLogger("chargingd.invoicing")

_FAILURES = (BillingDBError, LedgerError, RedisError, OSError, psycopg.Error)


def run_command(name: str, args: argparse.Namespace) -> int:
    """`chargingd invoice|report|cdr ...`: 0 ok, 1 refused or failed, 2 bad config,
    69 Redis or the database unreachable."""
    cfg = _load(name, args.config)
    if cfg is None:
        return 2
    setup_logging("warning" if cfg.server.log_level == "info" else cfg.server.log_level)
    try:
        result: int = uvloop.run(_command(Factory(cfg), name, args))
    except BrokenPipeError:
        raise  # the reader of stdout went away: main() exits 141 quietly (not a failure, 1)
    except TariffLoadError as exc:
        # A [rating] plan that cannot load (report savings prices with every plan) is
        # the config's fault: exit 2, as this docstring and docs/invoicing.md say.
        print(f"chargingd {name}: {exc}", file=sys.stderr)
        return 2
    except SERVICE_DOWN as exc:
        return _unavailable(name, exc)
    except _FAILURES as exc:
        print(f"chargingd {name}: {exc}", file=sys.stderr)
        return 1
    return result


async def _command(factory: Factory, name: str, args: argparse.Namespace) -> int:
    async with contextlib.AsyncExitStack() as stack:
        db = await factory.billing_db()
        stack.push_async_callback(db.close)
        ledger: Ledger | None = None
        if invoicing_cli.needs_ledger(name, args):
            redis = await factory.open_redis(stack, owner=False)
            ledger = await factory.open_ledger(redis.client)
        books = factory.books(db, ledger, who=f"cli:{os.getuid()}")
        if name == "invoice":
            return await invoicing_cli.invoice(books, args)
        if name == "cdr":
            return await invoicing_cli.cdr(books, args)
        current = ""
        if ledger is not None and args.report_command == "savings":
            with contextlib.suppress(LedgerError):
                current = (await ledger.get_account(args.account)).tariff

        async def account_exists(account_id: str) -> bool:
            """The billing database's trace of it, else the ledger (Redis), where a new
            account with no call and no journal copy yet lives alone: opened only then."""
            if await lookup.account_known(db, account_id):
                return True
            redis = await factory.open_redis(stack, owner=False)
            try:
                await (await factory.open_ledger(redis.client)).get_account(account_id)
            except UnknownAccount:
                return False
            return True

        return await invoicing_cli.report(
            books, args, _plans(factory.cfg), current, account_exists=account_exists
        )


def _plans(cfg: Config) -> dict[str, TariffPlan]:
    """Every loaded plan by id ([rating] plans, and "default" for default_plan)."""
    rating = cfg.rating
    load = functools.partial(
        load_configured,
        tp_timezone=rating.cgrates_timezone,
        tp_rounding_decimals=rating.cgrates_rounding_decimals,
    )
    plans = {plan_id: load(path) for plan_id, path in rating.plans.items()}
    if rating.default_plan:
        plans.setdefault("default", load(rating.default_plan))
    return plans


# -- chargingd db shell ------------------------------------------------------------------


def configure_db(name: str, parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="TOML config file")
    sub = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    p = sub.add_parser("shell", help="psql on the billing database (embedded or configured)")
    p.add_argument("psql_args", nargs=argparse.REMAINDER, help="passed to psql (e.g. -c 'SQL')")
    sub.add_parser("url", help="print the database URL (the embedded one starts if needed)")


def psql_binary() -> str | None:
    """psql on PATH, else the one the pgserver package ships with its PostgreSQL."""
    found = shutil.which("psql")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import pgserver

        bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
        if bundled.exists():
            return str(bundled)
    return None


def run_db(name: str, args: argparse.Namespace) -> int:
    """`chargingd db shell|url`."""
    cfg = _load(name, args.config)
    if cfg is None:
        return 2
    try:
        url = asyncio.run(database_url(cfg))
    except SERVICE_DOWN as exc:
        return _unavailable(name, exc)
    except (BillingDBError, OSError, psycopg.Error) as exc:
        print(f"chargingd db: {exc}", file=sys.stderr)
        return 1
    if args.db_command == "url":
        print(url)
        return 0
    psql = psql_binary()
    if psql is None:
        print("chargingd db shell: no psql found (install postgresql-client)", file=sys.stderr)
        return 1
    extra = [a for a in args.psql_args if a != "--"]
    sys.stdout.flush()
    os.execv(psql, [psql, url, *extra])  # replaces this process: psql owns the terminal


# -- the daemon's parts --------------------------------------------------------------------


class BillingBooks:
    """Opens invoicing on the billing database for the daemon's parts that need it
    (admin socket, dunning), lazily; closes every connection at shutdown."""

    name = "billing"

    def __init__(self, factory: Factory, ledger: Ledger) -> None:
        self.factory = factory
        self.ledger = ledger
        self._opened: list[Books] = []

    def opener(self, who: str) -> Callable[[], Awaitable[Books]]:
        async def open_books() -> Books:
            db = await self.factory.billing_db()
            books = self.factory.books(db, self.ledger, who=who)
            self._opened.append(books)
            return books

        return open_books

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        for books in self._opened:
            await books.db.close()
        self._opened.clear()


def build_dunning(
    cfg: Config, billing: BillingBooks, cut: Callable[[str], Awaitable[int]] | None, stats: Any
) -> Dunning | Disabled:
    """The dunning loop, unless [invoicing] dunning_in_serve = false."""
    if not cfg.invoicing.dunning_in_serve:
        return Disabled("dunning", "[invoicing] dunning_in_serve = false")
    return Dunning(
        billing.opener("dunning"), interval_s=cfg.invoicing.dunning_interval_s, cut=cut, stats=stats
    )
