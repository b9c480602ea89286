"""Every config option reaches the component that uses it, through the one Factory.

The config is generated from the config dataclasses: every field gets a value that
differs from its default (by type; SPECIAL gives valid values where a field only takes
a few). REACHES says, per option, where the built app shows it; an option that is
missing there fails the test, so a new option cannot be forgotten.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis
from paths import REPO
from redis.asyncio.cluster import RedisCluster

from chargingd.app.assurance import sources as assurance_sources
from chargingd.app.factory import Factory
from chargingd.app.serve import (
    Runtime,
    build_admin,
    build_alerts,
    build_diameter,
    build_fraud,
    build_http,
    build_monitoring,
    build_radius,
    build_sweeper,
    build_workers,
)
from chargingd.assurance.cli import run_params
from chargingd.core.config import Config, RadiusClientConfig, config_from_dict
from chargingd.core.loops import Disabled
from chargingd.core.money import format_amount
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.core.status import StatusRegistry
from chargingd.radius.server import RadiusFrontend
from chargingd.sessions.record import COMPACT

SAMPLE = str(REPO / "config" / "tariffs" / "sample.toml")

# Fields whose values are constrained: a valid value that is not the default.
SPECIAL: dict[str, Any] = {
    "sessions.compact_records": False,  # unset by default (the deployment's choice)
    "server.log_level": "debug",
    "server.workers": 3,
    "redis.cluster_nodes": None,  # exclusive with url: checked on a second config
    "redis.embedded_appendfsync": "always",
    "admin.socket_mode": "0600",
    "ledger.txn_ttl_s": 7200,
    "sessions.interim_interval_s": 30,
    "sessions.grant_margin_s": 5,
    "sessions.first_grant_s": 40,
    "sessions.max_grant_s": 300,
    "sessions.max_session_s": 7200,
    "sessions.session_ttl_s": 7300,
    "sessions.closed_ttl_s": 7200,
    "sessions.redis_failure_policy": "fail_open",
    "sessions.default_country": "FR",
    "sessions.client_countries": {"gw1": "GB"},
    "rating.default_plan": SAMPLE,
    "rating.plans": {"gold": SAMPLE},
    "rating.cgrates_timezone": "Europe/Berlin",
    "rating.cgrates_rounding_decimals": 6,
    "billing.embedded_database": "chargingd_nd",
    "export.consumer": "consumer-nd",
    "export.dead_letter_stream": "cdr:dead-nd",
    "export.group": "exporter-nd",
    "mediation.sources": {"pbx": {"format": "asterisk", "charge": "ledger"}},
    "radius.bind": "127.0.0.1",
    "radius.spread": "request",
    "radius.clients": None,  # one client with every field set, below
    "radius.h323_return_codes": {"insufficient_credit": 9},
    "diameter.bind": "127.0.0.1",
    "diameter.host_ip_addresses": ["127.0.0.9"],
    "diameter.credit_control_failure_handling": "continue",
    "diameter.peers": None,  # one peer with every field set, below
    "invoicing.time_zone": "Europe/Berlin",
    "invoicing.invoice_series": "F-{year}",
    "invoicing.credit_note_series": "G-{year}",
    "invoicing.statement_series": "S-{year}",
    "invoicing.number_digits": 8,
    "invoicing.payment_terms_days": 30,
    "invoicing.dunning_grace_days": 3,
    "invoicing.minor_unit_decimals": 3,
    "invoicing.late_usage_periods": 2,
    "invoicing.batch_size": 50,
    "invoicing.default_vat_rate": "20",
    "invoicing.vat_rates": {"DE": "19"},
    "invoicing.destination_groups": {"Mobile": ["*MOB*"]},
    "invoicing.issuer": {"name": "nd-issuer", "address": ["1 nd street"]},
    "alerts.webhook_url": "http://127.0.0.1:9/nd-hook",
    "fraud.high_risk_countries": ["CU"],
    "fraud.high_risk_prefixes": ["+882"],
    "fraud.rules": [{"name": "nd", "kind": "concurrent", "max_calls": 3}],
    "fraud.account_overrides": {"acc-nd": {"nd": {"max_calls": 4}}},
    "fraud.tariff_overrides": {"gold": {"nd": {"max_calls": 5}}},
    "fraud.local_values": 77,
    "assurance.duration_tolerance_pct": "2.5",
    "assurance.leakage_threshold": "1.50",
    "assurance.source_clients": {"pbx": ["gw1"]},
    "monitoring.alerts": [
        {
            "name": "nd",
            "kpi": "ner",
            "dimension": "destination",
            "group": "UK",
            "window_s": 600,
            "below": 0.8,
            "min_attempts": 5,
            "severity": "critical",
        }
    ],
    "http.bind": "127.0.0.2",
    "http.token": "nd-token-0123456789",
}
PEER: dict[str, Any] = {
    "name": "ims1",
    "origin_host": "scscf.nd.test",
    "realm": "nd.test",
    "addresses": ["127.0.0.3"],
    "default_account": "acc-nd",
    "lookup": ["ani", "default"],
}
CLIENT_SPECIAL: dict[str, Any] = {
    "name": "gw1",
    "address": "127.0.0.2",
    "secret": "s3cret-nd",
    "lookup": ["ani", "default"],
    "flavour": "generic",
    "cisco_leg": "all",
    "require_message_authenticator": False,
    "credit_mode": "own_timer",
    "cut_backend": "kamailio_jsonrpc",
    "jsonrpc_url": "http://127.0.0.2:5071/RPC",
    "coa_address": "127.0.0.9",
}


def _other(path: str, default: Any, hint: Any, n: int) -> Any:
    """A value of the field's type that differs from `default`."""
    if path in SPECIAL:
        return SPECIAL[path]
    if hint is bool:
        return not default if isinstance(default, bool) else False
    if hint is int:
        return default + 7 + n
    if hint is float:
        return default * 2 + 0.5
    if hint is str:
        return f"nd-{path.replace('.', '-')}"
    raise AssertionError(f"no non-default value for {path} ({hint}): add it to SPECIAL")


