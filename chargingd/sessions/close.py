"""Closing a session: final charge, hold release, exactly one rated CDR, closed mark.

Shared by Stop, the reaper ("stale"), Accounting-On/Off ("gateway_restart") and
fed by the cutter's cut reason ("credit_cut", "killed"). What the final usage is
charged is sessions/settle.py's rule (cut tolerance, overrun); the ledger applies
it (release with a cap or debt policy) and says what it moved: the CDR's
``charged_micros``.
"""

from __future__ import annotations

import logging
import os
from typing import ClassVar, Final

from chargingd.billing.cdr import CDR, CHARGE_LIVE, CdrStatus
from chargingd.ledger import CommitResult, Ledger
from chargingd.sessions.fused import FusedPath
from chargingd.sessions.noting import Noted
from chargingd.sessions.recordspec import ADOPTED_REFUSED
from chargingd.sessions.settle import CAP, CAPPED, PROVISIONAL, Settlement, Settler
from chargingd.sessions.store import LIVE, SessionRecord, SessionStore

log = logging.getLogger("chargingd.sessions")
_INFO: Final = logging.INFO

FUSED_ATTEMPTS = 3  # re-ratings when packets keep moving the usage during a close
BUSY = "busy"  # another closer holds the close lease
GONE = "gone"  # closed already (or the record is gone)
STALE = "stale"  # the record noted on is no longer the stored one (nothing done)


class CloseBusy(Exception):
    """Another closer holds the session's close lease: retry once it is gone (the
    accounting is spooled and replayed, never dropped)."""

    code: ClassVar[str] = "close_busy"


class Ending:
    """How a session ends, as its CDR will say. One per close: a plain class (a
    dataclass's __init__ is interpreted even compiled), frozen (Final)."""

    __slots__ = ("answer_ms", "disconnect_cause", "end_ms", "extra", "provisional", "status")

    def __init__(
        self,
        end_ms: int,
        status: str,  # a CdrStatus: normal for a Stop; stale, gateway_restart otherwise
        disconnect_cause: int = 0,
        extra: dict[str, str] | None = None,
        # Closed without the gateway's final word (reaper, gateway restart): a later
        # Stop corrects the charge and the CDR (sessions/late.py).
        provisional: bool = False,
        # The answer time the gateway's final word says, where it knows better than
        # the record (FreeSWITCH: its Start was sent at routing, so the record's answer
        # is that Start, the deadlines' money-safe base; its Stop says the real answer,
        # 0 never answered): the CDR's answer time and the rating's. -1: the record's.
        answer_ms: int = -1,
    ) -> None:
        self.end_ms: Final = end_ms
        self.status: Final = status
        self.disconnect_cause: Final = disconnect_cause
        self.extra: Final = extra
        self.provisional: Final = provisional
        self.answer_ms: Final = answer_ms


