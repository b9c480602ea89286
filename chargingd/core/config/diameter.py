"""``[diameter]`` and ``[[diameter.peers]]``: the Credit-Control frontend (RFC 6733, RFC 4006).

Loaded by chargingd.core.config; nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

_LOOKUPS = ("user", "ani", "default")
FAILURE_HANDLING = ("", "terminate", "continue", "retry_and_terminate")


@dataclass(frozen=True)
class DiameterPeerConfig:
    """One Diameter client (IMS S-CSCF/AS, SBC, PGW) allowed to connect."""

    # The session's client name in CDRs and admin views; must not be a RADIUS client's.
    name: str = ""
    # Its Origin-Host (DiameterIdentity, compared case-insensitively) and realm.
    origin_host: str = ""
    realm: str = ""
    # Source addresses (IPs or CIDR blocks) its connections may come from.
    addresses: tuple[str, ...] = ()
    default_account: str = ""
    # Identity lookup order: "user" (SIP URI / NAI / IMSI Subscription-Id, else
    # User-Name), "ani" (END_USER_E164 Subscription-Id), "default" (default_account).
    lookup: tuple[str, ...] = _LOOKUPS

    def validate(self) -> None:
        if not self.name or not self.origin_host:
            raise ValueError("a peer needs a name and an origin_host")
        if not self.addresses:
            raise ValueError(f"peer {self.name!r}: addresses must not be empty")
        for address in self.addresses:
            try:
                ipaddress.ip_network(address, strict=False)
            except ValueError:
                raise ValueError(f"peer {self.name!r}: {address!r} is not an IP or CIDR") from None
        if not self.lookup or any(item not in _LOOKUPS for item in self.lookup):
            raise ValueError(f"peer {self.name!r}: lookup items must be user, ani or default")


@dataclass(frozen=True)
class DiameterConfig:
    # Run the Diameter Credit-Control frontend in `chargingd serve`.
    enabled: bool = False
    bind: str = "0.0.0.0"
    port: int = 3868
    # Who chargingd is (CEA, CCA, ASR, RAR); Host-IP-Address defaults to bind's address.
    origin_host: str = "chargingd.local"
    origin_realm: str = "local"
    host_ip_addresses: tuple[str, ...] = ()
    # Tw (RFC 3539): a DWR after this much silence; two unanswered DWRs close the link.
    watchdog_s: float = 30.0
    # Tx expectations: clients time a CCR out after Tx (RFC 4006 §13, 10 s by default);
    # a CCR that takes longer than answer_within_s is logged as late.
    answer_within_s: float = 2.0
    # Advertised in every CCA (RFC 4006 §8.14); "" = not sent (the client's own default).
    credit_control_failure_handling: str = ""
    # CC-Session-Failover FAILOVER_SUPPORTED in every CCA (RFC 4006 §8.4, §5.7): the
    # session's state is in Redis, so a client may move it to another chargingd on Tx
    # expiry; false = not sent (FAILOVER_NOT_SUPPORTED: the client applies its CCFH).
    cc_session_failover: bool = True
    # Validity-Time of every grant; 0 = [sessions] interim_interval_s.
    validity_time_s: int = 0
    # ASR / RAR: first wait for the answer, doubled per retry (like Disconnect-Request).
    request_timeout_s: float = 2.0
    request_retries: int = 2
    # Duplicate detection (RFC 6733 §6.2, same Origin-Host and End-to-End id).
    duplicate_cache_ttl_s: float = 60.0
    duplicate_cache_size: int = 100_000
    max_message_bytes: int = 65536
    peers: tuple[DiameterPeerConfig, ...] = ()

    def validate(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be 0..65535")
        if not self.origin_host or not self.origin_realm:
            raise ValueError("origin_host and origin_realm must not be empty")
        for address in self.host_ip_addresses:
            ipaddress.ip_address(address)
        if self.credit_control_failure_handling not in FAILURE_HANDLING:
            raise ValueError(f"credit_control_failure_handling must be one of {FAILURE_HANDLING}")
        if min(self.watchdog_s, self.answer_within_s, self.request_timeout_s) <= 0:
            raise ValueError("watchdog_s, answer_within_s and request_timeout_s must be positive")
        if self.request_retries < 0 or self.validity_time_s < 0:
            raise ValueError("request_retries and validity_time_s must be >= 0")
        if self.duplicate_cache_ttl_s <= 0 or self.duplicate_cache_size < 1:
            raise ValueError("duplicate_cache_ttl_s and duplicate_cache_size must be positive")
        if self.max_message_bytes < 1024:
            raise ValueError("max_message_bytes must be >= 1024")
        names = [p.name for p in self.peers]
        hosts = [p.origin_host.lower() for p in self.peers]
        if len(set(names)) != len(names) or len(set(hosts)) != len(hosts):
            raise ValueError("peer names and origin_hosts must be unique")