def _section(name: str, cls: type, tmp: Path) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for n, f in enumerate(dataclasses.fields(cls)):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        value = _other(f"{name}.{f.name}", default, hints[f.name], n)
        if value is not None:
            assert value != default, f"{name}.{f.name}"
            out[f.name] = value
    return out


def _client() -> dict[str, Any]:
    hints = typing.get_type_hints(RadiusClientConfig)
    out: dict[str, Any] = {}
    for n, f in enumerate(dataclasses.fields(RadiusClientConfig)):
        if f.name in CLIENT_SPECIAL:
            out[f.name] = CLIENT_SPECIAL[f.name]
        else:
            out[f.name] = _other(f"c.{f.name}", f.default, hints[f.name], n)
    return out


def non_default_config(tmp: Path, redis_url: str, pg_url: str) -> tuple[Config, dict[str, Any]]:
    raw: dict[str, Any] = {}
    for f in dataclasses.fields(Config):
        if f.name in ("source", "warnings"):
            continue
        cls = typing.get_type_hints(Config)[f.name]
        raw[f.name] = _section(f.name, cls, tmp)
    raw["server"]["data_dir"] = str(tmp / "data")
    raw["redis"]["url"] = redis_url
    raw["admin"]["socket_path"] = str(tmp / "admin.sock")
    raw["billing"]["db_url"] = pg_url
    raw["billing"]["embedded_dir"] = str(tmp / "pg")
    raw["export"]["csv_dir"] = str(tmp / "csv")
    raw["mediation"]["rejects_dir"] = str(tmp / "rejects")
    raw["radius"]["clients"] = [_client()]
    raw["diameter"]["peers"] = [PEER]
    return config_from_dict(raw), raw


Check = Callable[[SimpleNamespace], Any]

