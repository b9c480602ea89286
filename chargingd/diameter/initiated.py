"""Server-initiated Diameter requests: ASR when the cutter cuts, RAR on a top-up.

Implements ccapi.CallCutter for the sessions of Diameter peers (the cutter's
router sends each session to the frontend owning its client name):

- ``disconnect`` -> Abort-Session-Request (RFC 6733 §8.5). ASA 2001, or 5002
  UNKNOWN_SESSION_ID (the session is already gone there), confirms the cut, as a
  Disconnect-ACK or a NAK 503 does; anything else, or no answer, is a failure the
  cutter retries with its back-off, as for a Disconnect-Request.
- ``change_timeout`` -> Re-Auth-Request AUTHORIZE_ONLY (RFC 6733 §8.3, RFC 4006
  §5.5): the client sends a CCR-U and gets the larger grant the top-up pays for. RAA
  2002 DIAMETER_LIMITED_SUCCESS confirms it as 2001 does: RFC 4006 §5.5 says a
  client SHOULD answer 2002 ("a CCR-U follows"), 2001 when a re-authorization was
  already under way.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

from chargingd.diameter import codec as dc
from chargingd.diameter.dictionary import (
    APP_CREDIT_CONTROL,
    AUTHORIZE_ONLY,
    A,
    Cmd,
    Result,
)
from chargingd.diameter.messages import result_code
from chargingd.diameter.server import DiameterServer
from chargingd.sessions.ccapi import SessionRef
from chargingd.sessions.cutter import cut_not_sent

log = logging.getLogger("chargingd.diameter")


@dataclass
class InitiatedCounters:
    asr_sent: int = 0
    asr_confirmed: int = 0
    asr_failed: int = 0
    rar_sent: int = 0
    rar_confirmed: int = 0
    rar_failed: int = 0
    timed_out: int = 0
    unroutable: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# RAA Result-Codes that say the client re-authorizes (RFC 4006 §5.5).
_RAA_TOLD = frozenset((Result.SUCCESS, Result.LIMITED_SUCCESS))


class ServerInitiated:
    """ASR / RAR to the peer that owns a session, over its open connection."""

    def __init__(self, server: DiameterServer, *, timeout_s: float, retries: int) -> None:
        self.server = server
        self.timeout_s = timeout_s
        self.retries = retries
        self.counters = InitiatedCounters()

    def owns(self, ref: SessionRef) -> bool:
        """True for a session whose client is a configured Diameter peer."""
        return self.server.peers.by_name(ref.client) is not None

    async def disconnect(self, ref: SessionRef, reason: str) -> bool:
        """ASR; True once the peer confirmed (2001) or no longer has the session (5002)."""
        self.counters.asr_sent += 1
        answer = await self._send(Cmd.ABORT_SESSION, ref, b"")
        code = result_code(answer) if answer is not None else 0
        if code in (Result.SUCCESS, Result.UNKNOWN_SESSION_ID):
            self.counters.asr_confirmed += 1
            log.info("aborted %s at %s (%s): %d", ref.session_id, ref.gateway, reason, code)
            return True
        self.counters.asr_failed += 1
        log.warning("ASR for %s at %s not confirmed (%s)", ref.session_id, ref.gateway, code)
        return False

    async def change_timeout(self, ref: SessionRef, session_timeout_s: int) -> bool:
        """RAR: the client re-authorizes (CCR-U) and is granted what the money pays now."""
        self.counters.rar_sent += 1
        extra = dc.u32(A.RE_AUTH_REQUEST_TYPE, AUTHORIZE_ONLY)
        answer = await self._send(Cmd.RE_AUTH, ref, extra)
        if answer is not None and result_code(answer) in _RAA_TOLD:
            self.counters.rar_confirmed += 1
            return True
        self.counters.rar_failed += 1
        return False

    async def _send(self, command: int, ref: SessionRef, extra: bytes) -> dc.Message | None:
        peer = self.server.peers.by_name(ref.client)
        if peer is None:
            self.counters.unroutable += 1
            cut_not_sent()  # (a cut's attempt: nothing went out, no CCR-T confirms it)
            return None
        # RFC 6733 §8.5 / §8.3: Session-Id first, then the routing AVPs.
        body = (
            dc.utf8(A.SESSION_ID, ref.session_id)
            + dc.utf8(A.DESTINATION_REALM, peer.realm)
            + dc.utf8(A.DESTINATION_HOST, peer.origin_host)
            + dc.u32(A.AUTH_APPLICATION_ID, APP_CREDIT_CONTROL)
            + extra
        )
        wait_s = self.timeout_s
        sent = 0  # requests written to a connection
        for _ in range(self.retries + 1):
            link = self.server.link_of(peer.name)
            if link is None:
                self.counters.unroutable += 1
                log.warning("no open Diameter connection to %s for %s", peer.name, ref.session_id)
                if sent == 0:
                    cut_not_sent()
                return None
            sent += 1
            try:
                return await link.request(command, APP_CREDIT_CONTROL, body, wait_s)
            except TimeoutError:
                self.counters.timed_out += 1
                wait_s *= 2  # a loaded peer gets more time
            except ConnectionError:
                continue  # the link dropped: try the peer's other (or next) connection
        return None
