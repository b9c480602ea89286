"""A run on the terminal, as JSON or as CSV (findings only). Money is a decimal string
(and its exact micro-units in JSON and CSV)."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from chargingd.assurance.model import Finding, Kind, Run
from chargingd.core.currencies import minor_unit
from chargingd.core.money import format_amount

_DETAIL_KEYS = (
    "problems", "explanation", "where", "caller", "callee", "start", "switch_duration_s",
    "live_duration_s", "charged_micros", "moved_micros", "held_micros", "elapsed_s", "period",
)  # fmt: skip


def money(micros: int, currency: str = "") -> str:
    """At least the decimals of the currency's minor unit (2 when not given), more
    where the amount has them: findings are exact, to the micro-unit."""
    return format_amount(micros, minor_unit(currency))


def finding_json(f: Finding) -> dict[str, Any]:
    return {
        "kind": f.kind.value,
        "account": f.account_id,
        "currency": f.currency,
        "money": money(f.money_micros, f.currency),
        "money_micros": f.money_micros,
        "source": f.source,
        "call_id": f.call_id,
        "matched_by": f.matched_by,
        "detail": f.detail,
    }


def run_json(run: Run, *, findings: bool = True) -> dict[str, Any]:
    s = run.summary
    out: dict[str, Any] = {
        "run_id": run.run_id,
        "started_at": run.started_at.isoformat(),
        "finished_at": run.finished_at.isoformat(),
        "from": run.start.isoformat(),
        "to": run.end.isoformat(),
        "source": run.source,
        "account": run.account_id,
        "params": run.params,
        "counts": s.counts,
        "matching": s.matching,
        "money": {k: {c: money(m, c) for c, m in per.items()} for k, per in s.money.items()},
        "leakage": {c: money(m, c) for c, m in s.leakage.items()},
        "over_threshold": run.over_threshold,
        "findings_kept": run.findings_kept,
        "created_by": run.created_by,
    }
    if findings:
        out["findings"] = [finding_json(f) for f in run.findings]
    return out


def as_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False)


def findings_csv(run: Run) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("run_id", "kind", "account", "currency", "money", "money_micros", "source",
                "call_id", "matched_by", "detail"))  # fmt: skip
    for f in run.findings:
        w.writerow((run.run_id, f.kind.value, f.account_id, f.currency,
                    money(f.money_micros, f.currency),
                    f.money_micros, f.source, f.call_id, f.matched_by,
                    json.dumps(f.detail, sort_keys=True, separators=(",", ":"))))  # fmt: skip
    return buf.getvalue()


def _short(detail: dict[str, Any]) -> str:
    parts = []
    for key in _DETAIL_KEYS:
        if key in detail and detail[key] not in ("", None, []):
            value = detail[key]
            text = "; ".join(value) if isinstance(value, list) else str(value)
            parts.append(text if key in ("problems", "explanation", "where") else f"{key}={text}")
    return ", ".join(parts)


def text(run: Run, *, findings: bool = True) -> str:
    s = run.summary
    scope = f"source {run.source}" if run.source else "every source"
    scope += f", account {run.account_id}" if run.account_id else ", every account"
    lines = [
        f"assurance run {run.run_id}: {run.start.isoformat()} .. {run.end.isoformat()}"
        f" ({scope}); checks: {', '.join(run.params.get('checks', []))}",
    ]
    if s.matching:
        m = s.matching
        lines.append(
            f"calls: {m.get('switch_calls', 0)} on the switches, {m.get('live_calls', 0)} live;"
            f" matched {m.get('matched_by_id', 0)} by id,"
            f" {m.get('matched_by_caller_callee_start', 0)} by caller+callee+start"
            + (
                f", {m['matched_by_callee_start_no_caller_id']} by callee+start (no caller ID)"
                if m.get("matched_by_callee_start_no_caller_id")
                else ""
            )
        )
    lines.append(f"{'KIND':<24}{'FOUND':>7}  MONEY")
    for kind in Kind:
        count = s.counts.get(kind.value, 0)
        per = s.money.get(kind.value, {})
        amounts = ", ".join(f"{money(v, c)} {c}" for c, v in sorted(per.items())) or "-"
        lines.append(f"{kind.value:<24}{count:>7}  {amounts}")
    leak = ", ".join(f"{money(v, c)} {c}" for c, v in sorted(s.leakage.items())) or "none"
    state = "OVER THE THRESHOLD" if run.over_threshold else "within the threshold"
    lines.append(f"leakage: {leak} ({state})")
    if findings and run.findings:
        lines.append("")
        for f in run.findings:
            ref = f"{f.source}:{f.call_id}" if f.source else f.call_id
            how = f" [{f.matched_by}]" if f.matched_by else ""
            lines.append(
                f"{f.kind.value:<24}{f.account_id:<16}{money(f.money_micros, f.currency):>12}"
                f" {f.currency:<4}"
                f" {ref}{how} {_short(f.detail)}".rstrip()
            )
        if run.findings_kept < sum(s.counts.values()):
            lines.append(f"(first {run.findings_kept} findings kept; every one is counted)")
    return "\n".join(lines)


def run_list(runs: list[Run]) -> str:
    lines = [f"{'RUN':>6}  {'STARTED':<25} {'FROM':<25} {'TO':<25} FINDINGS  LEAKAGE"]
    for r in runs:
        leak = ", ".join(f"{money(v, c)} {c}" for c, v in sorted(r.summary.leakage.items())) or "-"
        flag = " OVER" if r.over_threshold else ""
        lines.append(
            f"{r.run_id:>6}  {r.started_at.isoformat(timespec='seconds'):<25}"
            f" {r.start.isoformat():<25} {r.end.isoformat():<25}"
            f" {sum(r.summary.counts.values()):>8}  {leak}{flag}"
        )
    return "\n".join(lines)
