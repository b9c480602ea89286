"""The CDRs themselves, in PostgreSQL: calls charged twice, charges that differ from the
rated cost without a reason, CDRs still stuck in Redis.

Charged records are the live CDRs (stored or stuck) and the mediated debits of the
period. Two of them are one call charged twice when they are the same account,
caller and callee, start within the start tolerance and overlap in time (two
sessions of one call, or a live call also debited from a switch file; without a
caller ID, only records of two sources, and then also with a record that has one),
or when one switch record matched both (the same id in two live sources).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from chargingd.assurance.model import Finding, Kind, RunParams
from chargingd.billing.db import Conn

# How a pair without caller ID on one side was matched (calls.py uses it too).
NO_CALLER = "callee+start (no caller ID)"

# Stuck CDRs read from Redis (live.py) are loaded here first; those the database
# holds after all (stored, then the acknowledgement was lost) are dropped. A stuck
# correction (a higher revision of a call the database holds: a late Stop after a reap
# or a gateway restart) is kept, with the stored revision's charge; the stored row it
# replaces is then left out of every check, as the exporter will replace it.
STUCK_TABLE = """
CREATE TEMP TABLE a_stuck (
    id BIGINT, source TEXT, call_id TEXT, account_id TEXT, caller TEXT, callee TEXT,
    start_time TIMESTAMPTZ, answer_time TIMESTAMPTZ, duration_s INTEGER, cost_micros BIGINT,
    charged_micros BIGINT, charge TEXT, charge_reason TEXT, currency TEXT, client TEXT,
    found TEXT, revision INTEGER, stored_revision INTEGER, stored_charged BIGINT
) ON COMMIT DROP
"""
STUCK_COLUMNS = (
    "id, source, call_id, account_id, caller, callee, start_time, answer_time, duration_s,"
    " cost_micros, charged_micros, charge, charge_reason, currency, client, found, revision"
)
_STUCK_STORED = """
DELETE FROM a_stuck s USING cdrs c WHERE c.source = s.source AND c.call_id = s.call_id
    AND c.revision >= s.revision
"""
# Of one call's stuck revisions, the newest replaces the others (it says it all).
_STUCK_SUPERSEDED = """
DELETE FROM a_stuck s USING a_stuck t WHERE t.source = s.source AND t.call_id = s.call_id
    AND t.revision > s.revision
"""
_STUCK_REPLACES = """
UPDATE a_stuck s SET stored_revision = c.revision, stored_charged = c.charged_micros
FROM cdrs c WHERE c.source = s.source AND c.call_id = s.call_id
"""
# The condition, on ``cdrs``, that leaves out a stored row a stuck correction replaces.
NOT_REPLACED = (
    "NOT EXISTS (SELECT 1 FROM a_stuck r WHERE r.source = cdrs.source AND r.call_id = cdrs.call_id)"
)

_CHARGED = (
    """
CREATE TEMP TABLE a_charged ON COMMIT DROP AS
SELECT id, source, call_id, account_id, caller, callee, start_time,
    coalesce(answer_time, start_time) AS t0,
    coalesce(answer_time, start_time) + duration_s * interval '1 second' AS t1,
    charged_micros, currency
FROM cdrs
WHERE (source = ANY(%(live)s) OR charge = 'mediated_debit') AND charged_micros > 0
    AND start_time >= %(wstart)s AND start_time < %(wend)s
    AND (%(account)s::text IS NULL OR account_id = %(account)s)
    AND """
    + NOT_REPLACED
    + """
UNION ALL
SELECT id, source, call_id, account_id, caller, callee, start_time,
    coalesce(answer_time, start_time),
    coalesce(answer_time, start_time) + duration_s * interval '1 second',
    charged_micros, currency
FROM a_stuck
WHERE charged_micros > 0 AND start_time >= %(wstart)s AND start_time < %(wend)s
    AND (%(account)s::text IS NULL OR account_id = %(account)s)
"""
)

# An empty caller (no caller ID) is no evidence of one caller: two records of one
# source without it are two calls (a trunk's concurrent calls to one number); across
# sources (a live call also debited from a switch file) they are still one call.
_PAIRS = """
CREATE TEMP TABLE a_double ON COMMIT DROP AS
SELECT a.id AS aid, b.id AS bid, 'caller+callee+start' AS how
FROM a_charged a
JOIN a_charged b ON b.account_id = a.account_id AND b.caller = a.caller
    AND (a.caller <> '' OR b.source <> a.source)
    AND b.callee = a.callee AND (b.start_time, b.id) > (a.start_time, a.id)
    AND b.start_time <= a.start_time + %(tol)s
    AND b.t0 < a.t1 AND a.t0 < b.t1
