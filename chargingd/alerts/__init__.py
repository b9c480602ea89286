"""Alerts: one alert stream for every part that raises them (fraud rules, KPI
thresholds, revenue assurance), incidents deduplicated with counts and the calls that
triggered them, a log line and an optional webhook per new incident.

See docs/alerts.md. Others use ``Alerts`` (raise_alert / raise_soon / resolve /
incidents), ``Severity``, ``Incident``, ``Raised`` and ``AlertError``; the app's
factory builds the one instance of a process (``build_alerts``).
"""

from chargingd.alerts.alerts import Alerts
from chargingd.alerts.build import build_alerts
from chargingd.alerts.types import AlertError, Incident, Raised, Severity
from chargingd.alerts.webhook import WebhookSender

__all__ = [
    "AlertError",
    "Alerts",
    "Incident",
    "Raised",
    "Severity",
    "WebhookSender",
    "build_alerts",
]
