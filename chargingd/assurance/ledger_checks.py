"""(c) what the ledger moved, against the CDRs and the business records.

The ledger's journal (ledger_journal, exported from each account's journal stream:
chargingd/ledger/journal.py) holds every money movement with its reference. In
PostgreSQL:

- a movement of the period no record explains: a session's debit without a live CDR
  (and no live session: it may still be running), a mediated or rerated call's
  movement without its CDR, an adjustment no invoice posting, payment or rerate
  recorded and that carries no reason;
- a CDR of the period whose charged_micros differs from what the journal moved for
  it (only for accounts whose journal began before the call: older history was never
  journaled);
- a break in an account's chain: each entry carries the balance and the net of
  lifetime totals (top-ups - debits) after it, so an entry whose "before" differs
  from the previous entry's "after" shows money moved outside the scripts.

From Redis (live.py reads the snapshots): the balance against opening + top-ups -
debits, and the totals against the newest journal entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from chargingd.assurance.charges import NOT_REPLACED
from chargingd.assurance.model import Finding, Kind, RunParams
from chargingd.billing.db import Conn
from chargingd.ledger.journal import AccountSnapshot

LIVE_SESSIONS_TABLE = """
CREATE TEMP TABLE a_sessions (account_id TEXT, session_id TEXT) ON COMMIT DROP
"""

_UNEXPLAINED = """
WITH mv AS (
    SELECT account_id, kind, ref, source, sum(amount_micros) AS amount, min(at) AS first_at,
        count(*) AS entries, max(who) AS who, max(why) AS why
    FROM ledger_journal
    WHERE at >= %(start)s AND at < %(end)s
        AND kind IN ('debit', 'correct', 'usage', 'rerate', 'adjust')
        AND (%(account)s::text IS NULL OR account_id = %(account)s)
    GROUP BY account_id, kind, ref, source
)
SELECT mv.account_id, mv.kind, mv.ref, mv.source, mv.amount, mv.first_at, mv.entries,
    mv.who, mv.why
FROM mv
WHERE CASE
    WHEN mv.kind IN ('debit', 'correct') THEN
        NOT EXISTS (SELECT 1 FROM cdrs c WHERE c.source = ANY(%(live)s)
                    AND c.call_id = mv.ref AND c.account_id = mv.account_id)
        AND NOT EXISTS (SELECT 1 FROM a_stuck s WHERE s.call_id = mv.ref
                        AND s.account_id = mv.account_id)
        AND NOT EXISTS (SELECT 1 FROM a_sessions s WHERE s.session_id = mv.ref
                        AND s.account_id = mv.account_id)
    WHEN mv.kind IN ('usage', 'rerate') THEN
        NOT EXISTS (SELECT 1 FROM cdrs c WHERE c.source = mv.source AND c.call_id = mv.ref)
        AND NOT EXISTS (SELECT 1 FROM a_stuck s WHERE s.source = mv.source
                        AND s.call_id = mv.ref)
    ELSE
        btrim(mv.why) = ''
        AND NOT EXISTS (SELECT 1 FROM ledger_postings p WHERE p.txn_id = mv.ref)
        AND NOT EXISTS (SELECT 1 FROM rerate_adjustments r WHERE r.txn_id = mv.ref)
    END
ORDER BY mv.first_at, mv.account_id, mv.ref
"""

# What the journal moved for each charged CDR of the period (accounts whose journal
# reaches back before the call), where it differs from the CDR's charged_micros.
_UNRECORDED = (
    """
WITH c AS (
    SELECT source, call_id, account_id, currency, charged_micros, charge, start_time, false AS stuck
    FROM cdrs
    WHERE start_time >= %(start)s AND start_time < %(end)s
        AND charge IN ('live', 'mediated_debit')
        AND (%(account)s::text IS NULL OR account_id = %(account)s)
        AND """
    + NOT_REPLACED
    + """
    UNION ALL
    SELECT source, call_id, account_id, currency, charged_micros, charge, start_time, true
    FROM a_stuck
    WHERE start_time >= %(start)s AND start_time < %(end)s
        AND charge IN ('live', 'mediated_debit')
        AND (%(account)s::text IS NULL OR account_id = %(account)s)
), covered AS (
    SELECT j.account_id, min(j.at) AS since
    FROM ledger_journal j WHERE j.account_id IN (SELECT DISTINCT account_id FROM c)
    GROUP BY j.account_id
)
SELECT c.source, c.call_id, c.account_id, c.currency, c.charged_micros, c.charge,
    c.start_time, c.stuck, coalesce(m.moved, 0), coalesce(m.entries, 0)
