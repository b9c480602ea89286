"""The call cutter: fires due deadlines (credit gone) and operator/fraud kills.

Any daemon may run it: each due entry of the deadline zset is claimed by moving it,
and only the daemon whose claim moved it acts on it. A credit deadline is first
re-checked (a top-up on another daemon may have paid for more); then the frontend
sends a Disconnect-Request (RFC 5176 §3). A failed disconnect is retried with
exponential back-off, a bounded number of times, by putting the entry back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from chargingd.billing.cdr import CdrStatus
from chargingd.core.loops import UNREACHABLE, run_every
from chargingd.core.ratelog import RateLimitedLog
from chargingd.sessions.ccapi import CallCutter, SessionRef
from chargingd.sessions.store import DEADLINES, LIVE, SessionRecord, SessionStore, split_member

log = logging.getLogger("chargingd.cutter")

# How long a claimed deadline is this daemon's: longer than one Disconnect exchange
# with its retransmissions (RFC 5176 over UDP: 1 + 2 + 4 + 8 s with the defaults).
CLAIM_MS = 60_000


# The cut attempt this task is sending: a coroutine function that stamps the attempt's
# time (``cut_ms``) anew. Set by Cutter.cut around the frontend's exchange; a backend
# whose exchange first looks the call up (Kamailio's JSON-RPC: dlg.list_match, retried
# through a stall for many seconds) calls ``cut_going_out`` just before the request that
# ends the call. Kamailio accounts that call's Stop before it answers the request, so
# the Stop is closed while the cut is unconfirmed and is read as "ended at the cut" only
# when it ended within the cut tolerance of ``cut_ms`` (sessions/settle.py): stamped at
# the attempt's start, a kill sent during a Kamailio stall of more than ~3 s was
# labelled ``normal``.
_GOING_OUT: ContextVar[Callable[[], Awaitable[None]] | None] = ContextVar(
    "cut_going_out", default=None
)


async def cut_going_out() -> None:
    """A cut backend sends the request that ends the call now: the cut attempt's time
    is now (nothing when no cut attempt runs in this task)."""
    stamp = _GOING_OUT.get()
    if stamp is not None:
        await stamp()


# The cut attempt this task is sending: a function a backend calls when nothing that
# could end the call went out in this attempt (no route to the gateway: coa_port = 0,
# no jsonrpc_url, no Diameter connection; Kamailio's JSON-RPC not answering before
# dlg.end_dlg). The attempt then does not count as sent: ``cut_ms`` goes back to the
# latest attempt that did go out, or NOT_SENT_MS when none did, so a Stop never reads
# as "ended at a cut" nobody could have received (a hold_all Kamailio's kill was
# labelled ``killed``, confirmed, when its caller hung up a moment later).
_NOT_SENT: ContextVar[Callable[[], None] | None] = ContextVar("cut_not_sent", default=None)

# cut_ms when no attempt of a cut went out: earlier than any answered call's end, so
# sessions/settle.py never reads a Stop as ended at it.
NOT_SENT_MS = -1


def cut_not_sent() -> None:
    """A cut backend could send nothing that ends the call in this attempt (nothing
    when no cut attempt runs in this task)."""
    mark = _NOT_SENT.get()
    if mark is not None:
        mark()


# refresh(rec, claim_ms) -> (its deadline ms, 0: none; the Session-Timeout to announce;
# the money behind it). claim_ms: this cutter's claim on the entry, kept as the index
# score while it is due.
Recheck = Callable[[SessionRecord, int], Awaitable[tuple[int, int, int]]]


def credit_cut_pending(rec: SessionRecord) -> bool:
    """A credit cut was sent and nobody confirmed it yet: the call is still live and,
    until the next attempt, money (a top-up) can still save it."""
    return rec.cut_reason == CdrStatus.CREDIT_CUT and not rec.cut_ok


def ref_of(rec: SessionRecord) -> SessionRef:
    """How a frontend addresses this call at its gateway (RFC 5176 §3)."""
    return SessionRef(
        rec.session_id,
        rec.user_name,
        rec.gateway,
        rec.client,
        nas_session_id=rec.nas_session_id,
        conf_id=rec.conf_id,
        call_origin=rec.call_origin,
    )


class Cutter:
    """Claims due deadlines and cuts calls through the injected ccapi.CallCutter."""

    def __init__(
        self,
        *,
        store: SessionStore,
        frontend: CallCutter | None,
        clock_ms: Callable[[], int],
        retries: int,
        backoff_ms: int,
        recheck: Recheck,
    ) -> None:
        self.store = store
        self.frontend = frontend
        self.clock_ms = clock_ms
        self.retries = retries
        self.backoff_ms = backoff_ms
        self.recheck = recheck
        self.disconnects_sent = 0
        self.disconnects_failed = 0
        self._in_flight: set[asyncio.Task[None]] = set()
        self._failures = RateLimitedLog(log)

    async def run_once(self, *, limit: int = 100, wait: bool = True) -> int:
        """Act on every deadline due now; returns how many entries this daemon claimed.

        The claimed entries are acted on concurrently: one gateway that does not answer
        holds its own cut for a whole Disconnect exchange (1 + 2 + 4 + 8 s with the
        defaults), and a cut sent one after the other behind it left every other call
        talking past its paid second (an obedient gateway's Stop then reads as an
        overrun). ``wait=False`` (the loop) returns once they are started, so the next
        pass fires the deadlines that come due meanwhile; the claim (CLAIM_MS) keeps an
        entry in hand from being claimed again while its cut is under way."""
        now_ms = self.clock_ms()
        retry_ms = now_ms + CLAIM_MS
        acts: list[asyncio.Task[None]] = []
        for raw in await self.store.due(DEADLINES, now_ms, limit=limit):
            # Claimed by moving it to retry_ms (not ZREM): a daemon that dies before
            # the cut leaves it to be fired again, by any daemon. The claim outlasts one
            # Disconnect exchange, so no other daemon cuts the same call meanwhile; the
            # outcome then sets the entry's real next time (retry, or none).
            if not await self.store.claim_until(DEADLINES, raw, now_ms, retry_ms):
                continue  # another daemon has it
            acts.append(asyncio.ensure_future(self._claimed(raw, now_ms, retry_ms)))
        if not acts:
            return 0
        if wait:
            results = await asyncio.gather(*acts, return_exceptions=True)
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
        else:
            for task in acts:
                self._in_flight.add(task)
                task.add_done_callback(self._act_done)
        return len(acts)

    async def _claimed(self, raw: bytes, now_ms: int, retry_ms: int) -> None:
        rec = await self.store.get(*split_member(raw))
        if rec is None or rec.state != LIVE:
            await self.store.redis.zrem(DEADLINES, raw)
            return
        await self._due(rec, now_ms, retry_ms)

    def _act_done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            self._failures.recovered("cut")
        else:
            self._failures.failure("cut", exc, trace=not isinstance(exc, UNREACHABLE))

    async def _due(self, rec: SessionRecord, now_ms: int, claim_ms: int) -> None:
        if not rec.cut_reason or credit_cut_pending(rec):
            # A credit cut the gateway has not confirmed is retried only if the money is
            # still not there: a top-up between two attempts extends the call.
            # A credit deadline: money may have arrived since it was set. The recheck
            # keeps this daemon's claim on the entry if the deadline is still due.
            deadline_ms, _, _ = await self.recheck(rec, claim_ms)
            if deadline_ms == 0 or deadline_ms > now_ms:
                log.info("deadline of %s moved to %s", rec.session_id, deadline_ms)
                return
            fresh = await self.store.get(rec.account_id, rec.session_id)
            rec = fresh or rec
        await self.cut(rec, rec.cut_reason or CdrStatus.CREDIT_CUT)

    async def cut(self, rec: SessionRecord, reason: str) -> bool:
        """Send one cut (Disconnect-Request, or the client's cut backend); on failure
        schedule a retry (bounded back-off).

        The reason and the attempt's time (``cut_ms``: the latest attempt) are stored
        before sending, so the Stop the gateway sends back is closed with CDR status
        ``reason`` (sessions/settle.py: a confirmed cut). Unconfirmed, the call stays
        live and is logged; its Stop shows no cut status unless it ended at the cut.
        """
        attempts = rec.cut_attempts + 1
        sent_ms = rec.cut_ms  # the latest earlier attempt that went out (0: none yet)
        # A cut the gateway already confirmed keeps its time: a cut sent again to a
        # gateway that answered and talked on must not move the moment the call was
        # told to end (sessions/settle.py counts the cut tolerance from it).
        stamp = not rec.cut_ok
        if stamp:
            await self.store.update(
                rec, cut_reason=reason, cut_attempts=attempts, cut_ms=self.clock_ms()
            )
        else:
            await self.store.update(rec, cut_reason=reason, cut_attempts=attempts)
        sent = True

        async def going_out() -> None:  # the backend's request that ends the call
            nonlocal sent
            sent = True
            if stamp:
                await self.store.update(rec, cut_ms=self.clock_ms())

        def not_sent() -> None:  # the backend sent nothing that could end the call
            nonlocal sent
            sent = False

        token = _GOING_OUT.set(going_out)
        unsent_token = _NOT_SENT.set(not_sent)
        try:
            ok = await self._disconnect(rec, reason)
        finally:
            _NOT_SENT.reset(unsent_token)
            _GOING_OUT.reset(token)
        if not ok and not sent and stamp:
            await self.store.update(rec, cut_ms=sent_ms if sent_ms > 0 else NOT_SENT_MS)
        if ok:
            await self.store.update(rec, cut_ok=1)
            await self.store.clear_deadline(rec)
            return True
        self.disconnects_failed += 1
        log.warning(
            "cut of %s (%s) at %s not confirmed (attempt %d of %d): the call stays live",
            rec.session_id,
            reason,
            rec.gateway,
            attempts,
            self.retries,
        )
        if attempts < self.retries:
            # The back-off counts from the end of this exchange (its own retransmissions
            # can take many seconds): 1, 2, 4, 8 s of quiet between attempts.
            retry_ms = self.clock_ms() + self.backoff_ms * 2 ** (attempts - 1)
            await self.store.set_deadline(rec, retry_ms)
        else:
            await self.store.redis.zrem(DEADLINES, rec.member)
            log.error(
                "giving up cutting %s at %s after %d attempts (Session-Timeout or reaper ends it)",
                rec.session_id,
                rec.gateway,
                attempts,
            )
        return False

    async def _disconnect(self, rec: SessionRecord, reason: str) -> bool:
        if self.frontend is None:
            log.error("no call cutter attached: cannot cut %s", rec.session_id)
            cut_not_sent()
            return False
        self.disconnects_sent += 1
        try:
            return await self.frontend.disconnect(ref_of(rec), reason)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("disconnect of %s at %s failed", rec.session_id, rec.gateway)
            return False

    async def change_timeout(self, rec: SessionRecord, session_timeout_s: int) -> bool:
        """Tell the gateway the new Session-Timeout (CoA, RFC 5176 §3.2), when it can."""
        if self.frontend is None:
            return False
        try:
            return await self.frontend.change_timeout(ref_of(rec), session_timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("change_timeout of %s at %s failed", rec.session_id, rec.gateway)
            return False

    async def run(self, stop: asyncio.Event, *, interval_s: float) -> None:
        """Fire due deadlines every ``interval_s`` until ``stop`` is set."""

        async def one_pass() -> None:
            await self.run_once(wait=False)

        try:
            await run_every(stop, interval_s, one_pass, log=log, what="cutter")
        finally:
            # Cuts under way finish (their claims stay otherwise, fired again in 60 s).
            if self._in_flight:
                await asyncio.gather(*list(self._in_flight), return_exceptions=True)
