"""The sampler's stream gauges: cdr:orphans and cdr:legs (FreeSWITCH B-legs) apart.

A bridged FreeSWITCH call's outbound leg is kept in cdr:legs (sessions/accounting.py);
its count is its own gauge, so an operator sees the legs recognised (it grows with
bridged calls) without them reading as unbilled usage in chargingd_orphan_accounting.
"""

from __future__ import annotations

from typing import Any

from chargingd.ledger import Ledger
from chargingd.monitoring.catalog import FAMILIES
from chargingd.monitoring.sampler import ClusterSampler
from chargingd.monitoring.windows import KpiStore
from chargingd.sessions.store import LEGS, ORPHANS


def _sampler(redis: Any, ledger: Ledger) -> ClusterSampler:
    return ClusterSampler(
        redis,
        ledger,
        KpiStore(redis, max_groups=10),
        min_samples=1,
        exporter_group="exporter",
        dead_letter_stream="cdr:dead",
        kpis=False,
    )


async def test_legs_and_orphans_have_their_own_gauges(redis: Any, ledger: Ledger) -> None:
    sampler = _sampler(redis, ledger)
    await sampler.sample()
    gauges = sampler.gauges()
    assert gauges[("chargingd_leg_accounting", ())] == 0
    assert gauges[("chargingd_orphan_accounting", ())] == 0

    for n in range(3):
        await redis.xadd(LEGS, {"reason": "freeswitch_outbound_leg", "session_id": f"b-{n}"})
    await redis.xadd(ORPHANS, {"reason": "unknown_account", "session_id": "x"})
    await sampler.sample()
    gauges = sampler.gauges()
    assert gauges[("chargingd_leg_accounting", ())] == 3
    assert gauges[("chargingd_orphan_accounting", ())] == 1
    assert sampler.live["legs"] == 3


def test_leg_gauge_is_in_the_catalog() -> None:
    family = FAMILIES["chargingd_leg_accounting"]
    assert (family.kind, family.scope) == ("gauge", "cluster")
