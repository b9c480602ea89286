"""RADIUS peers: the configured clients (gateways, SBCs) by address and by name.

Shared by the servers in radius/server.py (who sent this packet, with which secret) and the
Disconnect/CoA client in radius/dynauth.py (where and how to reach a gateway).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import ClassVar

from chargingd.core.config import RadiusClientConfig, RadiusConfig


@dataclass(frozen=True, slots=True)
class RadiusClient:
    """A configured client with its secret as bytes and its effective settings."""

    name: str
    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    secret: bytes = field(repr=False)
    default_account: str = ""
    lookup: tuple[str, ...] = ("user", "ani", "default")
    cisco: bool = True
    cisco_leg: str = "originate"  # h323-call-origin charged; "all" = every leg
    coa_port: int = 3799
    coa_address: str = ""  # "" = the call's gateway (NAS-IP-Address, else the source)
    require_message_authenticator: bool = True
    cut_backend: str = "rfc5176"  # or "kamailio_jsonrpc" (radius/kamailio_rpc.py)
    jsonrpc_url: str = ""
    echo_class: bool = False  # Class = the account in Access-Accepts, read back in accounting

    @classmethod
    def from_config(cls, cfg: RadiusClientConfig, radius: RadiusConfig) -> RadiusClient:
        """Build from the config; the client's own require flag overrides [radius]'s."""
        require = cfg.require_message_authenticator
        return cls(
            name=cfg.name,
            network=ipaddress.ip_network(cfg.address, strict=False),
            secret=cfg.secret.encode("utf-8"),
            default_account=cfg.default_account,
            lookup=cfg.lookup,
            cisco=cfg.flavour == "cisco",
            cisco_leg=cfg.cisco_leg,
            coa_port=cfg.coa_port,
            coa_address=cfg.coa_address,
            require_message_authenticator=(
                radius.require_message_authenticator if require is None else require
            ),
            cut_backend=cfg.cut_backend,
            jsonrpc_url=cfg.jsonrpc_url,
            echo_class=cfg.echo_class,
        )


class ClientTable:
    """Clients by source address: exact hosts first, then the longest matching CIDR."""

    _CACHE_MAX: ClassVar[int] = 65536

    def __init__(self, clients: Iterable[RadiusClient]) -> None:
        self._by_name: dict[str, RadiusClient] = {}
        self._hosts: dict[str, RadiusClient] = {}
        self._networks: list[RadiusClient] = []
        for client in clients:
            self._by_name[client.name] = client
            if client.network.num_addresses == 1:
                self._hosts[str(client.network.network_address)] = client
            else:
                self._networks.append(client)
        self._networks.sort(key=lambda c: c.network.prefixlen, reverse=True)

    @classmethod
    def from_config(cls, radius: RadiusConfig) -> ClientTable:
        """The table of the [[radius.clients]] of a config."""
        return cls(RadiusClient.from_config(c, radius) for c in radius.clients)

    def match(self, ip: str) -> RadiusClient | None:
        """The client a packet from `ip` belongs to, or None (unknown: drop it)."""
        client = self._hosts.get(ip)
        if client is not None or not self._networks:
            return client
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return None
        for candidate in self._networks:
            if address in candidate.network:
                if len(self._hosts) < self._CACHE_MAX:
                    self._hosts[ip] = candidate  # positive matches only: spoofing cannot grow it
                return candidate
        return None

    def by_name(self, name: str) -> RadiusClient | None:
        """The client a SessionRef names (where Disconnect/CoA go), or None."""
        return self._by_name.get(name)
