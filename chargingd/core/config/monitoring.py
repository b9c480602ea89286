"""``[monitoring]`` and ``[http]``: metrics, call-quality KPIs and the HTTP endpoint.

Loaded by chargingd.core.config; nothing here does I/O. docs/monitoring.md says
what each option does to the figures.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

KPI_WINDOWS = ("5m", "1h", "24h")
DIMENSIONS = ("gateway", "destination")


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