WHERE a.start_time >= %(start)s AND a.start_time < %(end)s
"""

# A record without caller ID and one of another source that has it (a live call whose
# gateway sent no Calling-Station-Id, also debited from a switch file that knows the
# caller): one call all the same when account, callee, start and talk time agree. The
# record without caller ID drives the join (few of them: one pass over the others);
# the earlier of the two is ``aid``, as above.
_NO_CALLER_PAIRS = """
INSERT INTO a_double (aid, bid, how)
SELECT CASE WHEN (e.start_time, e.id) < (o.start_time, o.id) THEN e.id ELSE o.id END,
    CASE WHEN (e.start_time, e.id) < (o.start_time, o.id) THEN o.id ELSE e.id END,
    %(no_caller)s
FROM a_charged e
JOIN a_charged o ON o.account_id = e.account_id AND o.callee = e.callee AND o.caller <> ''
    AND o.source <> e.source
    AND o.start_time BETWEEN e.start_time - %(tol)s AND e.start_time + %(tol)s
    AND o.t0 < e.t1 AND e.t0 < o.t1
WHERE e.caller = ''
    AND least(e.start_time, o.start_time) >= %(start)s
    AND least(e.start_time, o.start_time) < %(end)s
"""

# One switch record matched by id to two charged live CDRs (both frontends, say).
_ID_PAIRS = """
INSERT INTO a_double (aid, bid, how)
SELECT DISTINCT m1.lid, m2.lid, m1.how
FROM a_match m1
JOIN a_match m2 ON m2.sid = m1.sid AND m2.lid > m1.lid
JOIN a_charged c1 ON c1.id = m1.lid
JOIN a_charged c2 ON c2.id = m2.lid
WHERE NOT EXISTS (SELECT 1 FROM a_double d WHERE d.aid IN (m1.lid, m2.lid)
                  AND d.bid IN (m1.lid, m2.lid))
"""

_DOUBLES = """
SELECT a.source, a.call_id, a.charged_micros, a.start_time,
    b.source, b.call_id, b.charged_micros, b.start_time,
    b.account_id, b.currency, b.caller, b.callee, d.how,
    %(switched)s AND EXISTS (SELECT 1 FROM a_match m WHERE m.lid = a.id),
    %(switched)s AND EXISTS (SELECT 1 FROM a_match m WHERE m.lid = b.id),
    a.id, b.id
FROM a_double d
JOIN a_charged a ON a.id = d.aid
JOIN a_charged b ON b.id = d.bid
WHERE %(sources)s::text[] IS NULL OR a.source = ANY(%(sources)s) OR b.source = ANY(%(sources)s)
ORDER BY a.start_time, a.id, b.id
"""

_WITHOUT_REASON = (
    """
SELECT source, call_id, account_id, currency, cost_micros, charged_micros, charge, start_time,
    false
FROM cdrs
WHERE start_time >= %(start)s AND start_time < %(end)s
    AND charge IN ('live', 'mediated_debit') AND charged_micros <> cost_micros
    AND charge_reason = ''
    AND (%(account)s::text IS NULL OR account_id = %(account)s)
    AND (%(sources)s::text[] IS NULL OR source = ANY(%(sources)s))
    AND """
    + NOT_REPLACED
    + """
UNION ALL
SELECT source, call_id, account_id, currency, cost_micros, charged_micros, charge, start_time,
    true
FROM a_stuck
WHERE start_time >= %(start)s AND start_time < %(end)s
    AND charge IN ('live', 'mediated_debit') AND charged_micros <> cost_micros
    AND charge_reason = ''
    AND (%(account)s::text IS NULL OR account_id = %(account)s)
    AND (%(sources)s::text[] IS NULL OR source = ANY(%(sources)s))
ORDER BY 8, 1, 2
"""
)

_STUCK = """
SELECT source, call_id, account_id, currency, charged_micros, start_time, found,
    stored_revision, stored_charged
FROM a_stuck
WHERE (start_time IS NULL OR (start_time >= %(start)s AND start_time < %(end)s))
    AND (%(account)s::text IS NULL OR account_id = %(account)s)
    AND (%(sources)s::text[] IS NULL OR source = ANY(%(sources)s))
