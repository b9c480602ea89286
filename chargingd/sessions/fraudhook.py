"""The fraud rules in authorize: what sessions tells them of a call and what it makes of
their verdict (the rules themselves, their state and their actions are chargingd.fraud).

On a single Redis the rules run in the fused authorize script
(lua/session_authorize_fraud.lua), after the account check and before the reserve:
no extra round trip. Elsewhere (Redis Cluster, a destination with no first grant)
``check`` runs them in their own script, in the same per-tick pipeline, before the
reserve: a call they allow is live from there (forgotten if refused after all), and
its country is learnt by ``admit`` after a successful reserve, sent with the record
write (no extra round trip), as the fused script learns it after its reserve. A
retransmitted authorize (same session id, any daemon) is answered as the first one
was, without counting it again (``Verdict.again``). A refusing rule answers the call
with RefusalCode.FRAUD and the rule's
message; a blocking one has blocked the account in the script that decided (the
ledger's status script, embedded) and the fraud engine cuts the account's live calls
through ``Sessions.cut_account``. Every refused authorize feeds the failed-attempt
rules (``refused``), and a call the rules admitted (live for ``concurrent``) that is
refused after all is forgotten (``forget``); both off the request path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from chargingd.core.ratelog import RateLimitedLog
from chargingd.fraud import CallFacts, Decision, Fraud, Prepared, Verdict
from chargingd.sessions.ccapi import RefusalCode, Refused

log = logging.getLogger("chargingd.sessions")

MAX_PENDING = 10_000  # background counts (refusals, forgets) beyond this are dropped
_FAILED = "fraud bookkeeping after a refusal failed"
_ADMIT_FAILED = "fraud admit of a granted call failed"


class Attempt:
    """One authorize as the fraud rules follow it: whose, and whether they admitted it.
    Built per authorize (with the rules on): a plain class with its own __init__ (a
    dataclass's is interpreted even compiled)."""

    __slots__ = ("account_id", "admitted", "caller_ip", "client", "identity", "tariff", "tried")

    def __init__(self, caller_ip: str = "", client: str = "") -> None:
        self.account_id: str | None = None
        self.identity = ""
        self.tariff = ""
        self.caller_ip = caller_ip  # CallInfo.caller_ip: velocity per caller IP
        self.client = client  # CallInfo.client: a record its Start adopted is this client's
        self.admitted = False  # counted live (concurrent): forgotten if refused after all
        self.tried: tuple[str, ...] = ()  # identities looked up (none: no allocation)

    def found(self, account_id: str, identity: str, tariff: str) -> None:
        self.account_id, self.identity, self.tariff = account_id, identity, tariff

    def __repr__(self) -> str:
        return (
            f"Attempt(account_id={self.account_id!r}, identity={self.identity!r}, "
            f"tariff={self.tariff!r}, caller_ip={self.caller_ip!r}, client={self.client!r}, "
            f"admitted={self.admitted!r}, tried={self.tried!r})"
        )


class FraudHook:
    """One process's fraud rules, as sessions/authorize.py calls them."""

    def __init__(self, fraud: Fraud) -> None:
        self.fraud = fraud
        self.block_message = fraud.cfg.block_message
        self._pending: set[asyncio.Task[Any]] = set()
        self._failures = RateLimitedLog(log)
        self.dropped = 0

    def facts(self, account_id: str, session_id: str, callee: str, attempt: Attempt) -> CallFacts:
        return CallFacts(
            account_id=account_id,
            session_id=session_id,
            callee=callee,
            identity=attempt.identity,
            caller_ip=attempt.caller_ip,
            tariff=attempt.tariff,
            client=attempt.client,
        )

    def prepare(self, facts: CallFacts) -> Prepared | None:
        """The rules' keys and arguments for the fused script, evaluated here when this
        process knows the values; None: no rule applies."""
        prepared = self.fraud.prepare(facts)
        if prepared is not None:
            self.fraud.localize(prepared)
        return prepared

    def decided(self, prepared: Prepared, reply: Any) -> Verdict:
        return self.fraud.decided(prepared, reply)

    async def check(self, facts: CallFacts) -> tuple[Verdict, Prepared | None]:
        """The rules in their own script; the call is admitted by ``admit`` once its
        reserve granted it (as the fused script does after its reserve)."""
        return await self.fraud.evaluate(facts)

    async def check_step(self, facts: CallFacts, attempt: Attempt) -> Refused | Prepared | None:
        """The step-by-step path's rules: their refusal, or what ``admit`` takes once
        the call is granted (None: nothing to learn, or a retransmission, which the
        reserve answers as before)."""
        verdict, prepared = await self.check(facts)
        refusal = self.refusal(verdict)
        if refusal is not None:
            return refusal
        if verdict.again:
            return None
        attempt.admitted = True  # check.lua counts a call it allows live
        return prepared

    async def admit(self, prepared: Prepared) -> None:
        """A call the rules allowed was granted: live, its country known. A failure
        loses the count, never the answer."""
        try:
            await self.fraud.admit(prepared)
        except Exception as exc:
            self._failures.failure(_ADMIT_FAILED, exc)

    async def refused_call(self, account_id: str, session_id: str) -> bool:
        """Did a rule refuse this call (its answer still remembered)?"""
        return await self.fraud.refused_call(account_id, session_id)

    def refusal(self, verdict: Verdict) -> Refused | None:
        """The answer to a call the rules refuse (None: they allow it)."""
        if verdict.decision is Decision.ALLOW:
            return None
        if verdict.decision is Decision.BLOCK:
            message = verdict.message or self.block_message
        else:
            message = verdict.message or self.fraud.cfg.refuse_message
        return Refused(RefusalCode.FRAUD, message, verdict.return_code)

    def after_refusal(
        self,
        account_id: str | None,
        identity: str,
        session_id: str,
        *,
        admitted: bool,
        tariff: str = "",
        caller_ip: str = "",
        tried: tuple[str, ...] = (),
    ) -> None:
        """A refused authorize: counted for failed_attempts (with the overrides of the
        account's tariff), and an unknown identity (``tried``: every identity its lookup
        tried) for identity_scan of its ``caller_ip``; forgotten from the live calls when
        the rules had admitted it."""
        if admitted and account_id is not None:
            self._soon(self.fraud.forget(account_id, session_id))
        self._soon(self.fraud.refused(account_id, identity, session_id, tariff, caller_ip, tried))

    def _soon(self, coro: Coroutine[Any, Any, Any]) -> None:
        if len(self._pending) >= MAX_PENDING:
            coro.close()
            self.dropped += 1
            return
        task = asyncio.get_running_loop().create_task(self._logged(coro))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _logged(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            await coro
        except Exception as exc:  # Redis away: the count is lost, the answer stands
            self._failures.failure(_FAILED, exc)
        else:
            if self._failures.failing(_FAILED):
                self._failures.recovered(_FAILED)

    async def settle(self) -> None:
        """Wait for the background counts started so far (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        await self.fraud.settle()
