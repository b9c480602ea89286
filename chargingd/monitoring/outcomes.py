"""How a call ended, in the terms of ITU-T E.411 / E.425 and GSMA IR.42 (pure).

Every call chargingd authorized ends in exactly one CDR (DESIGN invariant 4); each CDR
is one *attempt* (a seizure of the outgoing route) and falls in exactly one outcome:

- ``answered``: the CDR has an answer time (talk time > 0);
- ``busy``: user busy (Q.850 17; SIP 486, 600);
- ``no_answer``: ring no answer (Q.850 18, 19; SIP 408);
- ``rejected``: terminal rejection or unavailability (Q.850 20, 21; SIP 480, 603);
- ``abandoned``: the caller gave up before the answer (Q.850 16 on an unanswered
  call; SIP 487 Request Terminated): customer behaviour, as E.425 treats it;
- ``failed``: any other cause the gateway reported (congestion, no route, network
  or server failure, unallocated number);
- ``unknown``: unanswered and the gateway reported no cause at all.

The SIP response code (Kamailio's Sip-Response-Code, ``extra["sip_code"]``) wins over
the Q.850 cause (Cisco's h323-disconnect-cause) when a CDR carries both.
NER's numerator is answered + busy + no_answer + rejected + abandoned (the network
delivered the call; the called or calling user decided), its denominator every
attempt whose outcome is known (``unknown`` excluded, counted apart).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

from chargingd.billing.cdr import CDR

ANSWERED = "answered"
OUTCOMES = ("answered", "busy", "no_answer", "rejected", "abandoned", "failed", "unknown")
NER_EFFECTIVE = frozenset(OUTCOMES[:5])

SIP_OUTCOMES = {
    486: "busy",  # Busy Here
    600: "busy",  # Busy Everywhere
    408: "no_answer",  # Request Timeout: the INVITE timer ran out while it rang
    480: "rejected",  # Temporarily Unavailable (not registered, DND)
    603: "rejected",  # Decline
    487: "abandoned",  # Request Terminated: the caller sent CANCEL
}
Q850_OUTCOMES = {
    17: "busy",  # user busy
    18: "no_answer",  # no user responding
    19: "no_answer",  # no answer from user (user alerted)
    20: "rejected",  # subscriber absent
    21: "rejected",  # call rejected
    16: "abandoned",  # normal call clearing before any answer: the caller hung up
}

# Call quality read from CDR extras (radius/quality.py writes them): name -> the
# plausible range; values outside it are ignored, never averaged.
QUALITY_RANGES: dict[str, tuple[float, float]] = {
    "pdd_ms": (0.0, 120_000.0),
    "mos": (1.0, 5.0),
    "jitter_ms": (0.0, 10_000.0),
    "loss_pct": (0.0, 100.0),
}


def outcome(cdr: CDR) -> str:
    """The outcome class of one call's CDR (see the module docstring)."""
    if cdr.answer_ms > 0 and cdr.duration_s > 0:
        return ANSWERED
    sip = _int(cdr.extra.get("sip_code", ""))
    if sip >= 300:
        return SIP_OUTCOMES.get(sip, "failed")
    if cdr.disconnect_cause:
        return Q850_OUTCOMES.get(cdr.disconnect_cause, "failed")
    return "unknown"


def conversation_ms(cdr: CDR) -> int:
    """E.437's conversation time: answer to release, from the CDR's own timestamps."""
    return max(0, cdr.end_ms - cdr.answer_ms) if cdr.answer_ms else 0


def quality(cdr: CDR) -> Iterator[tuple[str, float]]:
    """The call-quality figures the CDR carries (name, value), each in its range."""
    for name, (low, high) in QUALITY_RANGES.items():
        text = cdr.extra.get(name)
        if not text:
            continue
        try:
            value = float(text)
        except ValueError:
            continue
        if math.isfinite(value) and low <= value <= high:
            yield name, value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0
