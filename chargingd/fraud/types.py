"""What the fraud rules are asked about (a call, a call event) and what they answer."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from chargingd.fraud.rules import Rule


class Decision(enum.StrEnum):
    ALLOW = "allow"  # no rule refuses (alerts and shadow rules may have fired)
    REFUSE = "refuse"
    BLOCK = "block"  # refused, and the account is blocked (by this call or before)


class CallFacts:
    """One authorize, as the rules see it (never changed once built). Built per
    authorize: a plain class with its own __init__ (a dataclass's is interpreted even
    compiled: docs/fraud-cost.md "Tenth round"), frozen (Final)."""

    __slots__ = (
        "account_id",
        "callee",
        "caller_ip",
        "client",
        "identity",
        "session_id",
        "tariff",
    )

    def __init__(
        self,
        account_id: str,
        session_id: str,
        callee: str,  # E.164 "+..."
        identity: str = "",  # "user:NAME" / "ani:+E164" the account was found by; "" default
        caller_ip: str = "",  # where the call came from, when the gateway says; "" unknown
        tariff: str = "",  # the account's plan id (overrides per tariff)
        client: str = "",  # the gateway that asks (the caller's records: fraud.lua fr_started)
    ) -> None:
        self.account_id: Final = account_id
        self.session_id: Final = session_id
        self.callee: Final = callee
        self.identity: Final = identity
        self.caller_ip: Final = caller_ip
        self.tariff: Final = tariff
        self.client: Final = client

    def _values(self) -> tuple[str, ...]:
        return (
            self.account_id,
            self.session_id,
            self.callee,
            self.identity,
            self.caller_ip,
            self.tariff,
            self.client,
        )

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, CallFacts)
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return (
            f"CallFacts(account_id={self.account_id!r}, session_id={self.session_id!r}, "
            f"callee={self.callee!r}, identity={self.identity!r}, "
            f"caller_ip={self.caller_ip!r}, tariff={self.tariff!r}, "
            f"client={self.client!r})"
        )


@dataclass(frozen=True)
class Fired:
    """A rule over its threshold: ``count`` is what it counted (calls, destinations,
    micros; the answer ratio in percent for asr)."""

    rule: Rule
    count: int


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    rule: Rule | None = None  # the rule that decided (refuse, block)
    fired: tuple[Fired, ...] = ()  # every rule over its threshold, shadow ones too
    blocked_now: bool = False  # this evaluation blocked the account
    # A retransmission of a call already answered: not counted again, not admitted
    # again; a rule's refusal is the one remembered (fraud.lua fraud_seen).
    again: bool = False

    @property
    def allowed(self) -> bool:
        return self.decision is Decision.ALLOW

    @property
    def message(self) -> str:
        """The Reply-Message of a refusal."""
        return self.rule.message if self.rule is not None else ""

    @property
    def return_code(self) -> int:
        """The refusal's h323-return-code the rule names (-1: the frontend's own)."""
        return self.rule.return_code if self.rule is not None else -1


ALLOWED = Verdict(Decision.ALLOW)
KNOWN = Verdict(Decision.ALLOW, again=True)  # the ledger answered the call: it answers again