# Where each option shows in the built app (b: what test_every_option... built).
REACHES: dict[str, Check] = {
    "server.data_dir": lambda b: b.sessions.spool.directory.parent,
    "server.log_level": lambda b: b.cfg.server.log_level,  # read by `serve` (setup_logging)
    "server.workers": lambda b: b.workers.count + 1,
    "redis.url": lambda b: b.redis_url,
    "redis.cluster_nodes": lambda b: b.cluster_nodes,
    "redis.embedded_port": lambda b: b.embedded.port,
    "redis.embedded_appendfsync": lambda b: b.embedded.appendfsync,
    "redis.connect_timeout_s": lambda b: b.redis_kwargs["socket_connect_timeout"],
    "redis.command_timeout_s": lambda b: b.redis_kwargs["socket_timeout"],
    "redis.batch_early": lambda b: b.ledger.batcher.early,
    "fraud.local_values": lambda b: b.fraud.local.values.size,
    "admin.socket_path": lambda b: str(b.admin.path),
    "admin.socket_mode": lambda b: f"{b.admin.mode:04o}",
    "ledger.sweep_interval_s": lambda b: b.sweeper.interval_s,
    "ledger.partial_grants": lambda b: b.ledger.partial_grants,
    "ledger.audit_max_entries": lambda b: int(b.ledger.audit_max),
    "ledger.audit_holds": lambda b: b.ledger.audit_holds == "1",
    "ledger.txn_ttl_s": lambda b: int(b.ledger.txn_ttl_ms) // 1000,
    "sessions.session_ttl_s": lambda b: b.sessions.store.session_ttl_s,
    "sessions.closed_ttl_s": lambda b: b.sessions.store.closed_ttl_s,
    "sessions.spool_max_entries": lambda b: b.sessions.spool.max_entries,
    "sessions.disconnect_retries": lambda b: b.sessions.cutter.retries,
    "sessions.disconnect_backoff_s": lambda b: b.sessions.cutter.backoff_ms / 1000,
    "sessions.compact_records": lambda b: b.sessions.store.layout is COMPACT,
    "rating.default_plan": lambda b: SAMPLE if b.sessions.pricer.has_default else None,
    "rating.plans": lambda b: {"gold": SAMPLE} if "gold" in b.sessions.pricer.plans else None,
    # read where plans load (sessions/pricing.load_pricer; tests/rating/test_cgrates.py
    # test_the_daemons_plans_read_a_tp_directory_with_the_configured_cgrates_settings)
    "rating.cgrates_timezone": lambda b: b.cfg.rating.cgrates_timezone,
    "rating.cgrates_rounding_decimals": lambda b: b.cfg.rating.cgrates_rounding_decimals,
    "billing.db_url": lambda b: b.db.url,
    "billing.connect_timeout_s": lambda b: b.db.connect_timeout_s,
    "billing.embedded_dir": lambda b: str(b.billing_embedded_dir),
    "billing.embedded_database": lambda b: b.cfg.billing.embedded_database,  # database_url()
    "export.consumer": lambda b: b.exporter.consumer,
    "export.csv_dir": lambda b: str(b.exporter.csv.dir),
    "export.csv_rotate_rows": lambda b: b.exporter.csv.rotate_rows,
    "export.csv_rotate_s": lambda b: b.exporter.csv.rotate_s,
    "demo.accounts": lambda b: b.demo_accounts,
    "radius.clients": lambda b: [
        # The credit mode is the sessions' (they decide), the rest the frontend's;
        # echo_class both's (the frontend sends Class, the sessions write no locator).
        _client_as_configured(b.frontend.clients.by_name("gw1"))
        | {"credit_mode": b.sessions.modes.of("gw1")}
        | {
            "echo_class": b.frontend.clients.by_name("gw1").echo_class
            and "gw1" in b.sessions.store.echo_class
        }
    ],
    "radius.enabled": lambda b: b.radius_enabled,
    "alerts.dedup_window_s": lambda b: b.alerts.store.window_ms // 1000,
    "alerts.retention_s": lambda b: b.alerts.store.retention_ms // 1000,
    "alerts.calls_kept": lambda b: b.alerts.store.calls_kept,
    "alerts.stream_maxlen": lambda b: b.alerts.store.stream_maxlen,
    "alerts.webhook_url": lambda b: b.alerts.webhook.url,
    "alerts.webhook_secret": lambda b: b.alerts.webhook.secret,
    "alerts.webhook_timeout_s": lambda b: b.alerts.webhook.timeout_s,
    "alerts.webhook_attempts": lambda b: b.alerts.webhook.attempts,
    "alerts.webhook_backoff_s": lambda b: b.alerts.webhook.backoff_s,
    "alerts.webhook_max_backoff_s": lambda b: b.alerts.webhook.max_backoff_s,
    "alerts.webhook_queue_size": lambda b: b.alerts.webhook._queue.maxsize,
    # `chargingd assure` builds its run from these (chargingd.app.assurance).
    "assurance.start_tolerance_s": lambda b: b.assure.start_tolerance_s,
    "assurance.duration_tolerance_s": lambda b: b.assure.duration_tolerance_s,
    "assurance.duration_tolerance_pct": lambda b: f"{b.assure.duration_tolerance_bp / 100:g}",
    "assurance.hold_grace_s": lambda b: b.assure.hold_grace_s,
    "assurance.session_grace_s": lambda b: b.assure.session_grace_s,
    "assurance.stuck_after_s": lambda b: b.assure.stuck_after_s,
    "assurance.leakage_threshold": lambda b: format_amount(b.assure.leakage_threshold_micros, 2),
    "assurance.max_findings": lambda b: b.assure.max_findings,
    "assurance.source_clients": lambda b: {k: list(v) for k, v in b.assure_clients.items()},
    "monitoring.enabled": lambda b: b.monitor.enabled,
    "monitoring.min_samples": lambda b: b.monitor.sampler.min_samples,
    "monitoring.max_groups": lambda b: b.monitor.store.max_groups,
    "monitoring.report_interval_s": lambda b: b.monitor.reporter.interval_s,
    "monitoring.sample_interval_s": lambda b: b.monitor.sample_interval_s,
    "monitoring.kpi_group": lambda b: b.monitor.feeder.group,
    "monitoring.alerts": lambda b: [
        {k: v for k, v in dataclasses.asdict(r).items() if v is not None}
        for r in b.monitor.kpi_alerts.rules
    ],
    "http.enabled": lambda b: not isinstance(b.http, Disabled),
    "http.bind": lambda b: b.http.server.bind,
    "http.port": lambda b: b.http.server.port,
    "http.token": lambda b: b.http.token,
    "http.dashboard": lambda b: b.http.server.dashboard,
}
# Sections a component keeps whole and reads where it acts: the check is that the
# component holds the loaded section (not a default one built by hand).
WHOLE: dict[str, Check] = {
    "sessions": lambda b: b.sessions.cfg,
    "export": lambda b: b.exporter.xcfg,
    "radius": lambda b: b.frontend.config,
    "mediation": lambda b: b.cfg.mediation,  # read by `chargingd mediate` itself
    "diameter": lambda b: b.diameter.frontend.cfg,
    "invoicing": lambda b: b.books.cfg,  # Books reads it where each step acts
    "fraud": lambda b: b.fraud.cfg,  # chargingd.fraud.Fraud reads its rules from it
}


