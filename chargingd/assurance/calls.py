"""(a) against (b), in PostgreSQL: the switches' own records against the live sessions.

Temporary tables of one transaction hold the period's switch calls (``a_switch``:
the record_only mediation sources in scope), the live CDRs (``a_live``: stored, and
those still stuck in Redis, ``a_stuck``) and the matches (``a_match``). Matching:

1. by id: the switch call's id (its source's ``match_on``: the call id, or an extra
   field such as Acct-Session-Id; h323-conf-id is a cisco_radius call id) against
   the live CDR's call id (Acct-Session-Id, h323-conf-id for cisco clients, the SIP
   Call-ID Kamailio sends as Acct-Session-Id), compared upper-case without spaces;
2. then, among calls neither side matched, by caller, callee and start within the
   tolerance: pairs that are each other's nearest (mutual best) are matched;
3. then a call without caller ID on one side only, by account, callee and start (an
   empty caller is no evidence either way), mutual nearest as in 2.

What stays unmatched on the switch side was never charged; what stays on the live
side is unknown to the switch; matched pairs whose durations differ beyond both
tolerances are mismatches. Each finding says how its calls were matched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from chargingd.assurance.charges import NO_CALLER, NOT_REPLACED
from chargingd.assurance.model import Finding, Kind, RunParams
from chargingd.billing.db import Conn

FUZZY = "caller+callee+start"
# No switch source in scope: the tables the CDR checks look at, empty.
EMPTY_MATCH = "CREATE TEMP TABLE a_match (sid BIGINT, lid BIGINT, how TEXT) ON COMMIT DROP"


@dataclass(frozen=True)
class CallScope:
    """The switch sources compared and the live CDRs they are compared with."""

    params: RunParams
    switch: tuple[tuple[str, str], ...]  # (source, match_on) of record_only sources
    live_sources: tuple[str, ...]
    clients: tuple[str, ...] | None  # live CDRs of these clients only (None: all)

    def sql_params(self) -> dict[str, Any]:
        p = self.params
        tol = timedelta(seconds=p.start_tolerance_s)
        return {
            "start": p.start,
            "end": p.end,
            "wstart": p.start - tol,
            "wend": p.end + tol,
            "tol": tol,
            "account": p.account_id,
            "names": [s for s, _ in self.switch],
            "match_on": [m for _, m in self.switch],
            "live": list(self.live_sources),
            "clients": list(self.clients) if self.clients is not None else None,
            "tol_s": p.duration_tolerance_s,
            "tol_bp": p.duration_tolerance_bp,
        }


_SWITCH = """
CREATE TEMP TABLE a_switch ON COMMIT DROP AS
SELECT c.id, c.source, c.call_id, c.account_id, c.caller, c.callee, c.start_time,
    c.answer_time, c.duration_s, c.cost_micros, c.currency, c.tariff,
    'id:' || m.match_on AS how,
    upper(replace(CASE WHEN m.match_on = 'call_id'
                       THEN coalesce(c.extra ->> 'switch_call_id', c.call_id)
                       ELSE coalesce(c.extra ->> m.match_on, '') END, ' ', '')) AS key
FROM cdrs c
JOIN unnest(%(names)s::text[], %(match_on)s::text[]) AS m (source, match_on)
    ON c.source = m.source
WHERE c.start_time >= %(start)s AND c.start_time < %(end)s
    AND (%(account)s::text IS NULL OR c.account_id = %(account)s)
"""

# Live CDRs of the period widened by the start tolerance (a call at the edge matches
# its switch record on the other side of it); only those in the period are reported.
_LIVE = (
    """
CREATE TEMP TABLE a_live ON COMMIT DROP AS
SELECT id, source, call_id, account_id, caller, callee, start_time, answer_time,
    duration_s, cost_micros, charged_micros, currency, '' AS stuck,
    upper(replace(call_id, ' ', '')) AS key
