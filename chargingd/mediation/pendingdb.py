"""Pending halves in the billing database (table mediation_pending, migration 009), and
the lock that runs one import of a source at a time.

The halves of one key are written and read under a transaction-scoped advisory lock
on (source, key): two imports running at once, one with the INVITE and one with the
BYE, cannot both miss the other (the second reads the first's committed half).

``import_lock``: a session advisory lock per source, held by an import from before it
reads its first file until it stored its last call. An import's decisions (is this
FreeSWITCH line a B-leg an A-leg names? is this kept line billed now?) read what
earlier imports stored; two imports of adjacent files interleaved would each decide
without the other's calls (a B-leg at the start of the later file, read before the
other import stored its A-leg, was billed as a call of its own: the call billed
twice). Held, the imports of a source run one after the other, as cron runs them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

import psycopg

from chargingd.billing.db import BillingDB, Conn
from chargingd.billing.errors import DatabaseUnavailable

# The advisory lock of a source's imports: (IMPORT_LOCK, hashtext(source)), in the
# two-int key space, which the one-bigint locks of (source, key) above never meet.
IMPORT_LOCK = 0x6D656469  # "medi"


@dataclass(frozen=True, slots=True)
class PendingHalf:
    """A half of a call kept until its other half comes (mediation.pairing)."""

    key: str
    kind: str
    order: int
    reason: str  # why it alone is no call (the reject reason, were it not kept)
    raw: str
    head: str
    file: str
    line: int
    since_ms: int = 0  # when it was first kept (epoch ms)


_COLUMNS = (
    "key, kind, seq, reason, raw, head, file, line, (extract(epoch FROM since) * 1000)::bigint"
)


def _half(row: Sequence[object]) -> PendingHalf:
    key, kind, seq, reason, raw, head, file, line, since = row
    return PendingHalf(
        str(key), str(kind), int(str(seq)), str(reason), str(raw), str(head), str(file),
        int(str(line)), int(str(since)),
    )  # fmt: skip


async def pend(
    db: BillingDB, source: str, halves: Sequence[PendingHalf]
) -> dict[str, list[PendingHalf]]:
    """Keep the halves (a (key, kind) already kept keeps its first); every half kept of
    their keys afterwards, by key."""
    keys = sorted({h.key for h in halves})
    if not keys:
        return {}

    async def work(conn: Conn) -> dict[str, list[PendingHalf]]:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT hashtextextended(%s || '/' || k, 0)"
            " AS h FROM unnest(%s::text[]) AS k ORDER BY 1) AS locks",
            (source, keys),
        )
        await conn.execute(
            "INSERT INTO mediation_pending (source, key, kind, seq, reason, raw, head, file,"
            " line) SELECT %s, * FROM unnest(%s::text[], %s::text[], %s::int[], %s::text[],"
            " %s::text[], %s::text[], %s::text[], %s::int[]) ON CONFLICT DO NOTHING",
            (
                source,
                [h.key for h in halves],
                [h.kind for h in halves],
                [h.order for h in halves],
                [h.reason for h in halves],
                [h.raw for h in halves],
                [h.head for h in halves],
                [h.file for h in halves],
                [h.line for h in halves],
            ),
        )
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM mediation_pending WHERE source = %s AND key = ANY(%s)"
            " ORDER BY key, seq",
            (source, keys),
        )
        found: dict[str, list[PendingHalf]] = {}
        for row in await cur.fetchall():
            half = _half(row)
            found.setdefault(half.key, []).append(half)
        return found

    result: dict[str, list[PendingHalf]] = await db.run(work)
    return result


async def unpend(db: BillingDB, source: str, halves: Sequence[tuple[str, str]]) -> None:
    """Forget the kept halves (key, kind); kind "": every half of the key."""
    if not halves:
        return

    async def work(conn: Conn) -> None:
        await conn.execute(
            "DELETE FROM mediation_pending AS p USING unnest(%s::text[], %s::text[])"
            " AS d(key, kind) WHERE p.source = %s AND p.key = d.key"
            " AND (d.kind = '' OR p.kind = d.kind)",
            ([k for k, _ in halves], [kind for _, kind in halves], source),
        )

    await db.run(work)


async def expired(db: BillingDB, source: str, max_age_s: int) -> list[PendingHalf]:
    """The halves kept longer than ``max_age_s``, oldest first."""

    async def work(conn: Conn) -> list[PendingHalf]:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM mediation_pending WHERE source = %s"
            " AND since < now() - %s * interval '1 second' ORDER BY since, key, seq",
            (source, max_age_s),
        )
        return [_half(row) for row in await cur.fetchall()]

    result: list[PendingHalf] = await db.run(work)
    return result


async def kept(db: BillingDB, source: str, keys: Sequence[str] | None = None) -> list[PendingHalf]:
    """Every half kept for ``source`` (of ``keys`` only, when given), oldest first."""
    if keys is not None and not keys:
        return []
    where = "source = %s" if keys is None else "source = %s AND key = ANY(%s)"
    args: tuple[object, ...] = (source,) if keys is None else (source, list(keys))

    async def work(conn: Conn) -> list[PendingHalf]:
        cur = await conn.execute(
            f"SELECT {_COLUMNS} FROM mediation_pending WHERE {where} ORDER BY since, key, seq",
            args,
        )
        return [_half(row) for row in await cur.fetchall()]

    result: list[PendingHalf] = await db.run(work)
    return result


_HOLDER = (
    "SELECT a.application_name, to_char(a.backend_start AT TIME ZONE 'UTC',"
    " 'YYYY-MM-DD HH24:MI:SS'), l.pid FROM pg_locks AS l"
    " LEFT JOIN pg_stat_activity AS a ON a.pid = l.pid WHERE l.locktype = 'advisory'"
    " AND l.granted AND l.classid = %s::oid"
    " AND l.objid = (hashtext(%s)::bigint & 4294967295)::oid AND l.objsubid = 2"
)


@contextlib.asynccontextmanager
async def import_lock(
    db: BillingDB, source: str, waiting: Callable[[str], None] | None = None
) -> AsyncIterator[None]:
    """Hold the import lock of ``source`` (see the module doc) on a connection of its
    own, while the body runs: an import of the source holding it already is waited for,
    as long as it holds it (until it ends: finished, failed or killed, its connection
    closes), after ``waiting`` is told who holds it."""
    try:
        conn = await psycopg.AsyncConnection.connect(
            db.url,
            autocommit=True,
            connect_timeout=max(1, round(db.connect_timeout_s)),
            application_name=f"chargingd mediate {source} (pid {os.getpid()})"[:63],
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot connect to the billing database: {exc}") from None
    try:
        cur = await conn.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (IMPORT_LOCK, source)
        )
        row = await cur.fetchone()
        if not (row and row[0]):
            cur = await conn.execute(_HOLDER, (IMPORT_LOCK, source))
            held = await cur.fetchone()
            if held and waiting is not None:  # (else it ended meanwhile)
                who = held[0] or f"PostgreSQL backend pid {held[2]}"
                who += f", since {held[1]} UTC" if held[1] else ""
                waiting(
                    f"waiting for another import of source {source} to end ({who}):"
                    " one import of a source at a time"
                )
            await conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (IMPORT_LOCK, source))
        yield
    finally:
        await conn.close()  # the lock ends with its session
