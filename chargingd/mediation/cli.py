"""The body of ``chargingd mediate``: config, source and files checked, then the run.

The ledger (when the source needs one) and the store come from the caller
(chargingd.app builds them from the config), so this package builds no Redis client.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from chargingd.core.config import Config, ConfigError, load_config
from chargingd.core.config.mediation import SourceConfig
from chargingd.core.exits import EXIT_REJECTS
from chargingd.mediation.charge import Charger, UsageLedger
from chargingd.mediation.formats import SPOOL_SUFFIXES
from chargingd.mediation.payers import AccountLookup, Payers
from chargingd.mediation.pipeline import (
    Mediator,
    Progress,
    Summary,
    Watched,
    compression,
    watch,
)
from chargingd.mediation.rate import Rater
from chargingd.mediation.store import CdrStore, MemoryStore
from chargingd.rating.loaders import TariffLoadError, load_configured

if TYPE_CHECKING:
    from rich.progress import Progress as RichProgress


DRY_RUN_REJECTS_SHOWN = 20  # per file: a dry run writes no rejects file, it shows them


class MediationLedger(AccountLookup, UsageLedger, Protocol):
    """What mediation uses of chargingd.ledger.Ledger: account lookups and debits."""


LedgerOpener = Callable[[Config], AbstractAsyncContextManager[MediationLedger]]
StoreOpener = Callable[[Config], AbstractAsyncContextManager[CdrStore]]


async def main(
    args: argparse.Namespace, *, open_ledger: LedgerOpener, open_store: StoreOpener
) -> int:
    """Mediate args.files for args.source; print the summary; exit code (0, 1, 2)."""
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"chargingd mediate: {exc}", file=sys.stderr)
        return 2
    source = cfg.mediation.sources.get(args.source)
    if source is None:
        known = ", ".join(sorted(cfg.mediation.sources)) or "none configured"
        print(f"chargingd mediate: no source {args.source!r} ({known})", file=sys.stderr)
        return 2
    if args.pending:
        if args.files or args.dry_run:
            print(
                "chargingd mediate: --pending reads no FILE (and stores nothing)", file=sys.stderr
            )
            return 2
        async with open_store(cfg) as store:
            await _list_pending(args.source, store)
        return 0
    if not args.files:
        print("chargingd mediate: no FILE given", file=sys.stderr)
        return 2
    try:
        paths, spooled = input_files([Path(f) for f in args.files], source)
    except ValueError as exc:
        print(f"chargingd mediate: {exc}", file=sys.stderr)
        return 2
    watched, fresh = _watch(paths, spooled, source, cfg.mediation.settle_s)
    rater = Rater(
        source,
        plans=cfg.rating.plans,
        default_plan=cfg.rating.default_plan,
        loader=functools.partial(
            load_configured,
            tp_timezone=cfg.rating.cgrates_timezone,
            tp_rounding_decimals=cfg.rating.cgrates_rounding_decimals,
        ),
    )
    try:
        rater.preload()
    except TariffLoadError as exc:
        where = f"[mediation.sources.{args.source}] plan" if source.plan else "[rating]"
        print(f"chargingd mediate: {where}: {exc}", file=sys.stderr)
        return 2
    rejects_dir = args.rejects or cfg.mediation.rejects_dir
    if not args.dry_run:
        try:
            check_rejects_dir(rejects_dir, paths)
        except (OSError, ValueError) as exc:
            print(f"chargingd mediate: {exc}", file=sys.stderr)
            return 2
    async with (
        _ledger(cfg, source, open_ledger) as ledger,
        _store(cfg, args.dry_run, open_store) as store,
    ):
        charger = Charger(args.source, source, store, ledger, dry_run=args.dry_run)
        mediator = Mediator(
            args.source,
            source,
            payers=Payers(source, ledger),
            rater=rater,
            store=store,
            charger=charger,
            batch_size=cfg.mediation.batch_size,
            dry_run=args.dry_run,
            pending_max_age_s=cfg.mediation.pending_max_age_s,
            waiting=_waiting,
            watched=watched,
        )
        show = not args.quiet and sys.stderr.isatty()
        total, files = await mediator.run_files(
            paths, rejects_dir, lambda path: _progress(path, show)
        )
        for path, summary in files:
            _report(path, summary)
        total.unfinished += fresh
    prefix = "dry run: " if args.dry_run else ""
    print(f"{prefix}{total.line()}")
    # A cron job must notice rejects: 1 = the run finished but some rows were rejected.
    return EXIT_REJECTS if total.rejected else 0


def _watch(
    paths: list[Path], spooled: set[Path], source: SourceConfig, settle_s: int
) -> tuple[Watched, int]:
    """Watch the files modified within settle_s whose last record has no end (pipeline
    ``watch``); a spool file being written is taken out of ``paths`` (the next run reads
    it whole), said per directory. Their count is the second value."""
    watched = watch(paths, source, settle_s, time.sleep)
    fresh: dict[Path, int] = {}
    for path in [p for p in paths if p in spooled and p in watched.growing]:
        paths.remove(path)
        fresh[path.parent] = fresh.get(path.parent, 0) + 1
    for folder, count in fresh.items():
        print(f"{folder}: {count} file(s) being written: left for the next run")
    return watched, sum(fresh.values())


def _waiting(why: str) -> None:
    """Another import of the source runs: say why nothing happens (also under --quiet)."""
    print(f"chargingd mediate: {why}", file=sys.stderr, flush=True)


async def _list_pending(name: str, store: CdrStore) -> None:
    """The halves the source keeps (oldest first): since, kind, call id, file:line, and
    why alone it is no call; then their count."""
    kept = await store.kept(name)
    for half in kept:
        since = datetime.fromtimestamp(half.since_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{since} UTC  {half.kind}  {half.key}  {half.file}:{half.line}  {half.reason}")
    print(f"pending {len(kept)}")


def input_files(given: list[Path], source: SourceConfig) -> tuple[list[Path], set[Path]]:
    """The files to read: each file given, and for a format whose switch spools a file
    per call (SPOOL_SUFFIXES: FreeSWITCH json_cdr/xml_cdr log-dir), a directory stands
    for its files with that suffix, in name order (the second value: those files).
    ValueError: what is wrong."""
    paths: list[Path] = []
    spooled: set[Path] = set()
    missing: list[str] = []
    suffix = SPOOL_SUFFIXES.get(source.format)
    for path in given:
        if path.is_dir():
            if suffix is None:
                raise ValueError(f"{path} is a directory (format {source.format!r} reads files)")
            found = sorted(p for p in path.iterdir() if p.name.endswith(suffix) and p.is_file())
            paths.extend(found)
            spooled.update(found)
        elif path.is_file():
            paths.append(path)
        else:
            missing.append(str(path))
    if missing:
        raise ValueError(f"no such file: {', '.join(missing)}")
    return paths, spooled


def check_rejects_dir(rejects_dir: str, paths: list[Path]) -> None:
    """Where the rejects files go must take them before any row is stored: a rejects
    directory that is a file (or cannot be made or written), or an input folder that
    cannot be written without one, failed at the first reject, mid-run, after good
    rows were stored and with the rejects lost (a traceback). ValueError/OSError: why."""
    if rejects_dir:
        where = Path(rejects_dir)
        if where.exists() and not where.is_dir():
            raise ValueError(f"rejects directory {where} is not a directory")
        where.mkdir(parents=True, exist_ok=True)
        if not os.access(where, os.W_OK):
            raise ValueError(f"rejects directory {where} is not writable")
        return
    for folder in sorted({path.parent for path in paths}):
        if not os.access(folder, os.W_OK):
            raise ValueError(
                f"cannot write rejects files in {folder}: give --rejects DIR"
                " (or [mediation] rejects_dir)"
            )


def _report(path: Path, summary: Summary) -> None:
    """Where a file's rejects went; a dry run shows the first ones instead; a last
    record left for the next run."""
    if summary.unfinished:
        print(
            f"{path}:{summary.unfinished_line}: last record has no end yet and the file is"
            " being written: left for the next run"
        )
    if summary.reject_file:
        print(f"{path}: {summary.rejected} rejected -> {summary.reject_file}")
    for line_no, reject in summary.rejects[:DRY_RUN_REJECTS_SHOWN]:
        print(f"{path}:{line_no}: rejected: {reject.reason}")
    hidden = summary.rejected - min(len(summary.rejects), DRY_RUN_REJECTS_SHOWN)
    if summary.rejects and hidden > 0:
        print(f"{path}: {hidden} more rejected")


def needs_ledger(source: SourceConfig) -> bool:
    """The ledger is needed to find accounts (ani) or their tariff (no source plan), and
    to debit the calls of a source charged to it."""
    charged = source.charge == "ledger" and source.rate
    return charged or source.account_rule == "ani" or not source.plan


@contextlib.asynccontextmanager
async def _ledger(
    cfg: Config, source: SourceConfig, open_ledger: LedgerOpener
) -> AsyncIterator[MediationLedger | None]:
    if not needs_ledger(source):
        yield None
        return
    async with open_ledger(cfg) as ledger:
        yield ledger


@contextlib.asynccontextmanager
async def _store(cfg: Config, dry_run: bool, open_store: StoreOpener) -> AsyncIterator[CdrStore]:
    if dry_run:
        yield MemoryStore()
        return
    async with open_store(cfg) as store:
        yield store


@contextlib.contextmanager
def _progress(path: Path, show: bool) -> Iterator[Progress | None]:
    """A rich progress bar over the file's size when stderr is a terminal."""
    if not show:
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress as RichProgress

    bar: RichProgress
    with RichProgress(console=Console(stderr=True), transient=False) as bar:
        # A compressed file's size says nothing of its characters: no total then.
        total = None if compression(path) else path.stat().st_size
        task = bar.add_task(path.name, total=total)

        def advance(chars: int) -> None:
            bar.advance(task, chars)

        yield advance
