"""Authorize: find the account, rate the first grant, reserve it, write the record.

On a single Redis a known caller costs one round trip: this process remembers which
account an identity names and the account's tariff and currency, and the fused script
(lua/session_authorize.lua) has the ledger's account check confirm them before it
reserves;
anything changed ("stale") drops the remembered values and takes the full path
(account read, then reserve + record). Balances are never cached.

With [fraud] on, the fraud rules decide before the grant (sessions/fraudhook.py): in
the fused script on a single Redis, in their own script of the same pipeline
otherwise.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from chargingd.core.chain import chained
from chargingd.core.config import SessionsConfig
from chargingd.core.identities import USER_PREFIX, user_identity
from chargingd.core.numbers import NumberError, to_e164
from chargingd.ledger import (
    Account,
    Grant,
    InvalidRequest,
    Ledger,
    RefusalReason,
    Status,
    UnknownAccount,
)
from chargingd.ledger.batch import CommandNotSent
from chargingd.ledger.steps import AccountCheck
from chargingd.sessions.ccapi import Authorized, CallInfo, RefusalCode, Refused
from chargingd.sessions.fraudhook import Attempt, FraudHook
from chargingd.sessions.fused import FusedPath
from chargingd.sessions.grants import Grants
from chargingd.sessions.modes import CreditModes
from chargingd.sessions.newrecord import Profile, RecordMaker
from chargingd.sessions.pricing import Priced, Pricer
from chargingd.sessions.recordspec import ADOPTED
from chargingd.sessions.store import (
    LIVE,
    REDIS_DOWN,
    AccountInactive,
    LateWrite,
    SessionRecord,
    SessionStore,
)

log = logging.getLogger("chargingd.sessions")

V = TypeVar("V")
CACHE_MAX = 100_000  # remembered identities / account profiles (cleared when full)

_REFUSALS = {
    RefusalReason.UNKNOWN_ACCOUNT: RefusalCode.UNKNOWN_ACCOUNT,
    RefusalReason.SUSPENDED: RefusalCode.SUSPENDED,
    RefusalReason.INSUFFICIENT_CREDIT: RefusalCode.INSUFFICIENT_CREDIT,
    RefusalReason.TOO_MANY_CALLS: RefusalCode.TOO_MANY_CALLS,
    RefusalReason.LATE: RefusalCode.SYSTEM_ERROR,
    RefusalReason.SYSTEM_ERROR: RefusalCode.SYSTEM_ERROR,
}
ANSWER = "answer"  # h323-call-origin of the answering side
UNAVAILABLE = "charging unavailable"  # what a gateway hears when Redis does not answer
BLOCKED = "account blocked"  # a fraud rule blocked the account ([fraud] block_message)


class WriteUncertain(Exception):
    """Redis did not answer an authorize's write: it may still run (a stalled Redis
    resumes) although the gateway is refused. sessions/service.py undoes it later.
    ``record_sent``: False when the unanswered write was the hold's, step by step (the
    record is written after it): a record of the session is then another authorize's."""

    def __init__(self, account_id: str, session_id: str, *, record_sent: bool = True) -> None:
        super().__init__(f"authorize of {session_id} ({account_id}): write not confirmed")
        self.account_id = account_id
        self.session_id = session_id
        self.record_sent = record_sent


