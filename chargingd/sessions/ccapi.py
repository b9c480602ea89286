"""The internal credit-control API between protocol frontends and sessions/service.py.

Frontends (radius/server.py for RADIUS, diameter.py later) translate packets into these
requests and answers; they hold no business rules (DESIGN: "frontends translate,
sessions/service.py decides"). This file is the contract both sides code against.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol


class RefusalCode(enum.StrEnum):
    """Why a call is refused; each frontend maps these to its own codes (configurable)."""

    UNKNOWN_ACCOUNT = "unknown_account"
    SUSPENDED = "suspended"
    INSUFFICIENT_CREDIT = "insufficient_credit"
    DESTINATION_NOT_ALLOWED = "destination_not_allowed"
    TOO_MANY_CALLS = "too_many_calls"
    SYSTEM_ERROR = "system_error"  # Redis unreachable under fail-closed, etc.
    FRAUD = "fraud"  # a fraud rule refused the call, or blocked the account (fraud/)


class UsageKind(enum.StrEnum):
    START = "start"
    INTERIM = "interim"
    STOP = "stop"
    FAILED = "failed"  # the call was never set up (RADIUS Acct-Status-Type Failed, 15)


# RADIUS Class (RFC 2865 §5.25) of an Access-Accept for clients with echo_class: the
# account, read back from their Accounting-Requests instead of the session locator.
CLASS_PREFIX = b"chargingd:"


def account_class(account_id: str) -> bytes:
    """The Class value naming ``account_id``; b"" when it does not fit an attribute
    (then the session keeps its locator)."""
    value = CLASS_PREFIX + account_id.encode()
    return value if len(value) <= 253 else b""


def account_of_class(value: bytes) -> str:
    """The account a Class value names ("" when it is not one of ours)."""
    if not value.startswith(CLASS_PREFIX):
        return ""
    return value[len(CLASS_PREFIX) :].decode("utf-8", "replace")


class CallInfo:
    """Who calls whom through which gateway, as the frontend saw it (raw numbers).

    Built per request: a plain class with its own __init__ (a dataclass's is interpreted
    even compiled, docs/performance.md round 8a), frozen (Final), with a dataclass's
    equality, hash and repr; ``replace`` and ``as_dict`` stand for dataclasses.replace
    and asdict (the spool's JSON lines are the same)."""

    __slots__ = (
        "account_hint",
        "call_origin",
        "called",
        "caller_ip",
        "calling",
        "client",
        "conf_id",
        "default_account",
        "gateway",
        "lookup",
        "nas_session_id",
        "session_id",
        "user_name",
    )

    def __init__(
        self,
        session_id: str,  # Acct-Session-Id (RADIUS) / Session-Id (Diameter)
        user_name: str,  # User-Name, may be ""
        calling: str,  # Calling-Station-Id, raw
        called: str,  # Called-Station-Id, raw
        gateway: str,  # NAS-IP-Address (or the packet's source address)
        client: str,  # the configured client's name
        default_account: str = "",  # per-client default account (wholesale trunks)
        conf_id: str = "",  # h323-conf-id when present
        # Identity lookup order for this client, e.g. ("user", "ani", "default").
        lookup: tuple[str, ...] = ("user", "ani", "default"),
        # The gateway's own Acct-Session-Id when the session is keyed by something else
        # (Cisco: the h323-conf-id both legs share), and the leg's h323-call-origin:
        # what a Cisco POD handler matches a Disconnect-Request on.
        nas_session_id: str = "",
        call_origin: str = "",
        # Where the call came from, when the gateway says (the fraud rules count calls
        # per caller IP): an IP address, "" unknown.
        caller_ip: str = "",
        # Accounting only: the account the gateway echoed in Class (clients with
        # echo_class; "" none): the session's record is found without the locator.
        account_hint: str = "",
    ) -> None:
        self.session_id: Final = session_id
        self.user_name: Final = user_name
        self.calling: Final = calling
        self.called: Final = called
        self.gateway: Final = gateway
        self.client: Final = client
        self.default_account: Final = default_account
        self.conf_id: Final = conf_id
        self.lookup: Final = lookup
        self.nas_session_id: Final = nas_session_id
        self.call_origin: Final = call_origin
        self.caller_ip: Final = caller_ip
        self.account_hint: Final = account_hint

    def as_dict(self) -> dict[str, Any]:
        """Field -> value in field order (dataclasses.asdict of the dataclass it was)."""
        return {
            "session_id": self.session_id,
            "user_name": self.user_name,
            "calling": self.calling,
            "called": self.called,
            "gateway": self.gateway,
            "client": self.client,
            "default_account": self.default_account,
            "conf_id": self.conf_id,
            "lookup": self.lookup,
            "nas_session_id": self.nas_session_id,
            "call_origin": self.call_origin,
            "caller_ip": self.caller_ip,
            "account_hint": self.account_hint,
        }

    def replace(self, **changes: Any) -> CallInfo:
        """A copy with ``changes`` (dataclasses.replace; an unknown field: TypeError)."""
        return CallInfo(**(self.as_dict() | changes))

    def _values(self) -> tuple[Any, ...]:
        return (
            self.session_id,
            self.user_name,
            self.calling,
            self.called,
            self.gateway,
            self.client,
            self.default_account,
            self.conf_id,
            self.lookup,
            self.nas_session_id,
            self.call_origin,
            self.caller_ip,
            self.account_hint,
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, CallInfo)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return "CallInfo(" + ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items()) + ")"


