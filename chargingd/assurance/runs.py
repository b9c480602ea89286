"""Stored runs: each `chargingd assure` run with its period, parameters, counts, money
per kind and findings (tables assurance_runs, assurance_findings), listed and shown
again as they were."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from chargingd.assurance.model import Finding, Kind, Run, RunParams, Summary
from chargingd.billing.db import BillingDB, Conn

_FINDING_COLUMNS = (
    "run_id, seq, kind, account_id, currency, money_micros, source, call_id, matched_by, detail"
)
_RUN_COLUMNS = (
    "run_id, started_at, finished_at, from_time, to_time, source, account_id, params, counts,"
    " money, leakage, over_threshold, findings_kept, created_by"
)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


async def store(
    db: BillingDB,
    params: RunParams,
    *,
    summary: Summary,
    findings: Sequence[Finding],
    checks: Sequence[str],
    started_at: datetime,
    finished_at: datetime,
    who: str,
) -> Run:
    """Store a run and its first ``max_findings`` findings; the stored Run."""
    kept = list(findings[: params.max_findings])
    counts = {"findings": summary.counts, "matching": summary.matching}
    stored_params = params.as_json() | {"checks": list(checks)}
    over = summary.over(params.leakage_threshold_micros)

    async def work(conn: Conn) -> int:
        cur = await conn.execute(
            "INSERT INTO assurance_runs (started_at, finished_at, from_time, to_time, source,"
            " account_id, params, counts, money, leakage, over_threshold, findings_kept,"
            " created_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " RETURNING run_id",
            (started_at, finished_at, params.start, params.end, params.source, params.account_id,
             _json(stored_params), _json(counts), _json(summary.money), _json(summary.leakage),
             over, len(kept), who),
        )  # fmt: skip
        row = await cur.fetchone()
        assert row is not None
        run_id = int(row[0])
        statement = f"COPY assurance_findings ({_FINDING_COLUMNS}) FROM STDIN"
        async with conn.cursor() as c, c.copy(statement) as copy:
            for seq, f in enumerate(kept, start=1):
                await copy.write_row(
                    (run_id, seq, f.kind.value, f.account_id, f.currency, f.money_micros,
                     f.source, f.call_id, f.matched_by, _json(f.detail))
                )  # fmt: skip
        return run_id

    run_id: int = await db.run(work)
    return Run(
        run_id, started_at, finished_at, params.start, params.end, params.source,
        params.account_id, stored_params, summary, over, len(kept), who, tuple(kept),
    )  # fmt: skip


def _run(row: tuple[Any, ...], findings: tuple[Finding, ...] = ()) -> Run:
    (run_id, started, finished, start, end, source, account, params, counts, money, leakage,
     over, kept, who) = row  # fmt: skip
    summary = Summary(
        counts=dict(counts.get("findings", {})),
        money={k: dict(v) for k, v in money.items()},
        leakage=dict(leakage),
        matching=dict(counts.get("matching", {})),
    )
    return Run(int(run_id), started, finished, start, end, source, account, dict(params),
               summary, bool(over), int(kept), who, findings)  # fmt: skip


async def list_runs(db: BillingDB, *, limit: int = 50) -> list[Run]:
    """The newest runs first (without their findings)."""

    async def work(conn: Conn) -> list[Run]:
        cur = await conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM assurance_runs ORDER BY run_id DESC LIMIT %s", (limit,)
        )
        return [_run(row) for row in await cur.fetchall()]

    result: list[Run] = await db.run(work)
    return result


async def show(db: BillingDB, run_id: int) -> Run | None:
    """One stored run with its findings; None when there is no such run."""

    async def work(conn: Conn) -> Run | None:
        cur = await conn.execute(
            f"SELECT {_RUN_COLUMNS} FROM assurance_runs WHERE run_id = %s", (run_id,)
        )
        row = await cur.fetchone()
        if row is None:
            return None
        cur = await conn.execute(
            "SELECT kind, account_id, currency, money_micros, source, call_id, matched_by,"
            " detail FROM assurance_findings WHERE run_id = %s ORDER BY seq",
            (run_id,),
        )
        findings = tuple(
            Finding(Kind(k), a, c, int(m), s, i, h, dict(d))
            for k, a, c, m, s, i, h, d in await cur.fetchall()
        )
        return _run(row, findings)

    result: Run | None = await db.run(work)
    return result
