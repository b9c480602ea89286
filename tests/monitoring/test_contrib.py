"""contrib/: the Grafana dashboard and the Prometheus rules name only real metrics."""

from __future__ import annotations

import json
import re

from paths import REPO

from chargingd.monitoring.catalog import FAMILIES

METRIC = re.compile(r"\bchargingd_[a-z_]+")


def known(name: str) -> bool:
    for suffix in ("", "_bucket", "_count", "_sum"):
        if name.endswith(suffix) and name[: len(name) - len(suffix)] in FAMILIES:
            return True
    return False


def test_grafana_dashboard_queries_exist() -> None:
    dashboard = json.loads((REPO / "contrib" / "grafana" / "chargingd.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 20
    names = {m for e in exprs for m in METRIC.findall(e)}
    assert names and all(known(n) for n in names), sorted(n for n in names if not known(n))
    # Cluster gauges are the same on every daemon: never summed.
    for expr in exprs:
        cluster = [
            n for n in METRIC.findall(expr) if n in FAMILIES and FAMILIES[n].scope == "cluster"
        ]
        assert not (cluster and "sum" in expr), expr
        if cluster:
            assert "max" in expr, expr


def test_prometheus_rules_use_known_metrics() -> None:
    text = (REPO / "contrib" / "prometheus" / "chargingd-alerts.yml").read_text()
    names = set(METRIC.findall(text))
    assert names and all(known(n) for n in names), names