class Authorized:
    """A first grant. Built per authorize: a plain class with its own __init__ (a
    dataclass's is interpreted even compiled), frozen (Final), with a dataclass's
    equality, hash and repr."""

    __slots__ = (
        "account_id",
        "credit_micros",
        "currency",
        "final",
        "grant_s",
        "interim_interval_s",
        "postpaid",
        "session_timeout_s",
    )

    def __init__(
        self,
        account_id: str,
        session_timeout_s: int,  # the longest the available money pays for right now
        interim_interval_s: int,
        credit_micros: int,  # available money at authorize time (h323-credit-amount)
        currency: str,
        postpaid: bool = False,  # Cisco h323-billing-model: 0 credit (postpaid), 1 debit
        # The usage the first hold pays for (Diameter's first Granted-Service-Unit) and
        # whether it is the last grant the balance allows (Final-Unit-Indication).
        grant_s: int = 0,
        final: bool = False,
    ) -> None:
        self.account_id: Final = account_id
        self.session_timeout_s: Final = session_timeout_s
        self.interim_interval_s: Final = interim_interval_s
        self.credit_micros: Final = credit_micros
        self.currency: Final = currency
        self.postpaid: Final = postpaid
        self.grant_s: Final = grant_s
        self.final: Final = final

    def _values(self) -> tuple[str, int, int, int, str, bool, int, bool]:
        return (
            self.account_id,
            self.session_timeout_s,
            self.interim_interval_s,
            self.credit_micros,
            self.currency,
            self.postpaid,
            self.grant_s,
            self.final,
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Authorized)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return (
            f"Authorized(account_id={self.account_id!r}, "
            f"session_timeout_s={self.session_timeout_s!r}, "
            f"interim_interval_s={self.interim_interval_s!r}, "
            f"credit_micros={self.credit_micros!r}, currency={self.currency!r}, "
            f"postpaid={self.postpaid!r}, grant_s={self.grant_s!r}, final={self.final!r})"
        )


@dataclass(frozen=True)
class GrantState:
    """A live session's grant after a usage report (Diameter answers CCR-U with it)."""

    usage_s: int  # the cumulative usage charged so far
    paid_usage_s: int  # the usage the debited plus held money pays for
    # the grant is the last the balance allows: the session has a deadline, or its hold
    # was granted in full but the money left pays no usage past it (Grants.last_grant)
    final: bool
    cut: bool = False  # the cutter is cutting it (credit gone, killed)


