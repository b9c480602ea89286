"""The configured Diameter peers (RFC 6733 §2.6 peer table): who may connect, from where.

A peer is known by its Origin-Host; its connections must come from one of its
allowed addresses. An unknown Origin-Host or a wrong source is refused at CER
with 3010 DIAMETER_UNKNOWN_PEER (RFC 6733 §5.3).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Peer:
    """One configured peer (an IMS S-CSCF/AS, an SBC, a PGW...)."""

    name: str  # the session's "client" in CDRs and the cut routing
    origin_host: str
    realm: str
    networks: tuple[Network, ...]
    lookup: tuple[str, ...] = ("user", "ani", "default")
    default_account: str = ""

    def allows(self, ip: str) -> bool:
        """True when ``ip`` is one of the peer's allowed addresses."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self.networks)


class PeerTable:
    """Peers by Origin-Host (case-insensitive, RFC 6733 §4.3.1 DiameterIdentity) and name."""

    def __init__(self, peers: Iterable[Peer]) -> None:
        self._by_host: dict[str, Peer] = {}
        self._by_name: dict[str, Peer] = {}
        for peer in peers:
            self._by_host[peer.origin_host.lower()] = peer
            self._by_name[peer.name] = peer

    def __len__(self) -> int:
        return len(self._by_host)

    def admit(self, origin_host: str, ip: str) -> Peer | None:
        """The peer a CER from ``ip`` naming ``origin_host`` belongs to, or None."""
        peer = self._by_host.get(origin_host.lower())
        if peer is None or not peer.allows(ip):
            return None
        return peer

    def by_name(self, name: str) -> Peer | None:
        """The peer a session's client names, or None (not a Diameter session)."""
        return self._by_name.get(name)


def networks_of(addresses: Iterable[str]) -> tuple[Network, ...]:
    """Addresses or CIDR blocks as networks (strict=False: a host address is a /32)."""
    return tuple(ipaddress.ip_network(a, strict=False) for a in addresses)
