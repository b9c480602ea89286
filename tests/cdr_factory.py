"""Build CDRs for the billing tests (plain data, no I/O)."""

from __future__ import annotations

from typing import Any

from chargingd.billing.cdr import CDR

# 2026-11-04 10:00:00 UTC
BASE_MS = 1_793_786_400_000


def make_cdr(i: int, **changes: Any) -> CDR:
    """The i-th CDR of a synthetic day: three accounts, 60 s + i calls, 1 cent/second."""
    duration_s = 60 + i % 120
    start_ms = BASE_MS + i * 1000
    fields: dict[str, Any] = {
        "source": "radius",
        "call_id": f"call-{i}",
        "account_id": f"acct-{i % 3}",
        "caller": "+4930123456",
        "callee": f"+4930{7000000 + i}",
        "destination": "DE_FIX",
        "start_ms": start_ms,
        "answer_ms": start_ms + 2000,
        "end_ms": start_ms + 2000 + duration_s * 1000,
        "duration_s": duration_s,
        "billed_s": duration_s,
        "cost_micros": duration_s * 10_000,
        "currency": "EUR",
        "tariff": "standard",
        "gateway": "10.0.0.1",
        "disconnect_cause": 16,
        "status": "normal",
        "extra": {"n": str(i)},
    }
    fields.update(changes)
    return CDR(**fields)
