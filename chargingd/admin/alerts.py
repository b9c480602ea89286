"""Admin-socket methods of the alert stream: alert.list and alert.resolve. Used by
AdminMethods (a mixin: the handlers share its Params and its error boundary);
`chargingd ctl alerts` (admin/ctl_alerts.py) and `ctl fraud alerts` call them.
"""

from __future__ import annotations

from typing import Any, Protocol

from chargingd.admin.rpc import NOT_FOUND
from chargingd.alerts import Alerts

LIST_MAX = 1000

_WRITE = frozenset({"operator", "reason"})
ALERT_METHODS: dict[str, tuple[str, frozenset[str]]] = {
    "alert.list": ("alert_list", frozenset({"since_ms", "kind", "limit"})),
    "alert.resolve": ("alert_resolve", _WRITE | {"incident"}),
}
ALERT_READ_ONLY = frozenset({"alert.list"})


class AlertMethodError(Exception):
    """A refusal of an alert method; ``rpc_code`` is its JSON-RPC error code."""

    rpc_code = -32602  # invalid params


class NoAlerts(AlertMethodError):
    """This process has no alert stream wired (a bare admin server)."""

    rpc_code = -32600  # invalid request


class NoIncident(AlertMethodError):
    """alert.resolve of a key with no open incident."""

    rpc_code = NOT_FOUND


class Params(Protocol):
    """The parameter getters of params.Params that these handlers use."""

    def text(self, name: str, default: str | None = None) -> str: ...

    def integer(
        self, name: str, default: int | None = None, *, lo: int = 0, hi: int = 1 << 31
    ) -> int: ...


class AlertMethods:
    """The alert handlers of the admin socket (mixed into AdminMethods)."""

    alerts: Alerts | None = None

    def _alert_stream(self) -> Alerts:
        if self.alerts is None:
            raise NoAlerts("no alert stream in this process")
        return self.alerts

    async def alert_list(self, p: Params, who: str) -> dict[str, Any]:
        """Incidents opened, counted or resolved since ``since_ms`` (epoch ms), newest
        first (AlertStore.incidents)."""
        incidents = await self._alert_stream().incidents(
            since_ms=p.integer("since_ms", 0, hi=1 << 62),
            kind_prefix=p.text("kind", ""),
            limit=p.integer("limit", 100, lo=1, hi=LIST_MAX),
        )
        return {"incidents": [i.as_json() for i in incidents]}

    async def alert_resolve(self, p: Params, who: str) -> dict[str, Any]:
        """Close an open incident (NoIncident when none is open under that key)."""
        key = p.text("incident")
        incident = await self._alert_stream().resolve(key, who=who, why=p.text("reason", ""))
        if incident is None:
            raise NoIncident(f"no open incident {key!r}")
        return {"incident": incident.as_json()}
