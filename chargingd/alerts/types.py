"""The alert types: severities, one incident as stored, what a raise did."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from typing import Any

KIND = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+){0,4}")  # "fraud.velocity", "kpi.asr"
MAX_KEY = 200
MAX_SUMMARY = 500
MAX_CALL = 256
MAX_DETAILS_JSON = 8192


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class AlertError(ValueError):
    """A raise with a bad kind, key, summary or details: nothing was recorded."""

    code = "invalid_alert"


@dataclass(frozen=True)
class Raised:
    """What one raise did: opened a new incident, or counted one more occurrence."""

    incident_id: str
    opened: bool
    count: int


@dataclass(frozen=True)
class Incident:
    """One incident: every raise of its key within the dedup window, counted.

    ``state``: "open" (raised within the window), "quiet" (the window passed with no
    raise; the next raise opens a new incident) or "resolved" (closed by an operator
    or by the part that raised it).
    """

    id: str  # the stream id of its "opened" entry ("1767225600000-0")
    key: str
    kind: str
    severity: Severity
    summary: str
    details: dict[str, Any]
    first_ms: int
    last_ms: int
    count: int
    calls: tuple[str, ...] = ()  # the first triggering calls (at most calls_kept)
    state: str = "open"
    closed: dict[str, str] = field(default_factory=dict)  # why, by, note when closed

    def as_json(self) -> dict[str, Any]:
        """The incident as the webhook and `ctl` print it."""
        return {
            "id": self.id,
            "incident": self.key,
            "kind": self.kind,
            "severity": str(self.severity),
            "summary": self.summary,
            "details": self.details,
            "first_ms": self.first_ms,
            "last_ms": self.last_ms,
            "count": self.count,
            "calls": list(self.calls),
            "state": self.state,
            "closed": self.closed,
        }
