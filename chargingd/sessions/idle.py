"""A live session whose usage its client said is final.

Diameter: every rating group of the session reported Reporting-Reason FINAL (TS 32.299
§7.2.175), and none asks quota: the client uses nothing more unless it asks again,
but the session stays open until its CCR-T (docs/diameter.md "Reporting-Reason").
The money of a call is one hold (sessions/), so that hold now pays for nothing:

- ``mark``: the hold is set to 0 at once (ledger reserve.lua, the session's hold
  replaced; the session stays open in the ledger, so quota asked again later is held
  again by the next Interim's renewal), the record's grant says so (held 0, paid up to
  what is debited, no deadline: nothing to cut), and its ``status`` is USAGE_FINAL.
- The reaper closes such a session, when its client never ends it (crashed, or ends
  sessions some other way), charged exactly its reported usage (sessions/reaper.py:
  not provisional, the CDR says ``extra.usage_from = reporting_reason_final``); a
  CCR-T after that is a duplicate Stop of a closed session (sessions/late.py): no
  second charge, no second CDR.
- ``unmark``: quota asked again, the usage is no longer final (the Interim that came
  with the request has held money for the grant already).

A live record's ``status`` is otherwise "" (it says how a closed record ended); a
close overwrites it with the CDR's status. The RADIUS path never sets it.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Protocol

from chargingd.ledger import Ledger, SessionClosed
from chargingd.sessions.grants import Grants
from chargingd.sessions.modes import CreditModes
from chargingd.sessions.recordspec import USAGE_FINAL
from chargingd.sessions.store import DEADLINES, LIVE, SessionRecord, SessionStore

log = logging.getLogger("chargingd.sessions")

# The close lease mark and unmark hold (a few commands); a process that dies holding
# it delays a Stop by this much at most (the Stop waits, then is spooled and replayed).
LEASE_S = 5


class _HasParts(Protocol):
    store: SessionStore
    ledger: Ledger
    grants: Grants
    modes: CreditModes


class FinalUsage:
    """Marks and unmarks live sessions whose usage is final (see the module docstring)."""

    def __init__(
        self, *, store: SessionStore, ledger: Ledger, grants: Grants, modes: CreditModes
    ) -> None:
        self.store = store
        self.ledger = ledger
        self.grants = grants
        self.modes = modes
        self.marked = 0

    @classmethod
    def of(cls, sessions: _HasParts) -> FinalUsage:
        """For a sessions/service.py Sessions."""
        return cls(
            store=sessions.store,
            ledger=sessions.ledger,
            grants=sessions.grants,
            modes=sessions.modes,
        )

    async def _live(self, session_id: str) -> SessionRecord | None:
        account_id = await self.store.locate(session_id)
        rec = None if account_id is None else await self.store.get(account_id, session_id)
        return rec if rec is not None and rec.state == LIVE else None

    @contextlib.asynccontextmanager
    async def _leased(self, session_id: str) -> AsyncIterator[SessionRecord | None]:
        """The live record under the session's close lease (no closer can close it
        meanwhile, so nothing here is merged into a closed record); None when it is
        not live or a closer holds the lease (it is being closed)."""
        rec = await self._live(session_id)
        token = uuid.uuid4().hex
        if rec is None or not await self.store.acquire_close(rec, token, lease_s=LEASE_S):
            yield None
            return
        try:
            fresh = await self.store.get(rec.account_id, rec.session_id)
            yield fresh if fresh is not None and fresh.state == LIVE else None
        finally:
            await self.store.release_close(rec, token)

    async def mark(self, session_id: str) -> bool:
        """The session's usage is final: release its hold, mark it. False when it is
        not live (or being closed), is being cut (the cut closes it), or its client's
        credit mode holds all the money for its Session-Timeout."""
        async with self._leased(session_id) as rec:
            if rec is None or rec.cut_reason or self.modes.holds_all(rec.client):
                return False
            await self._release(rec)
        self.marked += 1
        log.debug("usage of %s is final: hold released", session_id)
        return True

    async def _release(self, rec: SessionRecord) -> None:
        fields: dict[str, str | int] = {"status": USAGE_FINAL, "limited": 0, "deadline_ms": 0}
        try:
            grant = await self.ledger.reserve(
                rec.account_id,
                rec.session_id,
                0,
                lease_ms=self.grants.lease_ms(0),
                partial=True,
                new_session=False,
            )
        except SessionClosed:  # released in the ledger already: nothing is held
            grant = None
        if grant is not None and grant.reason is None:
            fields["held_micros"] = grant.granted_micros
            fields["paid_usage_s"] = self.grants.paid_s(rec, rec.debited_micros)
        # else (the account suspended meanwhile): the hold stays as it was; the close
        # releases it
        await self.store.update(rec, **fields)
        if rec.deadline_ms:
            await self.store.redis.zrem(DEADLINES, rec.member)

    async def unmark(self, session_id: str) -> None:
        """Quota asked again: the session's usage is no longer final."""
        async with self._leased(session_id) as rec:
            if rec is not None and rec.status == USAGE_FINAL:
                await self.store.update(rec, status="")
