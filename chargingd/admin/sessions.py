"""Admin-socket side of credit control: session.list / session.kill and the hooks
that money and status changes owe to live calls (a top-up moves deadlines, a
suspension cuts the account's calls). Used by methods.AdminMethods.

A hook runs after the ledger change succeeded; if it fails the change stands (the
answer is still the account), the failure is logged and the cutter's own deadline
handling remains the safety net.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Protocol

from chargingd.core.currencies import minor_unit
from chargingd.core.money import format_amount
from chargingd.sessions.store import SessionRecord

log = logging.getLogger("chargingd.admin")

KILL_WAIT_S = 5.0  # session.kill answers within this even when the gateway is silent


class SessionOps(Protocol):
    """What the admin socket needs of sessions.Sessions."""

    async def list_sessions(self) -> list[SessionRecord]: ...

    async def kill_session(self, session_id: str) -> bool: ...

    async def cut_account(self, account_id: str) -> int: ...

    async def on_topup(self, account_id: str) -> int: ...


def render_session(rec: SessionRecord) -> dict[str, Any]:
    """A live session as JSON: amounts as decimal strings, times in epoch ms."""
    return {
        "session_id": rec.session_id,
        "account": rec.account_id,
        "user_name": rec.user_name,
        "caller": rec.caller,
        "callee": rec.callee,
        "destination": rec.destination,
        "plan": rec.plan,
        "gateway": rec.gateway,
        "client": rec.client,
        "auth_ms": rec.auth_ms,
        "answer_ms": rec.answer_ms,
        "last_seen_ms": rec.last_seen_ms,
        "usage_s": rec.last_usage_s,
        "debited": format_amount(rec.debited_micros, minor_unit(rec.currency)),
        "held": format_amount(rec.held_micros, minor_unit(rec.currency)),
        "paid_usage_s": rec.paid_usage_s,
        "deadline_ms": rec.deadline_ms,
        "cut_reason": rec.cut_reason,
        "cut_ok": bool(rec.cut_ok),
        "state": rec.state,
    }


class SessionHooks:
    """The admin socket's view of the process's Sessions (None when RADIUS is off).

    A Disconnect-Request may wait for a silent gateway for seconds (RFC 5176
    retransmissions): cuts after a suspension run in the background, and
    session.kill and a top-up answer within ``kill_wait_s`` while the CoA goes on.
    """

    def __init__(self, sessions: SessionOps | None, *, kill_wait_s: float = KILL_WAIT_S) -> None:
        self.sessions = sessions
        self.kill_wait_s = kill_wait_s
        self._tasks: set[asyncio.Task[Any]] = set()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)  # a reference until done: never garbage-collected mid-cut
        task.add_done_callback(self._tasks.discard)
        return task

    async def list_live(self, sessions: SessionOps, account_id: str | None) -> dict[str, Any]:
        """Live sessions, optionally of one account, oldest first."""
        records = await sessions.list_sessions()
        if account_id is not None:
            records = [r for r in records if r.account_id == account_id]
        records.sort(key=lambda r: (r.auth_ms, r.session_id))
        return {"sessions": [render_session(r) for r in records]}

    async def kill(self, sessions: SessionOps, session_id: str) -> dict[str, Any] | None:
        """Cut one call; None when no live session has this id. ``disconnected`` is
        false when the gateway has not confirmed yet (the cutter keeps trying)."""
        task = self._spawn(sessions.kill_session(session_id))
        done, _ = await asyncio.wait([task], timeout=self.kill_wait_s)
        killed = bool(task.result()) if done else False
        if not killed and not await is_live(sessions, session_id):
            return None
        return {"session_id": session_id, "disconnected": killed}

    async def after_topup(self, account_id: str) -> None:
        """Money arrived: move the deadlines of the account's limited calls.

        Waits at most ``kill_wait_s``: the CoA that tells a gateway its new
        Session-Timeout may wait seconds for a silent one (RFC 5176 retransmissions,
        one call after the other), and the top-up stands already; the rest goes on in
        the background. Waiting for it all made `ctl account topup` time out and report
        the daemon unreachable after the money was in (a retry without the printed
        --txn-id would top up twice)."""
        if self.sessions is not None:
            task = self._spawn(self._retime(self.sessions, account_id))
            await asyncio.wait([task], timeout=self.kill_wait_s)

    async def _retime(self, sessions: SessionOps, account_id: str) -> None:
        try:
            moved = await sessions.on_topup(account_id)
        except Exception:  # the top-up stands; the cutter re-checks before any cut
            log.exception("moving deadlines of %s after a top-up failed", account_id)
            return
        if moved:
            log.info("top-up of %s moved the deadline of %d calls", account_id, moved)

    def after_block(self, account_id: str) -> None:
        """The account may no longer call: cut its live calls, in the background."""
        if self.sessions is not None:
            self._spawn(self._cut_account(self.sessions, account_id))

    async def _cut_account(self, sessions: SessionOps, account_id: str) -> None:
        try:
            cut = await sessions.cut_account(account_id)
        except Exception:
            log.exception("cutting the calls of %s failed", account_id)
            return
        if cut:
            log.info("account %s blocked: cut %d live calls", account_id, cut)


async def is_live(sessions: SessionOps, session_id: str) -> bool:
    """Whether a live session has this id (after a kill whose Disconnect failed)."""
    return any(r.session_id == session_id for r in await sessions.list_sessions())
