"""The credit-control state machine: authorize, Start/Interim/Stop, close, re-grant.

Frontends (radius/server.py, diameter.py) only translate packets into ccapi requests; every
rule lives here (DESIGN "Grants, holds and cuts"). Money moves only through the
Ledger (ledger/ledger.py); session metadata lives in Redis through SessionStore, so any
daemon can serve any packet of any call. The cutter (sessions/cutter.py) and the reaper
(sessions/reaper.py) are the two background tasks; ``run`` drives both.

Idempotency (DESIGN invariant 3): an interim commits the rated cost of the
*cumulative* usage (the ledger debits only the difference), a Stop releases once
(the ledger keeps a tombstone) and the record is marked closed after the CDR is
written, so retransmitted or reordered accounting never charges twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import redis.exceptions
from redis.asyncio import Redis

from chargingd.billing.cdr import CdrStatus
from chargingd.core.config import Config, SessionsConfig
from chargingd.core.ratelog import RateLimitedLog
from chargingd.ledger import (
    Ledger,
    LedgerError,
    SessionClosed,
    UnknownAccount,
)
from chargingd.sessions.authorize import Authorizer, Profile
from chargingd.sessions.ccapi import (
    Authorized,
    CallCutter,
    CallCutterRouter,
    CallInfo,
    GrantState,
    RefusalCode,
    Refused,
    SessionRef,
    UsageKind,
    UsageReport,
)
from chargingd.sessions.close import SessionCloser
from chargingd.sessions.cutter import Cutter
from chargingd.sessions.fused import FusedPath
from chargingd.sessions.grants import Grants
from chargingd.sessions.pricing import Pricer, RatingError, load_pricer
from chargingd.sessions.reaper import Reaper
from chargingd.sessions.spool import (
    Spool,
    SpoolFull,
    entry_to_report,
    orphan_fields,
    report_to_entry,
)
from chargingd.sessions.store import INVALID, LIVE, USAGE_SLACK_S, SessionRecord, SessionStore

log = logging.getLogger("chargingd.sessions")

# What "Redis unreachable" looks like from redis-py (the policy applies to these only).
REDIS_DOWN: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)

MAX_SESSION_ID = 256
AUTHORIZE_DOWN = "redis unreachable at authorize"
ACCOUNTING_DOWN = "redis unreachable at accounting"


class Sessions:
    """Implements ccapi.CreditControl; one per daemon process, state in Redis."""

    def __init__(
        self,
        *,
        redis: Redis,
        ledger: Ledger,
        pricer: Pricer,
        cfg: SessionsConfig,
        clock_ms: Callable[[], int],
        data_dir: Path,
        call_cutter: CallCutter | None = None,
        source: str = "radius",
    ) -> None:
        self.redis = redis
        self.ledger = ledger
        self.pricer = pricer
        self.cfg = cfg
        self.outage = RateLimitedLog(log)  # Redis outages: a line per interval, not per call
        self.clock_ms = clock_ms
        self.source = source
        self.store = SessionStore(
            redis,
            session_ttl_s=cfg.session_ttl_s,
            closed_ttl_s=cfg.closed_ttl_s,
            batcher=ledger.batcher,  # one pipeline per loop tick for both
        )
        # One round trip per step on a single Redis; step by step on a cluster.
        self.fused = FusedPath(self.store, ledger) if self.store.batched else None
        self.grants = Grants(
            store=self.store,
            ledger=ledger,
            pricer=pricer,
            cfg=cfg,
            clock_ms=clock_ms,
            fused=self.fused,
        )
        self.closer = SessionCloser(
            store=self.store,
            ledger=ledger,
            price=self.grants.price,
            source=source,
            fused=self.fused,
        )
        self.authorizer = Authorizer(
            store=self.store,
            ledger=ledger,
            pricer=pricer,
            grants=self.grants,
            cfg=cfg,
            clock_ms=clock_ms,
            fused=self.fused,
        )
        self.close_session = self.closer.close
        self.spool = Spool(data_dir / "spool", max_entries=cfg.spool_max_entries)
        self.cut_router = CallCutterRouter(call_cutter)
        self.cutter = Cutter(
            store=self.store,
            frontend=self.cut_router if call_cutter is not None else None,
            clock_ms=clock_ms,
            retries=cfg.disconnect_retries,
            backoff_ms=int(cfg.disconnect_backoff_s * 1000),
            recheck=self.grants.refresh,
        )
        self.reaper = Reaper(
            store=self.store,
            close=self.close_session,
            clock_ms=clock_ms,
            stale_ms=cfg.stale_factor * cfg.interim_interval_s * 1000,
            spool=self.spool,
            replay=self.replay_entry,
        )

    def step_by_step(self) -> None:
        """Take the Redis-Cluster path (no fused scripts) on a single Redis too; for
        side-by-side benchmarks and the tests that compare both paths."""
        self.fused = self.grants.fused = self.closer.fused = self.authorizer.fused = None

    def attach_call_cutter(
        self, call_cutter: CallCutter, owns: Callable[[SessionRef], bool] | None = None
    ) -> None:
        """A frontend that sends Disconnect/CoA or ASR/RAR (built after this object):
        the sessions ``owns`` accepts go to it; without ``owns`` it takes the rest."""
        self.cut_router.add(call_cutter, owns)
        self.cutter.frontend = self.cut_router

    def name_source(self, clients: Iterable[str], source: str) -> None:
        """The CDRs of these clients' calls say ``source`` ("diameter" for its peers)."""
        self.closer.client_sources.update(dict.fromkeys(clients, source))

    # -- authorize ------------------------------------------------------------------
    async def authorize(self, call: CallInfo) -> Authorized | Refused:
        """Decide an Access-Request: reserve the first grant or refuse with a code."""
        try:
            answer = await self._authorize(call)
        except REDIS_DOWN as exc:
            return self._authorize_without_redis(call, exc)
        except UnknownAccount:
            return Refused(RefusalCode.UNKNOWN_ACCOUNT, "unknown account")
        except SessionClosed:
            # RFC 2866 §5.5: Acct-Session-Id is unique; a reused one is a gateway bug.
            return Refused(RefusalCode.SYSTEM_ERROR, "session id already used")
        except LedgerError as exc:
            log.error("authorize %r refused by the ledger: %s", call.session_id, exc)
            return Refused(RefusalCode.SYSTEM_ERROR, f"request refused ({exc.code})")
        if self.outage.failing(AUTHORIZE_DOWN):
            self.outage.recovered(AUTHORIZE_DOWN)
        return answer

    async def _authorize(self, call: CallInfo) -> Authorized | Refused:
        if not valid_session_id(call.session_id):
            return Refused(RefusalCode.SYSTEM_ERROR, "invalid session id")
        return await self.authorizer.authorize(call)

    def _authorize_without_redis(self, call: CallInfo, exc: BaseException) -> Refused | Authorized:
        self.outage.failure(AUTHORIZE_DOWN, exc)  # one line per interval, with a count
        if self.cfg.redis_failure_policy != "fail_open":
            return Refused(RefusalCode.SYSTEM_ERROR, "charging unavailable")
        try:
            self.spool.append({"type": "authorize", "call": dataclasses.asdict(call)})
        except (SpoolFull, OSError) as spool_exc:
            log.error("cannot spool fail-open authorize: %s", spool_exc)
            return Refused(RefusalCode.SYSTEM_ERROR, "charging unavailable")
        return Authorized(
            account_id="",
            session_timeout_s=self.cfg.fail_open_timeout_s,
            interim_interval_s=self.cfg.interim_interval_s,
            credit_micros=0,
            currency="",
        )

    # -- accounting -------------------------------------------------------------------
    async def account(self, report: UsageReport) -> None:
        """Record a Start / Interim-Update / Stop; spooled when Redis is unreachable."""
        try:
            await self._account(report)
        except REDIS_DOWN as exc:
            self.outage.failure(ACCOUNTING_DOWN, exc)  # one line per interval, with a count
            self.spool.append(report_to_entry(report))  # SpoolFull propagates: no ack
            return
        except (LedgerError, RatingError) as exc:
            # Retransmission would fail the same way: keep the report, never lose it.
            log.error("accounting %r not chargeable: %s", report.call.session_id, exc)
            await self._orphan(report, exc.code)
        if self.outage.failing(ACCOUNTING_DOWN):
            self.outage.recovered(ACCOUNTING_DOWN)

    async def _account(self, report: UsageReport) -> None:
        session_id = report.call.session_id
        if not valid_session_id(session_id):
            await self._orphan(report, "invalid_session_id")
            return
        if not 0 <= report.usage_s <= self.cfg.session_ttl_s:
            # Acct-Session-Time is Unsigned32 (RFC 2866 §5.7): 2^32-1 would be charged
            # as 136 years of debt. No record lives longer than session_ttl_s.
            await self._orphan(report, "invalid_usage")
            return
        account_id = await self.store.locate(session_id)
        rec: SessionRecord | None = None
        if account_id is None and report.kind is UsageKind.FAILED:
            # A call that was never set up and never authorized here (a switch that
            # also accounts the INVITEs chargingd refused): no money, no session.
            log.debug("failed call %s without a session: nothing to close", session_id)
            return
        if account_id is None:
            adopted, created = await self._adopt(report)
            if adopted is None:
                return
            account_id = adopted.account_id
            if created:  # written already as touch() would leave it: no second trip
                rec, state, usage_s = adopted, LIVE, adopted.last_usage_s
        if rec is None:
            state, usage_s, rec = await self._touch(account_id, report)
        if rec is None:
            await self._not_live(account_id, state, report)
            return
        if report.kind in (UsageKind.STOP, UsageKind.FAILED):
            await self._stop(rec, usage_s, report)
        elif report.usage_s >= usage_s:  # else older than what we know (reordered)
            await self._update(rec, usage_s, report)

    async def _not_live(self, account_id: str, state: str, report: UsageReport) -> None:
        """Touch found no live record: a bad usage, an expired record, a reused id, or a
        closed session (a replayed Stop, a late Interim: nothing to do)."""
        session_id = report.call.session_id
        if state == INVALID:
            await self._orphan(report, "invalid_usage")
        elif state == "missing":  # the record expired but its locator did not
            await self.store.forget_locator(session_id)
            await self._account(report)
        elif await self.store.locate(session_id, fresh=True) not in (account_id, None):
            await self._account(report)  # a reused session id, now another account's

    async def _touch(
        self, account_id: str, report: UsageReport
    ) -> tuple[str, int, SessionRecord | None]:
        return await self.store.touch(
            account_id,
            report.call.session_id,
            usage_s=report.usage_s,
            now_ms=self.clock_ms(),
            answer_ms=_answer_ms(report),
            nas_session_id=report.call.nas_session_id,
            call_origin=report.call.call_origin,
        )

    async def _update(self, rec: SessionRecord, usage_s: int, report: UsageReport) -> None:
        """Start or Interim: commit the cumulative cost, renew the hold for the next grant."""
        if report.kind is UsageKind.START and usage_s == 0:
            if rec.limited and not rec.deadline_ms:
                await self.store.set_deadline(rec, self.grants.deadline_ms(rec, rec.paid_usage_s))
            return
        await self.grants.charge(rec, usage_s)

    async def _stop(self, rec: SessionRecord, usage_s: int, report: UsageReport) -> None:
        """Stop or Failed: close at once, releasing the hold. A call never answered
        closes unanswered (a Failed, or a Stop of a SIP INVITE >= 300, has no Start).
        Without Acct-Session-Time the usage is this event's time minus the answer time
        (both the gateway's clock), and the CDR says so."""
        extra: dict[str, str] = {}
        if report.terminate_cause:
            extra["terminate_cause"] = report.terminate_cause
        if report.sip_code:
            extra["sip_code"] = str(report.sip_code)
        if not report.usage_reported and rec.answer_ms:
            derived_s = (report.event_ms - rec.answer_ms + 500) // 1000
            if derived_s * 1000 > self.clock_ms() - rec.auth_ms + USAGE_SLACK_S * 1000:
                # Longer than the call has existed here: a broken or lying gateway clock.
                await self._orphan(report, "invalid_usage")
                return
            if derived_s > usage_s:
                usage_s = derived_s
                extra["usage_from"] = "event_timestamps"
        await self.close_session(
            rec,
            usage_s=usage_s,
            end_ms=report.event_ms,
            status=CdrStatus.NORMAL,
            disconnect_cause=report.disconnect_cause,
            extra=extra or None,
        )

    async def _adopt(self, report: UsageReport) -> tuple[SessionRecord | None, bool]:
        """Accounting without our authorize: charge the account found by identity, or
        orphan it. True with a record this call wrote, already touched by ``report``."""
        call = report.call
        account = await self.authorizer.find_account(call)
        if account is None:
            await self._orphan(report, "unknown_account")
            return None, False
        start_ms = report.event_ms - report.usage_s * 1000
        profile = Profile(account.id, account.tariff, account.currency, account.mode.value)
        made = self.authorizer.new_record(call, profile, start_ms)
        if isinstance(made, Refused):
            await self._orphan(report, made.code.value)
            return None, False
        # The fields session_touch.lua would set for this packet, written at creation.
        rec = _replace(
            made[0],
            adopted=1,
            answer_ms=_answer_ms(report),
            last_usage_s=report.usage_s,
            last_seen_ms=self.clock_ms(),
        )
        if not await self.store.create(rec):
            return await self.store.get(account.id, call.session_id), False  # concurrently
        log.warning(
            "adopted session %s of account %s without authorize", rec.session_id, account.id
        )
        return rec, True

    async def _orphan(self, report: UsageReport, reason: str) -> None:
        log.warning("orphan accounting %s: %s", report.call.session_id, reason)
        await self.store.record_orphan(orphan_fields(report, reason, self.source))

    async def gateway_restarted(self, gateway: str, client: str) -> None:
        """Accounting-On/Off (RFC 2866 §5.1 Acct-Status-Type 7/8): its calls are gone."""
        now_ms = self.clock_ms()
        closed = 0
        for rec in await self.store.live_of_gateway(gateway):
            cdr = await self.close_session(
                rec, usage_s=rec.last_usage_s, end_ms=now_ms, status=CdrStatus.GATEWAY_RESTART
            )
            closed += cdr is not None
        log.warning("gateway %s (client %s) restarted: closed %d sessions", gateway, client, closed)

    # -- grants, deadlines, operator actions --------------------------------------------
    async def on_topup(self, account_id: str) -> int:
        """Money arrived: move the deadlines of the account's limited sessions."""
        moved = 0
        for rec in await self.store.live_of_account(account_id):
            if not rec.limited or rec.cut_reason:
                continue
            old_deadline = rec.deadline_ms
            deadline_ms, timeout_s = await self.grants.refresh(rec)
            if deadline_ms != old_deadline:
                moved += 1
                await self.cutter.change_timeout(rec, timeout_s)
        return moved

    async def kill_session(self, session_id: str) -> bool:
        """Operator kill (admin session.kill): Disconnect-Request now, CDR status "killed"."""
        rec = await self.store.find(session_id)
        if rec is None or rec.state != LIVE:
            return False
        return await self.cutter.cut(rec, CdrStatus.KILLED)

    async def cut_account(self, account_id: str) -> int:
        """Cut every live call of an account (suspension, fraud block); returns how many."""
        live = await self.store.live_of_account(account_id)
        await asyncio.gather(*(self.cutter.cut(rec, CdrStatus.KILLED) for rec in live))
        return len(live)

    async def grant_state(self, session_id: str) -> GrantState | None:
        """The grant of a live session (ccapi.QuotaControl): what Diameter's CCA quotes."""
        account_id = await self.store.locate(session_id)
        rec = None if account_id is None else await self.store.get(account_id, session_id)
        if rec is None or rec.state != LIVE:
            return None
        return GrantState(
            usage_s=rec.last_usage_s,
            paid_usage_s=rec.paid_usage_s,
            final=bool(rec.limited),
            cut=bool(rec.cut_reason),
        )

    async def list_sessions(self) -> list[SessionRecord]:
        """Live sessions for the admin socket."""
        return await self.store.all_live()

    async def replay_entry(self, entry: dict[str, Any]) -> None:
        """One spooled event, back from the spool once Redis answers again."""
        if entry.get("type") == "usage":
            report = entry_to_report(entry)
            try:
                await self._account(report)
            except (LedgerError, RatingError) as exc:
                # As account() does: an entry no replay can charge must not block the
                # spool behind it for ever; it is kept as an orphan with its reason.
                await self._orphan(report, exc.code)
            return
        fields = {f"call.{k}": str(v) for k, v in entry.get("call", {}).items()}
        await self.store.record_orphan(
            fields | {"source": self.source, "reason": "fail_open_authorize"}
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Drive the cutter and the reaper until ``stop`` is set."""
        await asyncio.gather(
            self.cutter.run(stop, interval_s=self.cfg.cutter_interval_s),
            self.reaper.run(stop, interval_s=self.cfg.reaper_interval_s),
        )


def _answer_ms(report: UsageReport) -> int:
    """The answer time a packet implies (0: not answered yet, RFC 2866 §5.7)."""
    answered = report.kind is UsageKind.START or report.usage_s > 0
    return report.event_ms - report.usage_s * 1000 if answered else 0


def _replace(rec: SessionRecord, **changes: Any) -> SessionRecord:
    return dataclasses.replace(rec, **changes)


def build_sessions(
    cfg: Config,
    *,
    redis: Redis,
    ledger: Ledger,
    clock_ms: Callable[[], int],
    call_cutter: CallCutter | None = None,
    source: str = "radius",
) -> Sessions:
    """Sessions for a daemon: loads the [rating] plans (a bad file raises TariffLoadError)."""
    return Sessions(
        redis=redis,
        ledger=ledger,
        pricer=load_pricer(cfg.rating),
        cfg=cfg.sessions,
        clock_ms=clock_ms,
        data_dir=cfg.data_path,
        call_cutter=call_cutter,
        source=source,
    )


def valid_session_id(session_id: str) -> bool:
    """What the ledger accepts as a session id: 1-256 printable characters."""
    return 0 < len(session_id) <= MAX_SESSION_ID and session_id.isprintable()
