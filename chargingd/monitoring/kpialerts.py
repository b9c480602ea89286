"""KPI alert rules: thresholds on the KPI windows, raised into the shared alert stream.

Each rule (``[[monitoring.alerts]]``) is evaluated every ``EVALUATE_EVERY_S`` by the
main process, over the last ``window_s`` of the windows in Redis (so every daemon's
calls count), for one group or every group of a dimension that had at least
``min_attempts`` attempts. While its condition holds, the rule raises
``kpi.<figure>`` with the incident key ``kpi:<rule>:<dimension>:<group>`` through
chargingd.alerts (one incident per key: a log line, the alert stream, the webhook;
repeated raises only count); when the condition no longer holds the incident is
resolved, so the next breach opens a new one (also one opened before a restart, or
by another daemon). Several daemons evaluating the same rule raise the same key: one
incident.
"""

from __future__ import annotations

import logging
from typing import Any

from chargingd.alerts import Alerts
from chargingd.core.config.monitoring import KpiAlertRule
from chargingd.monitoring.kpi import figures
from chargingd.monitoring.windows import Group, KpiStore, resolution_for

log = logging.getLogger("chargingd.monitoring")

EVALUATE_EVERY_S = 10.0


class KpiAlerts:
    """Evaluates the rules against the windows; raises and resolves incidents."""

    def __init__(self, rules: tuple[KpiAlertRule, ...], store: KpiStore, alerts: Alerts) -> None:
        self.rules = rules
        self.store = store
        self.alerts = alerts
        self.raised: set[str] = set()  # incident keys this process holds open
        # Keys this process has judged: the first judgement within the threshold also
        # resolves an incident some other process opened (this daemon before its
        # restart, another daemon): one no-op script call per key and process.
        self.judged: set[str] = set()
        self.evaluations = 0

    async def evaluate(self) -> list[str]:
        """One pass over every rule; returns the incident keys in breach now."""
        breaching: list[str] = []
        for rule in self.rules:
            res, buckets = resolution_for(rule.window_s)
            sums = await self.store.read(res, buckets=buckets)
            for group, fig in _candidates(rule, sums).items():
                key = f"kpi:{rule.name}:{group[0]}:{group[1]}"
                if _breached(rule, fig):
                    breaching.append(key)
                    await self._raise(rule, key, group, fig)
                elif key in self.raised or key not in self.judged:
                    self.raised.discard(key)
                    await self.alerts.resolve(key, who="kpi", why="back within the threshold")
                self.judged.add(key)
        self.evaluations += 1
        return breaching

    async def _raise(self, rule: KpiAlertRule, key: str, group: Group, fig: dict[str, Any]) -> None:
        value = fig[rule.kpi]
        bound = f"below {rule.below:g}" if rule.below is not None else f"above {rule.above:g}"
        summary = (
            f"{rule.kpi} of {group[0]} {group[1]} is {value:g} ({bound}) over the last "
            f"{rule.window_s} s, {fig['attempts']} attempts"
        )
        details = {
            "rule": rule.name,
            "kpi": rule.kpi,
            "value": value,
            "threshold": rule.below if rule.below is not None else rule.above,
            "dimension": group[0],
            "group": group[1],
            "window_s": rule.window_s,
            "attempts": fig["attempts"],
            "answered": fig["answered"],
        }
        await self.alerts.raise_alert(
            f"kpi.{_kind(rule.kpi)}",
            severity=rule.severity,
            incident=key,
            summary=summary,
            details=details,
        )
        self.raised.add(key)


def _kind(kpi: str) -> str:
    """ "acd_s" -> "acd": the alert kind is dotted lower case letters."""
    return kpi.split("_", 1)[0]


def _candidates(rule: KpiAlertRule, sums: dict[Group, dict[str, int]]) -> dict[Group, Any]:
    """The groups the rule judges, with their figures (counts always, ratios always:
    the rule's own min_attempts stands for the minimum sample count)."""
    if rule.group:
        groups = [(rule.dimension, rule.group)]
    else:
        groups = [g for g in sums if g[0] == rule.dimension]
    out: dict[Group, Any] = {}
    for group in groups:
        fig = figures(sums.get(group, {}), min_samples=1)
        if fig["attempts"] >= rule.min_attempts:
            out[group] = fig
    return out


def _breached(rule: KpiAlertRule, fig: dict[str, Any]) -> bool:
    value = fig.get(rule.kpi)
    if value is None:  # e.g. ACD with no answered call: nothing to judge
        return False
    if rule.below is not None and value < rule.below:
        return True
    return rule.above is not None and value > rule.above