FROM c
JOIN covered v ON v.account_id = c.account_id AND v.since <= c.start_time
LEFT JOIN LATERAL (
    SELECT -sum(j.amount_micros) AS moved, count(*) AS entries
    FROM ledger_journal j
    WHERE j.account_id = c.account_id AND j.ref = c.call_id
        AND ((c.charge = 'live' AND (j.kind IN ('debit', 'correct')
                                     OR (j.kind = 'rerate' AND j.source = c.source)))
             OR (c.charge = 'mediated_debit' AND j.kind IN ('usage', 'rerate')
                 AND j.source = c.source))
) m ON true
WHERE c.charged_micros <> coalesce(m.moved, 0)
ORDER BY c.start_time, c.source, c.call_id
"""
)

# Entries written in the period (their stream id: Redis's clock, the chain's order;
# ``at`` is the caller's clock and may disagree) whose "before" (after - amount) is not
# the previous entry's "after", the previous one looked up before the period if need be.
_CHAIN = """
WITH p AS (
    SELECT * FROM ledger_journal
    WHERE entry_ms >= %(start_ms)s AND entry_ms < %(end_ms)s
        AND (%(account)s::text IS NULL OR account_id = %(account)s)
), prev AS (
    SELECT DISTINCT ON (j.account_id) j.*
    FROM ledger_journal j
    JOIN (SELECT DISTINCT account_id FROM p) a ON a.account_id = j.account_id
    WHERE j.entry_ms < %(start_ms)s
    ORDER BY j.account_id, j.entry_ms DESC, j.entry_seq DESC
), chain AS (
    SELECT x.*, lag(balance_micros) OVER w AS prev_balance, lag(net_micros) OVER w AS prev_net,
        lag(at) OVER w AS prev_at, lag(kind) OVER w AS prev_kind
    FROM (SELECT * FROM p UNION ALL SELECT * FROM prev) x
    WINDOW w AS (PARTITION BY account_id ORDER BY entry_ms, entry_seq)
)
SELECT account_id, kind, ref, at, prev_at, prev_kind,
    net_micros - amount_micros - prev_net AS net_break,
    balance_micros - amount_micros - prev_balance AS balance_break
FROM chain
WHERE entry_ms >= %(start_ms)s AND prev_net IS NOT NULL
    AND net_micros - amount_micros - prev_net <> 0