ORDER BY start_time NULLS FIRST, id
"""


def _params(params: RunParams, live: tuple[str, ...], sources: list[str] | None) -> dict[str, Any]:
    tol = timedelta(seconds=params.start_tolerance_s)
    return {
        "start": params.start,
        "end": params.end,
        "wstart": params.start - tol,
        "wend": params.end + tol,
        "tol": tol,
        "account": params.account_id,
        "live": list(live),
        "sources": sources,
    }


async def drop_stored_stuck(conn: Conn) -> None:
    await conn.execute(_STUCK_STORED)
    await conn.execute(_STUCK_SUPERSEDED)
    await conn.execute(_STUCK_REPLACES)
    await conn.execute("ANALYZE a_stuck")


async def doubles(
    conn: Conn,
    params: RunParams,
    live: tuple[str, ...],
    *,
    switched: bool,
    sources: list[str] | None = None,
) -> list[Finding]:
    """Calls charged twice; the duplicate (the one no switch record matched, else the
    later) carries the finding, its money minus the smaller of the two charges. A call
    charged three times is two duplicates, each reported once (against the earliest
    record it pairs with), not one finding per pair: its money is the two extra
    charges, never more than was charged. With
    ``sources`` (--source and its live sources) only pairs with a CDR of one of them:
    every pair is still known to the other checks (a_double)."""
    p = _params(params, live, sources)
    await conn.execute(_CHARGED, p)
    await conn.execute("CREATE INDEX ON a_charged (account_id, caller, callee, start_time)")
    await conn.execute("ANALYZE a_charged")
    await conn.execute(_PAIRS, p)
    await conn.execute(_NO_CALLER_PAIRS, p | {"no_caller": NO_CALLER})
    if switched:
        await conn.execute(_ID_PAIRS)
    cur = await conn.execute(_DOUBLES, {"switched": switched, "sources": sources})
    out = []
    reported: set[int] = set()  # the duplicates already reported (a_charged ids)
    for row in await cur.fetchall():
        (a_src, a_call, a_charged, a_start, b_src, b_call, b_charged, b_start, acct, currency,
         caller, callee, how, a_on_switch, b_on_switch, a_id, b_id) = row  # fmt: skip
        first, second = (a_src, a_call, a_charged, a_start), (b_src, b_call, b_charged, b_start)
        duplicate = int(b_id)
        if b_on_switch and not a_on_switch:
            first, second = second, first
            duplicate = int(a_id)
        if duplicate in reported:
            continue
        reported.add(duplicate)
        out.append(
            Finding(
                Kind.DOUBLE_CHARGE, acct, currency, -min(int(a_charged), int(b_charged)),
                second[0], second[1], matched_by=how,
                detail={
                    "caller": caller, "callee": callee, "start": _iso(second[3]),
                    "charged_micros": int(second[2]), "first_source": first[0],
                    "first_call_id": first[1], "first_charged_micros": int(first[2]),
                    "first_start": _iso(first[3]),
                },
            )
        )  # fmt: skip
    return out


async def without_reason(
    conn: Conn, params: RunParams, live: tuple[str, ...], sources: list[str] | None
) -> list[Finding]:
    """CDRs charged other than their rated cost with no charge_reason; money is the
    rated cost minus the charge (> 0: charged less than the tariff says)."""
    cur = await conn.execute(_WITHOUT_REASON, _params(params, live, sources))
    out = []
    for src, call_id, acct, currency, cost, charged, charge, start, stuck in await cur.fetchall():
        detail: dict[str, Any] = {
            "rated_micros": int(cost), "charged_micros": int(charged), "charge": charge,
            "start": _iso(start),
        }  # fmt: skip
        if stuck:
            detail["cdr_stuck"] = True
        out.append(
            Finding(Kind.CHARGE_WITHOUT_REASON, acct, currency, int(cost) - int(charged), src,
                    call_id, detail=detail)
        )  # fmt: skip
    return out


async def stuck(
    conn: Conn, params: RunParams, live: tuple[str, ...], sources: list[str] | None
) -> list[Finding]:
    """CDRs the database does not have: still in the stream, or dead-lettered. Their
    money moved in the ledger but no invoice or report sees it (a stuck correction:
    what it charged beyond the stored revision it replaces)."""
    cur = await conn.execute(_STUCK, _params(params, live, sources))
    out = []
    for row in await cur.fetchall():
        src, call_id, acct, currency, charged, start, found, stored_rev, stored_charged = row
        detail: dict[str, Any] = {
            "where": found, "start": _iso(start), "charged_micros": int(charged or 0),
        }  # fmt: skip
        money = int(charged or 0)
        if stored_rev is not None:
            detail["replaces_stored_revision"] = int(stored_rev)
            detail["stored_charged_micros"] = int(stored_charged)
            money -= int(stored_charged)
        out.append(
            Finding(Kind.STUCK_CDR, acct or "", currency or "", money, src or "", call_id or "",
                    detail=detail)
        )  # fmt: skip
    return out


def _iso(when: datetime | None) -> str:
    return when.isoformat() if when is not None else ""
