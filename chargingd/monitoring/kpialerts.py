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

An incident whose group is no longer judged (its traffic stopped, or fell below the
rule's ``min_attempts`` in the window) is resolved too, with that reason ("no traffic
in the last 900 s"): it does not stay open until the alert's dedup window ends. A
process resolves the incidents it raised and, read once at its first evaluation, the
open ``kpi.*`` incidents in the stream (raised before a restart or by another daemon).
That a group went silent is itself an alert only where a rule asks for it (a rule on
that group with ``min_attempts = 0``, docs/monitoring.md).
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
INHERIT_MAX = 1000  # open KPI incidents read from the stream at the first evaluation


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
        self._inherited = False  # the open kpi.* incidents of the stream read (once)

    async def evaluate(self) -> list[str]:
        """One pass over every rule; returns the incident keys in breach now."""
        if not self._inherited:
            await self._inherit()
        breaching: list[str] = []
        for rule in self.rules:
            res, buckets = resolution_for(rule.window_s)
            sums = await self.store.read(res, buckets=buckets)
            prefix = f"kpi:{rule.name}:"
            judged_now: set[str] = set()
            for group, fig in _candidates(rule, sums).items():
                key = f"{prefix}{group[0]}:{group[1]}"
                judged_now.add(key)
                if _breached(rule, fig):
                    breaching.append(key)
                    await self._raise(rule, key, group, fig)
                elif key in self.raised or key not in self.judged:
                    self.raised.discard(key)
                    await self.alerts.resolve(key, who="kpi", why=_within(rule, fig))
                self.judged.add(key)
            # Open incidents of groups not judged now: their traffic stopped (or fell
            # below min_attempts). Nothing will judge them until traffic comes back.
            for key in sorted(k for k in self.raised if k.startswith(prefix)):
                if key not in judged_now:
                    self.raised.discard(key)
                    dimension, _, name = key[len(prefix) :].partition(":")
                    fig = figures(sums.get((dimension, name), {}), min_samples=1)
                    await self.alerts.resolve(key, who="kpi", why=_unjudged(rule, fig))
        self.evaluations += 1
        return breaching

    async def _inherit(self) -> None:
        """Hold the open kpi.* incidents of configured rules as this process's own: an
        incident raised before a restart (or by another daemon) whose group is silent
        now is resolved like one raised here."""
        prefixes = tuple(f"kpi:{rule.name}:" for rule in self.rules)
        if prefixes:
            for incident in await self.alerts.incidents(kind_prefix="kpi.", limit=INHERIT_MAX):
                if incident.state == "open" and incident.key.startswith(prefixes):
                    self.raised.add(incident.key)
        self._inherited = True

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


def _within(rule: KpiAlertRule, fig: dict[str, Any]) -> str:
    """Why a judged group's incident is resolved."""
    value = fig.get(rule.kpi)
    if value is None:
        return f"no {rule.kpi} to judge over the last {rule.window_s} s"
    return f"back within the threshold: {rule.kpi} {value:g} over the last {rule.window_s} s"


def _unjudged(rule: KpiAlertRule, fig: dict[str, Any]) -> str:
    """Why the incident of a group the rule no longer judges is resolved."""
    attempts = fig["attempts"]
    if attempts == 0 and fig["refused"]:  # refusals are not attempts (docs/monitoring.md)
        return (
            f"no call attempts in the last {rule.window_s} s, only {fig['refused']} "
            "refused authorizations"
        )
    if attempts == 0:
        return f"no traffic in the last {rule.window_s} s"
    return (
        f"{attempts} attempts in the last {rule.window_s} s, fewer than the rule's "
        f"min_attempts ({rule.min_attempts}): too few to judge"
    )


def _breached(rule: KpiAlertRule, fig: dict[str, Any]) -> bool:
    value = fig.get(rule.kpi)
    if value is None:  # e.g. ACD with no answered call: nothing to judge
        return False
    if rule.below is not None and value < rule.below:
        return True
    return rule.above is not None and value > rule.above
