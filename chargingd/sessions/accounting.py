"""Accounting: Start, Interim, Stop and Failed of a session (sessions/service.py's
accounting half).

Idempotency (DESIGN invariant 3): an interim commits the rated cost of the
*cumulative* usage (the ledger debits only the difference), a Stop releases once
(the ledger keeps a tombstone) and the record is marked closed after the CDR is
written, so retransmitted or reordered accounting never charges twice. No report is
acknowledged and forgotten (invariant 4): what cannot be applied goes to
``cdr:orphans`` with a reason and a log line; what meets a closer's lease is spooled
and replayed until the lease is gone; what arrives after a provisional close
corrects it (sessions/late.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Final

from chargingd.billing.cdr import CdrStatus
from chargingd.core.config import SessionsConfig
from chargingd.core.ratelog import RateLimitedLog
from chargingd.ledger import Account, LedgerError, Status, UnknownAccount
from chargingd.sessions.authorize import Authorizer
from chargingd.sessions.ccapi import UsageKind, UsageReport
from chargingd.sessions.close import BUSY, GONE, CloseBusy, Ending, SessionCloser
from chargingd.sessions.grants import Grants
from chargingd.sessions.late import LateAccounting
from chargingd.sessions.newrecord import Profile
from chargingd.sessions.noting import Noted, note
from chargingd.sessions.pricing import RatingError
from chargingd.sessions.recordspec import ADOPTED, ADOPTED_REFUSED
from chargingd.sessions.spool import orphan_fields
from chargingd.sessions.store import (
    CLOSED,
    FOREIGN,
    INVALID,
    LIVE,
    USAGE_SLACK_S,
    SessionRecord,
    SessionStore,
)

log = logging.getLogger("chargingd.sessions")

MAX_SESSION_ID = 256
FINAL = (UsageKind.STOP, UsageKind.FAILED)
# A Stop that meets another closer's lease waits this long for it (polling) before it
# is spooled and replayed later (a live closer finishes in milliseconds; a dead one's
# lease expires after 30 s).
BUSY_WAIT_S = 1.0
BUSY_POLL_S = 0.05
# CdrStatus.NORMAL without a class attribute look-up per Stop (compiled: a static)
_NORMAL: Final[str] = CdrStatus.NORMAL
_UNANSWERED: Final[str] = CdrStatus.UNANSWERED
# Freeswitch-Direction of a leg FreeSWITCH originated (UsageReport.direction)
OUTBOUND: Final = "outbound"
# How far a later leg of a conf-id call may seem to start before the end of the usage
# its closed call was charged (whole-second times, Acct-Delay-Time) and still be a leg
# of its own (sessions/accounting.py _later_leg).
LEG_OVERLAP_SLACK_MS = 2_000


class Accounting:
    """Applies accounting reports to session records, the ledger and the CDR stream."""

    def __init__(
        self,
        *,
        store: SessionStore,
        authorizer: Authorizer,
        grants: Grants,
        closer: SessionCloser,
        late: LateAccounting,
        cfg: SessionsConfig,
        clock_ms: Callable[[], int],
        source: str,
    ) -> None:
        self.store = store
        self.authorizer = authorizer
        self.grants = grants
        self.closer = closer
        self.late = late
        self.cfg = cfg
        self.clock_ms = clock_ms
        self.source = source
        self.orphans = RateLimitedLog(log, level=logging.WARNING)
        # FreeSWITCH B-legs: expected traffic (one per bridged call), not an anomaly
        self.legs = RateLimitedLog(log, level=logging.INFO)
        self.unechoed = RateLimitedLog(log, level=logging.WARNING)
        self.modes = authorizer.modes

    async def apply(self, report: UsageReport) -> None:
        """One report. Raises Redis errors, LedgerError/RatingError (the caller orphans
        or spools) and CloseBusy (another closer's lease outlived the wait)."""
        session_id = report.call.session_id
        if not valid_session_id(session_id):
            await self.orphan(report, "invalid_session_id")
            return
        if not 0 <= report.usage_s <= self.cfg.session_ttl_s:
            # Acct-Session-Time is Unsigned32 (RFC 2866 §5.7): 2^32-1 would be charged
            # as 136 years of debt. No record lives longer than session_ttl_s.
            await self.orphan(report, "invalid_usage")
            return
        if await self._noted(report):
            return
        account_id = await self._account_of(report)
        rec: SessionRecord | None = None
        if account_id is None and await self._nothing_to_adopt(report):
            return
        if account_id is None:
            adopted, created = await self._adopt(report)
            if adopted is None:
                return
            account_id = adopted.account_id
            if created:  # written already as touch() would leave it: no second trip
                rec, state, usage_s = adopted, LIVE, adopted.last_usage_s
        if rec is None:
            account_id, state, usage_s, rec = await self._touched(account_id, report)
        if rec is None:
            await self._not_live(account_id, state, report)
            return
        if report.kind in FINAL:
            await self._stop(rec, usage_s, report)
        elif report.usage_s >= usage_s:  # else older than what we know (reordered)
            await self._update(rec, usage_s, report)

    async def _noted(self, report: UsageReport) -> bool:
        """An Interim or a Stop of a call whose record this process holds: noted on it
        here and written by the renew or close script itself (sessions/noting.py), one
        script for the packet. False: nothing done (no record held, the stored one
        moved, or a case the touch path handles: a bad or reordered usage, another
        closer, an error), the caller takes the touch path."""
        session_id = report.call.session_id
        if not report.call.account_hint and self._echoes(report):
            # an echo_class client's packet without our Class: found by the search of
            # its own gateway's calls (_without_class), never by the id alone (ids
            # collide across gateways, and such a client may be several of them)
            return False
        held = self.store.cached(session_id)
        if held is None:
            return False
        account_id, stored, rec = held
        if report.call.account_hint not in ("", account_id):
            return False  # Class names another account (a reused id): as without a hold
        if not report.call.account_hint and report.call.client != rec.client:
            return False  # held by the id alone: maybe another client's call of that id
        noted = note(
            stored,
            rec,
            usage_s=report.usage_s,
            now_ms=self.clock_ms(),
            answer_ms=answer_ms_of(report),
            nas_session_id=report.call.nas_session_id,
            call_origin=report.call.call_origin,
            gateway=report.call.gateway,
            answer_move_ms=answer_move_ms_of(report),
        )
        if noted is None or (report.kind not in FINAL and report.usage_s < rec.last_usage_s):
            return False
        if report.kind is UsageKind.START and report.usage_s == 0:
            return await self._start_noted(noted)
        try:
            if report.kind in FINAL:
                return await self._stop_noted(noted, report)
            # hold_all, own_timer: the hold keeps paying for the rest of the Session-Timeout.
            hold_to_s = rec.paid_usage_s if self.modes.holds_all(rec.client) else 0
            return await self.grants.charge(
                noted.rec, report.usage_s, hold_to_s=hold_to_s, noted=noted
            )
        except UnknownAccount:  # from the script's reply: the packet is noted (as touched)
            self.store.uncache(session_id)
            raise
        except (LedgerError, RatingError):  # before any script: nothing done
            self.store.uncache(session_id)
            return False  # the touch path notes the packet, then meets it again
        except BaseException:
            self.store.uncache(session_id)
            raise

    async def _start_noted(self, noted: Noted) -> bool:
        """A Start (no usage) noted on a held record (the record its authorize wrote,
        usually), written by session_note.lua, then what _update does for a Start;
        False when the stored value moved (nothing written: the touch path reads the
        record as it is)."""
        rec = noted.rec
        try:
            written = await self.store.write_noted(
                rec.account_id,
                rec.session_id,
                noted.before,
                rec.pack(layout=self.store.layout),
                rec,
                rec.last_seen_ms,
                noted.gateway,
            )
        except BaseException:
            self.store.uncache(rec.session_id)
            raise
        if not written:
            return False
        # the Start is on the record: what follows is _update's for a Start, its errors
        # the caller's (never the touch path again: the note is written)
        await self._answered(rec, self.modes.holds_all(rec.client))
        return True

    async def _stop_noted(self, noted: Noted, report: UsageReport) -> bool:
        """_stop for a Stop noted on a held record; False when nothing was done."""
        ending = self._ending(noted.rec, report)
        if ending is None:
            return False
        usage_s, end = ending
        done = await self.closer.try_close(noted.rec, usage_s, end, noted=noted)
        return not isinstance(done, str)

    async def _account_of(self, report: UsageReport) -> str | None:
        """The account the gateway echoed in Class (echo_class clients), else the
        locator's. An echo_class client's packet without it: a search, and the locator
        only if it names a call of this client (its calls have none, unless the account
        does not fit in a Class: one for this id is another client's call; ids collide
        across gateways)."""
        call = report.call
        if call.account_hint:
            return call.account_hint
        if not self._echoes(report):
            return await self.store.locate(call.session_id)
        found = await self._without_class(report)
        if found is None:  # an account too long for a Class keeps a locator: if its call's
            located = await self.store.locate(call.session_id)
            rec = None if located is None else await self.store.get(located, call.session_id)
            if rec is not None and rec.client == call.client:
                found = located
        return found

    async def _touched(
        self, account_id: str, report: UsageReport
    ) -> tuple[str, str, int, SessionRecord | None]:
        """touch, at this client's call of the id: (account, state, usage, record)."""
        state, usage_s, rec = await self._touch(account_id, report)
        if state == FOREIGN:
            return await self._own_call(account_id, report)
        return account_id, state, usage_s, rec

    async def _own_call(
        self, foreign_id: str, report: UsageReport
    ) -> tuple[str, str, int, SessionRecord | None]:
        """The id located another client's call: Acct-Session-Id is unique per NAS only
        (RFC 2866 §5.5; Asterisk's uniqueid is the epoch second and a counter). This
        client's call of that id is looked for in its gateway's last-seen zset, and
        touched there; FOREIGN when there is none (nothing changed). Found there, the
        located record is this NAS's own (its NAS-IP-Address): one gateway that sends
        from two client addresses (authentication and accounting apart), the same call."""
        found = await self.store.search(report.call.session_id, report.call.gateway)
        if found is None:
            return foreign_id, FOREIGN, 0, None
        owner = "" if found == foreign_id else _id_owner(report)
        return (found, *await self._touch(found, report, owner))

    def _echoes(self, report: UsageReport) -> bool:
        return report.call.client in self.store.echo_class

    async def _without_class(self, report: UsageReport) -> str | None:
        """An echo_class client's packet that names no account of this call (no Class,
        or one naming another account): its call has no locator, so it is looked for
        in its gateway's last-seen zset (never adopted a second time under what the
        identity names now). Said in the log: the gateway should echo Class."""
        call = report.call
        self.unechoed.failure(
            f"client {call.client} sent accounting without our Class", call.session_id
        )
        return await self.store.search(call.session_id, call.gateway)

    async def _not_live(self, account_id: str, state: str, report: UsageReport) -> None:
        """Touch found no live record: a bad usage, an expired record, a reused id, or a
        closed session (a late Stop corrects a provisional close; see late.py)."""
        session_id = report.call.session_id
        if state == INVALID:
            await self.orphan(report, "invalid_usage")
        elif state == FOREIGN:  # the id is another client's call's, none of this client's
            await self.orphan(report, "session_id_of_another_client")
        elif state == "missing" and report.call.account_hint:
            # Not at the account its Class names (expired, or not one of our calls):
            # found as a packet without Class would be (locator, else adopted).
            await self.apply(_without_hint(report))
        elif state == "missing":  # the record expired but its locator (or entry) did not
            # (an echo_class client's call has no locator: one is another call's)
            await self.store.forget_locator(
                session_id, account_id, report.call.gateway, locator=not self._echoes(report)
            )
            await self.apply(report)
        elif report.call.account_hint == account_id or self._echoes(report):
            # Class names this account, or the search found it (echo_class), and it has
            # a record of this id: that record decides (a closed one absorbs a duplicate
            # or corrects a late Stop). Never re-applied under the locator: ids collide
            # across gateways, it may name another account's live call of the same id.
            if state == CLOSED:
                await self._closed(account_id, report)
        elif await self.store.locate(session_id, fresh=True) not in (account_id, None):
            await self.apply(_without_hint(report))  # a reused id, now another account's
        elif state == CLOSED:
            await self._closed(account_id, report)

    async def _closed(self, account_id: str, report: UsageReport) -> None:
        rec = await self.store.get(account_id, report.call.session_id)
        if rec is None or rec.state != CLOSED:
            await self.orphan(report, "session_gone")
            return
        if _later_leg(rec, report):
            await self._later_leg(rec, report)
            return
        usage_s = max(report.usage_s, rec.reported_usage_s if report.kind in FINAL else 0)
        if report.kind in FINAL:
            derived = self._derived_usage(rec, report)
            if derived is None:
                await self.orphan(report, "invalid_usage")
                return
            usage_s = max(usage_s, derived)
        await self.late.closed(rec, report, usage_s)

    async def _later_leg(self, rec: SessionRecord, report: UsageReport) -> None:
        """A leg of a closed conf-id call that is not the leg its Stop closed: a Cisco
        gateway's next attempt of the same call (rotary hunting over dial-peers, a
        redirect or a forward it follows itself), with its own Acct-Session-Id and the
        call's h323-conf-id. Cisco writes a new h323-conf-id for each billable call
        (the calls of one session share h323-incoming-conf-id), so this is the call the
        conf-id's account authorized, continued: charged to that account, once, as a
        session of its own ("CONF-ID#ACCT-SESSION-ID": each of its packets, and a
        retransmission, finds it). One that overlaps the usage the closed call was
        charged is kept in cdr:legs (its time was charged), or orphaned when it reports
        more (time nobody paid for): never acknowledged and forgotten."""
        call = report.call
        leg_start_ms = report.event_ms - report.usage_s * 1000
        charged_until_ms = rec.answer_ms + rec.last_usage_s * 1000
        if rec.last_usage_s and leg_start_ms < charged_until_ms - LEG_OVERLAP_SLACK_MS:
            if report.usage_s > rec.last_usage_s:
                said = f"{rec.session_id} leg {call.nas_session_id} overlaps its charged call"
                await self.orphan(report, "h323_leg_overlaps_call", said)
            else:
                await self.leg(report, "h323_leg_within_call")
            return
        leg = call.replace(
            session_id=f"{call.session_id}#{call.nas_session_id}",
            lookup=("default",),
            default_account=rec.account_id,
            account_hint="",
        )
        if not valid_session_id(leg.session_id):
            await self.orphan(report, "invalid_session_id")
            return
        await self.apply(report.replace(call=leg))

    async def _touch(
        self, account_id: str, report: UsageReport, owner: str | None = None
    ) -> tuple[str, int, SessionRecord | None]:
        return await self.store.touch(
            account_id,
            report.call.session_id,
            usage_s=report.usage_s,
            now_ms=self.clock_ms(),
            answer_ms=answer_ms_of(report),
            nas_session_id=report.call.nas_session_id,
            call_origin=report.call.call_origin,
            gateway=report.call.gateway,
            client=_id_owner(report) if owner is None else owner,
            answer_move_ms=answer_move_ms_of(report),
        )

    async def _update(self, rec: SessionRecord, usage_s: int, report: UsageReport) -> None:
        """Start or Interim: commit the cumulative cost, renew the hold for the next grant."""
        holds_all = self.modes.holds_all(rec.client)
        if report.kind is UsageKind.START and usage_s == 0:
            await self._answered(rec, holds_all)
            return
        # hold_all, own_timer: the hold keeps paying for the rest of the Session-Timeout.
        hold_to_s = rec.paid_usage_s if holds_all else 0
        await self.grants.charge(rec, usage_s, hold_to_s=hold_to_s)

    async def _answered(self, rec: SessionRecord, holds_all: bool) -> None:
        """The Start. hold_all / own_timer: the hold leased again from the answer.
        FreeSWITCH's Start, sent at routing while the call rings, is taken as the
        answer here all the same (answer_ms_of): its deadline counts from it, so a
        call is cut early by at most its ring time, never late (mod_radius_cdr sends
        nothing more until the Stop, which says the real answer: _ending).
        A cut sent while the call rang and never confirmed (a switch ends answered
        dialogs only: Kamailio's dlg.end_dlg) is sent again now, with its retries; else
        own_timer calls (and limited ones) get their deadline at the end of what is
        paid, where the cutter re-checks (or cuts): the gateway will not report."""
        paid_s = await self.grants.relet(rec) if holds_all else rec.paid_usage_s
        if rec.cut_reason:
            if not rec.cut_ok:
                retry_ms = self.clock_ms() + int(self.cfg.disconnect_backoff_s * 1000)
                await self.store.update(rec, cut_attempts=0)
                await self.store.set_deadline(rec, retry_ms)
        elif rec.limited or self.modes.own_timer(rec.client):
            await self.store.set_deadline(rec, self.grants.deadline_ms(rec, paid_s))

    def _derived_usage(self, rec: SessionRecord, report: UsageReport) -> int | None:
        """A Stop without Acct-Session-Time: this event's time minus the answer time
        (both the gateway's clock); 0 when it says nothing; None for a broken clock."""
        if report.usage_reported or not rec.answer_ms:
            return 0
        derived_s = (report.event_ms - rec.answer_ms + 500) // 1000
        if derived_s * 1000 > self.clock_ms() - rec.auth_ms + USAGE_SLACK_S * 1000:
            return None  # longer than the call has existed here: a broken or lying clock
        return derived_s

    async def _stop(self, rec: SessionRecord, usage_s: int, report: UsageReport) -> None:
        """Stop or Failed: close at once, releasing the hold. A call never answered
        closes unanswered (a Failed, or a Stop of a SIP INVITE >= 300, has no Start)."""
        ending = self._ending(rec, report, usage_s)
        if ending is None:
            await self.orphan(report, "invalid_usage")
            return
        await self._close_reported(rec, *ending, report)

    def _ending(
        self, rec: SessionRecord, report: UsageReport, usage_s: int | None = None
    ) -> tuple[int, Ending] | None:
        """The usage a Stop is closed with and its Ending; None for a broken clock.
        Without Acct-Session-Time the usage is this event's time minus the answer time
        (both the gateway's clock), and the CDR says so."""
        if usage_s is None:
            usage_s = rec.last_usage_s
        extra: dict[str, str] = {}
        if report.terminate_cause:
            extra["terminate_cause"] = report.terminate_cause
        if report.sip_code:
            extra["sip_code"] = str(report.sip_code)
        extra.update(report.quality)  # monitoring's KPIs read them from the CDR
        derived_s = self._derived_usage(rec, report)
        if derived_s is None:
            return None
        if derived_s > usage_s:
            usage_s = derived_s
            extra["usage_from"] = "event_timestamps"
        # FreeSWITCH's Stop says when the call was answered (0: never): the CDR's and
        # the rating's answer time, not its Start at routing the record took for it;
        # never answered, the call is unanswered even if the own timer cut it ringing.
        answer_ms = report.answer_ms
        status = _UNANSWERED if answer_ms == usage_s == rec.last_usage_s == 0 else _NORMAL
        ending = Ending(
            report.event_ms, status, report.disconnect_cause, extra or None, answer_ms=answer_ms
        )
        return usage_s, ending

    async def _close_reported(
        self, rec: SessionRecord, usage_s: int, ending: Ending, report: UsageReport
    ) -> None:
        """Close with the gateway's own report. Another closer's lease (the reaper, a
        closer that died after the release): wait for it, then close, or correct what it
        closed; still held after BUSY_WAIT_S: CloseBusy (spooled, replayed later)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + BUSY_WAIT_S
        while True:
            done = await self.closer.try_close(rec, usage_s, ending)
            if done == GONE:  # closed meanwhile: a retransmission, or a late Stop
                await self._closed(rec.account_id, report)
                return
            if done != BUSY:
                return
            if loop.time() >= give_up:
                raise CloseBusy(f"session {rec.session_id} is held by another closer")
            await asyncio.sleep(BUSY_POLL_S)

    async def _adopt(self, report: UsageReport) -> tuple[SessionRecord | None, bool]:
        """Accounting without our authorize: charge the account found by identity, or
        orphan it. True with a record this call wrote, already touched by ``report``.
        A FreeSWITCH leg it originated (Freeswitch-Direction "outbound": a bridge's
        B-leg, whose caller profile is the A-leg's clone, same User-Name) is never
        adopted: its A-leg is the call, charged once (docs/radius.md); a B-leg this
        daemon authorized has a record and never comes here. Nor is a B-leg's Start:
        mod_radius_cdr sends the direction in its Stop only, but the B-leg routes too
        (its Start at routing, the A-leg's User-Name) and names its partner in
        Freeswitch-Other-Leg-Id, which an A-leg's first Start never has (it routes
        before any bridge); an A-leg whose Start was not adopted is by its Stop."""
        if report.direction == OUTBOUND:
            await self.leg(report, "freeswitch_outbound_leg")
            return None, False
        if report.other_leg_id and not report.direction:
            await self.leg(report, "freeswitch_b_leg_start")
            return None, False
        call = report.call
        account = await self.authorizer.find_account(call)
        if account is None:
            await self.orphan(report, "unknown_account")
            return None, False
        start_ms = report.event_ms - report.usage_s * 1000
        profile = Profile(account.id, account.tariff, account.currency, account.mode.value)
        made = self.authorizer.new_record(call, profile, start_ms)
        if not isinstance(made, tuple):
            await self.orphan(report, made.code.value)
            return None, False
        # A call chargingd refused that its gateway connected anyway: it was allowed
        # nothing (charged in full as debt, CDR overrun: settle.py).
        refused = await self._was_refused(account, call.session_id)
        # The fields session_touch.lua would set for this packet, written at creation.
        rec = _replace(
            made[0],
            adopted=ADOPTED_REFUSED if refused else ADOPTED,
            answer_ms=answer_ms_of(report),
            last_usage_s=report.usage_s,
            last_seen_ms=self.clock_ms(),
        )
        # (an echo_class client's call writes no locator: one for this id is another's)
        if not await self.store.create(rec, locator=self.store.needs_locator(rec)):
            return await self.store.get(account.id, call.session_id), False  # concurrently
        log.warning(
            "adopted session %s of account %s without authorize", rec.session_id, account.id
        )
        return rec, True

    async def _nothing_to_adopt(self, report: UsageReport) -> bool:
        """Accounting of a call with no session here that must not adopt one: a Failed
        (never set up nor authorized here: a switch that also accounts the INVITEs
        chargingd refused), or a Start or a Stop of no usage of a call chargingd refused
        (a Cisco leg that never connected): no money, no session, so no CDR. Refused:
        the ledger remembers its refusal, or a fraud rule's, or its account is not
        active (refused before any reserve: blocked, suspended). A refused call its
        gateway connected anyway reports usage: adopted and charged in full (it was
        allowed nothing: overrun)."""
        session_id = report.call.session_id
        if report.kind is UsageKind.FAILED:
            log.debug("failed call %s without a session: nothing to close", session_id)
            return True
        if report.usage_s:
            return False
        account = await self.authorizer.find_account(report.call)
        if account is None or not await self._was_refused(account, session_id):
            return False
        log.debug("accounting of refused call %s: nothing to charge", session_id)
        return True

    async def _was_refused(self, account: Account, session_id: str) -> bool:
        """Did chargingd refuse this call: the ledger remembers its refusal, or a fraud
        rule's, or its account is not active (refused before any reserve)?"""
        if account.status is not Status.ACTIVE:
            return True
        if await self.authorizer.ledger.refusal(account.id, session_id):
            return True
        fraud = self.authorizer.fraud
        return fraud is not None and await fraud.refused_call(account.id, session_id)

    async def orphan(self, report: UsageReport, reason: str, detail: str = "") -> None:
        """Keep a report nothing can charge, with its reason (never lost), and say so: the
        first of each reason at once, then a line per interval with a count (a broken
        gateway, or the replay of an outage's spool, must not flood the log)."""
        said = detail or report.call.session_id
        self.orphans.failure(f"accounting kept in cdr:orphans ({reason})", said)
        await self.store.record_orphan(orphan_fields(report, reason, self.source))

    async def leg(self, report: UsageReport, reason: str) -> None:
        """Keep a leg's report whose call its other leg is (a FreeSWITCH B-leg): in
        cdr:legs, not cdr:orphans (one per bridged call would crowd out of that bounded
        stream the unbilled usage it is kept for), said at INFO, a line per interval."""
        self.legs.failure(f"accounting kept in cdr:legs ({reason})", report.call.session_id)
        await self.store.record_leg(orphan_fields(report, reason, self.source))


def answer_ms_of(report: UsageReport) -> int:
    """The answer time a packet implies (0: not answered yet, RFC 2866 §5.7), or the one
    it says (FreeSWITCH: its answer date, 0 for a Stop never answered). FreeSWITCH's
    Start at routing (answer_ms 0: it rings) is taken as the answer, as any Start: the
    deadlines (own timer, a limited call) and the reaper count from it, money-safe
    (its Stop corrects the CDR's answer time: Accounting._ending)."""
    said = report.answer_ms
    if said > 0 or (said == 0 and report.kind is not UsageKind.START):
        return said
    answered = report.kind is UsageKind.START or report.usage_s > 0
    return report.event_ms - report.usage_s * 1000 if answered else 0


def _later_leg(rec: SessionRecord, report: UsageReport) -> bool:
    """Is ``report`` another leg of ``rec``'s conf-id call than the one its own Stop
    closed it with: keyed by the conf-id, the same h323-call-origin (the other side's
    legs are what they always were), another Acct-Session-Id. Not for a provisional
    close (its late Stop corrects it)."""
    call = report.call
    return bool(
        call.conf_id
        and call.conf_id == call.session_id
        and call.nas_session_id
        and rec.nas_session_id
        and call.nas_session_id != rec.nas_session_id
        and call.call_origin.lower() == rec.call_origin.lower()
        and not rec.provisional
    )


def answer_move_ms_of(report: UsageReport) -> int:
    """The answer an Interim-Update says, to which a record answered by its Start moves
    (later only): the h323 dialect's Start goes at the leg's setup and its Interim
    says the call connected (radius/translate.py: the earliest it can have, money
    first). 0: none (every other packet; a Start never moves an answer: FreeSWITCH's
    Start of a transfer says an answer date, and must not move the first Start's)."""
    said = report.answer_ms
    return said if said > 0 and report.kind is UsageKind.INTERIM else 0


def _id_owner(report: UsageReport) -> str:
    """The client whose record of the id a packet may touch; "" any: an h323-conf-id is
    a GUID the legs of one call share across gateways (Cisco's debit-card call is
    accounted by the originating and the terminating gateway)."""
    call = report.call
    return "" if call.conf_id and call.conf_id == call.session_id else call.client


def _without_hint(report: UsageReport) -> UsageReport:
    """The report as if its Class had named no account."""
    call = report.call.replace(account_hint="")
    return report.replace(call=call)


def _replace(rec: SessionRecord, **changes: Any) -> SessionRecord:
    return rec.replace(**changes)


def valid_session_id(session_id: str) -> bool:
    """What the ledger accepts as a session id: 1-256 printable characters."""
    return 0 < len(session_id) <= MAX_SESSION_ID and session_id.isprintable()
