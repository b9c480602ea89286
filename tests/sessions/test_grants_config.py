"""Grants reads the config's grant sizes and lease once, at construction (round 17b:
SessionsConfig is an interpreted frozen dataclass, first_grant a property): the grant
sizes and leases are still the config's rules, for every config."""

from __future__ import annotations

import itertools
import time

import redis.asyncio as aioredis

from chargingd.core.config import SessionsConfig
from chargingd.ledger import Ledger
from chargingd.sessions.grants import Grants
from chargingd.sessions.pricing import Pricer
from chargingd.sessions.store import SessionStore


def test_grant_sizes_and_leases_follow_the_config() -> None:
    client = aioredis.Redis()  # (never connected: no command is sent)
    store = SessionStore(client, session_ttl_s=86400, closed_ttl_s=86400)
    ledger = Ledger(client)
    for first, margin, interval, most, stale in itertools.product(
        (0, 45, 700), (0, 15), (30, 60), (120, 600), (2, 3)
    ):
        cfg = SessionsConfig(
            first_grant_s=first, grant_margin_s=margin, interim_interval_s=interval,
            max_grant_s=most, stale_factor=stale,
        )  # fmt: skip
        grants = Grants(
            store=store,
            ledger=ledger,
            pricer=Pricer({}),
            cfg=cfg,
            clock_ms=lambda: int(time.time() * 1000),
        )
        first_grant = first or interval + margin
        for usage_s in (0, 1, 59, 60, 119, 240, 1199, 1200, 5000):
            want = max(first_grant, min(most, usage_s // 2))
            assert grants.grant_size(usage_s) == want, (cfg, usage_s)
            assert grants.lease_ms(want) == (want + stale * interval) * 1000
        assert grants.hold_all_lease_ms() == grants.lease_ms(cfg.max_session_s + cfg.reap_grace_s)
