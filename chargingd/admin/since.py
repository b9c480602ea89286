"""``--since`` of the ctl listings (alerts, fraud alerts): read on the ctl side, so a
`chargingd ctl` process imports this, not the daemon's alert methods."""

from __future__ import annotations

import datetime
import re

_DURATION = re.compile(r"^([0-9]+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_ms(text: str, now_ms: int) -> int:
    """``--since``: a duration back from now ("90s", "30m", "24h", "7d"), an ISO 8601
    time ("2026-01-01T08:00:00Z"; UTC when no offset) or epoch milliseconds."""
    text = text.strip()
    match = _DURATION.match(text)
    if match:
        return now_ms - int(match.group(1)) * _UNIT_S[match.group(2)] * 1000
    if text.isdigit():
        return int(text)
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--since {text!r}: want a duration (30m, 24h, 7d), an ISO time or epoch ms"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp() * 1000)
