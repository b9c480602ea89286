"""Usage and revenue reports, aggregated in PostgreSQL.

``usage``: one account's calls in a time range by destination group, day, hour of
the day or gateway. ``revenue``: every account's, by destination group, day or
account. Amounts are ``charged_micros`` (what the ledger moved) next to
``cost_micros`` (what the tariff priced): a difference is money not collected
(cut calls, free calls) or corrected. Days and hours are in the invoicing time zone.
By destination, a group of unanswered attempts alone (no answered call, no billed
second, no money) is no row, as it is no invoice line ("Other 0 calls": mediated
attempts are never rated); by day, hour, gateway or account such rows stay (that
traffic happened then, there, for them).
"""

from __future__ import annotations

import csv
import io
import json
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from chargingd.billing.db import BillingDB, Conn
from chargingd.invoicing.build import minutes
from chargingd.invoicing.model import Refused, currency_decimals, money
from chargingd.invoicing.periods import round_half_up_div
from chargingd.invoicing.usage import OTHER, group_arrays

USAGE_KEYS = ("destination", "day", "hour", "gateway")
REVENUE_KEYS = ("destination", "day", "account")

_KEY_SQL = {
    "day": "to_char(start_time AT TIME ZONE %(tz)s, 'YYYY-MM-DD')",
    "hour": "to_char(start_time AT TIME ZONE %(tz)s, 'HH24') || ':00'",
    "gateway": "gateway",
    "account": "account_id",
    "destination": "destination",
}

_REPORT = """
WITH rows AS (
    SELECT {key} AS key, currency,
           count(*) FILTER (WHERE answer_time IS NOT NULL) AS calls, count(*) AS cdrs,
           sum(billed_s) AS billed_s, sum(cost_micros) AS cost, sum(charged_micros) AS charged
    FROM cdrs
    WHERE start_time >= %(start)s AND start_time < %(end)s AND charge <> 'recorded_only'
      AND (%(account)s::text IS NULL OR account_id = %(account)s)
    GROUP BY 1, 2
), patterns AS (
    SELECT * FROM unnest(%(patterns)s::text[], %(names)s::text[])
        WITH ORDINALITY AS p(pattern, name, ord)
)
SELECT {outer_key}, r.currency, sum(r.calls), sum(r.cdrs), sum(r.billed_s), sum(r.cost),
       sum(r.charged)
FROM rows r
LEFT JOIN LATERAL (
    SELECT p.name FROM patterns p WHERE %(grouped)s AND r.key LIKE p.pattern
    ORDER BY p.ord LIMIT 1
) g ON true
GROUP BY 1, 2
HAVING NOT %(grouped)s OR sum(r.calls) > 0 OR sum(r.billed_s) > 0 OR sum(r.cost) <> 0
    OR sum(r.charged) <> 0
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class ReportRow:
    key: str
    currency: str
    calls: int
    cdrs: int
    billed_s: int
    cost_micros: int
    charged_micros: int

    def to_json(self) -> dict[str, Any]:
        # Rounded half away from zero to the micro-unit, as every other figure (a floor
        # showed 0.13 EUR over 1.5 min as 0.086666, and floored refunds away from 0).
        per_minute = (
            round_half_up_div(self.charged_micros * 60, self.billed_s) if self.billed_s else 0
        )
        return {
            "key": self.key,
            "currency": self.currency,
            "calls": self.calls,
            "cdrs": self.cdrs,
            "minutes": str(minutes(self.billed_s)),
            "rated": money(self.cost_micros, currency_decimals(self.currency)),
            "charged": money(self.charged_micros, currency_decimals(self.currency)),
            "charged_per_minute": money(per_minute, 4),
        }


def parse_day(text: str, time_zone: str, *, end: bool = False) -> datetime:
    """YYYY-MM-DD (midnight in the zone; an end day is included) or an ISO date-time."""
    zone = zoneinfo.ZoneInfo(time_zone)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime(day.year, day.month, day.day, tzinfo=zone)
            return moment + timedelta(days=1) if end else moment
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise Refused(f"not a date: {text!r} (YYYY-MM-DD or ISO 8601)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=zone)


async def report(
    db: BillingDB,
    *,
    by: str,
    start: datetime,
    end: datetime,
    time_zone: str,
    groups: Mapping[str, Sequence[str]],
    account_id: str | None = None,
) -> list[ReportRow]:
    """Aggregate the CDRs started in [start, end) by ``by``."""
    if by not in _KEY_SQL:
        raise Refused(f"--by must be one of {', '.join(sorted(_KEY_SQL))}")
    if end <= start:
        raise Refused("--to must be after --from")
    patterns, names = group_arrays(groups)
    grouped = by == "destination"
    outer = "coalesce(g.name, nullif(r.key, ''), %(other)s)" if grouped else "r.key"
    sql = _REPORT.format(key=_KEY_SQL[by], outer_key=outer)
    params = {
        "start": start, "end": end, "account": account_id, "tz": time_zone,
        "patterns": patterns, "names": names, "grouped": grouped, "other": OTHER,
    }  # fmt: skip

    async def work(conn: Conn) -> list[ReportRow]:
        cur = await conn.execute(sql.encode(), params)
        return [
            ReportRow(str(k), c, int(a), int(n), int(b), int(cost), int(ch))
            for k, c, a, n, b, cost, ch in await cur.fetchall()
        ]

    result: list[ReportRow] = await db.run(work)
    return result


def render(rows: Sequence[ReportRow], by: str, fmt: str) -> str:
    """The report as a table, CSV or JSON."""
    data = [r.to_json() for r in rows]
    if fmt == "json":
        return json.dumps({"by": by, "rows": data}, indent=2)
    columns = ["key", "currency", "calls", "minutes", "rated", "charged", "charged_per_minute"]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([by if c == "key" else c for c in columns])
        writer.writerows([[d[c] for c in columns] for d in data])
        return out.getvalue()
    header = [by, "cur", "calls", "minutes", "rated", "charged", "per min"]
    widths = [max(24, *(len(d["key"]) for d in data)) if data else 24, 4, 9, 12, 14, 14, 10]
    lines = [_text_row(header, widths)]
    lines += [_text_row([str(d[c]) for c in columns], widths) for d in data]
    totals = _totals(rows)
    lines.append(f"total: {totals}")
    return "\n".join(lines) + "\n"


def _text_row(cells: Sequence[str], widths: Sequence[int]) -> str:
    """Key and currency left-aligned, figures right-aligned."""
    return "  ".join(
        v.ljust(w) if i < 2 else v.rjust(w)
        for i, (v, w) in enumerate(zip(cells, widths, strict=True))
    ).rstrip()


def _totals(rows: Sequence[ReportRow]) -> str:
    per: dict[str, list[int]] = {}
    for r in rows:
        t = per.setdefault(r.currency, [0, 0, 0])
        t[0] += r.calls
        t[1] += r.billed_s
        t[2] += r.charged_micros
    if not per:
        return "no calls"
    return "; ".join(
        f"{calls} calls, {minutes(billed)} min,"
        f" {money(charged, currency_decimals(cur))} {cur} charged"
        for cur, (calls, billed, charged) in sorted(per.items())
    )
