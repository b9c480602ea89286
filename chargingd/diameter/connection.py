"""One Diameter peer connection as a state machine, sans I/O (RFC 6733 §5).

``receive(bytes)`` returns what to do: bytes to send, application requests to
work on, answers to our own requests, whether to close. The base protocol is
answered here: CER/CEA (peer table, application negotiation, Origin-State-Id),
DWR/DWA, DPR/DPA; malformed messages, unknown commands, unsupported M-bit AVPs
and anything before CER get their error answer (or a close) here too, so the
Credit-Control layer only ever sees well-formed requests of an open peer.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, field, fields

from chargingd.diameter import codec as dc
from chargingd.diameter.dictionary import (
    APP_CREDIT_CONTROL,
    APP_RELAY,
    CCR_TOP_CHARGING,
    VENDOR_3GPP,
    A,
    Cmd,
    Result,
    is_protocol_error,
)
from chargingd.diameter.messages import (
    IdAllocator,
    Identity,
    answer,
    command_ids,
    error_answer,
    request,
    text_of,
    unsupported_mandatory,
)
from chargingd.diameter.peers import Peer, PeerTable

log = logging.getLogger("chargingd.diameter")


class State(enum.Enum):
    WAIT_CER = "wait_cer"  # connection accepted, no CER yet (RFC 6733 §5.6: Wait-CER)
    OPEN = "open"  # R-Open
    CLOSING = "closing"  # DPR sent or received
    CLOSED = "closed"


class IllegalTransition(RuntimeError):
    """A state change the RFC 6733 §5.6 machine does not have."""


_TRANSITIONS = {
    State.WAIT_CER: {State.OPEN, State.CLOSED},
    State.OPEN: {State.CLOSING, State.CLOSED},
    State.CLOSING: {State.CLOSED},
    State.CLOSED: set(),
}

# Requests an open peer may send us, by command: the application they belong to.
_APP_REQUESTS = {Cmd.CREDIT_CONTROL: APP_CREDIT_CONTROL}
# Answers we accept (to requests we sent).
_OUR_REQUESTS = frozenset(
    {Cmd.DEVICE_WATCHDOG, Cmd.DISCONNECT_PEER, Cmd.ABORT_SESSION, Cmd.RE_AUTH}
)
NO_INBAND_SECURITY = 0


@dataclass
class Counters:
    """What the Diameter frontend saw; every refused message is counted under one reason."""

    connections: int = 0
    received: int = 0
    malformed: int = 0
    framing_lost: int = 0
    unknown_peer: int = 0
    no_common_application: int = 0
    before_cer: int = 0
    unsupported_command: int = 0
    unsupported_avp: int = 0
    watchdogs: int = 0
    disconnects: int = 0
    duplicates: int = 0
    stray_answers: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name, for monitoring."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Outcome:
    """What the I/O layer must do after ``receive``: in this order."""

    send: list[bytes] = field(default_factory=list)
    requests: list[dc.Message] = field(default_factory=list)
    answers: list[dc.Message] = field(default_factory=list)
    close: bool = False


class Connection:
    """The state of one TCP connection from a peer (the peer is known after CER)."""

    def __init__(
        self,
        ident: Identity,
        peers: PeerTable,
        remote_ip: str,
        counters: Counters,
        *,
        max_length: int = 65536,
    ) -> None:
        self.ident = ident
        self.peers = peers
        self.remote_ip = remote_ip
        self.counters = counters
        self.state = State.WAIT_CER
        self.peer: Peer | None = None
        self.peer_origin_host = ""
        self.peer_origin_state_id = 0
        self.ids = IdAllocator()
        self._framer = dc.Framer(max_length)
        # The Vendor-Id the peer named Credit-Control under (None: the plain form).
        self.vsai_vendor: int | None = None

    def _move(self, new: State) -> None:
        if new not in _TRANSITIONS[self.state]:
            raise IllegalTransition(f"{self.state.value} -> {new.value}")
        self.state = new

    def close(self) -> None:
        """The transport closed (either side)."""
        if self.state is not State.CLOSED:
            self._move(State.CLOSED)

    # -- input -------------------------------------------------------------------
    def receive(self, data: bytes) -> Outcome:
        """Bytes from the peer: answer what the base protocol answers, hand on the rest."""
        out = Outcome()
        if self.state is State.CLOSED:
            return out
        try:
            frames = self._framer.feed(data)
        except dc.Malformed as exc:
            # RFC 6733 §3: the length frames the stream; a wrong one cannot be recovered.
            self.counters.framing_lost += 1
            log.warning("diameter peer %s: %s; closing", self.remote_ip, exc)
            out.close = True
            return out
        for frame in frames:
            self.counters.received += 1
            self._message(frame, out)
            if out.close:
                break
        return out

    def _message(self, frame: bytes, out: Outcome) -> None:
        try:
            msg = dc.decode(frame)
        except dc.Malformed as exc:
            self.counters.malformed += 1
            self._malformed(frame, exc, out)
            return
        if self.state is State.WAIT_CER:
            self._wait_cer(msg, out)
        elif msg.is_request:
            self._request(msg, out)
        elif msg.command in _OUR_REQUESTS:
            out.answers.append(msg)
        else:
            self.counters.stray_answers += 1

    def _malformed(self, frame: bytes, exc: dc.Malformed, out: Outcome) -> None:
        head = _header_of(frame)
        if exc.fatal or head is None or not head.is_request or self.state is State.WAIT_CER:
            out.close = True  # no answer can be addressed (or no peer yet): close
            return
        out.send.append(
            error_answer(
                head, self.ident, exc.result_code, failed_avp=exc.failed_avp, message=str(exc)[:120]
            )
        )

    def _wait_cer(self, msg: dc.Message, out: Outcome) -> None:
        if msg.command == Cmd.CAPABILITIES_EXCHANGE and msg.is_request:
            self._cer(msg, out)
            return
        # RFC 6733 §5.3: nothing but a CER before capabilities are exchanged.
        self.counters.before_cer += 1
        if msg.is_request:
            out.send.append(
                error_answer(
                    msg, self.ident, Result.UNKNOWN_PEER, message="no CER on this connection"
                )
            )
        out.close = True
        self._move(State.CLOSED)

    def _request(self, msg: dc.Message, out: Outcome) -> None:
        command = msg.command
        if command == Cmd.DEVICE_WATCHDOG:
            self.counters.watchdogs += 1
            out.send.append(self._dwa(msg))
        elif command == Cmd.DISCONNECT_PEER:
            self.counters.disconnects += 1
            out.send.append(
                answer(msg, dc.u32(A.RESULT_CODE, Result.SUCCESS) + self.ident.origin())
            )
            self._move(State.CLOSING)
            out.close = True  # RFC 6733 §5.4: the DPR's sender expects the transport to close
        elif command == Cmd.CAPABILITIES_EXCHANGE:
            # A second CER on an open connection (RFC 6733 §5.6.4: no election here).
            out.send.append(
                error_answer(
                    msg,
                    self.ident,
                    Result.UNABLE_TO_COMPLY,
                    message="capabilities already exchanged",
                )
            )
        elif self.state is State.CLOSING:
            out.send.append(error_answer(msg, self.ident, Result.TOO_BUSY))
        else:
            self._app_request(msg, out)

    def _app_request(self, msg: dc.Message, out: Outcome) -> None:
        app = _APP_REQUESTS.get(msg.command)  # type: ignore[call-overload]
        if app is None:
            self.counters.unsupported_command += 1
            out.send.append(error_answer(msg, self.ident, Result.COMMAND_UNSUPPORTED))
            return
        if msg.app_id != app:
            self.counters.unsupported_command += 1
            out.send.append(error_answer(msg, self.ident, Result.APPLICATION_UNSUPPORTED))
            return
        try:
            unknown = unsupported_mandatory(msg.avps, also=CCR_TOP_CHARGING)
        except dc.Malformed as exc:
            self.counters.malformed += 1
            ids = b"" if is_protocol_error(exc.result_code) else command_ids(msg)
            out.send.append(
                error_answer(msg, self.ident, exc.result_code, failed_avp=exc.failed_avp, extra=ids)
            )
            return
        if unknown is not None:
            self.counters.unsupported_avp += 1
            out.send.append(
                error_answer(
                    msg,
                    self.ident,
                    Result.AVP_UNSUPPORTED,
                    failed_avp=unknown.raw(),
                    extra=command_ids(msg),
                )
            )
            return
        out.requests.append(msg)

    # -- capabilities exchange -----------------------------------------------------
    def _cer(self, msg: dc.Message, out: Outcome) -> None:
        try:
            origin_host = text_of(msg, A.ORIGIN_HOST)
            apps, vsai_vendor = _applications(msg)
            security = [a.u32() for a in msg.all(A.INBAND_SECURITY_ID)]
            state_id = msg.get(A.ORIGIN_STATE_ID)
            self.peer_origin_state_id = state_id.u32() if state_id is not None else 0
        except dc.Malformed as exc:
            out.send.append(
                error_answer(msg, self.ident, exc.result_code, failed_avp=exc.failed_avp)
            )
            out.close = True
            self._move(State.CLOSED)
            return
        missing = next((c for c in (A.ORIGIN_HOST, A.ORIGIN_REALM) if msg.get(c) is None), None)
        if missing is not None:
            # RFC 6733 §7.1.5: 5005 naming the AVP, not a 3010 that blames the peer table.
            self.counters.malformed += 1
            failed = dc.grouped(A.FAILED_AVP, dc.utf8(missing, ""))
            out.send.append(self._cea(msg, Result.MISSING_AVP, vsai_vendor, failed))
            out.close = True
            self._move(State.CLOSED)
            return
        code = self._cer_result(origin_host, apps, security)
        if code != Result.SUCCESS:
            out.send.append(self._cea(msg, code, vsai_vendor))
            out.close = True
            self._move(State.CLOSED)
            return
        self.peer_origin_host = origin_host
        self.vsai_vendor = vsai_vendor
        out.send.append(self._cea(msg, Result.SUCCESS, vsai_vendor))
        self._move(State.OPEN)
        log.info(
            "diameter peer %s (%s) open from %s",
            self.peer.name if self.peer else "?",
            origin_host,
            self.remote_ip,
        )

    def _cer_result(self, origin_host: str, apps: set[int], security: list[int]) -> int:
        self.peer = self.peers.admit(origin_host, self.remote_ip)
        if self.peer is None:
            self.counters.unknown_peer += 1
            log.warning("CER from unknown peer %r at %s refused", origin_host, self.remote_ip)
            return Result.UNKNOWN_PEER
        if APP_CREDIT_CONTROL not in apps and APP_RELAY not in apps:
            self.counters.no_common_application += 1
            log.warning("CER from %s names no Credit-Control application: %s", origin_host, apps)
            return Result.NO_COMMON_APPLICATION
        if security and NO_INBAND_SECURITY not in security:
            return 5017  # DIAMETER_NO_COMMON_SECURITY: TLS is not offered here
        return Result.SUCCESS

    def _cea(
        self, cer: dc.Message, code: int, vsai_vendor: int | None, failed: bytes = b""
    ) -> bytes:
        ident = self.ident
        parts = [dc.u32(A.RESULT_CODE, code), ident.origin()]
        parts += [dc.address(A.HOST_IP_ADDRESS, ip) for ip in ident.host_ip_addresses]
        parts += [
            dc.u32(A.VENDOR_ID, ident.vendor_id),
            dc.utf8(A.PRODUCT_NAME, ident.product_name, flags=0),
            dc.u32(A.ORIGIN_STATE_ID, ident.origin_state_id),
            dc.u32(A.SUPPORTED_VENDOR_ID, VENDOR_3GPP),
        ]
        if vsai_vendor is not None:
            # Echo the form the peer used: some clients look only inside it.
            parts.append(
                dc.grouped(
                    A.VENDOR_SPECIFIC_APPLICATION_ID,
                    dc.u32(A.VENDOR_ID, vsai_vendor),
                    dc.u32(A.AUTH_APPLICATION_ID, APP_CREDIT_CONTROL),
                )
            )
        else:
            parts.append(dc.u32(A.AUTH_APPLICATION_ID, APP_CREDIT_CONTROL))
        parts.append(dc.u32(A.FIRMWARE_REVISION, ident.firmware_revision, flags=0))
        parts.append(failed)
        return answer(cer, b"".join(parts), error=code in (Result.UNKNOWN_PEER,))

    def _dwa(self, dwr: dc.Message) -> bytes:
        body = (
            dc.u32(A.RESULT_CODE, Result.SUCCESS)
            + self.ident.origin()
            + dc.u32(A.ORIGIN_STATE_ID, self.ident.origin_state_id)
        )
        return answer(dwr, body)

    # -- our requests ----------------------------------------------------------------
    def make_request(self, command: int, app_id: int, body: bytes) -> tuple[int, bytes]:
        """(Hop-by-Hop id, bytes) of a request of ours; Origin-Host/Realm are added."""
        hbh = self.ids.next_hop_by_hop()
        proxiable = command not in (Cmd.DEVICE_WATCHDOG, Cmd.DISCONNECT_PEER)
        data = request(
            command,
            app_id,
            hbh,
            self.ids.next_end_to_end(),
            body + self.ident.origin(),
            proxiable=proxiable,
        )
        return hbh, data

    def watchdog(self) -> tuple[int, bytes]:
        """A DWR (RFC 3539 §3.4.1: sent when the connection has been idle for Tw)."""
        return self.make_request(
            Cmd.DEVICE_WATCHDOG, 0, dc.u32(A.ORIGIN_STATE_ID, self.ident.origin_state_id)
        )

    def disconnect(self, cause: int) -> tuple[int, bytes]:
        """A DPR (RFC 6733 §5.4); the connection goes CLOSING."""
        if self.state is State.OPEN:
            self._move(State.CLOSING)
        return self.make_request(Cmd.DISCONNECT_PEER, 0, dc.u32(A.DISCONNECT_CAUSE, cause))


def _applications(cer: dc.Message) -> tuple[set[int], int | None]:
    """Auth-Application-Ids given plainly or inside Vendor-Specific-Application-Id
    (RFC 6733 §6.11), and the Vendor-Id of the group that named Credit-Control
    (None: Credit-Control was not named inside a group)."""
    apps = {a.u32() for a in cer.all(A.AUTH_APPLICATION_ID)}
    apps |= {a.u32() for a in cer.all(A.ACCT_APPLICATION_ID) if a.u32() == APP_RELAY}
    vendor: int | None = None
    for group in cer.all(A.VENDOR_SPECIFIC_APPLICATION_ID):
        inner = group.group()
        ids = {a.u32() for a in inner if a.code == A.AUTH_APPLICATION_ID and a.vendor == 0}
        if APP_CREDIT_CONTROL in ids and vendor is None:
            vid = dc.find(inner, A.VENDOR_ID)
            vendor = vid.u32() if vid is not None else 0
        apps |= ids
    return apps, vendor


def _header_of(frame: bytes) -> dc.Message | None:
    """The header fields of a frame whose AVPs did not decode (to address an answer)."""
    if len(frame) < dc.HEADER_LEN:
        return None
    flags = frame[4]
    return dc.Message(
        command=int.from_bytes(frame[5:8], "big"),
        flags=flags & ~dc.FLAG_E,
        app_id=int.from_bytes(frame[8:12], "big"),
        hop_by_hop=int.from_bytes(frame[12:16], "big"),
        end_to_end=int.from_bytes(frame[16:20], "big"),
    )
