"""One reconciliation: read what Redis holds, then run every check in one PostgreSQL
transaction (temporary tables; nothing of the billing data is written).

Checks, and when they run:

- ``calls``: (a) switch calls of the record_only mediation sources against (b) the
  live CDRs (calls.py), when such a source is in scope;
- ``cdrs``: double charges, charges without a reason, stuck CDRs (charges.py);
- ``ledger``: (c) the journal against the CDRs, balances, holds, live sessions
  (ledger_checks.py, live.py); not with ``--source``: they are about accounts;
- ``invoices``: (d) documents against their lines, the ledger and the CDRs
  (invoices.py); not with ``--source``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from chargingd.assurance import calls, charges, invoices, ledger_checks, live
from chargingd.assurance.model import AssuranceError, Finding, Kind, RunParams, Sources
from chargingd.assurance.pricing import CallPricer, price_unrated
from chargingd.billing.db import BillingDB, Conn
from chargingd.ledger.journal import AccountSnapshot, ExpiredHold, LedgerInspector
from chargingd.sessions.store import SessionRecord, SessionStore

_KIND_ORDER = {k: i for i, k in enumerate(Kind)}


@dataclass
class Context:
    """What a run reads: the billing database, Redis (ledger, sessions, CDR stream)."""

    db: BillingDB
    redis: Any
    sessions: SessionStore
    pricer: CallPricer
    sources: Sources
    export_group: str = "exporter"
    dead_letters: str = "cdr:dead"
    # Copies the ledger's journal to the database first (the exporter's own pass).
    sync_journal: Callable[[], Awaitable[int]] | None = None


@dataclass
class RedisState:
    stuck: list[live.StuckCdr] = field(default_factory=list)
    sessions: list[SessionRecord] = field(default_factory=list)
    snapshots: list[AccountSnapshot] = field(default_factory=list)
    holds: list[ExpiredHold] = field(default_factory=list)


@dataclass(frozen=True)
class Outcome:
    findings: list[Finding]
    matching: dict[str, int]
    checks: tuple[str, ...]


def plan_checks(params: RunParams, sources: Sources) -> tuple[str, ...]:
    if params.source is not None and params.source not in sources.switch:
        known = ", ".join(sorted(sources.switch)) or "none configured"
        raise AssuranceError(f"unknown source {params.source!r} ([mediation.sources]: {known})")
    checks = []
    if _switch_in_scope(params, sources):
        checks.append("calls")
    checks.append("cdrs")
    if params.source is None:
        checks += ["ledger", "invoices"]
    return tuple(checks)


def _switch_in_scope(params: RunParams, sources: Sources) -> list[str]:
    names = sources.record_only
    return [n for n in names if params.source in (None, n)]


def call_scope(params: RunParams, sources: Sources) -> calls.CallScope:
    names = _switch_in_scope(params, sources)
    clients: set[str] | None = set()
    for name in names:
        listed = sources.clients.get(name)
        if listed is None:
            clients = None  # a source compared with every live CDR: no client filter
            break
        assert clients is not None
        clients.update(listed)
    switch = tuple((n, sources.switch[n][2]) for n in names)
    live_sources = tuple(sorted({sources.switch[n][1] for n in names}))
    return calls.CallScope(params, switch, live_sources, None if clients is None else
                           tuple(sorted(clients)))  # fmt: skip


async def read_redis(
    ctx: Context, params: RunParams, checks: Sequence[str], now_ms: int
) -> RedisState:
    state = RedisState()
    state.stuck = await live.stuck_cdrs(
        ctx.redis, group=ctx.export_group, dead_letters=ctx.dead_letters,
        cutoff_ms=now_ms - params.stuck_after_s * 1000,
    )  # fmt: skip
    if "ledger" not in checks:
        return state
    if params.account_id is not None:
        state.sessions = await ctx.sessions.live_of_account(params.account_id)
        accounts = [params.account_id]
    else:
        state.sessions = await ctx.sessions.all_live(limit=10_000_000, now_ms=now_ms)
        accounts = []
        async for page in LedgerInspector(ctx.redis).account_ids():
            accounts += page
    inspector = LedgerInspector(ctx.redis)
    state.snapshots = await inspector.snapshots(accounts)
    state.holds = await inspector.expired_holds(accounts, now_ms - params.hold_grace_s * 1000)
    return state


async def reconcile(ctx: Context, params: RunParams, now_ms: int) -> Outcome:
    """Every check of the run; findings sorted by kind, account and reference."""
    checks = plan_checks(params, ctx.sources)
    if "ledger" in checks and ctx.sync_journal is not None:
        await ctx.sync_journal()
    state = await read_redis(ctx, params, checks, now_ms)
    currencies = {s.account_id: s.currency for s in state.snapshots}

    async def work(conn: Conn) -> tuple[list[Finding], dict[str, int]]:
        return await _in_database(conn, ctx, params, checks, state, currencies)

    found, matching = await ctx.db.run(work)
    found = await price_unrated(found, _unrated(ctx.sources), ctx.pricer)
    if "ledger" in checks:
        overdue = live.overdue_sessions(state.sessions, now_ms, params.session_grace_s, ctx.pricer)
        found += overdue
        keys = {(f.account_id, f.call_id) for f in overdue}
        found += live.hold_findings(state.holds, currencies, keys, now_ms)
        found += ledger_checks.balance_findings(state.snapshots, now_ms)
    found.sort(key=lambda f: (_KIND_ORDER[f.kind], f.account_id, f.source, f.call_id))
    return Outcome(found, matching, checks)


def _unrated(sources: Sources) -> set[str]:
    return {name for name, (_c, _m, _o, rate) in sources.switch.items() if not rate}


async def _in_database(
    conn: Conn, ctx: Context, params: RunParams, checks: Sequence[str], state: RedisState,
    currencies: dict[str, str],
) -> tuple[list[Finding], dict[str, int]]:  # fmt: skip
    await _load(conn, state)
    found: list[Finding] = []
    matching: dict[str, int] = {}
    scope = call_scope(params, ctx.sources)
    live_sources = ctx.sources.live
    switched = "calls" in checks
    if switched:
        matching = await calls.match(conn, scope)
    else:
        await conn.execute(calls.EMPTY_MATCH)
    only = _cdr_sources(params, scope)
    found += await charges.doubles(conn, params, live_sources, switched=switched, sources=only)
    if switched:
        found += await calls.uncharged(conn, ledger_checked="ledger" in checks)
        found += await calls.mismatches(conn, scope)
        found += await calls.unknown(conn, scope)
    found += await charges.without_reason(conn, params, live_sources, only)
    found += await charges.stuck(conn, params, live_sources, only)
    if "ledger" in checks:
        found += await ledger_checks.unexplained(conn, params, live_sources, currencies)
        found += await ledger_checks.unrecorded(conn, params, live_sources)
        found += await ledger_checks.chain_breaks(conn, params, currencies)
    if "invoices" in checks:
        found += await invoices.documents(conn, params, ledger="ledger" in checks)
        found += await invoices.usage(conn, params)
    return await _with_currencies(conn, found), matching


async def _with_currencies(conn: Conn, found: list[Finding]) -> list[Finding]:
    """Journal findings of accounts Redis no longer has take their CDRs' currency."""
    missing = sorted({f.account_id for f in found if not f.currency and f.account_id})
    if not missing:
        return found
    known = await ledger_checks.currencies_of(conn, missing)
    return [
        dataclasses.replace(f, currency=known.get(f.account_id, "")) if not f.currency else f
        for f in found
    ]


def _cdr_sources(params: RunParams, scope: calls.CallScope) -> list[str] | None:
    """The CDR sources the CDR checks look at: all, or --source and its live sources."""
    if params.source is None:
        return None
    return [params.source, *scope.live_sources]


async def _load(conn: Conn, state: RedisState) -> None:
    await conn.execute(charges.STUCK_TABLE)
    rows = live.stuck_rows(state.stuck)
    if rows:
        await copy_rows(conn, f"COPY a_stuck ({charges.STUCK_COLUMNS}) FROM STDIN", rows)
    await charges.drop_stored_stuck(conn)
    await conn.execute(ledger_checks.LIVE_SESSIONS_TABLE)
    if state.sessions:
        ids = [(rec.account_id, rec.session_id) for rec in state.sessions]
        await copy_rows(conn, "COPY a_sessions (account_id, session_id) FROM STDIN", ids)


async def copy_rows(conn: Conn, statement: str, rows: Iterable[tuple[Any, ...]]) -> None:
    """COPY rows into a table (``statement``: COPY ... FROM STDIN)."""
    async with conn.cursor() as cur, cur.copy(statement) as copy:
        for row in rows:
            await copy.write_row(row)
