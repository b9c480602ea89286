"""Usage from the CDRs, aggregated in PostgreSQL (GROUP BY over indexed CDRs).

A destination group is the tariff's destination id the call was rated with (the
CDR's ``destination``), mapped through ``[invoicing] destination_groups`` (patterns
with "*", first match wins); an id no pattern matches is its own group and a CDR
without one is "Other". The mapping is applied in SQL to the per-destination sums.
Amounts are the CDRs' ``charged_micros``: what the ledger moved for each call. A
``recorded_only`` CDR is a second record of a call charged live (a mediated echo): it
is never counted twice.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from chargingd.billing.db import Conn
from chargingd.invoicing.build import Correction, Rerate
from chargingd.invoicing.model import UsageRow

OTHER = "Other"

# Sums per destination first (one pass over the period's CDRs), then per group:
# the pattern match runs once per distinct destination, not once per call.
_USAGE = """
WITH per_destination AS (
    SELECT account_id, currency, destination,
           count(*) FILTER (WHERE answer_time IS NOT NULL) AS calls, count(*) AS cdrs,
           sum(billed_s) AS billed_s, sum(charged_micros) AS charged
    FROM cdrs
    WHERE start_time >= %(start)s AND start_time < %(end)s AND charge <> 'recorded_only'
      AND (%(accounts)s::text[] IS NULL OR account_id = ANY(%(accounts)s::text[]))
    GROUP BY account_id, currency, destination
), patterns AS (
    SELECT * FROM unnest(%(patterns)s::text[], %(names)s::text[])
        WITH ORDINALITY AS p(pattern, name, ord)
)
SELECT d.account_id, d.currency, coalesce(g.name, nullif(d.destination, ''), %(other)s),
       sum(d.calls), sum(d.cdrs), sum(d.billed_s), sum(d.charged)
FROM per_destination d
LEFT JOIN LATERAL (
    SELECT p.name FROM patterns p WHERE d.destination LIKE p.pattern ORDER BY p.ord LIMIT 1
) g ON true
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""

_USAGE_OF_STAGE = _USAGE.replace("FROM cdrs", "FROM invoice_call_stage")
assert _USAGE_OF_STAGE != _USAGE


def like_pattern(glob: str) -> str:
    """A destination pattern ("DE_MOB*") as a LIKE pattern (only * is special)."""
    escaped = glob.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%")


def group_arrays(groups: Mapping[str, Sequence[str]]) -> tuple[list[str], list[str]]:
    """The configured groups as parallel (pattern, name) arrays, in order."""
    patterns: list[str] = []
    names: list[str] = []
    for name, globs in groups.items():
        for glob in globs:
            patterns.append(like_pattern(glob))
            names.append(name)
    return patterns, names


def group_of(destination: str, groups: Mapping[str, Sequence[str]]) -> str:
    """The group of one destination id, by the same rule as the SQL (display only)."""
    for name, globs in groups.items():
        for glob in globs:
            if re.fullmatch(".*".join(re.escape(part) for part in glob.split("*")), destination):
                return name
    return destination or OTHER


AccountUsage = dict[tuple[str, str], list[UsageRow]]  # (account, currency) -> rows


async def usage_by_group(
    conn: Conn,
    start: datetime,
    end: datetime,
    groups: Mapping[str, Sequence[str]],
    *,
    account_ids: Sequence[str] | None = None,
    staged: bool = False,
) -> AccountUsage:
    """Usage of the CDRs started in [start, end), per account, currency and group;
    ``staged``: of the CDRs an issuing transaction staged (cdrs.stage_calls), the
    calls its documents keep."""
    patterns, names = group_arrays(groups)
    params: dict[str, Any] = {
        "start": start,
        "end": end,
        "accounts": None if account_ids is None else list(account_ids),
        "patterns": patterns,
        "names": names,
        "other": OTHER,
    }
    cur = await conn.execute(_USAGE if not staged else _USAGE_OF_STAGE, params)
    found: AccountUsage = {}
    for account_id, currency, group, calls, cdrs, billed_s, charged in await cur.fetchall():
        row = UsageRow(group, int(calls), int(cdrs), int(billed_s), int(charged))
        found.setdefault((account_id, currency), []).append(row)
    return found