def _client_as_configured(c: Any) -> dict[str, Any]:
    """The frontend's client table entry, read back as its config table."""
    return {
        "name": c.name,
        "address": str(c.network.network_address),
        "secret": c.secret.decode(),
        "default_account": c.default_account,
        "lookup": list(c.lookup),
        "coa_port": c.coa_port,
        "coa_address": c.coa_address,
        "flavour": "cisco" if c.cisco else "generic",
        "cisco_leg": c.cisco_leg,
        "require_message_authenticator": c.require_message_authenticator,
        "cut_backend": c.cut_backend,
        "jsonrpc_url": c.jsonrpc_url,
    }


async def _build(cfg: Config, raw: dict[str, Any], tmp: Path) -> SimpleNamespace:
    factory = Factory(cfg)
    b = SimpleNamespace(cfg=cfg, raw_client=raw["radius"]["clients"][0])
    async with AsyncExitStack() as stack:
        opened = await factory.open_redis(stack, owner=False)
        b.redis_url = opened.url
        b.redis_kwargs = opened.client.connection_pool.connection_kwargs
        b.ledger = await factory.open_ledger(opened.client)
        b.sessions = factory.sessions(opened.client, b.ledger)
        component = factory.radius(opened.client, b.ledger, role="main")
        b.frontend = RadiusFrontend(cfg.radius, component.sessions)
        b.db = await factory.billing_db()
        stack.push_async_callback(b.db.close)
        b.exporter = factory.exporter(opened.client, db=b.db)
        b.books = factory.books(b.db, b.ledger, who="test")
        rt = Runtime(cfg, factory, opened.client, opened.label, b.ledger, StatusRegistry())
        b.alerts = build_alerts(rt)
        assert rt.alerts is b.alerts
        events = build_fraud(rt)
        b.fraud = rt.fraud
        assert events.group == cfg.fraud.events_group  # type: ignore[attr-defined]
        assert b.fraud.live_ttl_ms == cfg.sessions.session_ttl_s * 1000
        b.sweeper = build_sweeper(rt)
        b.admin = build_admin(rt)
        b.radius_enabled = not isinstance(build_radius(rt), Disabled)
        b.diameter = build_diameter(rt)  # enabled: on the RADIUS component's Sessions
        b.monitor = build_monitoring(rt)
        b.http = build_http(rt)
        peer = b.diameter.frontend.server.peers.by_name("ims1")
        assert peer is not None and peer.lookup == ("ani", "default")
        assert b.diameter.sessions is rt.sessions
        # Workers serve RADIUS: they are counted only with RADIUS on.
        radius_on = dataclasses.replace(cfg.radius, enabled=True)
        rt.cfg = dataclasses.replace(cfg, radius=radius_on)
        b.workers = build_workers(rt)
        if cfg.demo.accounts:  # what Daemon.run does with it
            from chargingd.app.demo import create_demo_accounts

            await create_demo_accounts(b.ledger)
        b.demo_accounts = bool(await b.ledger.list_accounts())
    b.embedded = factory.embedded_redis()
    args = SimpleNamespace(start="2026-11-01", end="2026-11-30", source=None, account=None)
    b.assure = run_params(args, cfg.assurance, cfg.invoicing.time_zone)  # type: ignore[arg-type]
    b.assure_clients = assurance_sources(cfg).clients
    from chargingd.billing.db import embedded_dir

    # Without a db_url the embedded PostgreSQL is used: its directory from [billing].
    no_url = dataclasses.replace(cfg, billing=dataclasses.replace(cfg.billing, db_url=""))
    b.billing_embedded_dir = embedded_dir(no_url)
    cluster_cfg = config_from_dict({"redis": {"cluster_nodes": ["127.0.0.1:7000"]}})
    cluster = Factory(cluster_cfg).redis_client()
    assert isinstance(cluster, RedisCluster)
    b.cluster_nodes = [f"{n.host}:{n.port}" for n in cluster.startup_nodes]
    return b


