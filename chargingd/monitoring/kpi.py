"""KPI figures from window sums (pure): ASR, NER, ACD, ALOC, PDD and call quality.

Definitions (docs/monitoring.md has the long form):

- ASR  = answered / attempts                                  (ITU-T E.411, E.425)
- NER  = (answered + busy + no_answer + rejected + abandoned)
         / (attempts - unknown)                               (E.425, GSMA IR.42)
- ACD  = talk time reported by the gateway (Acct-Session-Time) / answered
- ALOC = conversation time from the CDR's answer and end times / answered (E.437)
- PDD  = mean of the per-call post-dial delays the gateways reported
- MOS, jitter, loss: means over the calls that reported them.

A ratio or mean over fewer than ``min_samples`` calls is None ("not enough calls").
Counts are always given.
"""

from __future__ import annotations

from typing import Any

from chargingd.monitoring.outcomes import NER_EFFECTIVE, OUTCOMES, QUALITY_RANGES
from chargingd.monitoring.windows import Sums

MILLI = 1000  # quality values are stored as sums of milli-units


def figures(metrics: dict[str, int], min_samples: int) -> dict[str, Any]:
    """Counts and KPIs of one group of one window."""
    attempts = metrics.get("attempts", 0)
    answered = metrics.get("answered", 0)
    out: dict[str, Any] = {"attempts": attempts}
    for name in OUTCOMES:
        out[name] = metrics.get(name, 0)
    out["refused"] = metrics.get("refused", 0)
    out["authorized"] = metrics.get("authorized", 0)
    out["talk_s"] = metrics.get("talk_s", 0)
    known = attempts - out["unknown"]
    effective = sum(out[name] for name in NER_EFFECTIVE)
    out["asr"] = _ratio(answered, attempts, min_samples)
    out["ner"] = _ratio(effective, known, min_samples)
    out["acd_s"] = _mean(metrics.get("talk_s", 0), answered, min_samples)
    conv = _mean(metrics.get("conv_ms", 0), answered, min_samples)
    out["aloc_s"] = None if conv is None else round(conv / 1000, 3)
    for name in QUALITY_RANGES:
        n = metrics.get(f"{name}_n", 0)
        out[f"{name}_samples"] = n
        mean = _mean(metrics.get(f"{name}_sum", 0), n, min_samples)
        out[name] = None if mean is None else round(mean / MILLI, 3)
    return out


def window_figures(sums: Sums, min_samples: int) -> dict[str, dict[str, dict[str, Any]]]:
    """{dimension: {group: figures}} for every group of a window ("all" included)."""
    out: dict[str, dict[str, dict[str, Any]]] = {"all": {"all": figures({}, min_samples)}}
    for (dimension, group), metrics in sorted(sums.items()):
        out.setdefault(dimension, {})[group] = figures(metrics, min_samples)
    return out


def _ratio(part: int, whole: int, min_samples: int) -> float | None:
    if whole < min_samples or whole <= 0:
        return None
    return round(part / whole, 4)


def _mean(total: int, n: int, min_samples: int) -> float | None:
    if n < min_samples or n <= 0:
        return None
    return round(total / n, 3)
