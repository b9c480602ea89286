"""The ``[assurance]`` section: how `chargingd assure` matches calls and what it calls a
finding (tolerances, grace periods, the leakage threshold of its exit status).

Loaded by chargingd.core.config; nothing here does I/O. Amounts and percentages are
decimal strings (never floats), turned into integers by chargingd.assurance.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from chargingd.core.money import AmountError, parse_amount

_PERCENT = re.compile(r"[0-9]{1,3}(\.[0-9]{1,2})?")


def percent_to_basis_points(text: str) -> int:
    """ "1" or "2.5" (percent, at most 2 decimals) -> hundredths of a percent."""
    if not _PERCENT.fullmatch(text):
        raise ValueError(f'{text!r} is not a percentage such as "1" or "2.5"')
    whole, _, frac = text.partition(".")
    value = int(whole) * 100 + int((frac + "00")[:2])
    if value > 10_000:
        raise ValueError(f"{text!r}: at most 100 percent")
    return value


_SECONDS = (
    "start_tolerance_s", "duration_tolerance_s", "hold_grace_s", "session_grace_s",
    "stuck_after_s",
)  # fmt: skip


@dataclass(frozen=True)
class AssuranceConfig:
    # A switch call and a live call are the same call when they share an id; else when
    # caller and callee are equal and their starts differ by at most this (seconds).
    start_tolerance_s: int = 10
    # A matched call's durations may differ this much before it is a finding: the
    # difference must exceed both the seconds and the percent of the switch's duration.
    duration_tolerance_s: int = 2
    duration_tolerance_pct: str = "1"
    # A hold still there this long after its lease expired (the sweeper missed it).
    hold_grace_s: int = 60
    # A live session this long past the usage its money pays for (its Session-Timeout).
    session_grace_s: int = 300
    # A CDR still in the Redis stream (not delivered, or pending at a consumer) this
    # long after it was written; dead-lettered CDRs are findings at any age.
    stuck_after_s: int = 600
    # `chargingd assure` exits 3 when a currency's leakage in the run exceeds this.
    leakage_threshold: str = "0"
    # Mediation source -> the RADIUS/Diameter client names whose calls its files hold;
    # a source not listed is compared with every live CDR of its match_source.
    source_clients: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Findings stored per run (every one is counted and its money summed).
    max_findings: int = 100_000

    def validate(self) -> None:
        for name in _SECONDS:
            if not 0 <= getattr(self, name) <= 86_400:
                raise ValueError(f"{name} must be between 0 and 86400")
        percent_to_basis_points(self.duration_tolerance_pct)
        try:
            parse_amount(self.leakage_threshold, allow_negative=False)
        except AmountError as exc:
            raise ValueError(f"leakage_threshold: {exc}") from None
        if not 1 <= self.max_findings <= 10_000_000:
            raise ValueError("max_findings must be between 1 and 10000000")
        for source, clients in self.source_clients.items():
            if not source or not clients or not all(clients):
                raise ValueError("source_clients entries must be source = [client names]")

    @property
    def duration_tolerance_bp(self) -> int:
        """duration_tolerance_pct in hundredths of a percent."""
        return percent_to_basis_points(self.duration_tolerance_pct)

    @property
    def leakage_threshold_micros(self) -> int:
        return parse_amount(self.leakage_threshold, allow_negative=False)
