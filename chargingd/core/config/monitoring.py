"""``[monitoring]`` and ``[http]``: metrics, call-quality KPIs and the HTTP endpoint.

Loaded by chargingd.core.config; nothing here does I/O. docs/monitoring.md says
what each option does to the figures.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

KPI_WINDOWS = ("5m", "1h", "24h")
DIMENSIONS = ("gateway", "destination")
# What a KPI alert rule may watch: the figures of monitoring/kpi.py.
ALERT_KPIS = (
    "asr", "ner", "acd_s", "aloc_s", "pdd_ms", "mos", "jitter_ms", "loss_pct",
    "attempts", "answered", "refused",
)  # fmt: skip
SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class KpiAlertRule:
    """``[[monitoring.alerts]]``: raise an alert while a KPI is past a threshold."""

    # The rule's name: the incident key is kpi:NAME:DIMENSION:GROUP.
    name: str = ""
    # One of ALERT_KPIS (ratios 0..1, seconds, milliseconds, percent, counts).
    kpi: str = "asr"
    # "gateway", "destination" or "all"; group "" = every group of the dimension.
    dimension: str = "gateway"
    group: str = ""
    # The window the figure is computed over, seconds: a multiple of 10 s up to
    # 300 s, of 60 s up to 3600 s, or of 900 s up to 86400 s.
    window_s: int = 900
    # Breach when the figure is below (or above) this; exactly one of the two.
    below: float | None = None
    above: float | None = None
    # Only groups with at least this many attempts in the window are judged.
    min_attempts: int = 50
    severity: str = "warning"

    def validate(self) -> None:
        if not self.name or not all(c.isalnum() or c in "-_" for c in self.name):
            raise ValueError("an alert rule needs a name of letters, digits, - and _")
        if self.kpi not in ALERT_KPIS:
            raise ValueError(f"alert {self.name!r}: kpi must be one of {', '.join(ALERT_KPIS)}")
        if self.dimension not in (*DIMENSIONS, "all"):
            raise ValueError(f"alert {self.name!r}: dimension must be gateway, destination or all")
        if (self.below is None) == (self.above is None):
            raise ValueError(f"alert {self.name!r}: set exactly one of below and above")
        if self.min_attempts < 0 or self.severity not in SEVERITIES:
            raise ValueError(
                f"alert {self.name!r}: min_attempts >= 0, severity info, warning or critical"
            )
        ok = (
            (0 < self.window_s <= 300 and self.window_s % 10 == 0)
            or (0 < self.window_s <= 3600 and self.window_s % 60 == 0)
            or (0 < self.window_s <= 86400 and self.window_s % 900 == 0)
        )
        if not ok:
            raise ValueError(
                f"alert {self.name!r}: window_s must be a multiple of 10 up to 300, "
                "of 60 up to 3600, or of 900 up to 86400"
            )


@dataclass(frozen=True)
class MonitoringConfig:
    # Meter requests (counts, latency histograms) and feed the call-quality KPIs.
    # Off: no metering on the request path, no KPI windows, /metrics shows the
    # per-process packet counters only.
    enabled: bool = True
    # A KPI (ASR, NER, ACD, ...) is shown only over at least this many calls.
    min_samples: int = 10
    # Distinct gateways / destination groups kept in the KPI windows; the calls of
    # any further ones are counted under "other" (bounded memory and label count).
    max_groups: int = 200
    # Worker processes send their counters to the main process this often.
    report_interval_s: float = 1.0
    # Live gauges read from Redis (active calls, reserved money) are refreshed this often.
    sample_interval_s: float = 5.0
    # Consumer group of the KPI feeder on cdr:stream (its own, beside the exporter's).
    kpi_group: str = "kpi"
    # KPI alert rules, raised into the shared alert stream ([alerts], docs/alerts.md).
    alerts: tuple[KpiAlertRule, ...] = ()

    def validate(self) -> None:
        if not 1 <= self.min_samples <= 1_000_000:
            raise ValueError("min_samples must be between 1 and 1000000")
        if not 1 <= self.max_groups <= 10_000:
            raise ValueError("max_groups must be between 1 and 10000")
        if not 0.1 <= self.report_interval_s <= 60:
            raise ValueError("report_interval_s must be between 0.1 and 60")
        if not 0.5 <= self.sample_interval_s <= 3600:
            raise ValueError("sample_interval_s must be between 0.5 and 3600")
        if not self.kpi_group:
            raise ValueError("kpi_group must not be empty")
        names = [rule.name for rule in self.alerts]
        if len(set(names)) != len(names):
            raise ValueError("alert rule names must be unique")


@dataclass(frozen=True)
class HttpConfig:
    # Serve /metrics (Prometheus) and the live dashboard from the main process. Off by
    # default: a port is a deployment decision (and two daemons on one host must not
    # both take 9812).
    enabled: bool = False
    bind: str = "127.0.0.1"
    # 0 picks a free port (tests); the log line "HTTP on ..." says which.
    port: int = 9812
    # Required when bind is not a loopback address: clients send it as
    # "Authorization: Bearer TOKEN" (Prometheus' authorization.credentials) or open
    # the dashboard once as /?token=TOKEN (it then lives in a cookie).
    token: str = field(default="", repr=False)
    # Serve the dashboard pages (off: /metrics only).
    dashboard: bool = True

    def validate(self) -> None:
        try:
            address = ipaddress.ip_address(self.bind)
        except ValueError:
            raise ValueError(f"bind {self.bind!r} is not an IP address") from None
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be 0..65535")
        if self.enabled and not address.is_loopback and not self.token:
            raise ValueError(
                "bind is not a loopback address: set token (the dashboard and /metrics "
                "show traffic figures)"
            )
        if self.token and len(self.token) < 16:
            raise ValueError("token must be at least 16 characters")