# Earlier periods these accounts were billed for, and what their CDRs hold now, in the
# currency they were billed in (CDRs in another one are the run's errors, never billed).
# A period a run issued no invoice for ("nothing to bill", "zero amount") counts what
# that run counted (uninvoiced_periods), until an invoice of the period is issued: a
# call of it stored later was never billed, and is billed as a correction too.
#
# The last late_usage_periods periods (ending after %(since)s) are re-counted in full at
# every run. An older one is re-counted when a month it overlaps changed since the
# account's last check (late_usage_checks: the snapshot of the last run that counted
# everything it saw; a month records the transaction of its last change, migration 014),
# or when the account has no check yet (once, in full): a late Stop, a mediated file or
# a rerate of a period a year old is billed like one of last month, never dropped.
_RECOUNT = """
WITH billed AS (
    SELECT u.account_id, u.period, i.currency, u.period_start, u.period_end, u.calls,
           u.charged_micros
    FROM invoice_usage u JOIN invoices i ON i.id = u.invoice_id
    WHERE u.account_id = ANY(%(accounts)s) AND u.period_end <= %(before)s
    UNION ALL
    SELECT s.account_id, s.period, s.currency, s.period_start, s.period_end, s.calls,
           s.charged_micros
    FROM uninvoiced_periods s
    WHERE s.account_id = ANY(%(accounts)s) AND s.period_end <= %(before)s
      AND NOT EXISTS (SELECT 1 FROM invoices i WHERE i.account_id = s.account_id
                      AND i.period = s.period AND i.kind <> 'credit_note')
), counted AS (
    SELECT account_id, period, currency, min(period_start) AS ps, max(period_end) AS pe,
           sum(calls) AS calls, sum(charged_micros) AS charged
    FROM billed
    GROUP BY account_id, period, currency
), due AS (
    SELECT c.* FROM counted c
    LEFT JOIN late_usage_checks k ON k.account_id = c.account_id AND k.currency = c.currency
    WHERE c.pe > %(since)s OR k.snapshot IS NULL
       -- A snapshot of another history (the database restored from a dump: its
       -- transaction ids started again) proves nothing: re-count in full.
       OR pg_snapshot_xmax(k.snapshot) > pg_snapshot_xmax(pg_current_snapshot())
       OR EXISTS (
        SELECT 1 FROM usage_periods m
        WHERE m.account_id = c.account_id AND m.currency = c.currency
          AND m.period >= to_char(c.ps AT TIME ZONE 'UTC', 'YYYY-MM')
          AND m.period <= to_char((c.pe - interval '1 microsecond') AT TIME ZONE 'UTC',
                                  'YYYY-MM')
          AND m.changed_xid IS NOT NULL
          AND NOT pg_visible_in_snapshot(m.changed_xid, k.snapshot))
)
SELECT c.account_id, c.period, c.ps, c.pe, n.calls - c.calls, n.charged - c.charged
FROM due c
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE answer_time IS NOT NULL) AS calls,
           coalesce(sum(charged_micros), 0) AS charged
    FROM cdrs
    WHERE account_id = c.account_id AND start_time >= c.ps AND start_time < c.pe
      AND currency = c.currency AND charge <> 'recorded_only'
) n
WHERE n.charged <> c.charged OR n.calls <> c.calls
ORDER BY 1, 2
"""


async def corrections(
    conn: Conn, account_ids: Sequence[str], before: datetime, since: datetime
) -> dict[str, list[Correction]]:
    """Per account: billed periods ending before ``before`` whose CDRs changed since
    they were counted: those ending after ``since`` re-counted in full, older ones when
    their usage changed since the account's last check (record_checks)."""
    if not account_ids:
        return {}
    params = {"accounts": list(account_ids), "before": before, "since": since}
    cur = await conn.execute(_RECOUNT, params)
    found: dict[str, list[Correction]] = {}
    for account_id, period, start, end, calls, charged in await cur.fetchall():
        found.setdefault(account_id, []).append(
            Correction(period, start, end, int(calls), int(charged))
        )
    return found


