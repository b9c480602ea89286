"""Closing a session: final cost, hold release, exactly one rated CDR, closed mark.

Shared by Stop, the reaper ("stale"), Accounting-On/Off ("gateway_restart") and
fed by the cutter's cut reason ("credit_cut", "killed").
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable

from chargingd.billing.cdr import CDR, CHARGE_LIVE, CdrStatus
from chargingd.ledger import CommitResult, Ledger
from chargingd.sessions.fused import FusedPath
from chargingd.sessions.pricing import Priced
from chargingd.sessions.store import LIVE, SessionRecord, SessionStore

log = logging.getLogger("chargingd.sessions")

FUSED_ATTEMPTS = 3  # re-ratings when packets keep moving the usage during a close


class SessionCloser:
    """Ends sessions for sessions/service.py; ``price(rec, usage_s)`` rates a usage."""

    def __init__(
        self,
        *,
        store: SessionStore,
        ledger: Ledger,
        price: Callable[[SessionRecord, int], Priced],
        source: str,
        fused: FusedPath | None = None,
    ) -> None:
        """``fused``: the fused close script (lease + release in one round trip)."""
        self.fused = fused
        self.store = store
        self.ledger = ledger
        self.price = price
        self.source = source
        # The CDR source of the clients of another frontend ("diameter" for its peers).
        self.client_sources: dict[str, str] = {}

    async def close(
        self,
        rec: SessionRecord,
        *,
        usage_s: int,
        end_ms: int,
        status: str,
        disconnect_cause: int = 0,
        extra: dict[str, str] | None = None,
    ) -> CDR | None:
        """Release the money (final cost on the total usage), write one CDR, mark closed.

        Order: release (idempotent in the ledger), XADD the CDR, mark closed. A crash
        between XADD and mark may write the CDR twice; the exporter dedupes on
        (source, call_id). Returns None when another closer has it or it is closed.
        On a single Redis the lease and the release are one script (sessions/fused.py),
        and the XADD and the closed mark one pipeline (in that order).
        """
        end = (end_ms, status, disconnect_cause, extra)
        token = uuid.uuid4().hex
        for _ in range(FUSED_ATTEMPTS if self.fused is not None else 0):
            assert self.fused is not None
            usage = max(usage_s, rec.last_usage_s)
            priced = self._price(rec, usage)
            done = await self.fused.close(rec, token, usage, priced.cost_micros)
            if done.status == "stale":  # a packet moved usage or answer time: re-rate
                rec = dataclasses.replace(
                    rec, last_usage_s=done.last_usage_s, answer_ms=done.answer_ms
                )
                continue
            if done.release is None or done.record is None:
                return None  # "busy" (another closer) or "gone" (closed)
            return await self._finish(done.record, usage, priced, done.release, *end)
        if not await self.store.acquire_close(rec, token):
            return None
        current = await self.store.get(rec.account_id, rec.session_id)
        if current is None or current.state != LIVE:
            return None
        usage_s = max(usage_s, current.last_usage_s)
        priced = self._price(current, usage_s)
        result = await self.ledger.release(rec.account_id, rec.session_id, priced.cost_micros)
        return await self._finish(current, usage_s, priced, result, *end)

    def _price(self, rec: SessionRecord, usage_s: int) -> Priced:
        return self.price(rec, usage_s) if usage_s > 0 else Priced(0, 0, rec.destination)

    async def _finish(
        self,
        current: SessionRecord,
        usage_s: int,
        priced: Priced,
        result: CommitResult,
        end_ms: int,
        status: str,
        disconnect_cause: int,
        extra: dict[str, str] | None,
    ) -> CDR:
        """After the release: the rated CDR, then the closed mark (one round trip)."""
        rec = current
        cost = max(result.total_debited_micros, priced.cost_micros)
        # Past what was granted (adopted sessions had no grant: only real debt counts).
        granted = current.debited_micros + current.held_micros
        overrun = result.overrun or (not current.adopted and priced.cost_micros > granted)
        final = _final_status(status, current, usage_s, overrun)
        cdr = self._cdr(current, priced, usage_s, end_ms, final, disconnect_cause)
        cdr.extra.update(extra or {})
        if cost != priced.cost_micros:
            cdr.extra["rated_cost_micros"] = str(priced.cost_micros)
        # What the ledger moved for this call: the session's cumulative debit as the
        # release left it (DESIGN invariant 7).
        cdr = dataclasses.replace(
            cdr, cost_micros=cost, charged_micros=result.total_debited_micros, charge=CHARGE_LIVE
        )
        await self.store.append_cdr_and_close(
            cdr, current, last_usage_s=usage_s, status=final, cost_micros=cost
        )
        log.info(
            "closed %s account=%s usage=%ss cost=%s status=%s",
            rec.session_id,
            rec.account_id,
            usage_s,
            cost,
            final,
        )
        return cdr

    def _cdr(
        self,
        rec: SessionRecord,
        priced: Priced,
        usage_s: int,
        end_ms: int,
        status: str,
        cause: int,
    ) -> CDR:
        extra = {"client": rec.client, "user_name": rec.user_name}
        if rec.cut_reason:
            extra["cut_reason"] = rec.cut_reason
        if rec.adopted:
            extra["adopted"] = "1"
        # Start and Stop Event-Timestamps are whole seconds (RFC 2869 §5.3) and our
        # authorize time is not: a call answered in the second it was authorized would
        # read as answered before it started. Never earlier than the start, then.
        answer_ms = max(rec.answer_ms, rec.auth_ms) if usage_s else 0
        return CDR(
            source=self.client_sources.get(rec.client, self.source),
            call_id=rec.session_id,
            account_id=rec.account_id,
            caller=rec.caller,
            callee=rec.callee,
            destination=priced.destination_id or rec.destination,
            start_ms=rec.auth_ms,
            answer_ms=answer_ms,
            end_ms=max(end_ms, answer_ms or rec.auth_ms),
            duration_s=usage_s,
            billed_s=priced.billed_s,
            cost_micros=priced.cost_micros,
            currency=rec.currency,
            tariff=rec.plan,
            gateway=rec.gateway,
            disconnect_cause=cause,
            status=status,
            extra=extra,
        )


def _final_status(status: str, rec: SessionRecord, usage_s: int, overrun: bool) -> str:
    if overrun:
        return CdrStatus.OVERRUN
    if status == CdrStatus.NORMAL and rec.cut_reason in (CdrStatus.CREDIT_CUT, CdrStatus.KILLED):
        return rec.cut_reason
    if status == CdrStatus.NORMAL and usage_s == 0:
        return CdrStatus.UNANSWERED
    return status
