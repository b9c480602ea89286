"""Status registry: uptime and counters per component, read by the `server.status` method."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from chargingd import __version__


class ComponentStats:
    """Named integer counters of one component (requests, errors, sweeps, ...)."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = {}

    def inc(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def set(self, name: str, value: int) -> None:
        self.counters[name] = value

    def get(self, name: str) -> int:
        return self.counters.get(name, 0)


class StatusRegistry:
    """Uptime plus one ComponentStats per component name; the clock is injected."""

    def __init__(self, clock_s: Callable[[], float] = time.monotonic) -> None:
        self._clock_s = clock_s
        self.started_s = clock_s()
        self.components: dict[str, ComponentStats] = {}

    def component(self, name: str) -> ComponentStats:
        """The stats of `name`, created on first use."""
        return self.components.setdefault(name, ComponentStats())

    def snapshot(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "pid": os.getpid(),
            "uptime_s": round(self._clock_s() - self.started_s, 3),
            "components": {name: dict(c.counters) for name, c in self.components.items()},
        }


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def redis_info_summary(info: dict[str, Any]) -> dict[str, Any]:
    """The few INFO fields an operator looks at first."""
    if "redis_version" not in info and info:
        # INFO of several nodes ("host:port" -> its INFO): the cluster's.
        return cluster_summary([n for n in info.values() if isinstance(n, dict)])
    return {
        "version": str(info.get("redis_version", "")),
        "used_memory_bytes": _as_int(info.get("used_memory")),
        "used_memory_human": str(info.get("used_memory_human", "")),
        "connected_clients": _as_int(info.get("connected_clients")),
        "aof_enabled": bool(_as_int(info.get("aof_enabled"))),
    }


def cluster_summary(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Memory and clients summed over every node (masters and replicas), the versions
    they run, AOF on only when it is on every node; ``nodes``, ``masters``: how many
    answered."""
    memory = sum(_as_int(n.get("used_memory")) for n in nodes)
    versions = sorted({str(n.get("redis_version", "")) for n in nodes})
    return {
        "version": ",".join(versions),
        "used_memory_bytes": memory,
        "used_memory_human": f"{memory / (1 << 20):.2f}M",
        "connected_clients": sum(_as_int(n.get("connected_clients")) for n in nodes),
        "aof_enabled": bool(nodes) and all(_as_int(n.get("aof_enabled")) for n in nodes),
        "nodes": len(nodes),
        "masters": sum(1 for n in nodes if n.get("role") == "master"),
    }
