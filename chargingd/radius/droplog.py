"""Requests dropped because of how a client is configured: counted per client, and
said in the log, rate-limited, with what to change.

A dropped Access-Request gets no answer at all (RFC 2865 §3, RFC 3579 §3.2), so the
gateway only sees a timeout: without this log line an operator looks for the fault
on the wrong side. The commonest case is radcli before 1.5 (Kamailio's misc_radius
and acc_radius on Debian 12), which never sends a Message-Authenticator.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("chargingd.aaa")

MISSING_MESSAGE_AUTHENTICATOR = "missing_message_authenticator"
BAD_AUTHENTICATOR = "bad_authenticator"

_WHY = {
    MISSING_MESSAGE_AUTHENTICATOR: (
        "dropped Access-Request without Message-Authenticator from client %r (%s): "
        "%d since the last report. RFC 3579 and BlastRADIUS (CVE-2024-3596) require it; "
        "radcli before 1.5 (Kamailio's RADIUS modules) never sends one. If this client "
        "cannot, set require_message_authenticator = false in its [[radius.clients]] "
        "table (docs/radius.md)"
    ),
    BAD_AUTHENTICATOR: (
        "dropped request with a wrong authenticator from client %r (%s): %d since the "
        "last report. The shared secret differs between the client and its "
        "[[radius.clients]] table"
    ),
}


class DropLog:
    """Counts per client and reason; one warning per client and reason per interval."""

    def __init__(
        self, interval_s: float = 60.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._interval_s = interval_s
        self._now = monotonic
        self._counts: dict[str, dict[str, int]] = {}
        self._unreported: dict[tuple[str, str], int] = {}
        self._next_report: dict[tuple[str, str], float] = {}

    def dropped(self, client: str, reason: str, source_ip: str) -> None:
        """One request of `client` dropped for `reason` (one of this module's names)."""
        per_client = self._counts.setdefault(client, {})
        per_client[reason] = per_client.get(reason, 0) + 1
        key = (client, reason)
        self._unreported[key] = self._unreported.get(key, 0) + 1
        now = self._now()
        if now >= self._next_report.get(key, 0.0):
            log.warning(_WHY[reason], client, source_ip, self._unreported[key])
            self._unreported[key] = 0
            self._next_report[key] = now + self._interval_s

    def as_dict(self) -> dict[str, dict[str, int]]:
        """Drops so far by client name, then reason (for server.status)."""
        return {client: dict(reasons) for client, reasons in self._counts.items()}