async def counted_after(conn: Conn, account_ids: Sequence[str], end: datetime) -> set[str]:
    """Accounts with a period counted that ends after ``end``: a run of an earlier period
    (a back-run) re-counts only periods before its own, so it is no check of theirs."""
    if not account_ids:
        return set()
    cur = await conn.execute(
        "SELECT account_id FROM invoice_usage WHERE account_id = ANY(%(ids)s)"
        " AND period_end > %(end)s"
        " UNION SELECT account_id FROM uninvoiced_periods WHERE account_id = ANY(%(ids)s)"
        " AND period_end > %(end)s",
        {"ids": list(account_ids), "end": end},
    )
    return {row[0] for row in await cur.fetchall()}


async def record_checks(conn: Conn, rows: Sequence[tuple[str, str, str]]) -> None:
    """(account, currency, snapshot): every change of the account's usage that this
    snapshot sees is counted by a committed document (or needed no correction), so the
    next re-count of its older periods starts from there. Only for an account whose
    corrections this transaction billed, or that had none."""
    if not rows:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO late_usage_checks (account_id, currency, snapshot)"
            " VALUES (%s, %s, %s::pg_snapshot)"
            " ON CONFLICT (account_id, currency) DO UPDATE SET snapshot = EXCLUDED.snapshot,"
            " checked_at = now()",
            rows,
        )


async def open_rerates(
    conn: Conn, account_ids: Sequence[str], end: datetime
) -> dict[str, list[Rerate]]:
    """Rerate adjustments the ledger applied before ``end`` and no invoice billed yet."""
    cur = await conn.execute(
        "SELECT r.run_id, r.account_id, r.currency, r.cdrs, r.amount_micros"
        " FROM rerate_adjustments r"
        " WHERE r.account_id = ANY(%s) AND r.applied_at IS NOT NULL AND r.applied_at < %s"
        " AND NOT EXISTS (SELECT 1 FROM invoiced_rerates i WHERE i.run_id = r.run_id"
        "   AND i.account_id = r.account_id AND i.currency = r.currency)"
        " ORDER BY r.run_id",
        (list(account_ids), end),
    )
    found: dict[str, list[Rerate]] = {}
    for run_id, account_id, currency, cdrs, amount in await cur.fetchall():
        found.setdefault(account_id, []).append(
            Rerate(run_id, account_id, currency, int(cdrs), int(amount))
        )
    return found


async def record_uninvoiced(
    conn: Conn, rows: Sequence[tuple[str, str, datetime, datetime, str, int, int, str, str]]
) -> None:
    """Periods a run issued no invoice for: (account, period, start, end, currency,
    calls, charged, reason, run id), with the usage it counted (re-counted later)."""
    if not rows:
        return
    async with conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO uninvoiced_periods (account_id, period, period_start, period_end,"
            " currency, calls, charged_micros, reason, run_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (account_id, period) DO UPDATE SET period_start ="
            " EXCLUDED.period_start, period_end = EXCLUDED.period_end, currency ="
            " EXCLUDED.currency, calls = EXCLUDED.calls, charged_micros ="
            " EXCLUDED.charged_micros, reason = EXCLUDED.reason, run_id = EXCLUDED.run_id,"
            " recorded_at = now()",
            rows,
        )


async def billed_as_correction(conn: Conn, period: str, account_ids: Sequence[str]) -> set[str]:
    """Accounts whose usage of ``period`` a later invoice already billed as a correction
    (the period had no invoice of its own): an invoice of it now would bill it twice."""
    cur = await conn.execute(
        "SELECT DISTINCT u.account_id FROM invoice_usage u JOIN invoices i ON i.id = u.invoice_id"
        " WHERE u.period = %s AND i.period <> u.period AND u.account_id = ANY(%s)",
        (period, list(account_ids)),
    )
    return {row[0] for row in await cur.fetchall()}
