"""Grants, holds and deadlines (DESIGN "Grants, holds and cuts").

Each renewal holds money for the next grant of usage, sized with the call's age
(Sippy-style adaptive grants) but never beyond what the ledger can give. When a
renewal is not granted in full the session gets a deadline: the moment the money
debited plus held runs out. A top-up, or a later renewal in full, recomputes that
deadline (the end of what is now paid for) and never clears it: a gateway that sends
no Interim is then re-checked by the cutter there (renewed, or cut). Rating is done
on the TOTAL usage every time, so connect fees and billing increments apply once.
Interims commit at most what the account can give (policy "cap"); the Stop settles
the rest (sessions/settle.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from chargingd.core.config import SessionsConfig
from chargingd.ledger import Grant, Ledger, SessionClosed, UnknownAccount
from chargingd.sessions.fused import FusedPath
from chargingd.sessions.modes import CreditModes
from chargingd.sessions.noting import Noted
from chargingd.sessions.pricing import Priced, Pricer
from chargingd.sessions.store import SessionRecord, SessionStore


class Grants:
    """Prices usages of a session, renews its hold, keeps its deadline in step."""

    def __init__(
        self,
        *,
        store: SessionStore,
        ledger: Ledger,
        pricer: Pricer,
        cfg: SessionsConfig,
        clock_ms: Callable[[], int],
        fused: FusedPath | None = None,
        modes: CreditModes | None = None,
    ) -> None:
        """``fused``: the fused scripts (one round trip per interim); None step by step."""
        self.fused = fused
        self.modes = modes or CreditModes()
        self.store = store
        self.ledger = ledger
        self.pricer = pricer
        self.cfg = cfg
        self.clock_ms = clock_ms
        # What paid_s, grant_size and lease_ms read of the config on every packet, read
        # once: SessionsConfig is a frozen dataclass (interpreted), first_grant a
        # property run per read (as authorize.py keeps it, round 17b)
        self._session_ttl_s: Final = cfg.session_ttl_s
        self._first_grant_s: Final = cfg.first_grant
        self._max_grant_s: Final = cfg.max_grant_s
        self._stale_s: Final = cfg.stale_factor * cfg.interim_interval_s

    async def charge(
        self, rec: SessionRecord, usage_s: int, *, hold_to_s: int = 0, noted: Noted | None = None
    ) -> bool:
        """Commit the cost of the cumulative usage, renew the hold for the next grant.
        ``hold_to_s``: the hold pays for exactly up to this usage, nothing past it
        (credit modes hold_all and own_timer: the rest of the Session-Timeout stays
        held, leased past its reap). ``noted`` (fused path only): ``rec`` is the
        packet noted on a record this process holds, written by the same script;
        False when that record was no longer the stored one (nothing done)."""
        cost = self.price(rec, usage_s).cost_micros
        if self.fused is not None:
            return await self._charge_fused(self.fused, rec, usage_s, cost, hold_to_s, noted)
        if noted is not None:
            return False
        result = await self.ledger.commit(rec.account_id, rec.session_id, cost, policy="cap")
        held = max(0, rec.held_micros - result.debited_micros)
        await self.renew(rec, usage_s, result.total_debited_micros, held, hold_to_s=hold_to_s)
        return True

    async def _charge_fused(
        self,
        fused: FusedPath,
        rec: SessionRecord,
        usage_s: int,
        cost: int,
        hold_to_s: int,
        noted: Noted | None,
    ) -> bool:
        """charge() in one script; the script finishes alone when the grant is full."""
        timed = bool(rec.limited) or bool(rec.deadline_ms)
        grant_s = self._next_grant_s(usage_s, hold_to_s)
        next_cost = self.price(rec, usage_s + grant_s).cost_micros
        paid_s = self.paid_s(rec, cost + max(next_cost - cost, 1))
        deadline_ms = self.deadline_ms(rec, paid_s) if timed else 0
        done = await fused.renew(
            rec,
            cost,
            next_cost,
            lease_ms=self._grant_lease_ms(grant_s, hold_to_s),
            paid_usage_s=paid_s,
            deadline_ms=deadline_ms,
            noted=noted,
        )
        if done.stale:
            return False
        if done.applied or done.grant_reply is None or done.commit is None:
            return True
        result = done.commit
        try:
            grant = self.ledger.steps.grant(done.grant_reply, rec.account_id, rec.session_id)
        except SessionClosed:
            return True  # a Stop closed it meanwhile (another daemon): nothing to hold
        debited = result.total_debited_micros
        held = max(0, rec.held_micros - result.debited_micros)
        await self._apply(rec, grant, debited, held, next_cost - debited)
        return True

    async def renew(
        self,
        rec: SessionRecord,
        usage_s: int,
        debited: int,
        held: int,
        *,
        claim_ms: int = 0,
        hold_to_s: int = 0,
    ) -> int:
        """Hold money for the next grant; set or move the deadline. Returns it (0: none).
        ``claim_ms``: the cutter holds this session's deadline entry until then; a
        deadline that is due already keeps that score in the index (see _apply)."""
        grant_s = self._next_grant_s(usage_s, hold_to_s)
        want = self.price(rec, usage_s + grant_s).cost_micros - debited
        try:
            grant = await self.ledger.reserve(
                rec.account_id,
                rec.session_id,
                max(want, 1),
                lease_ms=self._grant_lease_ms(grant_s, hold_to_s),
                # always, whatever [ledger] partial_grants says: as the fused renew's
                # (FusedPath._renew_constants; docs/credit-control.md "Partial grants")
                partial=True,
                new_session=False,
            )
        except SessionClosed:
            return 0  # a Stop closed it meanwhile (another daemon): nothing to hold
        return await self._apply(rec, grant, debited, held, want, claim_ms=claim_ms)

    async def _apply(
        self,
        rec: SessionRecord,
        grant: Grant,
        debited: int,
        held: int,
        want: int,
        *,
        claim_ms: int = 0,
    ) -> int:
        """Write a renewal's outcome on the record: grant fields and the deadline. A
        limited session's deadline is where its money runs out; one that had a deadline
        and is paid again keeps one, moved to the end of what is now paid (never
        cleared: the cutter renews or cuts there if no Interim came). Returns it (0:
        none)."""
        if grant.reason is None:
            held = grant.granted_micros
        paid_s = self.paid_s(rec, debited + held)
        limited = grant.reason is not None or held < want
        if self.modes.hold_all(rec.client):
            # Nothing to cut: the call runs on its Session-Timeout, no deadline.
            limited = False
        fields: dict[str, int] = {
            "debited_micros": debited,
            "held_micros": held,
            "paid_usage_s": paid_s,
            "limited": int(limited),
        }
        if limited or rec.limited or rec.deadline_ms:
            deadline_ms = self.deadline_ms(rec, paid_s)
            # A deadline that is due now stays claimed by the cutter that is about to cut
            # (index score = its claim): written back with its past time, another
            # daemon would claim it in the same tick and cut the call twice.
            # A deadline moved into the future is due at its own time (own_timer renews
            # there again), not at the end of the claim.
            due_now = deadline_ms <= self.clock_ms()
            index_ms = max(deadline_ms, claim_ms) if due_now else deadline_ms
            await self.store.set_grant(rec, fields, deadline_ms=deadline_ms, index_ms=index_ms)
            return deadline_ms
        await self.store.set_grant(rec, fields, deadline_ms=None)
        return 0

    async def refresh(self, rec: SessionRecord, claim_ms: int = 0) -> tuple[int, int, int]:
        """Try to renew a session's hold now, for the usage its age implies (top-up,
        money freed, or its deadline came without an Interim).

        Returns (its deadline ms, 0: none; the Session-Timeout to announce: what the
        money debited, held and still available pays for; that money). Announced
        (on_topup's CoA), that money becomes what the gateway is allowed
        (credit_micros, sessions/settle.py). ``claim_ms``: the cutter's claim on the
        deadline entry (see renew).
        """
        now_ms = self.clock_ms()
        base_ms = rec.answer_ms or rec.auth_ms
        usage_s = max(rec.last_usage_s, (now_ms - base_ms) // 1000) if rec.answer_ms else 0
        deadline_ms = await self.renew(
            rec, usage_s, rec.debited_micros, rec.held_micros, claim_ms=claim_ms
        )
        fresh = await self.store.get(rec.account_id, rec.session_id)
        account = await self.ledger.get_account(rec.account_id)
        held = fresh.held_micros if fresh else 0
        total = (fresh or rec).debited_micros + held + account.available_micros
        return deadline_ms, min(self.paid_s(rec, total), self.cfg.max_session_s), total

    async def recheck(self, rec: SessionRecord, claim_ms: int = 0) -> tuple[int, int, int]:
        """The cutter's re-check at a due deadline: refresh(), except for an own_timer
        call its switch must have ended already. Its switch was told a Session-Timeout
        and ends the call there itself (Kamailio's dialog timer, a second late at
        worst); a call still live past it by more than the cut tolerance is one whose
        Stop is late or lost (a switch restarted, a RADIUS outage), not one that talks
        on. Renewed there, it would be renewed at every deadline until the account ran
        dry, and the reaper would then charge all of it. Returned due (never 0: that
        reads "no deadline"), so the cutter cuts: the switch ends a dialog its timer
        missed, or answers that it is gone; the reaper or the late Stop settles it."""
        if self._outlived(rec):
            return max(1, rec.deadline_ms), 0, 0
        return await self.refresh(rec, claim_ms)

    def _outlived(self, rec: SessionRecord) -> bool:
        """An answered own_timer call older than its Session-Timeout + the cut tolerance
        (the answer time is the gateway's whole second: up to 999 ms early)."""
        if not rec.answer_ms or rec.credit_micros <= 0 or not self.modes.own_timer(rec.client):
            return False
        told_s = min(self.paid_s(rec, rec.credit_micros), self.cfg.max_session_s)
        ends_ms = rec.answer_ms + (told_s + self.cfg.cut_tolerance_s) * 1000 + 999
        return self.clock_ms() > ends_ms

    async def last_grant(self, rec: SessionRecord) -> bool:
        """Whether the grant the session has now is the last the money allows, though
        held in full (not ``limited``): what is debited, held and still available pays
        for no usage past ``paid_usage_s`` (a balance that pays this renewal exactly,
        or leaves less than the next billing increment). Diameter's CCA then carries
        Final-Unit-Indication (RFC 4006 §5.6.1), as a first grant does when the
        Session-Timeout is no longer than it (sessions/authorize.py). No deadline:
        the hold is what was asked; the next renewal finds nothing and is limited."""
        if rec.paid_usage_s >= self._session_ttl_s:
            return False  # paid_s is capped there: no statement about the money
        try:
            account = await self.ledger.get_account(rec.account_id)
        except UnknownAccount:
            return False  # deleted under a live call: nothing to say about its money
        total = rec.debited_micros + rec.held_micros + account.available_micros
        return self.paid_s(rec, total) <= rec.paid_usage_s

    async def told_again(self, rec: SessionRecord) -> tuple[int, int, int]:
        """A full-grant call whose Session-Timeout the money bounded: (the Session-Timeout
        it was told, the one the money debited, held and now available pays for, that
        money). Nothing is reserved: its grant is whole, its next Interim renews it."""
        told_s = min(self.paid_s(rec, rec.credit_micros), self.cfg.max_session_s)
        account = await self.ledger.get_account(rec.account_id)
        total = rec.debited_micros + rec.held_micros + account.available_micros
        return told_s, min(self.paid_s(rec, total), self.cfg.max_session_s), total

    def price(self, rec: SessionRecord, usage_s: int) -> Priced:
        return self.pricer.price(
            rec.plan,
            subject=rec.account_id,
            number=rec.callee,
            start_ms=rec.answer_ms or rec.auth_ms,
            usage_s=usage_s,
        )

    def paid_s(self, rec: SessionRecord, amount_micros: int) -> int:
        paid = self.pricer.paid_s(
            rec.plan,
            subject=rec.account_id,
            number=rec.callee,
            start_ms=rec.answer_ms or rec.auth_ms,
            amount_micros=amount_micros,
        )
        return min(paid, self._session_ttl_s)

    def grant_size(self, usage_s: int) -> int:
        """Grants grow with the call's age (half of it), between first and max grant."""
        return max(self._first_grant_s, min(self._max_grant_s, usage_s // 2))

    def lease_ms(self, grant_s: int) -> int:
        # The hold outlives the reaper's window so a silent call is charged against it.
        return (grant_s + self._stale_s) * 1000

    def hold_all_lease_ms(self) -> int:
        """hold_all / own_timer: a hold taken now (authorize, the Start) outlives the
        longest Session-Timeout counted from now plus reap_grace_s, when the reaper
        may close the silent call (sessions/service.py _reap_not_before)."""
        return self.lease_ms(self.cfg.max_session_s + self.cfg.reap_grace_s)

    def _next_grant_s(self, usage_s: int, hold_to_s: int) -> int:
        """The usage the renewed hold pays for past ``usage_s``: a grant; with
        ``hold_to_s`` (hold_all, own_timer) exactly the rest of the Session-Timeout."""
        if hold_to_s:
            return max(hold_to_s - usage_s, 0)
        return self.grant_size(usage_s)

    def _grant_lease_ms(self, grant_s: int, hold_to_s: int) -> int:
        """A silent client's hold (``hold_to_s``) outlives its reap as well."""
        return self.lease_ms(grant_s + (self.cfg.reap_grace_s if hold_to_s else 0))

    async def relet(self, rec: SessionRecord) -> int:
        """hold_all / own_timer, at the Start: the hold taken at authorize leased again
        from the answer (a call may ring for longer than the stale window, and the
        reaper waits from the answer). Same amount: nothing more is taken; a hold that
        lapsed meanwhile gets what is there (noted on the record). Returns the usage
        the call's money pays for (paid_usage_s)."""
        try:
            grant = await self.ledger.reserve(
                rec.account_id,
                rec.session_id,
                max(rec.held_micros, 1),
                lease_ms=self.hold_all_lease_ms(),
                partial=True,
                new_session=False,
            )
        except SessionClosed:
            return rec.paid_usage_s  # a Stop closed it meanwhile: nothing to hold
        if grant.granted_micros == rec.held_micros:
            return rec.paid_usage_s
        paid_s = self.paid_s(rec, rec.debited_micros + grant.granted_micros)
        fields = {"held_micros": grant.granted_micros, "paid_usage_s": paid_s}
        await self.store.set_grant(rec, fields, deadline_ms=None)
        return paid_s

    def deadline_ms(self, rec: SessionRecord, paid_s: int) -> int:
        """Where the paid usage ends. own_timer: the answer time is the gateway's
        whole-second Event-Timestamp (RFC 2869 §5.3), so the call may have been answered
        up to 999 ms after it; chargingd's own cut waits for the end of the paid usage
        as the gateway measures it (the Stop then reports at least the paid seconds)."""
        slack_ms = 999 if rec.answer_ms and self.modes.own_timer(rec.client) else 0
        return (rec.answer_ms or rec.auth_ms) + paid_s * 1000 + slack_ms
