"""Live monitoring: Prometheus metrics, call-quality KPIs, the dashboard (docs/monitoring.md).

What others may use:

- ``ProcessMeters`` and ``MeteredCredit``: in-process counting around the ccapi
  contract (the frontends are handed a MeteredCredit; they import nothing from here);
- ``sources``: component counters named as metric samples;
- ``Monitor`` (monitoring/monitor.py): the main process's view (host sums, KPI
  feeder, cluster sampler, /metrics and the dashboard), wired by chargingd.app;
- ``ProcessReporter`` / ``ReportSender`` / ``receive_reports``: how a worker's
  counters reach the main process.
"""

from chargingd.monitoring import sources
from chargingd.monitoring.channel import ReportSender, receive_reports
from chargingd.monitoring.metered import MeteredCredit
from chargingd.monitoring.meters import ProcessMeters
from chargingd.monitoring.reporter import ProcessReporter

__all__ = [
    "MeteredCredit",
    "ProcessMeters",
    "ProcessReporter",
    "ReportSender",
    "receive_reports",
    "sources",
]