@dataclass(frozen=True)
class Refused:
    code: RefusalCode
    message: str  # for Reply-Message; never contains secrets
    # RADIUS h323-return-code for Cisco-style clients when the refusal names its own (a
    # fraud rule's h323_return_code); -1: [radius.h323_return_codes] of ``code``
    return_code: int = -1


class UsageReport:
    """An Accounting-Request (Start / Interim-Update / Stop) or a Diameter CCR-U/T.

    Built per accounting packet: a plain class with its own __init__ (a dataclass's is
    interpreted even compiled), frozen (Final), with a dataclass's equality, hash and
    repr; ``replace`` and ``as_dict`` stand for dataclasses.replace and asdict (the
    spool's JSON lines are the same)."""

    __slots__ = (
        "answer_ms",
        "call",
        "direction",
        "disconnect_cause",
        "event_ms",
        "kind",
        "other_leg_id",
        "quality",
        "sip_code",
        "terminate_cause",
        "usage_reported",
        "usage_s",
    )

    def __init__(
        self,
        call: CallInfo,
        kind: UsageKind,
        usage_s: int,  # cumulative Acct-Session-Time
        # When it happened at the gateway: Event-Timestamp (RFC 2869 §5.3), else the
        # arrival time minus Acct-Delay-Time (RFC 2866 §5.2).
        event_ms: int,
        disconnect_cause: int = 0,  # Q.850 (h323-disconnect-cause is hex on Cisco)
        terminate_cause: str = "",  # Acct-Terminate-Cause name
        # False when the gateway did not say how long the call lasted (no
        # Acct-Session-Time: Kamailio's acc accounts events, not durations).
        usage_reported: bool = True,
        sip_code: int = 0,  # final SIP response of the accounted transaction, 0 = not given
        # Call quality the gateway reported on its Stop (pdd_ms, mos, jitter_ms,
        # loss_pct), as (name, decimal text) pairs; they go into the CDR's extra
        # (monitoring reads them).
        quality: tuple[tuple[str, str], ...] = (),
        # When the call was answered, if the gateway says (FreeSWITCH's
        # Freeswitch-Callanswerdate): -1 it does not, the kind and usage imply it (RFC
        # 2866: a Start is the answer; else event_ms - usage_s, 0 for no usage); 0 not
        # answered (mod_radius_cdr's Start, sent at routing: the call rings, taken as
        # the answer all the same, money-safe; its Stop: never answered).
        answer_ms: int = -1,
        # FreeSWITCH's Freeswitch-Direction ("inbound", "outbound": a leg it originated,
        # a bridge's B-leg, never adopted here) and Freeswitch-Other-Leg-Id (the
        # bridged partner's session id); "" when the gateway does not say.
        direction: str = "",
        other_leg_id: str = "",
    ) -> None:
        self.call: Final = call
        self.kind: Final = kind
        self.usage_s: Final = usage_s
        self.event_ms: Final = event_ms
        self.disconnect_cause: Final = disconnect_cause
        self.terminate_cause: Final = terminate_cause
        self.usage_reported: Final = usage_reported
        self.sip_code: Final = sip_code
        self.quality: Final = quality
        self.answer_ms: Final = answer_ms
        self.direction: Final = direction
        self.other_leg_id: Final = other_leg_id

    def as_dict(self) -> dict[str, Any]:
        """Field -> value in field order (``call`` as it is, not as a dict)."""
        return {
            "call": self.call,
            "kind": self.kind,
            "usage_s": self.usage_s,
            "event_ms": self.event_ms,
            "disconnect_cause": self.disconnect_cause,
            "terminate_cause": self.terminate_cause,
            "usage_reported": self.usage_reported,
            "sip_code": self.sip_code,
            "quality": self.quality,
            "answer_ms": self.answer_ms,
            "direction": self.direction,
            "other_leg_id": self.other_leg_id,
        }

    def replace(self, **changes: Any) -> UsageReport:
        """A copy with ``changes`` (dataclasses.replace; an unknown field: TypeError)."""
        return UsageReport(**(self.as_dict() | changes))

    def _values(self) -> tuple[Any, ...]:
        return tuple(self.as_dict().values())

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, UsageReport)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return "UsageReport(" + ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items()) + ")"