class Authorizer:
    """The authorize half of sessions.Sessions (which maps Redis/ledger errors)."""

    def __init__(
        self,
        *,
        store: SessionStore,
        ledger: Ledger,
        pricer: Pricer,
        grants: Grants,
        cfg: SessionsConfig,
        clock_ms: Callable[[], int],
        fused: FusedPath | None,
        fraud: FraudHook | None = None,
        modes: CreditModes | None = None,
    ) -> None:
        self.store = store
        self.modes = modes or CreditModes()
        self.ledger = ledger
        self.pricer = pricer
        self.grants = grants
        self.cfg = cfg
        self.clock_ms = clock_ms
        self.fused = fused
        self.fraud = fraud
        self.records = RecordMaker(pricer, cfg)
        self._identities: dict[str, str] = {}  # "user:alice" -> account id
        self._profiles: dict[str, Profile] = {}  # account id -> tariff, currency
        # The configuration's values read per authorize, kept here: SessionsConfig is a
        # frozen dataclass (interpreted; first_grant a property run per read).
        self._first_grant_s = cfg.first_grant
        self._max_session_s = cfg.max_session_s
        self._interim_interval_s = cfg.interim_interval_s

    async def authorize(self, call: CallInfo) -> Authorized | Refused:
        """Decide an Access-Request (the session id is already checked)."""
        if call.call_origin and call.conf_id == call.session_id and _answering(call):
            answered = await self._answer_leg(call)
            if answered is not None:
                return answered
        # A known caller's one round trip in this coroutine itself, the rest in
        # _decide: each coroutine level costs a generator and a resume per request.
        attempt = None if self.fraud is None else Attempt(call.caller_ip, call.client)
        try:
            answer: Authorized | Refused | None = None
            if self.fused is not None:
                answer = await self._authorize_known(self.fused, call, attempt)
            if answer is None:
                answer = await self._decide(call, attempt)
        except Exception:
            if attempt is not None:
                self._refused(call, attempt)  # the caller answers with a refusal
            raise
        if attempt is not None and isinstance(answer, Refused):
            self._refused(call, attempt)
        return answer

    async def _answer_leg(self, call: CallInfo) -> Authorized | Refused | None:
        """An Access-Request of the answering side ("h323-call-origin=answer") of a call
        keyed by its h323-conf-id: GNU Gatekeeper's RadAuth authorizes the called
        endpoint's ARQ (answerCall) with the conf-id of the caller's call, and a Cisco
        terminating gateway that authorizes its incoming leg sends the conf-id the
        originating gateway's call holds. While that call is live (whichever client
        or gateway authorized it: an h323-conf-id is one call across gateways), this is
        its other end: answered as the call's first answer was (its Session-Timeout),
        nothing held, no record, no locator written, nobody counted or charged: the
        caller's call pays, once, and its Stop releases its hold. A conf-id of a call
        that is over, or of an adopted one (no grant to answer with), is refused: an
        answer never takes over a call nor reopens one. None: no call of this conf-id
        here, decided as any Access-Request (the account its User-Name names pays)."""
        sid = call.session_id
        owner = await self.store.locate(sid, fresh=True)
        if owner is None and call.client in self.store.echo_class:
            owner = await self.store.search(sid, call.gateway)  # (such a call has no locator)
        rec = None if owner is None else await self.store.get(owner, sid)
        if rec is None:
            return None
        if rec.state != LIVE or rec.adopted or not rec.credit_micros:
            log.warning(
                "answer Access-Request of %s from %s refused: the conf-id is %s's call (%s)",
                sid,
                call.client,
                rec.account_id,
                "adopted" if rec.state == LIVE else "closed",
            )
            return Refused(RefusalCode.SYSTEM_ERROR, "session id already used")
        profile = self._profiles.get(rec.account_id)
        if profile is not None:
            mode = profile.mode
        else:
            account = await self._get(rec.account_id)
            mode = "" if account is None else account.mode.value
        first = rec.replace(answer_ms=0)  # rated from authorize, as the first answer was
        return self._answer(first, rec.credit_micros, rec.held_micros, mode)

    def _refused(self, call: CallInfo, attempt: Attempt) -> None:
        assert self.fraud is not None
        identity = attempt.identity if attempt.account_id else next(iter(attempt.tried), "")
        self.fraud.after_refusal(
            attempt.account_id,
            identity,
            call.session_id,
            admitted=attempt.admitted,
            tariff=attempt.tariff,
            caller_ip=attempt.caller_ip,
            tried=attempt.tried,
        )

    async def _decide(self, call: CallInfo, attempt: Attempt | None) -> Authorized | Refused:
        """The full path: the account read, then its first grant."""
        account = await self.find_account(call, attempt)
        if account is None:
            return Refused(RefusalCode.UNKNOWN_ACCOUNT, "unknown account")
        if attempt is not None:
            attempt.found(account.id, self._identity_of(call, account), account.tariff)
        if account.status is not Status.ACTIVE:
            return self._inactive(account.status.value, account.status_reason)
        profile = Profile(account.id, account.tariff, account.currency, account.mode.value)
        made = self._first(call, profile)
        if isinstance(made, Refused):
            return made
        _remember(self._profiles, account.id, profile)
        rec, priced = made
        answer = await self._reserve_first(
            rec, priced, check=None, mode=profile.mode, attempt=attempt
        )
        assert answer is not None  # only a checked reserve can find the account changed
        return answer

    async def _authorize_known(
        self, fused: FusedPath, call: CallInfo, attempt: Attempt | None
    ) -> Authorized | Refused | None:
        """One round trip for a caller seen before; None: take the full path."""
        known = self._known(call)
        if known is None:
            return None
        profile, identity = known
        made = self._first(call, profile)
        if isinstance(made, Refused):
            return None  # the full path refuses in its own order (status first)
        if attempt is not None:
            attempt.found(profile.account_id, identity, profile.tariff)
        check = AccountCheck(profile.tariff, profile.currency, identity, profile.mode)
        # (rec, priced) passed by name: a call with *made is a generic Python call,
        # its keyword arguments a dict (~2,500 instructions per authorize, compiled)
        rec, priced = made
        answer = await self._reserve_first(
            rec, priced, check=check, mode=profile.mode, attempt=attempt
        )
        if answer is None:  # the account changed: forget what we knew of it
            self._profiles.pop(profile.account_id, None)
            self._identities.pop(identity, None)
        return answer

    def _known(self, call: CallInfo) -> tuple[Profile, str] | None:
        """The remembered account of the first lookup method that names one."""
        for method in call.lookup:
            if method == "default":
                if not call.default_account:
                    continue
                profile = self._profiles.get(call.default_account)
                return None if profile is None else (profile, "")
            identity = self._identity(method, call)
            if identity is None:
                continue
            account_id = self._identities.get(identity)
            profile = self._profiles.get(account_id) if account_id is not None else None
            return None if profile is None else (profile, identity)
        return None

    async def _reserve_first(
        self,
        rec: SessionRecord,
        priced: Priced,
        *,
        check: AccountCheck | None,
        mode: str,
        attempt: Attempt | None,
    ) -> Authorized | Refused | None:
        """Reserve the first grant; with ``check``, None when the account changed.
        WriteUncertain when Redis did not answer one of its writes."""
        reserved: list[bool] = []  # one entry once the hold's write has been answered
        try:
            if self.fused is not None and rec.paid_usage_s > 0:
                # One script: the fraud rules (with ``attempt``), the hold and, when
                # granted in full, the record with it (which _first wrote with the full
                # hold and the usage it pays for). Here, not in a coroutine of its own:
                # one level fewer per authorize (a generator and a resume each).
                fraud = self.fraud if attempt is not None else None
                prepared = None
                if fraud is not None and attempt is not None:
                    facts = fraud.facts(rec.account_id, rec.session_id, rec.callee, attempt)
                    prepared = fraud.prepare(facts)
                out = await self.fused.authorize(
                    rec,
                    max(priced.cost_micros, 1),
                    lease_ms=self._first_lease_ms(rec.client),
                    check=check,
                    fraud=prepared,
                    held_only=self.modes.holds_all(rec.client),
                )
                reserved.append(True)
                if fraud is not None and prepared is not None and out.fraud is not None:
                    verdict = fraud.decided(prepared, out.fraud)
                    refusal = fraud.refusal(verdict)
                    if refusal is not None:
                        return refusal
                    assert attempt is not None
                    # A retransmission was admitted by its first run: never forgotten here.
                    granted = out.grant is not None and out.grant.ok
                    attempt.admitted = granted and not verdict.again
                grant = out.grant
                if grant is None:  # checked and found changed (stale) or not active
                    return self._inactive(out.status, out.reason) if out.status else None
                if grant.ok and out.created > 0:
                    return self._authorized(rec, grant, mode)  # _answered's, created
                if grant.ok and out.created == 0:  # a retransmission, nothing reserved again
                    return await self._answered(rec, grant, mode, created=False)
                if not grant.ok:
                    return _refusal(grant)
                return await self._grant_first(rec, grant, priced.cost_micros, mode)
            return await self._reserve_first_steps(
                rec, priced, mode=mode, attempt=attempt, reserved=reserved
            )
        except CommandNotSent as not_sent:
            if not reserved:
                raise  # the first write never left this process: nothing to undo
            # The hold went through; a later write (the record) found no connection
            # (e.g. the account's master died between the two): the gateway is refused,
            # so the hold is undone as for any write left uncertain.
            raise chained(WriteUncertain(rec.account_id, rec.session_id), not_sent) from not_sent
        except REDIS_DOWN as exc:
            # Step by step, the record is written once the hold's write was answered; a
            # fused script writes both (a late run of it may have written the record).
            sent = bool(reserved) or (self.fused is not None and rec.paid_usage_s > 0)
            uncertain = WriteUncertain(rec.account_id, rec.session_id, record_sent=sent)
            raise chained(uncertain, exc) from exc

    async def _reserve_first_steps(
        self,
        rec: SessionRecord,
        priced: Priced,
        *,
        mode: str,
        attempt: Attempt | None,
        reserved: list[bool],
    ) -> Authorized | Refused:
        """The step-by-step path (Redis Cluster, or no first grant): the rules in their
        own script first, then the ledger's reserve."""
        want = priced.cost_micros
        amount = max(want, 1)
        lease_ms = self._first_lease_ms(rec.client)
        fraud = self.fraud if attempt is not None else None
        learn = None
        if fraud is not None and attempt is not None:
            facts = fraud.facts(rec.account_id, rec.session_id, rec.callee, attempt)
            checked = await fraud.check_step(facts, attempt)
            if isinstance(checked, Refused):
                return checked
            learn = checked
        # new_session: the ledger counts a session once (a replay holds no second call).
        grant = await self.ledger.reserve(
            rec.account_id,
            rec.session_id,
            amount,
            lease_ms=lease_ms,
            # always, whatever [ledger] partial_grants says: as the fused authorize's
            # (FusedPath._constants; docs/credit-control.md "Partial grants")
            partial=True,
            new_session=True,
        )
        reserved.append(True)
        if not grant.ok:
            return _refusal(grant)
        if fraud is not None and learn is not None:
            # Step by step: its country learnt once granted (as the fused script does),
            # in the same pipeline as the record write.
            # gather(*list): its result typed as the list it is (mypyc checks the tuple
            # type of gather(a, b) against the list it returns at run time).
            both: list[Awaitable[object]] = [
                self._grant_first(rec, grant, want, mode),
                fraud.admit(learn),
            ]
            done = await asyncio.gather(*both)
            answer = done[0]
            assert isinstance(answer, (Authorized, Refused))
            return answer
        return await self._grant_first(rec, grant, want, mode)

    async def _grant_first(
        self, rec: SessionRecord, grant: Grant, want: int, mode: str
    ) -> Authorized | Refused:
        paid_s = self.grants.paid_s(rec, grant.granted_micros)
        if paid_s <= 0:
            # Not a second's worth: refused, and remembered as such (not a closed
            # session: a retransmission gets the same answer on any daemon).
            reason = RefusalReason.INSUFFICIENT_CREDIT
            await self.ledger.refuse(rec.account_id, rec.session_id, reason.value)
            return Refused(RefusalCode.INSUFFICIENT_CREDIT, "insufficient credit")
        # hold_all, own_timer: what is held is all the call was told; nothing to renew.
        holds_all = self.modes.holds_all(rec.client)
        limited = int(grant.granted_micros < want and not holds_all)
        rec = rec.replace(
            held_micros=grant.granted_micros,
            paid_usage_s=paid_s,
            limited=limited,
            # The money the answer's Session-Timeout stands for (as session_authorize.lua
            # writes it): part of what the call is allowed (sessions/settle.py).
            credit_micros=self._told_micros(rec.client, grant),
        )
        # Written only while the account is active: a block (another daemon's fraud
        # rule, an operator) between the reserve and this write refuses the call
        # here, or its cut of the account's live calls, which follows the block,
        # finds this record (the fused script writes a full grant's record with its
        # reserve, in one run).
        active = self.ledger.steps.active_check(rec.account_id)
        deadline_ms = self.ledger.new_session_deadline_ms()
        try:  # False for a replayed Access-Request: kept as it was
            created = await self.store.create(
                rec,
                deadline_ms=deadline_ms,
                active=active,
                locator=self.store.needs_locator(rec),
            )
        except LateWrite:
            # Too late to write the record (Redis stalled): refused, its hold undone.
            await self.ledger.refuse(rec.account_id, rec.session_id, RefusalReason.LATE.value)
            return Refused(RefusalCode.SYSTEM_ERROR, UNAVAILABLE)
        except AccountInactive as exc:
            suspended = RefusalReason.SUSPENDED.value
            await self.ledger.refuse(rec.account_id, rec.session_id, suspended)
            return self._inactive(exc.status, exc.reason)
        return await self._answered(rec, grant, mode, created=created, want=want)

    async def _answered(
        self, rec: SessionRecord, grant: Grant, mode: str, *, created: bool, want: int = 0
    ) -> Authorized:
        """The answer; a retransmission's (not ``created``: its record exists), on any
        daemon, from the record as the first answer was, not from what is available now
        (the gateway keeps the first answer it gets; the record's credit_micros is what
        the call is allowed). A record its Start adopted becomes this authorized call
        (_authorize_adopted). ``want``: the amount asked (0: granted in full)."""
        if created:
            return self._authorized(rec, grant, mode)
        stored = await self.store.get(rec.account_id, rec.session_id)
        if (
            stored is not None
            and stored.state == LIVE
            and stored.adopted == ADOPTED
            and stored.client == rec.client
        ):
            return await self._authorize_adopted(stored, grant, mode, want)
        if stored is None or stored.state != LIVE or stored.adopted or not stored.credit_micros:
            return self._authorized(rec, grant, mode)  # not an answered authorize's record
        first = stored.replace(answer_ms=0)  # rated from authorize, as then
        return self._answer(first, stored.credit_micros, stored.held_micros, mode)

    async def _authorize_adopted(
        self, stored: SessionRecord, grant: Grant, mode: str, want: int
    ) -> Authorized:
        """The Access-Request of a call its Start adopted first: FreeSWITCH sends
        mod_radius_cdr's Start from a global routing handler, before the standard one
        hunts the dialplan, where mod_xml_radius's radius_auth (inline) asks. The
        reserve held the money; the record becomes the authorized call (its hold,
        allowance and deadline, as _grant_first and Accounting._answered give them),
        else it stays adopted: settled as "no authorize here", charged in full as debt,
        never cut."""
        holds_all = self.modes.holds_all(stored.client)
        held = grant.granted_micros
        paid_s = self.grants.paid_s(stored, stored.debited_micros + held)
        credit = self._told_micros(stored.client, grant)
        fields = {
            "adopted": 0,
            "held_micros": held,
            "paid_usage_s": paid_s,
            "limited": int(held < want and not holds_all),
            "credit_micros": credit,
        }
        rec = stored.replace(**fields)
        deadline_ms: int | None = 0 if stored.deadline_ms else None
        if rec.answer_ms and (rec.limited or self.modes.own_timer(rec.client)):
            deadline_ms = self.grants.deadline_ms(rec, paid_s)  # its Start came already
        await self.store.set_grant(stored, fields, deadline_ms=deadline_ms)
        return self._answer(rec, credit, held, mode)

    def _told_micros(self, client: str, grant: Grant) -> int:
        """The money the Session-Timeout of the answer stands for: what is held and
        still available; in hold_all and own_timer only what is held (a gateway that
        cannot be told another Session-Timeout may run to this one: no other call is
        told that money)."""
        if self.modes.holds_all(client):
            return grant.granted_micros
        return grant.granted_micros + grant.available_micros

    def _first_lease_ms(self, client: str) -> int:
        """The first hold's lease: a first grant; in hold_all and own_timer the longest
        Session-Timeout past the reap (leased again from the Start: Grants.hold_all_lease_ms)."""
        if self.modes.holds_all(client):
            return self.grants.hold_all_lease_ms()
        return self.grants.lease_ms(self._first_grant_s)

    def _authorized(self, rec: SessionRecord, grant: Grant, mode: str) -> Authorized:
        credit = self._told_micros(rec.client, grant)
        return self._answer(rec, credit, grant.granted_micros, mode)

    def _answer(self, rec: SessionRecord, credit: int, held: int, mode: str) -> Authorized:
        """The Access-Accept of ``rec``: the Session-Timeout ``credit`` pays for."""
        timeout_s = min(self.grants.paid_s(rec, credit), self._max_session_s)
        if log.isEnabledFor(logging.INFO):  # (Logger.info: two interpreted frames)
            log.info(
                "authorize %s account=%s dest=%s timeout=%ss held=%s",
                rec.session_id,
                rec.account_id,
                rec.destination,
                timeout_s,
                held,
            )
        return Authorized(
            account_id=rec.account_id,
            session_timeout_s=timeout_s,
            interim_interval_s=self._interim_interval_s,
            credit_micros=credit,
            currency=rec.currency,
            postpaid=mode == "postpaid",
            grant_s=rec.paid_usage_s,
            final=bool(rec.limited),
        )

    async def authenticate(self, call: CallInfo) -> Authorized | Refused:
        """The card's account, active, and what it may spend now; nothing reserved. The
        call's own Access-Request (with its called number) is authorized as any other."""
        account = await self.find_account(call)
        if account is None:
            return Refused(RefusalCode.UNKNOWN_ACCOUNT, "unknown account")
        if account.status is not Status.ACTIVE:
            return self._inactive(account.status.value, account.status_reason)
        available = account.available_micros
        if available <= 0:
            return Refused(RefusalCode.INSUFFICIENT_CREDIT, "insufficient credit")
        postpaid = account.mode.value == "postpaid"
        return Authorized(account.id, 0, self._interim_interval_s, available,
                          account.currency, postpaid=postpaid)  # fmt: skip

    # -- finding the account -------------------------------------------------------
    async def find_account(self, call: CallInfo, attempt: Attempt | None = None) -> Account | None:
        """The caller's account, by the client's lookup order (user, ani, default)."""
        for method in call.lookup:
            if method == "default":
                account = await self._get(call.default_account) if call.default_account else None
            else:
                identity = self._identity(method, call)
                if attempt is not None and identity is not None:
                    attempt.tried = (*attempt.tried, identity)
                account = await self._by_identity(identity)
                as_sent = _as_sent(method, call, identity)
                if account is None and as_sent is not None:
                    # An identity stored before user identities were stored in their
                    # canonical form (core/identities.py), as the gateway writes it.
                    account = await self._by_identity(as_sent)
            if account is not None:
                return account
        return None

    def _identity_of(self, call: CallInfo, account: Account) -> str:
        """The identity the account was found by ("" its client's default account)."""
        for method in call.lookup:
            identity = self._identity(method, call) if method != "default" else None
            if identity is not None and identity in account.identities:
                return identity
            as_sent = _as_sent(method, call, identity)
            if as_sent is not None and as_sent in account.identities:
                return as_sent
        return ""

    def _inactive(self, status: str, reason: str) -> Refused:
        if reason == "fraud":  # blocked by a fraud rule until an operator unblocks it
            message = self.fraud.block_message if self.fraud is not None else BLOCKED
            return Refused(RefusalCode.FRAUD, message)
        return _inactive(status, reason)

    def _identity(self, method: str, call: CallInfo) -> str | None:
        if method == "user" and call.user_name:
            # RFC 3261 §19.1.4: "sip:alice@EXAMPLE.COM" is the account's
            # "user:alice@example.com" (the form ledger/keys.py stores).
            return user_identity(call.user_name)
        if method == "ani" and call.calling:
            try:
                country = self.records.country_of(call.client)
                return "ani:" + to_e164(call.calling, country=country)
            except NumberError:
                return None
        return None

    async def _by_identity(self, identity: str | None) -> Account | None:
        """The account an identity names (remembered only while the account lists it)."""
        if identity is None:
            return None
        account_id = await self.ledger.find_account(identity)
        if account_id is None:
            return None
        account = await self._get(account_id)
        if account is not None and identity in account.identities:
            _remember(self._identities, identity, account.id)
        return account

    async def _get(self, account_id: str) -> Account | None:
        try:
            return await self.ledger.get_account(account_id)
        except (UnknownAccount, InvalidRequest):
            return None

    def _first(self, call: CallInfo, profile: Profile) -> tuple[SessionRecord, Priced] | Refused:
        """new_record for an authorize: the first grant priced and, for the fused
        script, its full hold and the usage that pays for written on the record."""
        usage_s = self._first_grant_s
        if self.modes.holds_all(call.client):
            usage_s = self._max_session_s
        return self.new_record(call, profile, self.clock_ms(), usage_s, hold=self.fused is not None)

    def new_record(
        self, call: CallInfo, account: Profile, now_ms: int, usage_s: int = 0, *, hold: bool = False
    ) -> tuple[SessionRecord, Priced] | Refused:
        """A live record for this call and the price of ``usage_s`` seconds on it
        (sessions/newrecord.py)."""
        return self.records.new_record(call, account, now_ms, usage_s, hold=hold)