class SessionCloser:
    """Ends sessions for sessions/service.py."""

    def __init__(
        self,
        *,
        store: SessionStore,
        ledger: Ledger,
        settler: Settler,
        source: str,
        fused: FusedPath | None = None,
    ) -> None:
        """``fused``: the fused close script (lease + release in one round trip)."""
        self.fused = fused
        self.store = store
        self.ledger = ledger
        self.settler = settler
        self.source = source
        # The CDR source of the clients of another frontend ("diameter" for its peers).
        self.client_sources: dict[str, str] = {}
        # A Stop noted on a held record: its CDR and close built for the release it
        # expects and sent with it (one script); False: the release first, then the CDR
        # and the closed mark (what a release that moved another amount takes; tests
        # compare the two)
        self.close_in_script = True

    async def close(
        self,
        rec: SessionRecord,
        *,
        usage_s: int,
        end_ms: int,
        status: str,
        disconnect_cause: int = 0,
        extra: dict[str, str] | None = None,
        provisional: bool = False,
    ) -> CDR | None:
        """Release the money, write one CDR, mark closed; None when another closer has
        it or it is closed (see ``try_close``)."""
        ending = Ending(end_ms, status, disconnect_cause, extra, provisional)
        done = await self.try_close(rec, usage_s, ending)
        return done if isinstance(done, CDR) else None

    async def try_close(
        self, rec: SessionRecord, usage_s: int, ending: Ending, noted: Noted | None = None
    ) -> CDR | str:
        """The CDR, or BUSY (another closer holds the lease) or GONE (closed).

        Order: release (idempotent in the ledger), XADD the CDR, mark closed. A crash
        between XADD and mark may write the CDR twice; the exporter keeps one row per
        (source, call_id). On a single Redis the lease and the release are one script
        (sessions/fused.py), and the XADD and the closed mark one pipeline; for a
        Stop noted on a held record whose release debits the whole cost (no overrun),
        all of it is that one script: the CDR built first, for that release.
        ``noted`` (fused path only): ``rec`` is a Stop noted on a record this process
        holds, written by the same script; STALE or BUSY when that record is no
        longer the stored one or another closer has it (nothing done either way).
        """
        # 32 random hex digits, as uuid4().hex was (its interpreted frames cost ~1 % of
        # an accounting packet's samples)
        token = os.urandom(16).hex()
        if noted is not None:
            if self.fused is None:
                return STALE
            usage = max(usage_s, rec.last_usage_s)
            settled = self.settler.settle(answered_as(rec, ending), usage, ending.status)
            # The CDR and the closed record as they will be when the release debits the
            # whole target without an overrun (nearly every Stop): the script then
            # XADDs and closes too, one round trip; else they are built again from
            # what the release did (_finish)
            close = self._expected_close(rec, settled, ending) if self.close_in_script else None
            done = await self.fused.stop(
                noted, token, settled.target_micros, policy=settled.policy, close=close
            )
            if done.release is None or done.record is None:
                return done.status
            if close is not None and done.entry_id is not None:  # closed by the script
                _log_closed(done.record, close[0])
                return close[0]
            return await self._finish(done.record, settled, done.release, ending, done.stored)
        for _ in range(FUSED_ATTEMPTS if self.fused is not None else 0):
            assert self.fused is not None
            usage = max(usage_s, rec.last_usage_s)
            settled = self.settler.settle(answered_as(rec, ending), usage, ending.status)
            done = await self.fused.close(
                rec, token, usage, settled.target_micros, policy=settled.policy
            )
            if done.status == "stale":  # a packet moved usage or answer time: re-rate
                rec = rec.replace(last_usage_s=done.last_usage_s, answer_ms=done.answer_ms)
                continue
            if done.release is None or done.record is None:
                return BUSY if done.status == BUSY else GONE
            return await self._finish(done.record, settled, done.release, ending, done.stored)
        if not await self.store.acquire_close(rec, token):
            return BUSY
        current = await self.store.get(rec.account_id, rec.session_id)
        if current is None or current.state != LIVE:
            await self.store.release_close(rec, token)
            return GONE
        usage = max(usage_s, current.last_usage_s)
        settled = self.settler.settle(answered_as(current, ending), usage, ending.status)
        result = await self.ledger.release(
            rec.account_id, rec.session_id, settled.target_micros, policy=settled.policy
        )
        return await self._finish(current, settled, result, ending)

    def _expected_close(
        self, rec: SessionRecord, settled: Settlement, ending: Ending
    ) -> tuple[CDR, bytes]:
        """The CDR and the closed record (its stored value) of ``rec`` as they are
        when the release debits the whole ``settled`` target without an overrun."""
        expected = CommitResult(0, settled.target_micros, 0, False, False)
        cdr = self.build_cdr(rec, settled, expected, ending)
        return cdr, closed_record(rec, cdr, ending).pack(layout=self.store.layout)

    async def _finish(
        self,
        current: SessionRecord,
        settled: Settlement,
        result: CommitResult,
        ending: Ending,
        stored: bytes | None = None,
    ) -> CDR:
        """After the release: the rated CDR, then the closed mark (one round trip).
        ``stored``: ``current``'s stored value as the release script left it (the fused
        path), so the closed mark can write the closed record whole."""
        if result.duplicate and result.total_debited_micros != settled.target_micros:
            # Released already by a closer that died before its CDR (its lease expired):
            # this report's charge is the one that stands.
            result = await self.ledger.correct(
                current.account_id,
                current.session_id,
                settled.target_micros,
                policy=settled.policy,
                why="closed again after a closer died",
                source=self.source_of(current),
            )
        cdr = self.build_cdr(current, settled, result, ending)
        fields = self.closed_fields(cdr, ending)
        fields["reported_usage_s"] = current.last_usage_s
        closed = None
        if stored is not None:  # the closed record whole: ``fields`` applied to current
            closed = closed_record(current, cdr, ending)
        await self.store.append_cdr_and_close(cdr, current, fields, stored, closed)
        _log_closed(current, cdr)
        return cdr

    def source_of(self, rec: SessionRecord) -> str:
        """The CDR source of the session's call (a rerate keys its move by it)."""
        return self.client_sources.get(rec.client, self.source)

    def build_cdr(
        self,
        rec: SessionRecord,
        settled: Settlement,
        result: CommitResult,
        ending: Ending,
        *,
        revision: int = 0,
    ) -> CDR:
        """The rated CDR of ``settled`` as the ledger applied it (``result``)."""
        charged = result.total_debited_micros
        status = settled.status
        if result.overrun and settled.policy != CAP:
            status = CdrStatus.OVERRUN  # debt the ledger committed (adopted calls)
        reason = settled.reason
        if settled.policy == CAP and charged < settled.target_micros:
            reason = reason or CAPPED  # the money was not there: the rest is uncollected
        if ending.provisional:
            reason = reason or PROVISIONAL
        # What the ledger moved for this call: the session's cumulative debit as the
        # release (or correction) left it (DESIGN invariant 7).
        return self._cdr(rec, settled, ending, status, charged, reason, revision)

    @staticmethod
    def closed_fields(cdr: CDR, ending: Ending) -> dict[str, str | int]:
        """What the closed record keeps of its CDR (late accounting reads them)."""
        return {
            "last_usage_s": cdr.duration_s,
            # the plain str of its CdrStatus (what the record stores: packed straight,
            # SessionRecord._write; a str subclass takes msgpack's slower path)
            "status": "".join((cdr.status,)),
            "cost_micros": cdr.cost_micros,
            "charged_micros": cdr.charged_micros,
            "provisional": int(ending.provisional),
            "cdr_revision": cdr.revision,
        }

    def _cdr(
        self,
        rec: SessionRecord,
        settled: Settlement,
        ending: Ending,
        status: str,
        charged: int,
        reason: str,
        revision: int,
    ) -> CDR:
        """The CDR, built once (a frozen 23-field dataclass, by CDR.of)."""
        extra = {"client": rec.client, "user_name": rec.user_name}
        if rec.cut_reason:
            extra["cut_reason"] = rec.cut_reason
            extra["cut_confirmed"] = str(int(settled.cut_confirmed))
        if rec.adopted:
            extra["adopted"] = "1"
            if rec.adopted == ADOPTED_REFUSED:  # refused here, connected anyway
                extra["refused_here"] = "1"
        extra.update(ending.extra or {})
        if ending.provisional:
            extra["provisional"] = "1"
        if settled.reason:
            extra["allowed_s"] = str(settled.allowed_s)
        end_ms = ending.end_ms
        usage_s, priced = settled.usage_s, settled.priced
        # Start and Stop Event-Timestamps are whole seconds (RFC 2869 §5.3) and our
        # authorize time is not: a call answered in the second it was authorized would
        # read as answered before it started. Never earlier than the start, then.
        answered_ms = rec.answer_ms if ending.answer_ms < 0 else ending.answer_ms
        answer_ms = max(answered_ms, rec.auth_ms) if usage_s else 0
        # every field, in field order (CDR.of: the frozen dataclass without its interpreted
        # __init__, a frame and 23 object.__setattr__ calls per close)
        return CDR.of(
            {
                "source": self.client_sources.get(rec.client, self.source),
                "call_id": rec.session_id,
                "account_id": rec.account_id,
                "caller": rec.caller,
                "callee": rec.callee,
                "destination": priced.destination_id or rec.destination,
                "start_ms": rec.auth_ms,
                "answer_ms": answer_ms,
                "end_ms": max(end_ms, answer_ms or rec.auth_ms),
                "duration_s": usage_s,
                "billed_s": priced.billed_s,
                "cost_micros": priced.cost_micros,
                "currency": rec.currency,
                "tariff": rec.plan,
                "gateway": rec.gateway,
                "disconnect_cause": ending.disconnect_cause,
                "status": status,
                "extra": extra,
                "charged_micros": charged,
                "charge": CHARGE_LIVE,
                "charge_reason": reason,
                "revision": revision,
            }
        )


