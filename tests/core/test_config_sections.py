"""[sessions] and [rating] configuration sections."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from paths import REPO
from sessions_harness import (
    T0_MS,
    Clock,
    add_account,
    call,
    make_ledger,
    make_plan,
    read_cdrs,
    usage,
)

from chargingd.core.config import ConfigError, config_from_dict
from chargingd.rating.durations import NS_PER_S
from chargingd.rating.loaders import load_plan
from chargingd.sessions.ccapi import Authorized, RefusalCode, Refused, UsageKind
from chargingd.sessions.pricing import Pricer
from chargingd.sessions.service import build_sessions


def test_sessions_defaults_and_derived_values() -> None:
    trunk = {"name": "us-trunk", "address": "192.0.2.7", "secret": "s"}
    cfg = config_from_dict(
        {"sessions": {"client_countries": {"us-trunk": "US"}}, "radius": {"clients": [trunk]}}
    )
    assert cfg.sessions.first_grant == 75  # interim 60 + margin 15
    assert cfg.sessions.country_of("us-trunk") == "US"
    assert cfg.sessions.country_of("other") == "DE"
    assert cfg.sessions.redis_failure_policy == "fail_closed"
    assert cfg.rating.plans == {}


def test_client_countries_must_name_a_client_or_peer() -> None:
    """A typo in a client name left that gateway's national numbers read with
    default_country (DE): 2125550100 from a US trunk became +492125550100."""
    trunk = {"name": "us-trunk", "address": "192.0.2.7", "secret": "s"}
    peer = {
        "name": "ims",
        "origin_host": "scscf.example",
        "realm": "example",
        "addresses": ["192.0.2.9"],
    }
    raw = {
        "sessions": {"client_countries": {"us_trunk": "US", "ims": "GB"}},
        "radius": {"clients": [trunk]},
        "diameter": {"peers": [peer]},
    }
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw, "c.toml")
    assert "client_countries names no [[radius.clients]] or [[diameter.peers]]: us_trunk" in str(
        err.value
    )
    raw["sessions"] = {"client_countries": {"us-trunk": "US", "ims": "GB"}}
    cfg = config_from_dict(raw, "c.toml")
    assert (cfg.sessions.country_of("us-trunk"), cfg.sessions.country_of("ims")) == ("US", "GB")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"sessions": {"redis_failure_policy": "maybe"}}, "fail_closed or fail_open"),
        ({"sessions": {"interim_interval_s": 5}}, "interim_interval_s"),
        ({"sessions": {"max_grant_s": 30}}, "max_grant_s"),
        ({"sessions": {"stale_factor": 1}}, "stale_factor"),
        ({"sessions": {"default_country": "Germany"}}, "ISO 3166"),
        ({"sessions": {"client_countries": {"gw": "X1"}}}, "ISO 3166"),
        # Two letters but no region: every number without "+" would be refused.
        (
            {"sessions": {"default_country": "UK"}},
            "[sessions] default_country 'UK' is not an ISO 3166 code (the United Kingdom is GB)",
        ),
        (
            {"sessions": {"client_countries": {"gw": "XX"}}},
            "[sessions] client_countries.gw 'XX' is not an ISO 3166",
        ),
        (
            {
                "mediation": {
                    "sources": {
                        "pbx": {"format": "asterisk", "charge": "ledger", "default_country": "UK"}
                    }
                }
            },
            "[mediation.sources.pbx] default_country 'UK' is not an ISO 3166 code",
        ),
        # ISO codes without a numbering plan: no number is read or matched there, and
        # the error says so (it said "is not an ISO 3166 code", which they are).
        (
            {"sessions": {"default_country": "AQ"}},
            "[sessions] default_country 'AQ' has no telephone numbering plan (phonenumbers)",
        ),
        (
            {"sessions": {"client_countries": {"gw": "PN"}}},
            "[sessions] client_countries.gw 'PN' has no telephone numbering plan",
        ),
        (
            {
                "mediation": {
                    "sources": {
                        "pbx": {"format": "asterisk", "charge": "ledger", "default_country": "TF"}
                    }
                }
            },
            "[mediation.sources.pbx] default_country 'TF' has no telephone numbering plan",
        ),
        ({"sessions": {"disconnect_retries": 0}}, "disconnect_retries"),
        ({"sessions": {"max_session_s": "3h"}}, "sessions.max_session_s must be int"),
        ({"rating": {"plans": {"gold": ""}}}, "plans entries"),
        (
            {"rating": {"plans": {"default": "a.toml"}, "default_plan": "b.toml"}},
            "[rating] plans has an id 'default', the id of default_plan",
        ),
        ({"rating": {"plans": {"gold": 3}}}, "rating.plans.gold must be str"),
    ],
)
def test_bad_values_are_named(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw, "c.toml")  # type: ignore[arg-type]
    assert "c.toml" in str(err.value) and message in str(err.value)


SAMPLE_TARIFF = REPO / "config" / "tariffs" / "sample.toml"


async def test_build_sessions_from_config_rates_with_the_configured_plan(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    cfg = config_from_dict(
        {
            "server": {"data_dir": str(tmp_path)},
            "rating": {"plans": {"retail": str(SAMPLE_TARIFF)}},
        }
    )
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    sessions = build_sessions(cfg, redis=redis, ledger=ledger, clock_ms=clock)
    await add_account(ledger, tariff="retail")
    await add_account(ledger, "usd", identities=("user:sam",), tariff="", currency="USD")
    info = call("s1")
    assert isinstance(await sessions.authorize(info), Authorized)
    await sessions.account(usage(info, UsageKind.STOP, 61, T0_MS + 61_000))
    (cdr,) = await read_cdrs(redis)
    plan = load_plan(SAMPLE_TARIFF)
    expected = plan.rate(
        subject="acc1",
        destination="4930123456",
        start=datetime.fromtimestamp(T0_MS // 1000, UTC),
        usage_ns=61 * NS_PER_S,
    )
    assert (cdr.cost_micros, cdr.destination, cdr.billed_s) == (
        expected.cost_micros,
        expected.destination_id,
        expected.billed_ns // NS_PER_S,
    )
    # No default plan configured: an account without tariff is refused, not guessed.
    answer = await sessions.authorize(call("s2", user="sam"))
    assert answer == Refused(RefusalCode.SYSTEM_ERROR, "tariff not available")
    # A USD account on the EUR tariff: refused, never charged in the wrong currency.
    await add_account(ledger, "usd2", identities=("user:uma",), tariff="retail", currency="USD")
    answer = await sessions.authorize(call("s3", user="uma"))
    assert answer == Refused(RefusalCode.SYSTEM_ERROR, "tariff currency mismatch")


def test_pricer_plan_lookup() -> None:
    pricer = Pricer({"retail": make_plan()})
    assert pricer.currency_of("retail") == "EUR"
    assert pricer.plan_id_for("") is None and pricer.plan_id_for("retail") == "retail"


def test_iso_codes_without_a_numbering_plan_are_the_ones_phonenumbers_lacks() -> None:
    """The fixed set is what phonenumbers lacks of ISO 3166: a phonenumbers release
    that adds a plan for one of them makes it a region, and this test says so."""
    import phonenumbers

    from chargingd.core.numbers import ISO_WITHOUT_NUMBERING_PLAN, is_iso_country, is_region

    assert not ISO_WITHOUT_NUMBERING_PLAN & set(phonenumbers.SUPPORTED_REGIONS)
    assert all(is_iso_country(c) and not is_region(c) for c in ISO_WITHOUT_NUMBERING_PLAN)
    assert not is_iso_country("UK") and not is_iso_country("XX") and is_iso_country("GB")


@pytest.mark.parametrize("path", ["plans/std.toml", "./plans/std.toml", "plans//std.toml"])
def test_plans_default_and_default_plan_naming_one_file_load(path: str) -> None:
    """One file under both names rates accounts without a tariff alike, live (plans
    id 'default') and in mediation (default_plan): no reason to refuse it."""
    cfg = config_from_dict(
        {"rating": {"plans": {"default": "plans/std.toml"}, "default_plan": path}}
    )
    assert cfg.rating.plans["default"] == "plans/std.toml" and cfg.rating.default_plan == path


def test_client_countries_of_a_config_without_clients_or_peers_load() -> None:
    """A billing or CLI host's copy of the config has no [[radius.clients]] and no
    [[diameter.peers]]: its client_countries name clients defined elsewhere."""
    raw = {"sessions": {"client_countries": {"us-trunk": "US", "ims": "GB"}}}
    cfg = config_from_dict(raw)
    assert (cfg.sessions.country_of("us-trunk"), cfg.sessions.country_of("ims")) == ("US", "GB")
    # One RADIUS client and no peer: the names are checked (the peer's is unknown).
    trunk = {"name": "us-trunk", "address": "192.0.2.7", "secret": "s"}
    with pytest.raises(ConfigError, match=r"names no .* ims$"):
        config_from_dict(raw | {"radius": {"clients": [trunk]}})