def _answering(call: CallInfo) -> bool:
    """The answering side's Access-Request: h323-call-origin "answer" (GNU Gatekeeper's
    answerCall ARQ; compared without case, as AudioCodes capitalises it)."""
    return call.call_origin.lower() == ANSWER


def _refusal(grant: Grant) -> Refused:
    """The answer to a reserve that was not granted."""
    code = _REFUSALS.get(grant.reason, RefusalCode.INSUFFICIENT_CREDIT)  # type: ignore[arg-type]
    if code is RefusalCode.SYSTEM_ERROR:
        return Refused(code, UNAVAILABLE)
    return Refused(code, code.value.replace("_", " "))


def _inactive(status: str, reason: str) -> Refused:
    if reason == "credit":  # postpaid at its credit limit
        return Refused(RefusalCode.INSUFFICIENT_CREDIT, "credit limit reached")
    if reason and reason != "operator":  # a rule's reason (dunning) tells the caller why
        return Refused(RefusalCode.SUSPENDED, f"account {status}: {reason}")
    return Refused(RefusalCode.SUSPENDED, f"account {status}")


def _as_sent(method: str, call: CallInfo, identity: str | None) -> str | None:
    """The user identity as the gateway wrote it, when its canonical form differs
    (None otherwise: nothing more to try)."""
    if method != "user" or identity is None:
        return None
    as_sent = USER_PREFIX + call.user_name
    return as_sent if as_sent != identity else None


def _remember(cache: dict[str, V], key: str, value: V) -> None:
    if len(cache) >= CACHE_MAX:
        cache.clear()
    cache[key] = value