async def test_every_option_reaches_its_component(
    tmp_path: Path, redis_server: EmbeddedRedis, redis: aioredis.Redis, pg_url: str
) -> None:
    cfg, raw = non_default_config(tmp_path, redis_server.url, pg_url)
    raw["redis"]["cluster_nodes"] = ["127.0.0.1:7000"]
    raw["server"]["data_dir"] = str(tmp_path / "data")
    b = await _build(cfg, raw, tmp_path)
    options = {f"{s}.{k}" for s, section in raw.items() for k in section}
    checked = set(REACHES) | {o for o in options if o.split(".")[0] in WHOLE}
    assert options - checked == set(), "options no check looks at: add them to REACHES"
    for option, check in sorted(REACHES.items()):
        section, key = option.split(".")
        expected = raw[section][key]
        if option == "server.data_dir":
            assert Path(check(b)).resolve() == Path(expected).resolve(), option
            continue
        if option == "redis.cluster_nodes":
            expected = list(expected)
        assert check(b) == expected, option
    for section, check in WHOLE.items():
        assert check(b) is getattr(cfg, section), section


def test_generated_config_differs_from_the_defaults_everywhere(tmp_path: Path) -> None:
    cfg, raw = non_default_config(tmp_path, "redis://127.0.0.1:1", "postgresql://x@127.0.0.1/x")
    default = Config()
    for section in raw:
        for key in raw[section]:
            assert getattr(getattr(cfg, section), key) != getattr(getattr(default, section), key)


@pytest.mark.parametrize("option", ["ledger.partial_grants", "ledger.audit_max_entries"])
def test_the_options_the_hand_built_ledgers_forgot(option: str) -> None:
    """`partial_grants` never reached the Ledger; `rerate` dropped audit_max_entries."""
    section, key = option.split(".")
    value = {"partial_grants": False, "audit_max_entries": 17}[key]
    cfg = config_from_dict({section: {key: value}})
    ledger = Factory(cfg).ledger(aioredis.Redis())
    got = ledger.partial_grants if key == "partial_grants" else int(ledger.audit_max)
    assert got == value