ORDER BY at, account_id
"""

_CURRENCIES = """
SELECT DISTINCT ON (account_id) account_id, currency FROM cdrs
WHERE account_id = ANY(%(accounts)s) ORDER BY account_id, start_time DESC
"""


def _params(params: RunParams, live: tuple[str, ...]) -> dict[str, Any]:
    return {"start": params.start, "end": params.end, "account": params.account_id,
            "live": list(live), "start_ms": int(params.start.timestamp() * 1000),
            "end_ms": int(params.end.timestamp() * 1000)}  # fmt: skip


async def unexplained(
    conn: Conn, params: RunParams, live: tuple[str, ...], currencies: dict[str, str]
) -> list[Finding]:
    """Movements of the period no record explains; money is the balance's change
    (a debit without a record < 0, a credit without one > 0)."""
    cur = await conn.execute(_UNEXPLAINED, _params(params, live))
    out = []
    for acct, kind, ref, source, amount, first_at, entries, who, why in await cur.fetchall():
        why_text = {
            "debit": "debited for a session that has no CDR and is not live",
            "correct": "corrected a session that has no CDR",
            "usage": "debited for a call that has no CDR",
            "rerate": "re-rated a call that has no CDR",
        }.get(kind, "adjusted without a reason, recorded by no invoice, payment or rerate")
        out.append(
            Finding(
                Kind.UNEXPLAINED_MOVEMENT, acct, currencies.get(acct, ""), int(amount), source,
                ref,
                detail={"movement": kind, "explanation": why_text, "at": first_at.isoformat(),
                        "entries": int(entries), "who": who, "why": why},
            )
        )  # fmt: skip
    return out


async def unrecorded(conn: Conn, params: RunParams, live: tuple[str, ...]) -> list[Finding]:
    """CDRs whose charge the journal does not show moved; money is the CDR's charge
    minus what moved (> 0: the CDR bills money the ledger never took)."""
    cur = await conn.execute(_UNRECORDED, _params(params, live))
    out = []
    for row in await cur.fetchall():
        src, call_id, acct, currency, charged, charge, start, stuck, moved, entries = row
        detail: dict[str, Any] = {
            "charged_micros": int(charged), "moved_micros": int(moved), "charge": charge,
            "start": start.isoformat(), "journal_entries": int(entries),
        }  # fmt: skip
        if stuck:
            detail["cdr_stuck"] = True
        out.append(
            Finding(Kind.UNRECORDED_CHARGE, acct, currency, int(charged) - int(moved), src,
                    call_id, detail=detail)
        )  # fmt: skip
    return out


async def chain_breaks(conn: Conn, params: RunParams, currencies: dict[str, str]) -> list[Finding]:
    """Money that moved between two journal entries without an entry of its own."""
    cur = await conn.execute(_CHAIN, _params(params, ()))
    out = []
    for acct, kind, ref, at, prev_at, prev_kind, net_break, balance_break in await cur.fetchall():
        out.append(
            Finding(
                Kind.UNEXPLAINED_MOVEMENT, acct, currencies.get(acct, ""), int(net_break), "",
                "",
                detail={
                    "movement": "outside the ledger",
                    "explanation": "the account's totals changed between two journal entries"
                    " without an entry (a change made outside the ledger's scripts)",
                    "after": prev_at.isoformat(), "after_kind": prev_kind,
                    "before": at.isoformat(), "before_kind": kind, "before_ref": ref,
                    "balance_change_micros": int(balance_break),
                },
            )
        )  # fmt: skip
    return out


async def currencies_of(conn: Conn, account_ids: Sequence[str]) -> dict[str, str]:
    """The currency of each account's latest CDR (accounts gone from Redis keep one)."""
    cur = await conn.execute(_CURRENCIES, {"accounts": list(account_ids)})
    return {str(a): str(c) for a, c in await cur.fetchall()}


def balance_findings(snapshots: Sequence[AccountSnapshot], now_ms: int) -> list[Finding]:
    """From Redis: balance != opening + top-ups - debits; totals moved since the newest
    journal entry without one (a change outside the scripts, not yet followed by any)."""
    out = []
    at = datetime.fromtimestamp(now_ms / 1000, UTC).isoformat()
    for snap in snapshots:
        expected = snap.initial_micros + snap.net_micros
        if snap.balance_micros != expected:
            out.append(
                Finding(
                    Kind.BALANCE_MISMATCH, snap.account_id, snap.currency,
                    snap.balance_micros - expected,
                    detail={"balance_micros": snap.balance_micros,
                            "opening_micros": snap.initial_micros,
                            "topups_micros": snap.topups_micros,
                            "debits_micros": snap.debits_micros,
                            "expected_micros": expected, "as_of": at},
                )
            )  # fmt: skip
        last = snap.last
        if last is not None and snap.net_micros != last.net_micros:
            out.append(
                Finding(
                    Kind.UNEXPLAINED_MOVEMENT, snap.account_id, snap.currency,
                    snap.net_micros - last.net_micros,
                    detail={
                        "movement": "outside the ledger",
                        "explanation": "the account's totals changed after its newest"
                        " journal entry without an entry (a change made outside the"
                        " ledger's scripts)",
                        "after": datetime.fromtimestamp(last.at_ms / 1000, UTC).isoformat(),
                        "after_kind": last.kind, "as_of": at,
                        "balance_change_micros": snap.balance_micros - last.balance_micros,
                    },
                )
            )  # fmt: skip
    return out