FROM cdrs
WHERE source = ANY(%(live)s) AND start_time >= %(wstart)s AND start_time < %(wend)s
    AND (%(clients)s::text[] IS NULL OR extra ->> 'client' = ANY(%(clients)s))
    AND (%(account)s::text IS NULL OR account_id = %(account)s)
    AND """
    + NOT_REPLACED
    + """
UNION ALL
SELECT id, source, call_id, account_id, caller, callee, start_time, answer_time,
    duration_s, cost_micros, charged_micros, currency, found AS stuck,
    upper(replace(call_id, ' ', ''))
FROM a_stuck
WHERE source = ANY(%(live)s) AND start_time >= %(wstart)s AND start_time < %(wend)s
    AND (%(clients)s::text[] IS NULL OR client = ANY(%(clients)s))
    AND (%(account)s::text IS NULL OR account_id = %(account)s)
"""
)

_INDEXES = (
    "CREATE INDEX ON a_switch (key)",
    "CREATE INDEX ON a_switch (caller, callee, start_time)",
    "CREATE INDEX ON a_live (key)",
    "ANALYZE a_switch",
    "ANALYZE a_live",
)

# An answered call a mediation stored as <id>#answered (its failed serial-forking
# branch, unanswered, holds the switch's id: docs/mediation.md) is keyed by the switch's
# id (extra switch_call_id), and that unanswered record is no match of the live call.
_BY_ID = """
CREATE TEMP TABLE a_match ON COMMIT DROP AS
SELECT s.id AS sid, l.id AS lid, s.how
FROM a_switch s JOIN a_live l ON l.key = s.key
WHERE s.key <> ''
    AND NOT (s.answer_time IS NULL AND EXISTS (
        SELECT 1 FROM a_switch o
        WHERE o.key = s.key AND o.source = s.source AND o.answer_time IS NOT NULL))
"""

# Among what neither side matched: pairs that are each other's nearest start.
_FUZZY = """
INSERT INTO a_match (sid, lid, how)
SELECT sid, lid, %(fuzzy)s FROM (
    SELECT s.id AS sid, l.id AS lid,
        row_number() OVER (PARTITION BY s.id
            ORDER BY abs(extract(epoch FROM l.start_time - s.start_time)), l.id) AS rs,
        row_number() OVER (PARTITION BY l.id
            ORDER BY abs(extract(epoch FROM l.start_time - s.start_time)), s.id) AS rl
    FROM a_switch s
    JOIN a_live l ON l.caller = s.caller AND l.callee = s.callee
        AND l.start_time BETWEEN s.start_time - %(tol)s AND s.start_time + %(tol)s
    WHERE NOT EXISTS (SELECT 1 FROM a_match m WHERE m.sid = s.id)
        AND NOT EXISTS (SELECT 1 FROM a_match m WHERE m.lid = l.id)
) pairs
WHERE rs = 1 AND rl = 1
"""

# Then a live call without caller ID (the gateway sent no Calling-Station-Id: the
# README's radclient example, a withheld number some gateways leave out) and a switch
# record that has one, or the reverse: an empty caller is no evidence either way, so
# such a pair is matched on account, callee and start (mutual nearest, as above). The
# side without caller ID drives each join (few rows: one pass over the other table).
_NO_CALLER = """
INSERT INTO a_match (sid, lid, how)
SELECT sid, lid, %(no_caller)s FROM (
    SELECT sid, lid,
        row_number() OVER (PARTITION BY sid ORDER BY gap, lid) AS rs,
        row_number() OVER (PARTITION BY lid ORDER BY gap, sid) AS rl
    FROM (
        SELECT s.id AS sid, l.id AS lid, abs(extract(epoch FROM l.start_time - s.start_time)) AS gap
        FROM a_live l
        JOIN a_switch s ON s.account_id = l.account_id AND s.callee = l.callee
            AND s.caller <> ''
            AND s.start_time BETWEEN l.start_time - %(tol)s AND l.start_time + %(tol)s
        WHERE l.caller = ''
        UNION ALL
        SELECT s.id, l.id, abs(extract(epoch FROM l.start_time - s.start_time))
        FROM a_switch s
        JOIN a_live l ON l.account_id = s.account_id AND l.callee = s.callee
            AND l.caller <> ''
            AND l.start_time BETWEEN s.start_time - %(tol)s AND s.start_time + %(tol)s
        WHERE s.caller = ''
    ) candidates
    WHERE NOT EXISTS (SELECT 1 FROM a_match m WHERE m.sid = candidates.sid)
        AND NOT EXISTS (SELECT 1 FROM a_match m WHERE m.lid = candidates.lid)
) pairs
WHERE rs = 1 AND rl = 1
"""

_MATCH_INDEXES = ("CREATE INDEX ON a_match (sid)", "CREATE INDEX ON a_match (lid)")

_COUNTS = """
SELECT
    (SELECT count(*) FROM a_switch),
    (SELECT count(*) FROM a_live WHERE start_time >= %(start)s AND start_time < %(end)s),
    (SELECT count(*) FROM a_match WHERE how <> %(fuzzy)s AND how <> %(no_caller)s),
    (SELECT count(*) FROM a_match WHERE how = %(fuzzy)s),
    (SELECT count(*) FROM a_match WHERE how = %(no_caller)s)
