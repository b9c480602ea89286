"""Readable tables (rich) for `chargingd ctl`: one renderer per JSON-RPC method."""

from __future__ import annotations

import datetime
import shutil
import sys
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich's own handling exits 1; `chargingd` (app/cli.py) ends a closed pipe as any
        # Unix tool does (141), whichever write meets it first.
        self.quiet = True
        raise BrokenPipeError


def make_console() -> Console:
    """Stdout console; wide enough off a terminal that pipes and logs are not truncated."""
    if sys.stdout.isatty():
        return _Console()
    return _Console(file=sys.stdout, width=max(shutil.get_terminal_size().columns, 160))


def _ts(ms: Any) -> str:
    if not isinstance(ms, int) or ms <= 0:
        return ""
    when = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%S")


def render_account(console: Console, acc: dict[str, Any]) -> None:
    table = Table(title=f"account {acc['id']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    cur = acc["currency"]
    status = acc["status"] + (f" ({acc['status_reason']})" if acc.get("status_reason") else "")
    rows = [
        ("mode", acc["mode"]),
        ("status", status),
        ("currency", cur),
        ("balance", f"{acc['balance']} {cur}"),
        ("reserved", f"{acc['reserved']} {cur}"),
        ("available", f"{acc['available']} {cur}"),
        ("credit limit", f"{acc['credit_limit']} {cur}"),
        ("tariff", acc["tariff"] or "-"),
        ("max calls", str(acc["max_calls"] or "unlimited")),
        ("live sessions", str(acc["live_sessions"])),
        ("identities", ", ".join(acc["identities"]) or "-"),
        ("top-ups, ever", f"{acc['topups']} {cur}"),
        ("debits, ever", f"{acc['debits']} {cur}"),
        ("created", _ts(acc["created_ms"])),
        ("updated", _ts(acc["updated_ms"])),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def render_list(console: Console, result: dict[str, Any]) -> None:
    table = Table(title="accounts")
    for col in ("id", "mode", "status", "currency", "balance", "reserved", "available"):
        table.add_column(
            col, justify="right" if col in ("balance", "reserved", "available") else "left"
        )
    table.add_column("credit limit", justify="right")
    table.add_column("identities")
    for acc in result["accounts"]:
        table.add_row(
            acc["id"],
            acc["mode"],
            acc["status"],
            acc["currency"],
            acc["balance"],
            acc["reserved"],
            acc["available"],
            acc["credit_limit"],
            ", ".join(acc["identities"]),
        )
    console.print(table)
    if result.get("cursor"):
        console.print(f"more accounts: --cursor {result['cursor']}")


def _change(entry: dict[str, Any]) -> str:
    before, after = entry.get("before") or {}, entry.get("after") or {}
    parts = []
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            parts.append(f"{key}: {before.get(key) or '-'} -> {after.get(key) or '-'}")
    details = entry.get("details") or {}
    parts += [f"{k}={v}".replace("\n", ", ") for k, v in sorted(details.items()) if v != ""]
    return "; ".join(parts)


def render_history(console: Console, result: dict[str, Any]) -> None:
    table = Table(title="history, newest first")
    for col in ("time (UTC)", "who", "what", "why", "change"):
        table.add_column(col)
    for entry in result["entries"]:
        table.add_row(
            _ts(entry["ts_ms"]), entry["who"], entry["what"], entry["why"], _change(entry)
        )
    console.print(table)
    if result.get("next_before"):
        console.print(f"older entries: --before {result['next_before']}")


def render_status(console: Console, status: dict[str, Any]) -> None:
    table = Table(title="chargingd", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key in ("version", "pid", "uptime_s", "config", "admin_socket"):
        table.add_row(key, str(status.get(key, "")))
    for key, value in sorted((status.get("redis") or {}).items()):
        table.add_row(f"redis {key}", str(value))
    for comp, counters in sorted((status.get("components") or {}).items()):
        text = ", ".join(f"{k}={v}" for k, v in sorted(counters.items())) or "-"
        table.add_row(comp, text)
    # The counters docs/fraud.md and docs/alerts.md send operators to (`ctl status`,
    # components fraud and alerts): probes of their own, not in "components".
    for probe in ("alerts", "fraud"):
        counters = status.get(probe)
        if isinstance(counters, dict):
            table.add_row(probe, _flat(counters) or "-")
    # The exporter runs outside serve (`chargingd export`): its group's lag, from Redis.
    backlog = status.get("export_backlog")
    if isinstance(backlog, dict):
        table.add_row("exporter backlog", _flat(backlog) or "-")
    for proc in (status.get("radius") or {}).get("processes", []):
        front = proc.get("frontend", {})
        text = ", ".join(f"{k}={front.get(k, 0)}" for k in ("received", "accepted", "accounted"))
        table.add_row(f"radius {proc.get('role', '')} pid {proc.get('pid', '')}", text)
        dropped = _drops(front, proc.get("drops_by_client") or {})
        if dropped:
            table.add_row("  dropped", dropped)
    diameter = status.get("diameter")
    if isinstance(diameter, dict) and "frontend" in diameter:
        table.add_row("diameter", _diameter_summary(diameter))
    # Where /metrics and the dashboard listen (docs/monitoring.md sends operators here).
    http = status.get("http")
    if isinstance(http, dict):
        table.add_row("http", _flat(http) or "-")
    console.print(table)


def _flat(counters: dict[str, Any], prefix: str = "") -> str:
    """k=v, ... of a probe's counters; a nested dict as parent.k=v (alerts' webhook)."""
    parts = []
    for key, value in sorted(counters.items()):
        if isinstance(value, dict):
            inner = _flat(value, f"{prefix}{key}.")
            if inner:
                parts.append(inner)
        else:
            parts.append(f"{prefix}{key}={value}")
    return ", ".join(parts)


def _diameter_summary(dia: dict[str, Any]) -> str:
    """One line of the Diameter frontend's counters (server.status "diameter")."""
    front, sent = dia.get("frontend") or {}, dia.get("initiated") or {}
    parts = [f"port={dia.get('port', '')}", f"peers_open={dia.get('peers_open', 0)}"]
    # framing_lost: connections closed on a length or version that breaks the stream;
    # unsupported_avp: requests answered 5001 (an M-bit AVP chargingd does not know).
    parts += [
        f"{k}={front.get(k, 0)}"
        for k in ("received", "malformed", "framing_lost", "unsupported_avp", "unknown_peer")
    ]
    parts += [f"{k}={sent.get(k, 0)}" for k in ("asr_confirmed", "asr_failed", "rar_confirmed")]
    parts.append(f"cc_malformed={dia.get('cc_malformed', 0)}")
    parts.append(f"cc_unrated={dia.get('cc_unrated', 0)}")
    parts += [f"late_answers={dia.get('late_answers', 0)}", f"relayed={dia.get('relayed', 0)}"]
    return ", ".join(parts)


# Requests the frontend dropped without an answer: a gateway only sees timeouts.
_DROP_COUNTERS = (
    "missing_message_authenticator",
    "bad_authenticator",
    "unknown_client",
    "malformed",
    "unexpected_code",
    "dropped_overload",
)
_DROP_HINTS = {
    "missing_message_authenticator": (
        "a client that cannot send one (radcli < 1.5, Kamailio) needs "
        "require_message_authenticator = false"
    ),
    "bad_authenticator": "shared secret mismatch",
}


def _drops(front: dict[str, Any], by_client: dict[str, dict[str, int]]) -> str:
    parts = []
    for reason in _DROP_COUNTERS:
        count = front.get(reason, 0)
        if not count:
            continue
        clients = ", ".join(
            f"{name}={reasons[reason]}"
            for name, reasons in sorted(by_client.items())
            if reasons.get(reason)
        )
        text = f"{reason}={count}" + (f" (client {clients})" if clients else "")
        if reason in _DROP_HINTS:
            text += f": {_DROP_HINTS[reason]}"
        parts.append(text)
    return "; ".join(parts)


def render_sessions(console: Console, result: dict[str, Any]) -> None:
    table = Table(title="live sessions")
    for col in ("session", "account", "caller", "callee", "since", "usage_s", "debited", "cut"):
        table.add_column(col)
    for s in result.get("sessions", []):
        table.add_row(
            s["session_id"],
            s["account"],
            s["caller"],
            s["callee"],
            _ts(s.get("answer_ms") or s.get("auth_ms")),
            str(s["usage_s"]),
            s["debited"],
            s["cut_reason"],
        )
    console.print(table)


def render_kill(console: Console, result: dict[str, Any]) -> None:
    if result.get("disconnected"):
        console.print(f"session {result['session_id']}: disconnected")
    else:
        console.print(f"session {result['session_id']}: gateway did not confirm; retrying")


def render_incidents(console: Console, result: dict[str, Any]) -> None:
    table = Table(title="alert incidents, newest first")
    for col in ("opened (UTC)", "last", "severity", "kind", "count", "state", "incident"):
        table.add_column(col, justify="right" if col == "count" else "left")
    table.add_column("summary / first calls")
    for inc in result.get("incidents", []):
        calls = ", ".join(inc.get("calls", [])[:3])
        text = inc["summary"] + (f"\ncalls: {calls}" if calls else "")
        closed = inc.get("closed") or {}
        if closed.get("why") == "resolved":  # who ended it, and why (a KPI rule: no traffic)
            note = f": {closed['note']}" if closed.get("note") else ""
            text += f"\nresolved by {closed.get('by') or '?'}{note}"
        table.add_row(
            _ts(inc["first_ms"]),
            _ts(inc["last_ms"]),
            inc["severity"],
            inc["kind"],
            str(inc["count"]),
            inc["state"],
            inc["incident"],
            text,
        )
    console.print(table)


def render_resolved(console: Console, result: dict[str, Any]) -> None:
    inc = result["incident"]
    console.print(f"incident {inc['incident']} resolved after {inc['count']} occurrences")


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _num(value: Any, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


_STATS_COLUMNS = (
    "group", "attempts", "answered", "ASR", "NER", "ACD", "ALOC", "PDD", "MOS",
    "busy", "no answer", "failed", "refused",
)  # fmt: skip


def render_stats(console: Console, result: dict[str, Any]) -> None:
    """One table per window: the totals, then each group of the chosen dimension."""
    by = result.get("by", "all")
    console.print(
        f"active calls {result.get('active_calls', 0)}; a figure over fewer than "
        f"{result.get('min_samples')} calls shows -"
    )
    if not result.get("kpis", True):
        console.print("KPIs are off ([monitoring] enabled = false)", markup=False)
        return
    for window, dimensions in result.get("windows", {}).items():
        table = Table(title=f"last {window}" + ("" if by == "all" else f", by {by}"))
        for col in _STATS_COLUMNS:
            table.add_column(col, justify="left" if col == "group" else "right")
        rows = [("all", dimensions.get("all", {}).get("all", {}))]
        rows += sorted((dimensions.get(by) or {}).items()) if by != "all" else []
        for group, f in rows:
            table.add_row(
                group,
                str(f.get("attempts", 0)),
                str(f.get("answered", 0)),
                _pct(f.get("asr")),
                _pct(f.get("ner")),
                _num(f.get("acd_s"), " s"),
                _num(f.get("aloc_s"), " s"),
                _num(f.get("pdd_ms"), " ms"),
                _num(f.get("mos")),
                str(f.get("busy", 0)),
                str(f.get("no_answer", 0)),
                str(f.get("failed", 0)),
                str(f.get("refused", 0)),
            )
        console.print(table)


RENDERERS: dict[str, Callable[[Console, Any], None]] = {
    "stats.kpi": render_stats,
    "account.list": render_list,
    "account.history": render_history,
    "server.status": render_status,
    "session.list": render_sessions,
    "session.kill": render_kill,
    "alert.list": render_incidents,
    "alert.resolve": render_resolved,
    **{
        f"account.{m}": render_account
        for m in ("get", "create", "update", "topup", "adjust", "suspend", "resume")
    },
}
