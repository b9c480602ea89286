"""What the loader checks in database URLs before any connection is tried."""

from __future__ import annotations

import urllib.parse


def postgres_ports(url: str) -> list[str]:
    """The ports a libpq URL names: postgresql://[user@]host[:port][,host[:port]...]
    [/db][?port=P[,P...]] ("[::1]:5432" for IPv6); "" where a host names none."""
    if "://" not in url:
        return []
    rest = url.split("://", 1)[1]
    end = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    hosts, query = rest[:end].rpartition("@")[2], rest[end:].partition("?")[2]
    ports = []
    for host in hosts.split(","):
        if host.startswith("["):
            ports.append(host.partition("]")[2].removeprefix(":"))
        else:
            ports.append(host.rpartition(":")[2] if ":" in host else "")
    for value in urllib.parse.parse_qs(query).get("port", []):
        ports.extend(value.split(","))
    return [p.strip() for p in ports]
