"""Credit-Control (RFC 4006 / RFC 8506): CCR in, the same ccapi calls as RADIUS, CCA out.

CCR-INITIAL   -> authorize (Access-Request) + account START
CCR-UPDATE    -> account INTERIM with the cumulative usage, then the grant left
CCR-TERMINATE -> account STOP with the cumulative usage (the CDR)
CCR-EVENT     -> authorize + START + STOP of the requested time (direct debiting)

Every rule (grants, deadlines, idempotency, fail policy) is in sessions/; this
module translates and keeps the request-number discipline of ccstate.py.
Granted-Service-Unit is the time the money held pays for; Final-Unit-Indication
TERMINATE marks the last grant the balance allows (sessions' "limited").

Only time is rated. Units named without CC-Time (octets, service-specific units,
money: translate.Service.unrated) are never served or closed for free: a
Requested-Service-Unit of them is refused 5031 DIAMETER_RATING_FAILED (in its MSCC,
no Granted-Service-Unit; the command's Result-Code when no other service of the CCR
asks time: a CCR-I or EVENT then authorizes nothing), a CCR-U whose report has no
CC-Time gets no more quota for that service (5031), and a CCR-T whose report has no
CC-Time is charged for the session's time (sessions derives it from the CCR-I's and
the CCR-T's Event-Timestamps, never less than the time reported before). Counted
(``cc_unrated`` in ctl status) and logged, rate limited.

Reporting-Reason FINAL in an MSCC (or its Used-Service-Unit) ends that rating group:
its report is charged with the call's usage, its MSCC is answered 2001 without
Granted-Service-Unit (also when an RSU came along), and it is no longer counted as
in use (ccstate.Spans closes its window: quota asked for it later opens a new one).
The other groups of the session go on as before. Quota is one hold per call
(sessions/), not per group: a group's end frees nothing of its own. When no group is
in use any more (every one ended, none asks: ``Spans.idle``) the call's usage is
final: sessions releases its hold and marks it (``FinalUsageMarks``, sessions/idle.py),
so a client that never sends its CCR-T is reaped charged exactly what it reported; a
CCR-U that asks quota again unmarks it (its Interim has held money for the grant).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from chargingd.core.ratelog import RateLimitedLog
from chargingd.diameter import codec as dc
from chargingd.diameter.ccstate import CcSession, CcStore, Spans, digest_of
from chargingd.diameter.dictionary import (
    ACTION_DIRECT_DEBITING,
    APP_CREDIT_CONTROL,
    FAILOVER_SUPPORTED,
    FUA_TERMINATE,
    TERMINATION_CAUSES,
    VENDOR_3GPP,
    A,
    G,
    RequestType,
    Result,
    is_protocol_error,
)
from chargingd.diameter.messages import Identity, answer, command_ids, error_answer
from chargingd.diameter.peers import Peer
from chargingd.diameter.translate import Ccr, MissingAvp, Service, parse_ccr
from chargingd.sessions.ccapi import (
    Authorized,
    CallInfo,
    QuotaControl,
    RefusalCode,
    Refused,
    UsageKind,
    UsageReport,
)

log = logging.getLogger("chargingd.diameter.cc")

# ccapi refusals as Result-Codes (RFC 4006 §9.1, RFC 6733 §7.1).
REFUSALS: dict[RefusalCode, int] = {
    RefusalCode.UNKNOWN_ACCOUNT: Result.USER_UNKNOWN,
    RefusalCode.SUSPENDED: Result.END_USER_SERVICE_DENIED,
    RefusalCode.INSUFFICIENT_CREDIT: Result.CREDIT_LIMIT_REACHED,
    RefusalCode.DESTINATION_NOT_ALLOWED: Result.RATING_FAILED,
    RefusalCode.TOO_MANY_CALLS: Result.END_USER_SERVICE_DENIED,
    RefusalCode.SYSTEM_ERROR: Result.UNABLE_TO_COMPLY,
    RefusalCode.FRAUD: Result.END_USER_SERVICE_DENIED,  # 4010, with the rule's message
}


@dataclass(frozen=True)
class CcSettings:
    """What the CCA advertises, from [diameter]."""

    failure_handling: int | None = None  # Credit-Control-Failure-Handling (None: not sent)
    # Validity-Time of every grant (RFC 4006 §8.33): the client reports at least this
    # often, so the reaper never mistakes a quiet call for a dead one. The factory
    # defaults it to [sessions] interim_interval_s.
    validity_time_s: int = 0
    # CC-Session-Failover FAILOVER_SUPPORTED (RFC 4006 §8.4): dia:cc is in Redis.
    session_failover: bool = False


class FinalUsageMarks(Protocol):
    """sessions/idle.py's FinalUsage: a live session's usage is final, or no longer."""

    async def mark(self, session_id: str) -> bool: ...

    async def unmark(self, session_id: str) -> None: ...


@dataclass(frozen=True)
class Grant:
    """The quota of one answer (GSU CC-Time, Validity-Time, FUI)."""

    granted_s: int
    validity_s: int
    final: bool
    result: int = Result.SUCCESS


class CreditControlApp:
    """Answers CCRs of open peers (connection.py has checked the base protocol)."""

    def __init__(
        self,
        credit: QuotaControl,
        store: CcStore,
        ident: Identity,
        settings: CcSettings,
        *,
        clock: Callable[[], float] = time.time,
        final_usage: FinalUsageMarks | None = None,
    ) -> None:
        self.credit = credit
        self.final_usage = final_usage
        self.store = store
        self.ident = ident
        self.settings = settings
        self.clock = clock
        self.errors = 0
        self.malformed = 0  # CCRs refused before any ccapi call (5005, 5004, 5014)
        # CCRs naming units without CC-Time (refused 5031, or a CCR-T charged for the
        # session's time): a line at once, then one per interval with the count.
        self.unrated = 0
        self._unrated_log = RateLimitedLog(log, level=logging.WARNING)

    async def handle(self, msg: dc.Message, peer: Peer) -> bytes:
        """The CCA for one CCR (an error answer when it cannot be worked)."""
        try:
            ccr = parse_ccr(msg)
        except MissingAvp as exc:
            self._malformed(msg, peer, exc)
            return error_answer(
                msg,
                self.ident,
                Result.MISSING_AVP,
                failed_avp=exc.failed_avp(),
                extra=command_ids(msg),
            )
        except dc.Malformed as exc:
            self._malformed(msg, peer, exc)
            return error_answer(
                msg,
                self.ident,
                exc.result_code,
                failed_avp=exc.failed_avp,
                message=str(exc)[:120],
                extra=b"" if is_protocol_error(exc.result_code) else command_ids(msg),
            )
        async with self.store.lock(ccr.session_id):
            try:
                return await self._dispatch(msg, ccr, peer)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Nothing is remembered: the client retries (its CCFH) and sessions'
                # idempotency makes that safe.
                self.errors += 1
                log.exception("CCR %s #%d failed", ccr.session_id, ccr.request_number)
                return self._cca(msg, ccr, Result.UNABLE_TO_COMPLY)

    def _malformed(self, msg: dc.Message, peer: Peer, exc: Exception) -> None:
        """Counted (``cc_malformed`` in ctl status) and logged: nothing reached sessions."""
        self.malformed += 1
        sid = msg.get(A.SESSION_ID)
        log.warning(
            "CCR from %s (%s) refused: %s",
            peer.name,
            sid.data[:128].decode(errors="replace") if sid is not None else "no Session-Id",
            exc,
        )

    async def _dispatch(self, msg: dc.Message, ccr: Ccr, peer: Peer) -> bytes:
        known = await self.store.get(ccr.session_id, ccr.request_number)
        if known is not None:
            repeated = self._repeated(msg, ccr, known)
            if repeated is not None:
                return repeated
        kind = ccr.request_type
        if kind == RequestType.INITIAL:
            if known is not None:
                return self._refuse_number(msg, ccr, "Session-Id already used")
            return await self._initial(msg, ccr, peer)
        if kind == RequestType.EVENT:
            if known is not None:
                if known.pending and self._same(ccr, known):
                    return await self._event_again(msg, ccr, peer)
                return self._refuse_number(msg, ccr, "Session-Id already used")
            return await self._event(msg, ccr, peer)
        if known is None or known.ended or known.pending:
            return self._cca(msg, ccr, Result.UNKNOWN_SESSION_ID)
        if kind == RequestType.UPDATE:
            return await self._update(msg, ccr, peer, known)
        return await self._terminate(msg, ccr, peer, known)

    def _repeated(self, msg: dc.Message, ccr: Ccr, known: CcSession) -> bytes | None:
        """A CC-Request-Number already answered: the same answer again when it is the
        same request, an error when it says something else (RFC 4006 §5.1); None for
        a new number."""
        if ccr.request_number > known.number or known.pending:
            return None  # pending: no answer was given yet (_dispatch)
        if self._same(ccr, known):
            return answer(msg, known.answer)
        if ccr.request_type in (RequestType.INITIAL, RequestType.EVENT):
            why = "Session-Id already used"
        elif ccr.request_number == known.number:
            why = f"CC-Request-Number {known.number} already answered for other units"
        else:
            why = f"CC-Request-Number older than the last answered ({known.number})"
        return self._refuse_number(msg, ccr, why)

    @staticmethod
    def _same(ccr: Ccr, known: CcSession) -> bool:
        """The request ``known`` was written for, sent again."""
        return ccr.request_number == known.number and digest_of(ccr.digest()) == known.digest

    def _refuse_number(self, msg: dc.Message, ccr: Ccr, why: str) -> bytes:
        """5004 with CC-Request-Number in Failed-AVP, and why in Error-Message (the
        operator reading the client's log sees whether the Session-Id was reused or
        a request number repeated)."""
        log.warning(
            "CCR %s: request number %d refused: %s", ccr.session_id, ccr.request_number, why
        )
        failed = dc.u32(A.CC_REQUEST_NUMBER, ccr.request_number)
        return error_answer(
            msg,
            self.ident,
            Result.INVALID_AVP_VALUE,
            failed_avp=failed,
            message=why,
            extra=self._cc_ids(ccr),
        )

    # -- the four request types ------------------------------------------------------
    async def _initial(self, msg: dc.Message, ccr: Ccr, peer: Peer) -> bytes:
        if ccr.unrated:
            if self._only_unrated(ccr):  # nothing asked that can be rated
                self._count_unrated(ccr, peer, "refused 5031, nothing authorized")
                return self._cca(msg, ccr, Result.RATING_FAILED, message=_UNRATED)
            self._count_unrated(ccr, peer, "refused 5031 in its MSCC")
        call = self._call(ccr, peer)
        decision = await self.credit.authorize(call)
        if isinstance(decision, Refused):
            return self._refused(msg, ccr, decision)
        await self.credit.account(self._report(call, ccr, UsageKind.START, 0))
        grant = self._first_grant(decision)
        body = self._cca_body(ccr, Result.SUCCESS, grant)
        spans = Spans.initial(ccr.request_number, tuple(s.key for s in ccr.services))
        await self._remember(ccr, 0, body, spans=spans)
        return answer(msg, body)

    async def _update(self, msg: dc.Message, ccr: Ccr, peer: Peer, known: CcSession) -> bytes:
        used_s, groups, spans = _usage(known, ccr)
        call = self._call(ccr, peer)
        await self.credit.account(self._report(call, ccr, UsageKind.INTERIM, used_s))
        state = await self.credit.grant_state(ccr.session_id)
        if state is None:  # closed meanwhile (reaped, gateway restart): nothing to grant
            body = self._cca_body(ccr, Result.UNKNOWN_SESSION_ID, None)
            await self._remember(ccr, used_s, body, groups=groups, spans=spans, ended=True)
            return answer(msg, body)
        if ccr.unrated:
            # The time it reported (if any) is accounted above; no more quota for
            # units whose use cannot be charged.
            if self._only_unrated(ccr):
                self._count_unrated(ccr, peer, "refused 5031, no more quota")
                body = self._cca_body(ccr, Result.RATING_FAILED, None, message=_UNRATED)
                await self._remember(ccr, used_s, body, groups=groups, spans=spans)
                return answer(msg, body)
            self._count_unrated(ccr, peer, "refused 5031 in its MSCC")
        left_s = max(state.paid_usage_s - max(used_s, state.usage_s), 0)
        validity_s = self.settings.validity_time_s
        if state.cut or (state.final and left_s == 0):
            if not any(s.mscc for s in ccr.services) and not ccr.services[0].final:
                # RFC 4006 single service: the command's Result-Code is the service's
                # (a 2001 with GSU 0 reads as "go on" to clients that ignore the FUI).
                # A CCR-U answered with a failure ends the session on both sides (RFC
                # 4006 §7: the server goes Idle, its used units debited; the client
                # goes Idle without a CCR-T), so it is closed here, charged what it
                # reported. A CCR-T sent anyway is a duplicate Stop (2001, no charge).
                body = self._cca_body(
                    ccr, Result.CREDIT_LIMIT_REACHED, None, message="credit used up"
                )
                await self.credit.account(self._report(call, ccr, UsageKind.STOP, used_s))
                await self._remember(ccr, used_s, body, groups=groups, spans=spans)
                return answer(msg, body)
            grant = Grant(0, validity_s, final=True, result=Result.CREDIT_LIMIT_REACHED)
        else:
            grant = Grant(left_s, validity_s, final=state.final)
        body = self._cca_body(ccr, Result.SUCCESS, grant)
        await self._usage_final(ccr, known, spans)
        await self._remember(ccr, used_s, body, groups=groups, spans=spans)
        return answer(msg, body)

    async def _usage_final(self, ccr: Ccr, known: CcSession, spans: Spans) -> None:
        """No group in use after this CCR-U (every one reported FINAL, none asks): the
        call's usage is final (sessions releases the hold; the reaper charges what was
        reported). Asked again after that: no longer final. (Before the answer is
        kept: when this fails the CCR is answered 5012 and its retry does it.)"""
        if self.final_usage is None:
            return
        if spans.idle:
            await self.final_usage.mark(ccr.session_id)
        elif known.spans is not None and known.spans.idle:
            await self.final_usage.unmark(ccr.session_id)

    async def _terminate(self, msg: dc.Message, ccr: Ccr, peer: Peer, known: CcSession) -> bytes:
        used_s, groups, spans = _usage(known, ccr)
        call = self._call(ccr, peer)
        report = self._report(call, ccr, UsageKind.STOP, used_s)
        unrated_usage = bool(ccr.unrated) and any(s.unrated_usu for s in ccr.unrated)
        if unrated_usage and not any(s.timed for s in ccr.services):
            # Usage reported in units that are not rated, and no time: the session is
            # charged for its time (the CCR-I's to this CCR-T's Event-Timestamp, or
            # arrival times), never less than the time reported before.
            self._count_unrated(ccr, peer, "charged for the session's time")
            report = report.replace(usage_reported=False)
        await self.credit.account(report)
        body = self._cca_body(ccr, Result.SUCCESS, None)
        await self._remember(ccr, used_s, body, groups=groups, spans=spans, ended=True)
        return answer(msg, body)

    async def _event(self, msg: dc.Message, ccr: Ccr, peer: Peer) -> bytes:
        """RFC 4006 §6.3 direct debiting of the requested time: all or nothing."""
        want_s = next((s.requested_s for s in ccr.services if s.requested_s), 0)
        if ccr.requested_action != ACTION_DIRECT_DEBITING or not (want_s or ccr.unrated):
            return self._cca(
                msg,
                ccr,
                Result.UNABLE_TO_COMPLY,
                message="only direct debiting of CC-Time is offered",
            )
        if ccr.unrated:  # all or nothing: a direct debit is not split
            self._count_unrated(ccr, peer, "refused 5031, nothing debited")
            return self._cca(msg, ccr, Result.RATING_FAILED, message=_UNRATED)
        await self._remember(ccr, 0, b"", pending=True)
        call = self._call(ccr, peer)
        decision = await self.credit.authorize(call)
        if isinstance(decision, Refused):
            return self._refused(msg, ccr, decision)
        await self.credit.account(self._report(call, ccr, UsageKind.START, 0))
        enough = decision.session_timeout_s >= want_s
        used_s = want_s if enough else 0  # not enough: nothing is debited, the hold freed
        await self.credit.account(self._report(call, ccr, UsageKind.STOP, used_s))
        return await self._event_done(msg, ccr, want_s, used_s)

    async def _event_again(self, msg: dc.Message, ccr: Ccr, peer: Peer) -> bytes:
        """The direct debit sent again after its first try began but gave no answer (a
        crash, a failed write; RFC 4006 §8.15 TERMINATE_OR_BUFFER re-sends it with the
        T flag): answered with what that try did, the usage its CDR says; worked afresh
        when it closed nothing."""
        used_s = await self.credit.closed_usage(ccr.session_id)
        if used_s is None:
            return await self._event(msg, ccr, peer)
        want_s = next((s.requested_s for s in ccr.services if s.requested_s), 0)
        return await self._event_done(msg, ccr, want_s, used_s)

    async def _event_done(self, msg: dc.Message, ccr: Ccr, want_s: int, used_s: int) -> bytes:
        if used_s < want_s:
            body = self._cca_body(ccr, Result.CREDIT_LIMIT_REACHED, None)
        else:
            body = self._cca_body(ccr, Result.SUCCESS, Grant(want_s, 0, final=False))
        await self._remember(ccr, used_s, body, ended=True)
        return answer(msg, body)

    # -- units that are not rated ----------------------------------------------------
    @staticmethod
    def _only_unrated(ccr: Ccr) -> bool:
        """No service of the CCR can be rated (the command's Result-Code is 5031)."""
        return len(ccr.unrated) == len(ccr.services)

    def _count_unrated(self, ccr: Ccr, peer: Peer, outcome: str) -> None:
        self.unrated += 1
        kinds = sorted(
            {_UNIT_NAMES.get(a.code, str(a.code)) for s in ccr.unrated for a in _units_of(s)}
        )
        self._unrated_log.failure(
            "CCR with units chargingd does not rate",
            f"{peer.name} {ccr.session_id[:128]} #{ccr.request_number} "
            f"(type {ccr.request_type}): {'/'.join(kinds)} without CC-Time: {outcome}",
        )

    # -- translation helpers ---------------------------------------------------------
    def _call(self, ccr: Ccr, peer: Peer) -> CallInfo:
        return CallInfo(
            session_id=ccr.session_id,
            user_name=ccr.user_name,
            calling=ccr.calling,
            called=ccr.called,
            gateway=peer.origin_host,
            client=peer.name,
            default_account=peer.default_account,
            lookup=peer.lookup,
        )

    def _report(self, call: CallInfo, ccr: Ccr, kind: UsageKind, usage_s: int) -> UsageReport:
        # Event-Timestamp is when the event happened at the client (RFC 6733 §8.21).
        event_ms = (
            ccr.event_timestamp_s * 1000 if ccr.event_timestamp_s else int(self.clock() * 1000)
        )
        cause = ""
        if kind is UsageKind.STOP and ccr.termination_cause:
            # A value RFC 6733 §8.15 does not name is kept as its number (as RADIUS
            # keeps an unknown Acct-Terminate-Cause): the CDR says what the client said.
            code = ccr.termination_cause
            cause = TERMINATION_CAUSES.get(code, str(code))
        return UsageReport(
            call=call, kind=kind, usage_s=usage_s, event_ms=event_ms, terminate_cause=cause
        )

    def _first_grant(self, decision: Authorized) -> Grant:
        # A fail-open grant (Redis down) has no hold: its Session-Timeout is the quota.
        granted_s = decision.grant_s or decision.session_timeout_s
        validity_s = self.settings.validity_time_s or decision.interim_interval_s
        # The last grant the balance allows is also one the money pays in full but
        # nothing past (session_timeout_s: what held + available pays): a balance of
        # exactly one billed minute. sessions does not call that "limited" (the hold
        # is what it asked), so without this no FUI was sent.
        last = decision.grant_s > 0 and decision.session_timeout_s <= decision.grant_s
        return Grant(
            min(granted_s, decision.session_timeout_s or granted_s),
            validity_s,
            final=decision.final or last,
        )

    async def _remember(
        self,
        ccr: Ccr,
        used_s: int,
        body: bytes,
        *,
        ended: bool = False,
        groups: tuple[tuple[str, int], ...] = (),
        pending: bool = False,
        spans: Spans | None = None,
    ) -> None:
        await self.store.put(
            CcSession(
                ccr.session_id,
                ccr.request_number,
                used_s,
                digest_of(ccr.digest()),
                body,
                ended=ended,
                groups=groups,
                pending=pending,
                spans=spans,
            )
        )

    # -- answers ---------------------------------------------------------------------
    def _cc_ids(self, ccr: Ccr) -> bytes:
        return (
            dc.u32(A.AUTH_APPLICATION_ID, APP_CREDIT_CONTROL)
            + dc.u32(A.CC_REQUEST_TYPE, ccr.request_type)
            + dc.u32(A.CC_REQUEST_NUMBER, ccr.request_number)
        )

    def _cca(self, msg: dc.Message, ccr: Ccr, result: int, *, message: str = "") -> bytes:
        """A CCA without a grant (a refusal, an unknown session, a failure)."""
        body = self._cca_body(ccr, result, None, message=message)
        return answer(msg, body)

    def _refused(self, msg: dc.Message, ccr: Ccr, decision: Refused) -> bytes:
        result = REFUSALS[decision.code]
        # RFC 4006 §9.1: 5031 RATING_FAILED MUST name the AVP that could not be rated.
        failed = _called_avp(msg) if result == Result.RATING_FAILED else b""
        body = self._cca_body(ccr, result, None, message=decision.message, failed=failed)
        return answer(msg, body)

    def _cca_body(
        self,
        ccr: Ccr,
        result: int,
        grant: Grant | None,
        *,
        message: str = "",
        failed: bytes = b"",
    ) -> bytes:
        parts = [
            dc.utf8(A.SESSION_ID, ccr.session_id),
            dc.u32(A.RESULT_CODE, result),
            self.ident.origin(),
            self._cc_ids(ccr),
        ]
        if self.settings.session_failover:
            parts.append(dc.u32(A.CC_SESSION_FAILOVER, FAILOVER_SUPPORTED))
        if self.settings.failure_handling is not None:
            parts.append(dc.u32(A.CREDIT_CONTROL_FAILURE_HANDLING, self.settings.failure_handling))
        if message and result != Result.SUCCESS:
            parts.append(dc.utf8(A.ERROR_MESSAGE, message[:120], flags=0))
        refused_units = result == Result.RATING_FAILED or (
            result == Result.SUCCESS and grant is not None  # then per MSCC (_quota_avps)
        )
        if not failed and refused_units and ccr.unrated:
            # RFC 4006 §9.1: 5031 names the AVPs that could not be rated.
            failed = b"".join(s.unrated for s in ccr.unrated)
        if failed:
            parts.append(dc.grouped(A.FAILED_AVP, failed))
        if grant is not None or result != Result.SUCCESS:
            parts += _quota_avps(ccr, result, grant)
        return b"".join(parts)


def _usage(known: CcSession, ccr: Ccr) -> tuple[int, tuple[tuple[str, int], ...], Spans]:
    """The call's cumulative usage after this CCR's reports (ccstate.Spans: rating groups
    used at once are charged once, used one after another each), the groups' sums."""
    reported: dict[str, int] = {}
    for service in ccr.services:
        if service.timed:  # (0 too: that group's measurement ended here)
            reported[service.key] = reported.get(service.key, 0) + service.used_s
    # A FINAL service asks for nothing, whatever RSU came with it (_quota_avps).
    asked = tuple(s.key for s in ccr.services if s.requested and not s.final)
    ended = tuple(s.key for s in ccr.services if s.ended and s.key not in asked)
    return known.reported(ccr.request_number, reported, asked, ended)


_UNRATED = "only CC-Time is rated"
_UNIT_NAMES: dict[int, str] = {
    A.CC_MONEY: "CC-Money",
    A.CC_TOTAL_OCTETS: "CC-Total-Octets",
    A.CC_INPUT_OCTETS: "CC-Input-Octets",
    A.CC_OUTPUT_OCTETS: "CC-Output-Octets",
    A.CC_SERVICE_SPECIFIC_UNITS: "CC-Service-Specific-Units",
}


def _units_of(service: Service) -> list[dc.Avp]:
    """The unit AVPs inside the service's unrated Requested-/Used-Service-Units."""
    avps = dc.decode_avps(service.unrated, 0, len(service.unrated))
    return [u for a in avps for u in a.group() if u.code in _UNIT_NAMES and u.vendor == 0]


def _called_avp(msg: dc.Message) -> bytes:
    """The AVP that named the called party (as translate.py reads it), for Failed-AVP;
    an example Called-Station-Id when the CCR named none."""
    for code, vendor in ((A.CALLED_STATION_ID, 0), (G.SERVICE_INFORMATION, VENDOR_3GPP)):
        a = msg.get(code, vendor)
        if a is not None:
            return a.raw()
    return dc.utf8(A.CALLED_STATION_ID, "")


def _quota_avps(ccr: Ccr, result: int, grant: Grant | None) -> list[bytes]:
    """The grant, per MSCC when the request used MSCC (its Result-Code, GSU,
    Validity-Time and FUI inside it), else at the top level (RFC 4006 §8.16)."""
    services = [s for s in ccr.services if s.mscc]
    if not services:
        if grant is None or ccr.services[0].final:  # (FINAL: the service ended)
            return []
        return _unit_avps(grant)
    out: list[bytes] = []
    for service in services:
        inner = list(_service_ids(service))
        code = grant.result if grant is not None and result == Result.SUCCESS else result
        if service.unrated:
            # RFC 4006 §9.1: its units cannot be rated; no Granted-Service-Unit.
            inner.append(dc.u32(A.RESULT_CODE, Result.RATING_FAILED))
            out.append(dc.grouped(A.MULTIPLE_SERVICES_CREDIT_CONTROL, *inner))
            continue
        if service.final:
            # Reporting-Reason FINAL (TS 32.299 §7.2.175): the service ended, its
            # report is in (charged with the call); no quota for it, also when an
            # RSU came along (a client that sends one in every MSCC). Its report was
            # taken: 2001 while the command succeeds.
            if result == Result.SUCCESS:
                code = Result.SUCCESS
        elif grant is not None and (service.requested or ccr.request_type == RequestType.INITIAL):
            inner += _unit_avps(grant)
        inner.append(dc.u32(A.RESULT_CODE, code))
        out.append(dc.grouped(A.MULTIPLE_SERVICES_CREDIT_CONTROL, *inner))
    return out


def _service_ids(service: Service) -> list[bytes]:
    ids = [dc.u32(A.SERVICE_IDENTIFIER, sid) for sid in service.service_ids]
    if service.rating_group is not None:
        ids.append(dc.u32(A.RATING_GROUP, service.rating_group))
    return ids


def _unit_avps(grant: Grant) -> list[bytes]:
    out = [dc.grouped(A.GRANTED_SERVICE_UNIT, dc.u32(A.CC_TIME, grant.granted_s))]
    if grant.validity_s:
        out.append(dc.u32(A.VALIDITY_TIME, grant.validity_s))
    if grant.final:
        out.append(dc.grouped(A.FINAL_UNIT_INDICATION, dc.u32(A.FINAL_UNIT_ACTION, FUA_TERMINATE)))
    return out
