"""The stale-session reaper, and the spool replay that runs beside it.

A gateway that falls silent (crash, lost Stop) would leave a session holding money
for ever. A session not heard from for stale_factor x interim interval is closed
with CDR status "stale" (DESIGN invariant 4: no call is lost), charged
*provisionally* by this rule: the time since its answer, capped by what was
granted (the usage its debited + held money pays for, ``paid_usage_s``: held
money, so a prepaid account never goes below zero for it; for a gateway that sends
no Interim by design, also by the Session-Timeout it was told, where it ends the call
itself), and never less than the usage its gateway reported; nothing for a call
never answered. The CDR says
``charge_reason = provisional``; a Stop that arrives later corrects the charge and
the CDR (sessions/late.py). A session whose client said its usage is final
(``status`` USAGE_FINAL: every Diameter rating group reported FINAL, sessions/idle.py)
is charged exactly that usage instead, ending at its last report: not provisional
(a later CCR-T is a duplicate Stop), the CDR saying ``usage_from =
reporting_reason_final``. Entries are
claimed by moving their score to now (one daemon wins; a daemon that dies mid-close
leaves the session to the next window).

A gateway that sends no Interim by design (credit modes hold_all and own_timer,
sessions/modes.py) is silent for the whole call: its sessions are reaped only after
their Session-Timeout plus a grace (``not_before``); until then they are put back in
the index, due again at that time.

The index is a gateway's calls in small zsets (``sess:seen:{GW}:N``, shards of the
session ids, sessions/shards.py; the gateways registered in ``sess:gateways``): a pass
takes the ``limit`` oldest due entries of them all (one script per gateway merges its
shards' by score, in one pipeline; the gateways' merged here), so a busy gateway
cannot starve the others. During a rolling upgrade older daemons still index their
calls in the old ``sess:lastseen`` or ``sess:lastseen:GW``: each pass first moves
their entries (one EXISTS of them all when there is none).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from chargingd.billing.cdr import CDR, CdrStatus
from chargingd.core.loops import run_every
from chargingd.sessions.recordspec import USAGE_FINAL
from chargingd.sessions.spool import Spool
from chargingd.sessions.store import (
    LIVE,
    SessionRecord,
    SessionStore,
    split_member,
)

log = logging.getLogger("chargingd.reaper")


# The CDR's extra of a session reaped with the usage its client said is final.
FINAL_EXTRA = {"usage_from": "reporting_reason_final"}


class Closer(Protocol):
    async def __call__(
        self,
        rec: SessionRecord,
        *,
        usage_s: int,
        end_ms: int,
        status: str,
        extra: dict[str, str] | None = None,
        provisional: bool,
    ) -> CDR | None: ...


class Reaper:
    """Closes silent sessions; replays the spool first when Redis answers again."""

    def __init__(
        self,
        *,
        store: SessionStore,
        close: Closer,
        clock_ms: Callable[[], int],
        stale_ms: int,
        spool: Spool,
        replay: Callable[[dict[str, Any]], Awaitable[None]],
        not_before: Callable[[SessionRecord], int] | None = None,
        longest_s: Callable[[SessionRecord], int] | None = None,
    ) -> None:
        self.store = store
        self.close = close
        self.clock_ms = clock_ms
        self.stale_ms = stale_ms
        self.spool = spool
        self.replay = replay
        self.not_before = not_before  # earliest reap time of a session (0: the window)
        # the longest a session can have run, whatever was held for it (0: no bound)
        self.longest_s = longest_s
        self.reaped = 0

    async def run_once(self, *, limit: int = 100) -> int:
        """Replay the spool, then close sessions silent for too long; returns how many."""
        await self.spool.replay(self.replay)
        gateways = await self.store.gateways()
        moved = await self.store.drain_old_lastseen(gateways)
        if moved:
            log.info("moved %d last-seen entries an older daemon wrote (upgrade)", moved)
        now_ms = self.clock_ms()
        cutoff_ms = now_ms - self.stale_ms - 1  # silent for MORE than stale_ms
        reaped = 0
        # The oldest due entries of every gateway together (not gateway by gateway).
        for _, index, raw in await self.store.due_oldest(gateways, cutoff_ms, limit=limit):
            reaped += await self._reap(index, raw, cutoff_ms, now_ms)
        self.reaped += reaped
        return reaped

    async def _reap(self, index: str, raw: bytes, cutoff_ms: int, now_ms: int) -> int:
        """Close the session of one due entry of a gateway's zset; 1 if it did."""
        # Claimed by moving it to now: if this daemon dies mid-close (after the
        # release, before the CDR) the session is retried a window later.
        if not await self.store.claim_until(index, raw, cutoff_ms, now_ms):
            return 0
        rec = await self.store.get(*split_member(raw))
        if rec is None or rec.state != LIVE:  # expired unclosed, or closed meanwhile
            await self.store.drop_entry(index, raw)
            return 0
        if rec.last_seen_ms > cutoff_ms:
            # A packet arrived between the scan and the claim: put it back.
            await self.store.redis.zadd(index, {raw: rec.last_seen_ms})
            return 0
        not_before_ms = self.not_before(rec) if self.not_before is not None else 0
        if not_before_ms > now_ms:
            # Silent by design, within its Session-Timeout: due again at its time.
            await self.store.redis.zadd(index, {raw: not_before_ms - self.stale_ms})
            return 0
        final = rec.status == USAGE_FINAL  # its usage is all reported (sessions/idle.py)
        try:
            cdr = await self.close(
                rec,
                usage_s=self.provisional_usage_s(rec, now_ms),
                end_ms=max(rec.last_seen_ms, rec.answer_ms) if final else now_ms,
                status=CdrStatus.STALE,
                extra=dict(FINAL_EXTRA) if final else None,
                provisional=not final,
            )
        except asyncio.CancelledError:
            raise
        except Exception:
            # One session the ledger refuses must not stop the pass; retried later.
            log.exception("cannot reap %s of %s", rec.session_id, rec.account_id)
            return 0  # its entry was moved to now: retried a window later
        if cdr is None:
            return 0  # another closer holds the lease: retried a window later
        log.warning(
            "reaped stale session %s of %s (silent since %s)",
            rec.session_id,
            rec.account_id,
            rec.last_seen_ms,
        )
        return 1

    def provisional_usage_s(self, rec: SessionRecord, now_ms: int) -> int:
        """The documented estimate of a silent call's usage (see the module docstring);
        exactly the usage reported when its client said it is final."""
        if not rec.answer_ms or rec.status == USAGE_FINAL:
            return rec.last_usage_s
        since_answer_s = max(0, (now_ms - rec.answer_ms) // 1000)
        granted_s = rec.paid_usage_s
        longest_s = self.longest_s(rec) if self.longest_s is not None else 0
        if longest_s:
            granted_s = min(granted_s, longest_s)
        return max(rec.last_usage_s, min(since_answer_s, granted_s))

    async def run(self, stop: asyncio.Event, *, interval_s: float) -> None:
        """Reap every ``interval_s`` until ``stop`` is set."""
        await run_every(stop, interval_s, self.run_once, log=log, what="reaper")
