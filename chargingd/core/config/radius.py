"""``[radius]`` and ``[[radius.clients]]``: the RADIUS frontend (RFC 2865/2866/5176),
its clients with their credit modes and cut backends, and the h323-return-codes of
refusals.

Loaded by chargingd.core.config; nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass, field

# Cisco IVR h323-return-code values (Cisco's debit-card TCL IVR table): 1 invalid account,
# 3 call limit exceeded, 4 zero balance, 7 user denied/suspended, 8 service not
# available, 9 called number blocked; a fraud rule's refusal or block gets 7 (user
# denied). Vendors differ, so [radius.h323_return_codes] overrides any of these by
# refusal reason.
DEFAULT_H323_RETURN_CODES: dict[str, int] = {
    "unknown_account": 1,
    "suspended": 7,
    "insufficient_credit": 4,
    "destination_not_allowed": 9,
    "too_many_calls": 3,
    "system_error": 8,
    "fraud": 7,
}

_LOOKUPS = ("user", "ani", "default")
CREDIT_MODES = ("interim", "hold_all", "own_timer")
CUT_BACKENDS = ("rfc5176", "kamailio_jsonrpc")
# The [radius] bind values besides IP literals: socket.bind takes them (any address,
# the loopback) and configs used them before bind was checked.
BIND_NAMES = ("", "localhost")


def valid_rpc_url(url: str) -> bool:
    """http://IP:PORT/PATH with an IP literal (no resolver in the cut path)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.path.startswith("/") or parts.query:
        return False
    try:
        ipaddress.ip_address(parts.hostname or "")
        return parts.port is not None
    except ValueError:
        return False


@dataclass(frozen=True)
class RadiusClientConfig:
    """One RADIUS client (gateway or SBC), by IP address or CIDR block."""

    name: str = ""
    address: str = ""
    secret: str = field(default="", repr=False)  # never in a repr, hence never in a log
    default_account: str = ""
    # Identity lookup order: "user" (User-Name), "ani" (Calling-Station-Id), "default".
    lookup: tuple[str, ...] = _LOOKUPS
    # RFC 5176 Dynamic Authorization port on the gateway; 0 = no Disconnect/CoA.
    coa_port: int = 3799
    # Where Disconnect/CoA-Requests go, an IP literal; "" = the call's gateway (its
    # NAS-IP-Address, else the address its packets came from). For a gateway whose
    # NAS-IP-Address is not reachable from chargingd (NAT, a private or loopback
    # identity, an SBC cluster answering RFC 5176 on one address).
    coa_address: str = ""
    # "cisco" adds the h323-* VSAs (vendor 9) to replies; "generic" sends RFC attributes only.
    flavour: str = "cisco"
    # Cisco gateways account each call leg apart, all legs sharing h323-conf-id (the
    # session id of "cisco" clients). Which legs' accounting is charged, by
    # h323-call-origin: "originate" (the outgoing leg), "answer" or "all".
    cisco_leg: str = "originate"
    # None: use [radius] require_message_authenticator.
    require_message_authenticator: bool | None = None
    # How chargingd keeps this client's calls within their money (docs/credit-control.md
    # "Credit modes"): "interim" (grants renewed by Interim-Updates), "hold_all" (no
    # Interims, no cut: the money behind the whole Session-Timeout is held at authorize)
    # or "own_timer" (no Interims, can be cut: chargingd renews grants on its own timer).
    credit_mode: str = "interim"
    # How a call is cut: "rfc5176" (Disconnect-Request to coa_port) or
    # "kamailio_jsonrpc" (Kamailio's dialog module over JSON-RPC at jsonrpc_url).
    cut_backend: str = "rfc5176"
    # kamailio_jsonrpc: Kamailio's jsonrpcs over xhttp, "http://IP:PORT/RPC".
    jsonrpc_url: str = ""
    # The client echoes the Class of the Access-Accept (RFC 2865 §5.25) in its
    # Accounting-Requests: chargingd puts the account in it and writes no session
    # locator in Redis for its calls (docs/radius.md "Class"). Off: the locator is kept.
    echo_class: bool = False

    def validate(self) -> None:
        if not self.name:
            raise ValueError("a client needs a name")
        try:
            ipaddress.ip_network(self.address, strict=False)
        except ValueError:
            raise ValueError(f"client {self.name!r}: address must be an IP or CIDR") from None
        if not self.secret:
            raise ValueError(f"client {self.name!r}: secret must not be empty")
        if not self.lookup or any(item not in _LOOKUPS for item in self.lookup):
            raise ValueError(f"client {self.name!r}: lookup items must be user, ani or default")
        if not 0 <= self.coa_port <= 65535:
            raise ValueError(f"client {self.name!r}: coa_port must be 0..65535")
        if self.coa_address:
            try:
                ipaddress.ip_address(self.coa_address)
            except ValueError:
                raise ValueError(
                    f"client {self.name!r}: coa_address must be an IP literal,"
                    f" not {self.coa_address!r}"
                ) from None
        if self.flavour not in ("cisco", "generic"):
            raise ValueError(f"client {self.name!r}: flavour must be cisco or generic")
        if self.cisco_leg not in ("originate", "answer", "all"):
            raise ValueError(f"client {self.name!r}: cisco_leg must be originate, answer or all")
        self._validate_credit()

    def _validate_credit(self) -> None:
        if self.credit_mode not in CREDIT_MODES:
            raise ValueError(f"client {self.name!r}: credit_mode must be one of {CREDIT_MODES}")
        if self.cut_backend not in CUT_BACKENDS:
            raise ValueError(f"client {self.name!r}: cut_backend must be one of {CUT_BACKENDS}")
        if self.cut_backend == "kamailio_jsonrpc":
            if not valid_rpc_url(self.jsonrpc_url):
                raise ValueError(
                    f"client {self.name!r}: jsonrpc_url must be http://IP:PORT/PATH "
                    f"(an IP literal), not {self.jsonrpc_url!r}"
                )
        elif self.jsonrpc_url:
            raise ValueError(
                f"client {self.name!r}: jsonrpc_url needs cut_backend kamailio_jsonrpc"
            )


