"""Pending halves in the billing database (table mediation_pending, migration 009).

The halves of one key are written and read under a transaction-scoped advisory lock
on (source, key): two imports running at once, one with the INVITE and one with the
BYE, cannot both miss the other (the second reads the first's committed half).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chargingd.billing.db import BillingDB, Conn


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
