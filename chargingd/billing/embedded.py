"""The embedded PostgreSQL (the ``pgserver`` package carries a real server): started
under ``<data_dir>/pg`` when no ``[billing] db_url`` is configured, shared by every
process of the host, stopped by the last user that leaves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from chargingd.billing.errors import DatabaseUnavailable
from chargingd.core.config import Config

log = logging.getLogger("chargingd.billingdb")


def start_embedded(
    pgdata: Path, database: str = "chargingd", *, delete_at_exit: bool = False
) -> str:
    """Start (or reuse) the embedded PostgreSQL in `pgdata`; return the URL of `database`.

    Blocking (initdb + pg_ctl): call it from a thread in async code. The server runs
    on a unix socket only and stops when the last process using it exits (and
    `delete_at_exit` then removes its data: tests).
    """
    pgdata = pgdata.resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_users(pgdata)
    server = _pgserver().get_server(pgdata, cleanup_mode="delete" if delete_at_exit else "stop")
    with psycopg.connect(server.get_uri("postgres"), autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
        if found.fetchone() is None:
            # Another process may create it meanwhile.
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    log.info("embedded PostgreSQL ready in %s", pgdata)
    url: str = server.get_uri(database)
    return url


def _pgserver() -> Any:
    """The pgserver.postgres_server module, imported quietly."""
    with warnings.catch_warnings():
        # pgserver warns at import when XDG_RUNTIME_DIR is unset; harmless here.
        warnings.simplefilter("ignore")
        try:
            from pgserver import postgres_server
        except ImportError:
            raise DatabaseUnavailable(
                "no billing database configured and no embedded one: set [billing] db_url"
                " (postgresql://...) or install the embedded extra"
                " (pip install 'chargingd[embedded]')"
            ) from None

    # pgserver logs every command it runs, with output, at INFO: keep only problems.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    return postgres_server


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    return True


def _forget_dead_users(pgdata: Path) -> None:
    """Drop processes that died without cleanup (SIGKILL) from pgserver's user list.

    pgserver stops the server when its last user exits cleanly; a killed user stays
    listed forever and the server would then never stop.
    """
    users = pgdata / ".handle_pids.json"
    with _pgserver().PostgresServer._lock:
        if not users.exists():
            return
        try:
            pids = [int(p) for p in json.loads(users.read_text() or "[]")]
        except (ValueError, TypeError):
            pids = []
        alive = [p for p in pids if _process_exists(p)]
        if alive != pids:
            users.write_text(json.dumps(alive))
            log.info("embedded PostgreSQL: forgot %d dead users", len(pids) - len(alive))


def stop_embedded(pgdata: Path) -> None:
    """Drop this process's use of the embedded server; the last user stops it."""
    server = _pgserver().PostgresServer._instances.get(pgdata.resolve())
    if server is not None:
        server.cleanup()
        log.info("embedded PostgreSQL in %s released", pgdata)


def embedded_dir(cfg: Config) -> Path | None:
    """Where the embedded server lives, or None when a URL is configured."""
    if cfg.billing.db_url:
        return None
    return Path(cfg.billing.embedded_dir or cfg.data_path / "pg")


async def database_url(cfg: Config) -> str:
    """The configured URL, or the URL of the embedded server (started if needed)."""
    pgdata = embedded_dir(cfg)
    if pgdata is None:
        return cfg.billing.db_url
    return await asyncio.to_thread(start_embedded, pgdata, cfg.billing.embedded_database)
