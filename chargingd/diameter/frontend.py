"""The Diameter frontend of one process: TCP server + Credit-Control + ASR/RAR.

Built from ``[diameter]`` and a QuotaControl (sessions/); ``owns`` and the
``ServerInitiated`` CallCutter are what the cut router needs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from chargingd.core.config.diameter import DiameterConfig
from chargingd.diameter import codec as dc
from chargingd.diameter.ccstate import CcStore, Send
from chargingd.diameter.credit import CcSettings, CreditControlApp, FinalUsageMarks
from chargingd.diameter.dictionary import FAILURE_HANDLING
from chargingd.diameter.initiated import ServerInitiated
from chargingd.diameter.messages import Identity, new_origin_state_id
from chargingd.diameter.peers import Peer, PeerTable, networks_of
from chargingd.diameter.server import DiameterServer
from chargingd.sessions.ccapi import QuotaControl, SessionRef

log = logging.getLogger("chargingd.diameter")

# One Origin-State-Id per process (RFC 6733 §8.16): set once, at import.
ORIGIN_STATE_ID = new_origin_state_id()


def peer_table(cfg: DiameterConfig) -> PeerTable:
    """The configured peers."""
    return PeerTable(
        Peer(
            name=p.name,
            origin_host=p.origin_host,
            realm=p.realm,
            networks=networks_of(p.addresses),
            lookup=p.lookup,
            default_account=p.default_account,
        )
        for p in cfg.peers
    )


def identity(cfg: DiameterConfig) -> Identity:
    """Who this process is on the wire; Host-IP-Address defaults to the bind address
    (127.0.0.1 when bound to every address)."""
    addresses = cfg.host_ip_addresses or (
        (cfg.bind,) if cfg.bind not in ("0.0.0.0", "::", "") else ("127.0.0.1",)
    )
    return Identity(
        origin_host=cfg.origin_host,
        origin_realm=cfg.origin_realm,
        host_ip_addresses=tuple(addresses),
        origin_state_id=ORIGIN_STATE_ID,
    )


class DiameterFrontend:
    """Listener, Credit-Control application and server-initiated requests."""

    def __init__(
        self,
        cfg: DiameterConfig,
        credit: QuotaControl,
        send: Send,
        *,
        validity_time_s: int,
        session_ttl_s: int,
        closed_ttl_s: int,
        reuse_port: bool = False,
        final_usage: FinalUsageMarks | None = None,
    ) -> None:
        """``final_usage``: sessions' FinalUsage (sessions/idle.py): a session whose every
        rating group reported FINAL has its hold released and is reaped charged its
        reported usage; None: it keeps its hold until the CCR-T (as before)."""
        self.cfg = cfg
        self.ident = identity(cfg)
        handling = cfg.credit_control_failure_handling
        self.app = CreditControlApp(
            credit,
            CcStore(send, ttl_s=session_ttl_s, ended_ttl_s=closed_ttl_s),
            self.ident,
            CcSettings(
                failure_handling=FAILURE_HANDLING[handling] if handling else None,
                validity_time_s=cfg.validity_time_s or validity_time_s,
                session_failover=cfg.cc_session_failover,
            ),
            final_usage=final_usage,
        )
        self.late_answers = 0
        self.server = DiameterServer(
            self.ident,
            peer_table(cfg),
            self._timed,
            bind=cfg.bind,
            port=cfg.port,
            watchdog_s=cfg.watchdog_s,
            max_message_bytes=cfg.max_message_bytes,
            duplicate_ttl_s=cfg.duplicate_cache_ttl_s,
            duplicate_entries=cfg.duplicate_cache_size,
            reuse_port=reuse_port,
        )
        self.server.on_open = self._peer_opened
        self.credit = credit
        self.send = send
        self.peer_restarts = 0
        self.initiated = ServerInitiated(
            self.server, timeout_s=cfg.request_timeout_s, retries=cfg.request_retries
        )

    async def _timed(self, msg: dc.Message, peer: Peer) -> bytes:
        started = time.monotonic()
        data = await self.app.handle(msg, peer)
        elapsed_s = time.monotonic() - started
        if elapsed_s > self.cfg.answer_within_s:
            # The client's Tx (RFC 4006 §13) is near: it may fail over or apply CCFH.
            self.late_answers += 1
            log.warning("CCR from %s answered in %.2f s (Tx is near)", peer.name, elapsed_s)
        return data

    async def _peer_opened(self, peer: Peer, origin_state_id: int) -> None:
        """RFC 6733 §8.16: a peer whose Origin-State-Id changed has restarted and lost
        its sessions: they are closed now (CDR status gateway_restart), as an
        Accounting-On closes a RADIUS gateway's, instead of being reaped later."""
        if not origin_state_id:
            return  # the peer does not say: nothing to compare
        try:
            (old,) = await self.send([("GETSET", f"dia:osi:{peer.name}", origin_state_id)])
            if old is None or int(old) == origin_state_id:
                return
            self.peer_restarts += 1
            log.warning("diameter peer %s restarted (Origin-State-Id %s -> %d)",
                        peer.name, old.decode() if isinstance(old, bytes) else old,
                        origin_state_id)  # fmt: skip
            await self.credit.gateway_restarted(peer.origin_host, peer.name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("restart check of diameter peer %s failed", peer.name)

    @property
    def port(self) -> int:
        return self.server.port

    def owns(self, ref: SessionRef) -> bool:
        """Sessions of a configured Diameter peer (their cuts are ASRs)."""
        return self.initiated.owns(ref)

    async def start(self) -> None:
        await self.server.start()

    async def stop(self, grace_s: float = 2.0) -> None:
        await self.server.stop(grace_s)

    def counters(self) -> dict[str, Any]:
        """What this process's Diameter frontend saw and sent."""
        return {
            "port": self.server.port,
            "peers_open": sum(
                1 for link in self.server.links if link.conn is not None and link.conn.peer
            ),
            "frontend": self.server.counters.as_dict(),
            "initiated": self.initiated.counters.as_dict(),
            "cc_errors": self.app.errors,
            "cc_malformed": self.app.malformed,
            "cc_unrated": self.app.unrated,
            "late_answers": self.late_answers,
            "peer_restarts": self.peer_restarts,
        }


async def wait_closed(frontend: DiameterFrontend, timeout_s: float) -> None:
    """Until no peer link is left (tests, shutdown checks)."""
    deadline = time.monotonic() + timeout_s
    while frontend.server.links and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
