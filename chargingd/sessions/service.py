"""The credit-control state machine: authorize, Start/Interim/Stop, close, re-grant.

Frontends (radius/server.py, diameter.py) only translate packets into ccapi requests; every
rule lives here (DESIGN "Grants, holds and cuts"). Money moves only through the
Ledger (ledger/ledger.py); session metadata lives in Redis through SessionStore, so any
daemon can serve any packet of any call. The cutter (sessions/cutter.py) and the reaper
(sessions/reaper.py) are the two background tasks; ``run`` drives both.

Accounting (Start/Interim/Stop/Failed) is sessions/accounting.py; what a final
usage is charged (cut tolerance, overrun) is sessions/settle.py; accounting for a
closed session (a late Stop correcting a provisional close) is sessions/late.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from chargingd.billing.cdr import CdrStatus
from chargingd.core.config import Config, SessionsConfig
from chargingd.core.ratelog import REQUEST_SETTLE_S, RateLimitedLog
from chargingd.fraud import Fraud
from chargingd.ledger import (
    Ledger,
    LedgerError,
    RefusalReason,
    SessionClosed,
    UnknownAccount,
)
from chargingd.sessions.accounting import Accounting, valid_session_id
from chargingd.sessions.authorize import UNAVAILABLE, Authorizer, WriteUncertain
from chargingd.sessions.ccapi import (
    Authorized,
    CallCutter,
    CallCutterRouter,
    CallInfo,
    GrantState,
    RefusalCode,
    Refused,
    SessionRef,
    UsageReport,
)
from chargingd.sessions.close import CloseBusy, SessionCloser
from chargingd.sessions.cutter import Cutter, credit_cut_pending
from chargingd.sessions.fraudhook import FraudHook
from chargingd.sessions.fused import FusedPath, started_lua
from chargingd.sessions.grants import Grants
from chargingd.sessions.late import LateAccounting
from chargingd.sessions.modes import CreditModes
from chargingd.sessions.pricing import Pricer, RatingError, load_pricer
from chargingd.sessions.reaper import Reaper
from chargingd.sessions.settle import Settler
from chargingd.sessions.spool import (
    Spool,
    SpoolFull,
    entry_to_report,
    report_to_entry,
)
from chargingd.sessions.store import (
    CLOSED,
    LIVE,
    REDIS_DOWN,
    USAGE_SLACK_S,
    SessionRecord,
    SessionStore,
    record_key,
)

log = logging.getLogger("chargingd.sessions")


AUTHORIZE_DOWN = "redis unreachable at authorize"
UNDONE = "authorize refused while Redis did not answer, its hold and record undone"
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
        fraud: Fraud | None = None,
        credit_modes: Mapping[str, str] | None = None,
        echo_class: Iterable[str] = (),
    ) -> None:
        """``fraud``: the process's fraud rules ([fraud] enabled), run in authorize; a
        rule that blocks an account cuts its live calls through this object.
        ``echo_class``: the RADIUS clients that echo the Access-Accept's Class (their
        calls get no session locator)."""
        self.redis = redis
        self.modes = CreditModes(credit_modes)
        self.ledger = ledger
        self.pricer = pricer
        self.cfg = cfg
        # Redis outages: a line per interval, not per call (nor per flip while one shard
        # of a cluster is away and the others answer)
        self.outage = RateLimitedLog(log, settle_s=REQUEST_SETTLE_S)
        self.undone = RateLimitedLog(log, level=logging.WARNING)
        self.clock_ms = clock_ms
        self.source = source
        self.store = SessionStore(
            redis,
            session_ttl_s=cfg.session_ttl_s,
            closed_ttl_s=cfg.closed_ttl_s,
            batcher=ledger.batcher,  # one pipeline per loop tick for both
            echo_class=frozenset(echo_class),
            shards=cfg.lastseen_shards,
            compact_records=bool(cfg.compact_records),  # unresolved (None): LEGACY
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
            modes=self.modes,
        )
        self.settler = Settler(
            price=self.grants.price,
            paid_s=self.grants.paid_s,
            tolerance_s=cfg.cut_tolerance_s,
            max_session_s=cfg.max_session_s,
        )
        self.closer = SessionCloser(
            store=self.store,
            ledger=ledger,
            settler=self.settler,
            source=source,
            fused=self.fused,
        )
        self.fraud = FraudHook(fraud) if fraud is not None else None
        if fraud is not None:
            fraud.cut_account = self.cut_account
            # a granted call's repeats are not counted again; a call its Start adopted is
            # new to the rules (fused.started_lua)
            fraud.records(record_key, started_lua(self.store.layout))
        self.authorizer = Authorizer(
            store=self.store,
            ledger=ledger,
            pricer=pricer,
            grants=self.grants,
            cfg=cfg,
            clock_ms=clock_ms,
            fused=self.fused,
            fraud=self.fraud,
            modes=self.modes,
        )
        self.close_session = self.closer.close
        self.spool = Spool(data_dir / "spool", max_entries=cfg.spool_max_entries)
        self.accounting = Accounting(
            store=self.store,
            authorizer=self.authorizer,
            grants=self.grants,
            closer=self.closer,
            late=LateAccounting(
                store=self.store,
                ledger=ledger,
                closer=self.closer,
                settler=self.settler,
                orphan=self._orphan,
            ),
            cfg=cfg,
            clock_ms=clock_ms,
            source=source,
        )
        self.cut_router = CallCutterRouter(call_cutter)
        self.cutter = Cutter(
            store=self.store,
            frontend=self.cut_router if call_cutter is not None else None,
            clock_ms=clock_ms,
            retries=cfg.disconnect_retries,
            backoff_ms=int(cfg.disconnect_backoff_s * 1000),
            recheck=self.grants.recheck,
        )
        self.reaper = Reaper(
            store=self.store,
            close=self.close_session,
            clock_ms=clock_ms,
            stale_ms=cfg.stale_factor * cfg.interim_interval_s * 1000,
            spool=self.spool,
            replay=self.replay_entry,
            not_before=self._reap_not_before,
            longest_s=self._told_if_silent,
        )

    def _reap_not_before(self, rec: SessionRecord) -> int:
        """When a silent session may be reaped at the earliest: a client that sends no
        Interim (hold_all, own_timer) only after the Session-Timeout it was told (or
        what its money pays for, if longer) plus reap_grace_s; 0 for the others."""
        if not self.modes.silent(rec.client):
            return 0
        base_ms = rec.answer_ms or rec.last_seen_ms or rec.auth_ms
        lasts_s = max(self.settler.told_s(rec), rec.paid_usage_s)
        return base_ms + (lasts_s + self.cfg.reap_grace_s) * 1000

    def _told_if_silent(self, rec: SessionRecord) -> int:
        """A client that sends no Interim (hold_all, own_timer) ends its calls at the
        Session-Timeout it was told: the longest its silent call can have run, however
        much the own timer held for it past that (0: no such bound)."""
        return self.settler.told_s(rec) if self.modes.silent(rec.client) else 0

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
        """The CDRs of these clients' calls say ``source`` ("diameter" for its peers);
        a Diameter peer's calls keep their locator whatever a RADIUS client of the same
        name says (CCRs name no account)."""
        names = list(clients)
        self.closer.client_sources.update(dict.fromkeys(names, source))
        if source != "radius":
            self.store.echo_class = self.store.echo_class - frozenset(names)

    # -- authorize ------------------------------------------------------------------
    async def authorize(self, call: CallInfo) -> Authorized | Refused:
        """Decide an Access-Request: reserve the first grant or refuse with a code."""
        try:
            # (the session id's check here: no coroutine level of its own)
            if not valid_session_id(call.session_id):
                return Refused(RefusalCode.SYSTEM_ERROR, "invalid session id")
            answer = await self.authorizer.authorize(call)
        except WriteUncertain as uncertain:
            return self._authorize_uncertain(call, uncertain)
        except REDIS_DOWN as exc:
            return self._authorize_without_redis(call, exc)
        except UnknownAccount:
            return Refused(RefusalCode.UNKNOWN_ACCOUNT, "unknown account")
        except SessionClosed:
            # RFC 2866 §5.5: Acct-Session-Id is unique; a reused one is a gateway bug.
            return Refused(RefusalCode.SYSTEM_ERROR, "session id already used")
        except LedgerError as refused:
            log.error("authorize %r refused by the ledger: %s", call.session_id, refused)
            return Refused(RefusalCode.SYSTEM_ERROR, f"request refused ({refused.code})")
        if AUTHORIZE_DOWN in self.outage.episodes:  # failing(), without its interpreted frame
            self.outage.recovered(AUTHORIZE_DOWN)
        return answer

    async def authenticate(self, call: CallInfo) -> Authorized | Refused:
        """The debit-card authentication step (ccapi.CreditControl.authenticate): reads
        only, reserves nothing, opens no session."""
        try:
            return await self.authorizer.authenticate(call)
        except REDIS_DOWN as exc:
            log.error("authenticate %r: Redis unreachable: %s", call.session_id, exc)
            return Refused(RefusalCode.SYSTEM_ERROR, "system error")

    def _authorize_uncertain(
        self, call: CallInfo, uncertain: WriteUncertain
    ) -> Refused | Authorized:
        """Redis did not answer the hold's write. Refused (fail-closed): the write may
        still run when a stalled Redis resumes, so an undo is spooled (on disk, replayed
        once Redis answers: undo_authorize). A late run of the write itself refuses
        itself (its deadline), which this undo also covers."""
        cause = uncertain.__cause__ or uncertain
        if self.cfg.redis_failure_policy == "fail_open":
            return self._authorize_without_redis(call, cause)  # the call goes ahead
        entry: dict[str, Any] = {"type": "undo_authorize", "account_id": uncertain.account_id}
        if not uncertain.record_sent:  # a record found later is another authorize's
            entry["record_sent"] = False
        try:
            self.spool.append(entry | {"session_id": uncertain.session_id})
        except (SpoolFull, OSError) as spool_exc:
            log.error("cannot spool the undo of %s: %s", uncertain.session_id, spool_exc)
        return self._authorize_without_redis(call, cause)

    def _authorize_without_redis(self, call: CallInfo, exc: BaseException) -> Refused | Authorized:
        self.outage.failure(AUTHORIZE_DOWN, exc)  # one line per interval, with a count
        if self.cfg.redis_failure_policy != "fail_open":
            return Refused(RefusalCode.SYSTEM_ERROR, UNAVAILABLE)
        try:
            self.spool.append({"type": "authorize", "call": call.as_dict()})
        except (SpoolFull, OSError) as spool_exc:
            log.error("cannot spool fail-open authorize: %s", spool_exc)
            return Refused(RefusalCode.SYSTEM_ERROR, UNAVAILABLE)
        return Authorized(
            account_id="",
            session_timeout_s=self.cfg.fail_open_timeout_s,
            interim_interval_s=self.cfg.interim_interval_s,
            credit_micros=0,
            currency="",
        )

    # -- accounting -------------------------------------------------------------------
    async def account(self, report: UsageReport) -> None:
        """Record a Start / Interim-Update / Stop; spooled when Redis is unreachable or
        another closer's lease holds the session (replayed later, never dropped)."""
        try:
            await self.accounting.apply(report)
        except REDIS_DOWN as exc:
            self.outage.failure(ACCOUNTING_DOWN, exc)  # one line per interval, with a count
            self.spool.append(report_to_entry(report))  # SpoolFull propagates: no ack
            return
        except CloseBusy as busy:
            log.warning("%s: spooled, replayed once the lease is gone", busy)
            self.spool.append(report_to_entry(report))
            return
        except (LedgerError, RatingError) as unchargeable:
            # Retransmission would fail the same way: keep the report, never lose it.
            log.error("accounting %r not chargeable: %s", report.call.session_id, unchargeable)
            await self._orphan(report, unchargeable.code)
        if ACCOUNTING_DOWN in self.outage.episodes:  # failing(), without its interpreted frame
            self.outage.recovered(ACCOUNTING_DOWN)

    async def _orphan(self, report: UsageReport, reason: str, detail: str = "") -> None:
        await self.accounting.orphan(report, reason, detail)

    async def gateway_restarted(self, gateway: str, client: str, *, event_ms: int = 0) -> None:
        """Accounting-On/Off (RFC 2866 §5.1 Acct-Status-Type 7/8): its calls are gone,
        ended by the restart at ``event_ms`` (0: now). Each is charged the reaper's
        estimate up to then: the time from its answer, capped by what it paid for, never
        less than it reported (its last report alone would charge a call without
        Interims nothing). A call authorized after that moment is the restarted
        gateway's (an Accounting-On that arrived late) and lives on. An event time
        further back than clock skew and delays explain (USAGE_SLACK_S) is not
        believed: now (a NAS that reboots before its clock is set sends an
        Event-Timestamp of 1970, which would spare every call it lost, left to the
        reaper to charge up to its Session-Timeout)."""
        now_ms = self.clock_ms()
        at_ms = min(event_ms, now_ms)
        if at_ms < now_ms - USAGE_SLACK_S * 1000:
            at_ms = now_ms
        # Event-Timestamps are whole seconds: a call of the restart's own second is old.
        new_from_ms = at_ms - at_ms % 1000 + 1000
        closed = 0
        await self.store.drain_old_lastseen()  # calls of older daemons (rolling upgrade)
        for rec in await self.store.live_of_gateway(gateway, now_ms=now_ms):
            if rec.auth_ms >= new_from_ms:
                continue
            # Provisional: a Stop the gateway still sends for it corrects it (late.py).
            cdr = await self.close_session(
                rec,
                usage_s=self.reaper.provisional_usage_s(rec, at_ms),
                end_ms=at_ms,
                status=CdrStatus.GATEWAY_RESTART,
                provisional=True,
            )
            closed += cdr is not None
        log.warning("gateway %s (client %s) restarted: closed %d sessions", gateway, client, closed)

    # -- grants, deadlines, operator actions --------------------------------------------
    async def on_topup(self, account_id: str) -> int:
        """Money arrived: re-grant the account's sessions that have a deadline and tell
        their gateways the new Session-Timeout (CoA). The deadline is recomputed (the
        end of what is now paid), never cleared. A session without one (a full grant)
        whose Session-Timeout the money bounded is told the longer one too (CoA).
        Returns how many moved or were told. hold_all and
        own_timer calls are left as they are: their gateway cannot be told a new
        Session-Timeout (own_timer's timer re-checks the money at its deadline)."""
        moved = 0
        for rec in await self.store.live_of_account(account_id):
            if self.modes.holds_all(rec.client):
                continue
            if rec.cut_reason and not credit_cut_pending(rec):
                continue  # being killed, or its credit cut confirmed: the call is ending
            if not (rec.limited or rec.deadline_ms):
                # A full grant has no deadline, but the Session-Timeout it was told
                # ends where the money of its authorize ran out: the gateway hangs
                # up there unless told the new one.
                moved += await self._retell(rec)
                continue
            old_deadline = rec.deadline_ms
            told_s = min(self.grants.paid_s(rec, rec.credit_micros), self.cfg.max_session_s)
            deadline_ms, timeout_s, credit_micros = await self.grants.refresh(rec)
            # The deadline stays where it was when the next grant lies within what is
            # paid already (per-minute billing: a call at 70 s paid to 120 s, a grant of
            # 35 s), yet the money now pays for longer than the gateway was told: a
            # Diameter client holding a Final-Unit-Indication ends the call at its
            # final units unless a RAR makes it re-authorize, a RADIUS gateway at its
            # Session-Timeout unless a CoA moves it.
            # (An adopted call, credit_micros 0, was told nothing: as in _retell.)
            longer = rec.credit_micros > 0 and timeout_s > told_s
            if deadline_ms != old_deadline or longer:
                moved += 1
                # What the gateway is told is what it is allowed (sessions/settle.py);
                # a top-up only adds to it (unanswered too: a lost CoA-ACK must not
                # make debt of a call that obeyed it).
                await self.store.update(rec, credit_micros=max(rec.credit_micros, credit_micros))
                await self.cutter.change_timeout(rec, timeout_s)
        return moved

    async def _retell(self, rec: SessionRecord) -> int:
        """CoA a call without a deadline whose Session-Timeout the money bounded, when
        the money now pays for a longer one; 1 if it was told (sent), else 0."""
        if rec.credit_micros <= 0:
            return 0  # adopted (accounting without our authorize): told nothing
        told_s, timeout_s, credit_micros = await self.grants.told_again(rec)
        if timeout_s <= told_s:
            return 0
        await self.store.update(rec, credit_micros=max(rec.credit_micros, credit_micros))
        await self.cutter.change_timeout(rec, timeout_s)
        return 1

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
        final = bool(rec.limited)
        if not final and not rec.cut_reason and not self.modes.hold_all(rec.client):
            final = await self.grants.last_grant(rec)
        return GrantState(
            usage_s=rec.last_usage_s,
            paid_usage_s=rec.paid_usage_s,
            final=final,
            cut=bool(rec.cut_reason),
        )

    async def closed_usage(self, session_id: str) -> int | None:
        """A closed session's charged usage (ccapi.QuotaControl): Diameter answers a
        direct debit sent again, whose first answer was lost, with what it did."""
        account_id = await self.store.locate(session_id, fresh=True)
        rec = None if account_id is None else await self.store.get(account_id, session_id)
        if rec is None or rec.state != CLOSED:
            return None
        return int(rec.last_usage_s)

    async def list_sessions(self) -> list[SessionRecord]:
        """Live sessions for the admin socket."""
        return await self.store.all_live(now_ms=self.clock_ms())

    async def undo_authorize(
        self, account_id: str, session_id: str, *, record_sent: bool = True
    ) -> bool:
        """Make a refused authorize harmless once Redis answers (see _authorize_uncertain):
        drop its hold and remember the refusal in the ledger (a late write then refuses
        itself), and forget its record if it was written. Nothing is done to a call that
        accounting shows real (a retransmission another daemon accepted), nor, when this
        authorize never sent its record (``record_sent``), to a session whose record is
        there: another authorize of it wrote that record and answered the gateway (a
        copy of the request another daemon accepted, its Start still to come). True if
        undone."""
        rec = await self.store.get(account_id, session_id)
        if rec is not None and _accounted(rec):
            log.warning("authorize of %s timed out but the call is live: kept", session_id)
            return False
        if rec is not None and not record_sent:
            log.warning(
                "authorize of %s timed out here but another authorize of it stands: kept",
                session_id,
            )
            return False
        refused = await self.ledger.refuse(
            account_id, session_id, RefusalReason.SYSTEM_ERROR.value, who="sessions-undo"
        )
        if refused != "ok":
            return False
        rec = await self.store.get(account_id, session_id)
        if rec is not None and not _accounted(rec):
            await self.store.discard(rec)
        # After an outage there may be many: a line per interval, with a count.
        self.undone.failure(UNDONE, f"{session_id} of {account_id}")
        return True

    async def replay_entry(self, entry: dict[str, Any]) -> None:
        """One spooled event, back from the spool once Redis answers again."""
        if entry.get("type") == "undo_authorize":
            try:
                await self.undo_authorize(
                    str(entry["account_id"]),
                    str(entry["session_id"]),
                    record_sent=bool(entry.get("record_sent", True)),
                )
            except LedgerError as exc:  # the account is gone: nothing left to undo
                log.warning("undo of %s: %s", entry.get("session_id"), exc)
            return
        if entry.get("type") == "usage":
            report = entry_to_report(entry)
            try:
                # CloseBusy propagates: the spool keeps this entry (and those after
                # it) and retries on the next pass, until the other lease is gone.
                await self.accounting.apply(report)
            except (LedgerError, RatingError) as unchargeable:
                # As account() does: an entry no replay can charge must not block the
                # spool behind it for ever; it is kept as an orphan with its reason.
                await self._orphan(report, unchargeable.code)
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


def build_sessions(
    cfg: Config,
    *,
    redis: Redis,
    ledger: Ledger,
    clock_ms: Callable[[], int],
    call_cutter: CallCutter | None = None,
    source: str = "radius",
    fraud: Fraud | None = None,
) -> Sessions:
    """Sessions for a daemon: loads the [rating] plans (a bad file raises TariffLoadError);
    ``fraud``: the process's fraud rules, None when [fraud] is off."""
    return Sessions(
        redis=redis,
        ledger=ledger,
        pricer=load_pricer(cfg.rating),
        cfg=cfg.sessions,
        clock_ms=clock_ms,
        data_dir=cfg.data_path,
        call_cutter=call_cutter,
        source=source,
        fraud=fraud,
        credit_modes={c.name: c.credit_mode for c in cfg.radius.clients},
        # RADIUS clients only: Diameter peers keep the locator (name_source).
        echo_class=[c.name for c in cfg.radius.clients if c.echo_class],
    )


__all__ = ["Sessions", "build_sessions", "valid_session_id"]


def _accounted(rec: SessionRecord) -> bool:
    """Accounting came for it: a real call, whatever its authorize answered."""
    return rec.state != LIVE or bool(rec.answer_ms or rec.last_usage_s or rec.adopted)
