"""Alerts: raise one, deduplicated into incidents; log line and webhook when one opens.

    alerts.raise_soon("fraud.velocity", severity=Severity.CRITICAL,
                      incident="fraud.velocity:acc42", summary="61 calls in 60 s",
                      details={"account": "acc42"}, call="sid-123")

The first raise of an incident key opens an incident (a stream entry, a log line, a
webhook POST); later raises within the dedup window only count (and keep the first
calls). ``raise_alert`` awaits Redis; ``raise_soon`` returns at once (a background
task, bounded: beyond ``max_pending`` the alert is dropped and counted), for callers
on a request path.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from redis.exceptions import RedisError

from chargingd.alerts.store import AlertStore
from chargingd.alerts.types import (
    KIND,
    MAX_CALL,
    MAX_DETAILS_JSON,
    MAX_KEY,
    MAX_SUMMARY,
    AlertError,
    Incident,
    Raised,
    Severity,
)
from chargingd.alerts.webhook import WebhookSender
from chargingd.core.ratelog import RateLimitedLog

log = logging.getLogger("chargingd.alerts")

_LEVELS = {Severity.INFO: logging.INFO, Severity.WARNING: logging.WARNING}
_FAILED = "raising alerts failed"


class Alerts:
    """One per process: fraud rules, KPI thresholds and assurance raise through it."""

    name = "alerts"

    def __init__(
        self,
        store: AlertStore,
        *,
        webhook: WebhookSender | None = None,
        max_pending: int = 1000,
    ) -> None:
        self.store = store
        self.webhook = webhook
        self.max_pending = max_pending
        self._pending: set[asyncio.Task[Any]] = set()
        self._failures = RateLimitedLog(log)
        self.opened = 0
        self.counted = 0
        self.dropped = 0  # raise_soon beyond max_pending
        self.failed = 0  # Redis refused or was away

    async def raise_alert(
        self,
        kind: str,
        *,
        severity: Severity | str,
        incident: str,
        summary: str = "",
        details: Mapping[str, Any] | None = None,
        call: str = "",
    ) -> Raised:
        """Count one occurrence of ``incident``; open it (log, stream, webhook) if new.

        ``kind`` is dotted lower case ("fraud.velocity", "kpi.asr"); ``incident`` is
        the deduplication key (same key within the window: the same incident);
        ``call`` names the occurrence (a session id) and is kept with the first ones.
        AlertError for a bad argument (nothing recorded); RedisError propagates.
        """
        sev, details_json = _check(kind, severity, incident, summary, details, call)
        now_ms = self.store.clock_ms()
        raised = await self.store.raise_(
            incident,
            kind=kind,
            severity=sev,
            summary=summary,
            details_json=details_json,
            call=call,
            now_ms=now_ms,
        )
        if not raised.opened:
            self.counted += 1
            return raised
        self.opened += 1
        log.log(
            _LEVELS.get(sev, logging.ERROR),
            "alert %s %s incident=%s id=%s: %s %s",
            sev.value,
            kind,
            incident,
            raised.incident_id,
            summary,
            details_json,
        )
        if self.webhook is not None:
            payload = {
                "id": raised.incident_id,
                "incident": incident,
                "kind": kind,
                "severity": sev.value,
                "summary": summary,
                "details": json.loads(details_json),
                "first_ms": now_ms,
                "call": call,
            }
            self.webhook.submit(raised.incident_id, payload)
        return raised

    def raise_soon(
        self,
        kind: str,
        *,
        severity: Severity | str,
        incident: str,
        summary: str = "",
        details: Mapping[str, Any] | None = None,
        call: str = "",
    ) -> bool:
        """raise_alert in the background (never waits); False when dropped.

        Arguments are checked now (AlertError); a Redis failure is logged, rate-limited.
        """
        _check(kind, severity, incident, summary, details, call)
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return False
        coro = self._raise_logged(kind, severity, incident, summary, details, call)
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return True

    async def _raise_logged(
        self,
        kind: str,
        severity: Severity | str,
        incident: str,
        summary: str,
        details: Mapping[str, Any] | None,
        call: str,
    ) -> None:
        try:
            await self.raise_alert(
                kind,
                severity=severity,
                incident=incident,
                summary=summary,
                details=details,
                call=call,
            )
        except (RedisError, OSError) as exc:
            self.failed += 1
            self._failures.failure(_FAILED, exc)
        else:
            self._failures.recovered(_FAILED)

    async def resolve(self, incident: str, *, who: str, why: str = "") -> Incident | None:
        """Close the open incident of this key (the next raise opens a new one)."""
        _check_key(incident)
        return await self.store.resolve(incident, who=who, why=why)

    async def incidents(
        self, *, since_ms: int = 0, kind_prefix: str = "", limit: int = 100
    ) -> list[Incident]:
        """Incidents opened, counted or resolved since ``since_ms`` (of kinds starting
        with ``kind_prefix``), newest first, with their counts and first calls."""
        return await self.store.incidents(since_ms=since_ms, kind_prefix=kind_prefix, limit=limit)

    async def settle(self) -> None:
        """Wait for the background raises started so far (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def counters(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "opened": self.opened,
            "counted": self.counted,
            "dropped": self.dropped,
            "failed": self.failed,
        }
        if self.webhook is not None:
            out["webhook"] = self.webhook.counters()
        return out

    async def start(self) -> None:
        if self.webhook is not None:
            await self.webhook.start()

    async def stop(self) -> None:
        """Finish the raises in flight, then deliver the queued webhooks (with grace)."""
        try:
            await asyncio.wait_for(self.settle(), 5.0)
        except TimeoutError:
            log.warning("alerts still being raised at stop: abandoned")
        if self.webhook is not None:
            await self.webhook.stop()


def _check_key(incident: str) -> None:
    if (
        not isinstance(incident, str)
        or not 0 < len(incident) <= MAX_KEY
        or not incident.isprintable()
        or any(c.isspace() for c in incident)
    ):
        raise AlertError(f"bad incident key {incident!r}: 1-{MAX_KEY} printable, no spaces")


def _check(
    kind: str,
    severity: Severity | str,
    incident: str,
    summary: str,
    details: Mapping[str, Any] | None,
    call: str,
) -> tuple[Severity, str]:
    """The severity and the details as JSON; AlertError for anything malformed."""
    if not isinstance(kind, str) or not KIND.fullmatch(kind):
        raise AlertError(f"bad alert kind {kind!r}: dotted lower case such as fraud.velocity")
    try:
        sev = Severity(severity)
    except ValueError:
        raise AlertError(f"bad severity {severity!r}: info, warning or critical") from None
    _check_key(incident)
    if not isinstance(summary, str) or len(summary) > MAX_SUMMARY:
        raise AlertError(f"summary must be text up to {MAX_SUMMARY} characters")
    if not isinstance(call, str) or len(call) > MAX_CALL or not call.isprintable():
        raise AlertError(f"call must be printable text up to {MAX_CALL} characters")
    try:
        details_json = json.dumps(dict(details or {}), sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise AlertError(f"details must be a JSON object: {exc}") from None
    if len(details_json) > MAX_DETAILS_JSON:
        raise AlertError(f"details too large ({len(details_json)} > {MAX_DETAILS_JSON} bytes)")
    return sev, details_json