"""

_UNCHARGED = """
WITH u AS MATERIALIZED (
    SELECT s.* FROM a_switch s
    WHERE s.answer_time IS NOT NULL AND s.duration_s > 0
        AND NOT EXISTS (SELECT 1 FROM a_match m WHERE m.sid = s.id)
)
SELECT u.source, u.call_id, u.account_id, u.caller, u.callee, u.start_time, u.answer_time,
    u.duration_s, u.cost_micros, u.currency, u.tariff
FROM u
WHERE NOT (%(ledger)s AND EXISTS (
    SELECT 1 FROM ledger_journal j
    WHERE j.account_id = u.account_id AND j.kind IN ('debit', 'correct')
        AND upper(replace(j.ref, ' ', '')) = u.key
        AND j.at >= u.start_time - interval '1 day'))
ORDER BY u.start_time, u.id
"""

_MISMATCH = """
SELECT s.source, s.call_id, s.account_id, s.caller, s.callee, s.start_time, s.answer_time,
    s.duration_s, s.cost_micros, s.currency, s.tariff, l.source, l.call_id, l.duration_s,
    l.cost_micros, l.charged_micros, l.stuck, m.how
FROM a_match m
JOIN a_switch s ON s.id = m.sid
JOIN a_live l ON l.id = m.lid
WHERE abs(s.duration_s - l.duration_s) > %(tol_s)s
    AND abs(s.duration_s - l.duration_s) * 10000 > %(tol_bp)s * greatest(s.duration_s, 1)
ORDER BY s.start_time, s.id, l.id
"""

# Charged live calls no switch record matched (a double charge's second session is
# reported as a double charge instead: a_double, built by charges.py first).
_UNKNOWN = """
SELECT l.source, l.call_id, l.account_id, l.caller, l.callee, l.start_time, l.duration_s,
    l.charged_micros, l.currency, l.stuck
FROM a_live l
WHERE l.start_time >= %(start)s AND l.start_time < %(end)s AND l.charged_micros > 0
    AND NOT EXISTS (SELECT 1 FROM a_match m WHERE m.lid = l.id)
    AND NOT EXISTS (SELECT 1 FROM a_double d WHERE d.aid = l.id OR d.bid = l.id)