def closed_record(rec: SessionRecord, cdr: CDR, ending: Ending) -> SessionRecord:
    """``rec`` closed with its CDR's figures: SessionCloser.closed_fields applied to it
    (and ``reported_usage_s`` its last usage), what the closed mark writes whole."""
    return rec.closed(
        cdr.duration_s,
        "".join((cdr.status,)),  # (as closed_fields: the plain str)
        cdr.cost_micros,
        cdr.charged_micros,
        int(ending.provisional),
        rec.last_usage_s,
        cdr.revision,
    )


def _log_closed(rec: SessionRecord, cdr: CDR) -> None:
    """The close's INFO line (asked first: below INFO, Logger.info's own frame and its
    seven arguments were built per Stop for nothing)."""
    if log.isEnabledFor(_INFO):
        log.info(
            "closed %s account=%s usage=%ss cost=%s charged=%s status=%s",
            rec.session_id,
            rec.account_id,
            cdr.duration_s,
            cdr.cost_micros,
            cdr.charged_micros,
            cdr.status,
        )


def answered_as(rec: SessionRecord, ending: Ending) -> SessionRecord:
    """``rec`` as rated and settled: answered when its gateway's final word says
    (Ending.answer_ms), else as recorded (sessions/late.py's correction too)."""
    if ending.answer_ms < 0 or ending.answer_ms == rec.answer_ms:
        return rec
    return rec.replace(answer_ms=ending.answer_ms)