SPREADS = ("auto", "source", "request", "user", "ani")


@dataclass(frozen=True)
class RadiusConfig:
    # Run the RADIUS frontend and the session loops (cutter, reaper) in `chargingd serve`.
    enabled: bool = True
    bind: str = "0.0.0.0"
    auth_port: int = 1812
    acct_port: int = 1813
    # Packets waiting for a worker task; beyond this they are dropped and counted.
    queue_size: int = 4096
    worker_tasks: int = 64
    # A request that waited longer than this for a worker task is dropped unanswered
    # (counted as shed_stale): gateways retransmit after 1-3 s. 0 = never.
    max_wait_ms: int = 500
    # How [server] workers = N processes share the ports: "source" (the kernel's hash
    # of the source address and port), "request" (by Request Authenticator, so one
    # gateway socket reaches every process), "user" / "ani" (by the User-Name /
    # Calling-Station-Id value: one caller's requests in one process; radius/ports.py).
    # "auto" (the default): "user" when the fraud rules are on and workers > 1 (each
    # caller's kept fraud value in one process), else "source"; Config resolves it.
    spread: str = "auto"
    # Read datagrams with recvmmsg and send the replies of a loop iteration with one
    # sendmmsg (radius/_mmsg.c; Linux, when built): fewer system calls per request.
    batch_syscalls: bool = True
    # One line per answered request, written in batches; "" = off. A relative path
    # is under [server] data_dir.
    access_log: str = ""
    # RFC 5080 §2.2.2 duplicate detection: replies kept this long, at most this many.
    duplicate_cache_ttl_s: float = 30.0
    duplicate_cache_size: int = 65536
    require_message_authenticator: bool = True
    # Disconnect-Request / CoA-Request (RFC 5176): first wait, then doubled per retry.
    coa_timeout_s: float = 1.0
    coa_retries: int = 3
    h323_return_codes: dict[str, int] = field(
        default_factory=lambda: dict(DEFAULT_H323_RETURN_CODES)
    )
    clients: tuple[RadiusClientConfig, ...] = ()

    def validate(self) -> None:
        self._validate_ports()
        if self.queue_size < 1 or self.worker_tasks < 1 or self.duplicate_cache_size < 1:
            raise ValueError("queue_size, worker_tasks and duplicate_cache_size must be >= 1")
        if self.spread not in SPREADS:
            raise ValueError(
                f'spread must be "auto", "source", "request", "user" or "ani", not {self.spread!r}'
            )
        if self.max_wait_ms < 0:
            raise ValueError("max_wait_ms must be >= 0 (0: never shed)")
        if self.duplicate_cache_ttl_s <= 0 or self.coa_timeout_s <= 0:
            raise ValueError("duplicate_cache_ttl_s and coa_timeout_s must be positive")
        if self.coa_retries < 0:
            raise ValueError("coa_retries must be >= 0")
        unknown = set(self.h323_return_codes) - set(DEFAULT_H323_RETURN_CODES)
        if unknown:
            raise ValueError(f"h323_return_codes: unknown reasons {sorted(unknown)}")
        self._validate_clients()

    def _validate_ports(self) -> None:
        for port in (self.auth_port, self.acct_port):
            if not 0 <= port <= 65535:
                raise ValueError("ports must be 0..65535")
        try:
            # "" (any address) and "localhost" bound before cef5969 (the AF_INET
            # socket's bind resolves them) and still do; other names are refused.
            if self.bind not in BIND_NAMES:
                ipaddress.ip_address(self.bind)
        except ValueError:
            raise ValueError(
                f'bind {self.bind!r} is not an IP address (nor "" or "localhost")'
            ) from None
        if self.auth_port and self.auth_port == self.acct_port:
            # Both sockets would join one SO_REUSEPORT group: the kernel would hand
            # about half the Access-Requests to the accounting port, which drops them.
            raise ValueError(f"auth_port and acct_port must differ (both {self.auth_port})")

    def _validate_clients(self) -> None:
        names = [c.name for c in self.clients]
        if len(set(names)) != len(names):
            raise ValueError("client names must be unique")
        # Packets are matched by source address: of two clients with one address (or
        # one CIDR block) only one would ever be used, its secret checked silently.
        seen: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, str] = {}
        for client in self.clients:
            network = ipaddress.ip_network(client.address, strict=False)
            if network in seen:
                raise ValueError(
                    f"clients {seen[network]!r} and {client.name!r} have the same address {network}"
                )
            seen[network] = client.name

    def return_code(self, reason: str) -> int:
        """The h323-return-code for a refusal reason (configured, else the default)."""
        return self.h323_return_codes.get(reason, DEFAULT_H323_RETURN_CODES[reason])