ORDER BY l.start_time, l.id
"""


async def match(conn: Conn, scope: CallScope) -> dict[str, int]:
    """Build a_switch, a_live and a_match; the counts of what was compared and how."""
    params = scope.sql_params() | {"fuzzy": FUZZY, "no_caller": NO_CALLER}
    await conn.execute(_SWITCH, params)
    await conn.execute(_LIVE, params)
    for statement in _INDEXES:
        await conn.execute(statement)
    await conn.execute(_BY_ID)
    await conn.execute(_FUZZY, params)
    await conn.execute(_NO_CALLER, params)
    for statement in _MATCH_INDEXES:
        await conn.execute(statement)
    await conn.execute("ANALYZE a_match")
    cur = await conn.execute(_COUNTS, params)
    row = await cur.fetchone()
    assert row is not None
    switch, live, by_id, fuzzy, no_caller = (int(v) for v in row)
    return {
        "switch_calls": switch,
        "live_calls": live,
        "matched_by_id": by_id,
        "matched_by_caller_callee_start": fuzzy,
        "matched_by_callee_start_no_caller_id": no_caller,
    }


def _iso(when: datetime | None) -> str:
    return when.isoformat() if when is not None else ""


async def uncharged(conn: Conn, *, ledger_checked: bool = False) -> list[Finding]:
    """Switch calls with talk time that no live CDR matched: leakage, at the cost the
    mediation rated them at under the account's plan (0 here for an unrated source:
    pricing.py prices those). With the ledger checked, a call whose session the ledger
    debited under its id was charged: its CDR was lost, and it is reported once, as the
    unexplained movement (ledger_checks.py), not also as leakage to be billed again."""
    cur = await conn.execute(_UNCHARGED, {"ledger": ledger_checked})
    out = []
    for (
        src,
        call_id,
        acct,
        caller,
        callee,
        start,
        answer,
        dur,
        cost,
        cur_,
        tariff,
    ) in await cur.fetchall():
        out.append(
            Finding(
                Kind.UNCHARGED_CALL, acct, cur_, int(cost), src, call_id,
                detail={
                    "caller": caller, "callee": callee, "start": _iso(start),
                    "answer": _iso(answer), "switch_duration_s": int(dur), "tariff": tariff,
                    "rated_micros": int(cost),
                },
            )
        )  # fmt: skip
    return out


async def mismatches(conn: Conn, scope: CallScope) -> list[Finding]:
    """Matched calls whose durations differ beyond both tolerances; money is the
    switch duration's rated cost minus the live call's (pricing.py fills in an
    unrated source's cost)."""
    cur = await conn.execute(_MISMATCH, scope.sql_params())
    out = []
    for row in await cur.fetchall():
        (src, call_id, acct, caller, callee, start, answer, dur, cost, currency, tariff,
         lsrc, lcall, ldur, lcost, lcharged, stuck, how) = row  # fmt: skip
        detail = {
            "caller": caller, "callee": callee, "start": _iso(start), "answer": _iso(answer),
            "switch_duration_s": int(dur), "live_duration_s": int(ldur),
            "difference_s": int(dur) - int(ldur), "rated_micros": int(cost),
            "live_source": lsrc, "live_call_id": lcall, "live_cost_micros": int(lcost),
            "live_charged_micros": int(lcharged), "tariff": tariff,
        }  # fmt: skip
        if stuck:
            detail["live_cdr_stuck"] = stuck
        out.append(
            Finding(
                Kind.DURATION_MISMATCH, acct, currency, int(cost) - int(lcost), src, call_id,
                matched_by=how, detail=detail,
            )
        )  # fmt: skip
    return out


async def unknown(conn: Conn, scope: CallScope) -> list[Finding]:
    """Charged live calls the switch has no record of: possible over-billing."""
    cur = await conn.execute(_UNKNOWN, scope.sql_params())
    out = []
    for (
        src,
        call_id,
        acct,
        caller,
        callee,
        start,
        dur,
        charged,
        currency,
        stuck,
    ) in await cur.fetchall():
        detail: dict[str, Any] = {
            "caller": caller, "callee": callee, "start": _iso(start),
            "live_duration_s": int(dur), "charged_micros": int(charged),
        }  # fmt: skip
        if stuck:
            detail["live_cdr_stuck"] = stuck
        out.append(
            Finding(Kind.UNKNOWN_TO_SWITCH, acct, currency, -int(charged), src, call_id,
                    detail=detail)
        )  # fmt: skip
    return out
