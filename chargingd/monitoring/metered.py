"""A metered credit-control: the ccapi contract with counts and latency around it.

The frontends (RADIUS, Diameter) are handed this instead of Sessions itself, so the
request path gains no code of its own: one coroutine layer, two clock reads and a
few dict increments (docs/monitoring.md has the measured cost). What is timed is the
credit-control decision (sessions + Redis), from the call into ``authorize`` /
``account`` to its answer; decoding and queueing are not in it.
"""

from __future__ import annotations

from time import perf_counter_ns

from chargingd.monitoring.meters import ProcessMeters
from chargingd.sessions.ccapi import (
    Authorized,
    CallInfo,
    GrantState,
    QuotaControl,
    Refused,
    UsageReport,
)


class MeteredCredit:
    """Implements ccapi.QuotaControl around another one, counting into ``meters``."""

    def __init__(self, inner: QuotaControl, meters: ProcessMeters, protocol: str) -> None:
        self.inner = inner
        self.meters = meters
        self.protocol = protocol
        self._auth_latency = meters.histogram(protocol, "authorize")
        self._accounting_latency = meters.histogram(protocol, "accounting")
        self._accounting: dict[str, tuple[str, str, str]] = {}

    async def authorize(self, call: CallInfo) -> Authorized | Refused:
        started = perf_counter_ns()
        try:
            answer = await self.inner.authorize(call)
        except BaseException:
            self.meters.authorize_done(self.protocol, call.gateway, "error")
            raise
        self._auth_latency.observe_ns(perf_counter_ns() - started)
        if isinstance(answer, Refused):
            self.meters.authorize_done(self.protocol, call.gateway, "refused", answer.code.value)
        elif answer.account_id:
            self.meters.authorize_done(self.protocol, call.gateway, "accepted")
        else:
            # sessions' fail-open grant (Redis unreachable, policy fail_open) is the one
            # Authorized without an account: nothing was reserved for it.
            self.meters.authorize_done(self.protocol, call.gateway, "fail_open")
        return answer

    async def authenticate(self, call: CallInfo) -> Authorized | Refused:
        answer = await self.inner.authenticate(call)  # reads only: not an authorize
        self.meters.count((self.protocol, "authenticate", type(answer).__name__.lower()))
        return answer

    async def account(self, report: UsageReport) -> None:
        started = perf_counter_ns()
        kind = report.kind.value
        try:
            await self.inner.account(report)
        except BaseException:
            self.meters.count(self._accounting_key(kind, "error"))
            raise
        self._accounting_latency.observe_ns(perf_counter_ns() - started)
        self.meters.count(self._accounting_key(kind, "ok"))

    def _accounting_key(self, kind: str, result: str) -> tuple[str, str, str]:
        key = self._accounting.get(kind + result)
        if key is None:
            key = self._accounting[kind + result] = (self.protocol, kind, result)
        return key

    async def gateway_restarted(self, gateway: str, client: str, *, event_ms: int = 0) -> None:
        await self.inner.gateway_restarted(gateway, client, event_ms=event_ms)
        self.meters.count((self.protocol, "gateway_restart", "ok"))

    async def grant_state(self, session_id: str) -> GrantState | None:
        return await self.inner.grant_state(session_id)

    async def closed_usage(self, session_id: str) -> int | None:
        return await self.inner.closed_usage(session_id)
