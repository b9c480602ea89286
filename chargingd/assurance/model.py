"""What a reconciliation finds: the kinds of finding, one finding, a run's parameters
and its summary.

Money of a finding is signed, in micro-units of its currency: > 0 is revenue the
operator is missing (leakage), < 0 is money the customer was charged beyond what the
records support (over-billing). A held hold is the customer's money blocked, not
revenue: it never counts as leakage.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


class AssuranceError(Exception):
    """A run that cannot be done as asked (bad period, unknown source); ``code`` is stable."""

    code = "assurance_error"


class Kind(enum.StrEnum):
    """Every kind of finding (docs/assurance.md says what causes each and what to do)."""

    # (a) against (b): the switch's own records against the live sessions
    UNCHARGED_CALL = "uncharged_call"  # the switch completed it, nothing charged it
    UNKNOWN_TO_SWITCH = "unknown_to_switch"  # charged live, the switch never saw it
    DURATION_MISMATCH = "duration_mismatch"  # both saw it, durations differ
    DOUBLE_CHARGE = "double_charge"  # one call charged twice (two sessions, two sources)
    # the CDRs themselves
    CHARGE_WITHOUT_REASON = "charge_without_reason"  # charged != rated, no reason
    STUCK_CDR = "stuck_cdr"  # still in the Redis stream or dead-lettered
    # (c) the ledger against the CDRs
    UNEXPLAINED_MOVEMENT = "unexplained_movement"  # money moved, no record explains it
    UNRECORDED_CHARGE = "unrecorded_charge"  # a CDR's charge the ledger did not move
    BALANCE_MISMATCH = "balance_mismatch"  # balance != opening + top-ups - debits
    HOLD_PAST_LEASE = "hold_past_lease"  # a hold the sweeper did not reclaim
    SESSION_PAST_TIMEOUT = "session_past_timeout"  # live past what its money pays for
    # (d) the invoices against the ledger and the CDRs
    INVOICE_MISMATCH = "invoice_mismatch"

    @property
    def leaks(self) -> bool:
        """Whether positive money of this kind is revenue at risk (counted as leakage)."""
        return self is not Kind.HOLD_PAST_LEASE


@dataclass(frozen=True)
class Finding:
    kind: Kind
    account_id: str
    currency: str
    money_micros: int
    source: str = ""  # the CDR source the finding is about ("radius", "sw1", ...)
    call_id: str = ""  # its call id, session id, invoice number or transaction id
    matched_by: str = ""  # how the switch call and the live call were matched
    detail: dict[str, Any] = field(default_factory=dict)

    def key(self) -> tuple[str, str, str, str]:
        return (self.kind.value, self.account_id, self.source, self.call_id)


@dataclass(frozen=True)
class Sources:
    """The mediation sources a run compares, with what it needs of each."""

    # name -> (charge mode, match_source, match_on, rate)
    switch: dict[str, tuple[str, str, str, bool]]
    live: tuple[str, ...] = ("radius", "diameter")
    clients: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def record_only(self) -> list[str]:
        """The sources whose calls were charged live (compared with the sessions)."""
        return sorted(n for n, (charge, *_rest) in self.switch.items() if charge == "record_only")


@dataclass(frozen=True)
class RunParams:
    """One run: the period [start, end), its filters and the tolerances it used."""

    start: datetime
    end: datetime
    source: str | None = None
    account_id: str | None = None
    start_tolerance_s: int = 10
    duration_tolerance_s: int = 2
    duration_tolerance_bp: int = 100  # hundredths of a percent
    hold_grace_s: int = 60
    session_grace_s: int = 300
    stuck_after_s: int = 600
    leakage_threshold_micros: int = 0
    max_findings: int = 100_000

    def as_json(self) -> dict[str, Any]:
        return {
            "start_tolerance_s": self.start_tolerance_s,
            "duration_tolerance_s": self.duration_tolerance_s,
            "duration_tolerance_pct": f"{self.duration_tolerance_bp / 100:g}",
            "hold_grace_s": self.hold_grace_s,
            "session_grace_s": self.session_grace_s,
            "stuck_after_s": self.stuck_after_s,
            "leakage_threshold_micros": self.leakage_threshold_micros,
        }


@dataclass
class Summary:
    """What a run found, by kind: counts, money per currency, leakage per currency."""

    counts: dict[str, int] = field(default_factory=dict)
    money: dict[str, dict[str, int]] = field(default_factory=dict)  # kind -> currency -> micros
    leakage: dict[str, int] = field(default_factory=dict)  # currency -> micros
    matching: dict[str, int] = field(default_factory=dict)  # calls compared, matched how

    @classmethod
    def of(cls, findings: Iterable[Finding], matching: dict[str, int]) -> Summary:
        summary = cls(matching=dict(matching))
        for f in findings:
            summary.counts[f.kind.value] = summary.counts.get(f.kind.value, 0) + 1
            per = summary.money.setdefault(f.kind.value, {})
            per[f.currency] = per.get(f.currency, 0) + f.money_micros
            if f.kind.leaks and f.money_micros > 0:
                summary.leakage[f.currency] = summary.leakage.get(f.currency, 0) + f.money_micros
        return summary

    def over(self, threshold_micros: int) -> bool:
        """Leakage of some currency exceeds the threshold (the exit status says so)."""
        return any(v > threshold_micros for v in self.leakage.values())


@dataclass(frozen=True)
class Run:
    """A stored run: its parameters, summary and (when read back) findings."""

    run_id: int
    started_at: datetime
    finished_at: datetime
    start: datetime
    end: datetime
    source: str | None
    account_id: str | None
    params: dict[str, Any]
    summary: Summary
    over_threshold: bool
    findings_kept: int
    created_by: str
    findings: tuple[Finding, ...] = ()
