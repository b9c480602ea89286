"""Accounting for a session that is already closed (DESIGN invariant 4).

A session closed without its gateway's final word (reaped as stale, closed by a
gateway restart) is *provisional*: the Stop that arrives later, within the closed
record's lifetime (``closed_ttl_s``), corrects it. The ledger moves the session's
debit to what the reported usage costs (a debit or a refund, one idempotent
correct.lua with the reason), and a new revision of the CDR replaces the
provisional one in the billing database (same source and call id): one call, one
CDR, with the usage, status and cause the gateway reported. A late Interim that
reports more than the provisional usage raises it the same way (still provisional).

On a session its own Stop closed, a retransmission (usage not above the CDR's) is a
duplicate and changes nothing; a report of more usage contradicts the CDR and goes to
``cdr:orphans`` with a reason and a log line: never acknowledged and forgotten.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable

from chargingd.billing.cdr import CdrStatus
from chargingd.ledger import Ledger
from chargingd.sessions.ccapi import UsageKind, UsageReport
from chargingd.sessions.close import CloseBusy, Ending, SessionCloser
from chargingd.sessions.settle import Settler
from chargingd.sessions.store import SessionRecord, SessionStore

log = logging.getLogger("chargingd.sessions")

Orphan = Callable[[UsageReport, str, str], Awaitable[None]]
FINAL = (UsageKind.STOP, UsageKind.FAILED)


class LateAccounting:
    """What sessions/service.py does with accounting for a closed record."""

    def __init__(
        self,
        *,
        store: SessionStore,
        ledger: Ledger,
        closer: SessionCloser,
        settler: Settler,
        orphan: Orphan,
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.closer = closer
        self.settler = settler
        self.orphan = orphan
        self.corrected = 0

    async def closed(self, rec: SessionRecord, report: UsageReport, usage_s: int) -> None:
        """``rec`` is closed; ``usage_s`` is the report's usage (derived for a Stop
        without Acct-Session-Time)."""
        final = report.kind in FINAL
        if rec.provisional and (final or usage_s > rec.last_usage_s):
            await self.correct(rec, report, usage_s)
        elif usage_s > rec.last_usage_s:
            said = f"{rec.session_id} reports {usage_s}s after its CDR said {rec.last_usage_s}s"
            await self.orphan(report, f"{report.kind.value}_after_close", said)
        else:  # a retransmission, or older than what the CDR says: nothing new
            log.debug("%s of closed session %s: nothing new", report.kind.value, rec.session_id)

    async def correct(self, rec: SessionRecord, report: UsageReport, usage_s: int) -> None:
        """Move a provisional session's charge and CDR to the reported usage."""
        token = uuid.uuid4().hex
        if not await self.store.acquire_close(rec, token):
            raise CloseBusy(f"session {rec.session_id} is being closed or corrected")
        try:
            fresh = await self.store.get(rec.account_id, rec.session_id)
            if fresh is None or not fresh.provisional:
                return  # corrected meanwhile by another daemon (it held the lease)
            await self._correct(fresh, report, usage_s)
        finally:
            await self.store.release_close(rec, token)

    async def _correct(self, rec: SessionRecord, report: UsageReport, usage_s: int) -> None:
        final = report.kind in FINAL
        status = CdrStatus.NORMAL if final else rec.status
        # a late FreeSWITCH Stop says the real answer (its Start, which the reaper
        # charged from, was sent at routing): rated and shown from there
        answer_ms = report.answer_ms if final else -1
        if answer_ms == usage_s == 0:
            # never answered: unanswered even if the own timer cut it ringing, as a
            # Stop in time closes it (Accounting._ending), not the cut's status
            status = CdrStatus.UNANSWERED
        rated = rec if answer_ms < 0 else rec.replace(answer_ms=answer_ms)
        settlement = self.settler.settle(rated, usage_s, status)
        why = f"late {report.kind.value} after {rec.status}"
        result = await self.ledger.correct(
            rec.account_id,
            rec.session_id,
            settlement.target_micros,
            policy=settlement.policy,
            why=why,
            source=self.closer.source_of(rec),
        )
        extra = {
            "corrected": f"late_{report.kind.value}",
            "provisional_status": rec.status,
            "provisional_usage_s": str(rec.last_usage_s),
            "provisional_micros": str(rec.charged_micros),
        }
        if report.terminate_cause:
            extra["terminate_cause"] = report.terminate_cause
        ending = Ending(
            end_ms=report.event_ms,
            status=status,
            disconnect_cause=report.disconnect_cause,
            extra=extra,
            provisional=not final,
            answer_ms=answer_ms,
        )
        # The correction's CDR keeps the answer time the session had (a late Stop of
        # a call never seen answered is rated from its authorize time), unless the
        # Stop says its own (FreeSWITCH).
        cdr = self.closer.build_cdr(rec, settlement, result, ending, revision=rec.cdr_revision + 1)
        await self.store.append_cdr_and_close(cdr, rec, self.closer.closed_fields(cdr, ending))
        self.corrected += 1
        log.warning(
            "corrected %s of %s: %s %ss -> %s %ss, charged %s -> %s",
            rec.session_id,
            rec.account_id,
            rec.status,
            rec.last_usage_s,
            cdr.status,
            usage_s,
            rec.charged_micros,
            cdr.charged_micros,
        )