@dataclass(frozen=True)
class SessionRef:
    """What a frontend needs to address a live call at its gateway (RFC 5176 §3)."""

    session_id: str
    user_name: str
    gateway: str  # NAS-IP-Address: where Disconnect-Request / CoA goes
    client: str
    nas_session_id: str = ""  # the gateway's own Acct-Session-Id ("" = session_id)
    conf_id: str = ""  # h323-conf-id as the gateway sent it
    call_origin: str = ""  # h323-call-origin of the charged leg


class CallCutter(Protocol):
    """Implemented by the frontend: tear down or re-time a live call at its gateway."""

    async def disconnect(self, ref: SessionRef, reason: str) -> bool:
        """True when the gateway confirmed (ACK, or NAK 503 session not found)."""
        ...

    async def change_timeout(self, ref: SessionRef, session_timeout_s: int) -> bool:
        """CoA-Request with a new Session-Timeout; False if unsupported or refused."""
        ...


class CallCutterRouter:
    """A CallCutter that hands each session to the frontend owning its client (RADIUS
    Disconnect/CoA, Diameter ASR/RAR): the cutter stays protocol-blind. Routes with
    an ``owns`` test are asked first; the one without (the fallback) takes the rest."""

    def __init__(self, fallback: CallCutter | None = None) -> None:
        self._routes: list[tuple[Callable[[SessionRef], bool], CallCutter]] = []
        self.fallback = fallback

    def add(self, cutter: CallCutter, owns: Callable[[SessionRef], bool] | None = None) -> None:
        """Route the sessions ``owns`` accepts to ``cutter``; no ``owns``: the fallback."""
        if owns is None:
            self.fallback = cutter
        else:
            self._routes.append((owns, cutter))

    def route(self, ref: SessionRef) -> CallCutter | None:
        """The frontend that can reach this session's gateway, or None."""
        for owns, cutter in self._routes:
            if owns(ref):
                return cutter
        return self.fallback

    async def disconnect(self, ref: SessionRef, reason: str) -> bool:
        cutter = self.route(ref)
        return False if cutter is None else await cutter.disconnect(ref, reason)

    async def change_timeout(self, ref: SessionRef, session_timeout_s: int) -> bool:
        cutter = self.route(ref)
        return False if cutter is None else await cutter.change_timeout(ref, session_timeout_s)


class CreditControl(Protocol):
    """Implemented by sessions/service.py: what a frontend asks for each request it has decoded."""

    async def authorize(self, call: CallInfo) -> Authorized | Refused:
        """Decide an Access-Request / CCR-I: a first grant or a refusal."""
        ...

    async def authenticate(self, call: CallInfo) -> Authorized | Refused:
        """A prepaid card's check before its number is dialled (the debit-card IVR's
        authentication Access-Request: account and PIN, no called number): the account
        and what it may spend (``credit_micros``), nothing reserved, no session
        (``session_timeout_s`` 0); or a refusal."""
        ...

    async def account(self, report: UsageReport) -> None:
        """Record a Start / Interim-Update / Stop; returns once it is safe to acknowledge."""
        ...

    async def gateway_restarted(self, gateway: str, client: str, *, event_ms: int = 0) -> None:
        """Accounting-On/Off (RFC 2866 §5.1): the gateway lost its calls; close them.
        ``event_ms``: when it restarted (Event-Timestamp, else the arrival minus
        Acct-Delay-Time; 0: now)."""
        ...


class QuotaControl(CreditControl, Protocol):
    """CreditControl plus what a quota-based frontend (Diameter CCR-U) reads back."""

    async def grant_state(self, session_id: str) -> GrantState | None:
        """The grant of a live session after its last report; None when not live."""
        ...

    async def closed_usage(self, session_id: str) -> int | None:
        """The usage a closed session was charged for (its CDR's duration); None when
        it is not closed (never authorized, live, or its record expired)."""
        ...
