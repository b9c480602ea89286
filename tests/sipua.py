"""A minimal SIP user agent over UDP on 127.0.0.1, for end-to-end tests through a proxy.

Enough of RFC 3261 to place and answer real calls through Kamailio: INVITE with an
SDP offer, 100/180/200, ACK (end to end for 2xx, hop by hop for failures), BYE from
either side, loose routing with the Record-Route set, retransmissions of INVITE and of
the 2xx over UDP (timer T1 doubling). No DNS, no STUN: every address is an IP literal.
The caller side (`SipPhone.call`) and the answering side (`SipPhone` with an
`answer` policy) are the same class, so a test runs two of them.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, cast

T1_S = 0.5
CRLF = "\r\n"


@dataclass
class SipMessage:
    """A parsed SIP request or response (headers keep their order, names lower-cased)."""

    first_line: str
    headers: list[tuple[str, str]]
    body: str = ""

    @property
    def is_request(self) -> bool:
        return not self.first_line.startswith("SIP/2.0 ")

    @property
    def method(self) -> str:
        return self.first_line.split(" ", 1)[0] if self.is_request else self.cseq_method

    @property
    def status(self) -> int:
        return 0 if self.is_request else int(self.first_line.split(" ", 2)[1])

    @property
    def reason(self) -> str:
        parts = self.first_line.split(" ", 2)
        return parts[2] if not self.is_request and len(parts) > 2 else ""

    @property
    def request_uri(self) -> str:
        return self.first_line.split(" ")[1]

    def get(self, name: str) -> str:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return ""

    def get_all(self, name: str) -> list[str]:
        found: list[str] = []
        for key, value in self.headers:
            if key == name.lower():
                found.extend(part.strip() for part in _split_commas(value))
        return found

    @property
    def call_id(self) -> str:
        return self.get("call-id")

    @property
    def cseq_method(self) -> str:
        return self.get("cseq").split()[-1]

    @property
    def cseq(self) -> int:
        return int(self.get("cseq").split()[0])

    @property
    def branch(self) -> str:
        return _param(self.get_all("via")[0], "branch")

    def tag(self, name: str) -> str:
        return _param(self.get(name), "tag")

    def encode(self) -> bytes:
        lines = [self.first_line]
        lines += [f"{_canonical(k)}: {v}" for k, v in self.headers if k != "content-length"]
        lines.append(f"Content-Length: {len(self.body.encode())}")
        return (CRLF.join(lines) + CRLF + CRLF + self.body).encode()


def parse(data: bytes) -> SipMessage:
    """Parse one datagram; raises ValueError on something that is not SIP."""
    text = data.decode("utf-8", errors="replace")
    head, _, body = text.partition(CRLF + CRLF)
    lines = head.split(CRLF)
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded header line
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"bad header line {line!r}")
        headers.append((_expand(name.strip().lower()), value.strip()))
    if not lines[0] or len(lines[0].split(" ")) < 3:
        raise ValueError(f"bad first line {lines[0]!r}")
    return SipMessage(lines[0], headers, body)


_COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
}


def _expand(name: str) -> str:
    return _COMPACT.get(name, name)


def _canonical(name: str) -> str:
    special = {"call-id": "Call-ID", "cseq": "CSeq", "www-authenticate": "WWW-Authenticate"}
    return special.get(name, "-".join(p.capitalize() for p in name.split("-")))


def _split_commas(value: str) -> list[str]:
    """Split a header value on commas outside <...> and quotes (Via, Record-Route)."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(value):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        elif not quoted and depth == 0 and ch == ",":
            parts.append(value[start:i])
            start = i + 1
    parts.append(value[start:])
    return parts


def _param(value: str, name: str) -> str:
    tail = value.rsplit(">", 1)[-1]
    for part in tail.split(";")[1:]:
        key, _, val = part.strip().partition("=")
        if key.lower() == name:
            return val
    return ""


def _uri_of(value: str) -> str:
    """The URI inside a name-addr (`"x" <sip:...>;p`) or an addr-spec."""
    if "<" in value:
        return value.split("<", 1)[1].split(">", 1)[0]
    return value.split(";", 1)[0].strip()


def _hostport(uri: str) -> tuple[str, int]:
    """127.0.0.1:5060 of sip:user@127.0.0.1:5060;lr (IP literals only, no DNS)."""
    rest = uri.split(":", 1)[1]
    rest = rest.split("@", 1)[-1].split(";", 1)[0].split("?", 1)[0]
    host, _, port = rest.partition(":")
    return host, int(port or 5060)


def _token() -> str:
    return os.urandom(6).hex()


SDP = (
    "v=0\r\no=- {sess} {sess} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
HOLD = "a=sendonly\r\n"  # RFC 3264 §8.4: a re-offer that puts the far end on hold


@dataclass
class Dialog:
    """One call as this phone sees it; times are time.monotonic() seconds."""

    call_id: str
    local_tag: str
    remote_tag: str = ""
    remote_target: str = ""
    route_set: list[str] = field(default_factory=list)
    local_uri: str = ""
    remote_uri: str = ""
    local_cseq: int = 1
    final_status: int = 0
    final_reason: str = ""
    final_response: SipMessage | None = None
    answered_at: float = 0.0
    ended_at: float = 0.0
    ended_by: str = ""  # "local" | "remote"
    bye_headers: list[tuple[str, str]] = field(default_factory=list)
    invite: SipMessage | None = None  # the INVITE this phone sent or answered (CANCEL)
    proxy: tuple[str, int] = ("127.0.0.1", 0)  # where a UAC sent its INVITE
    last_bye: SipMessage | None = None  # the BYE this phone sent (to retransmit it)
    cancelled: bool = False  # a UAS got CANCEL before its final answer
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)  # final answer received
    ended: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class Answer:
    """How the answering phone treats an INVITE: ring for ring_s, then `status`."""

    status: int = 200
    reason: str = "OK"
    ring_s: float = 0.0


AnswerPolicy = Callable[[SipMessage], Answer]


class SipPhone(asyncio.DatagramProtocol):
    """One UDP SIP endpoint on 127.0.0.1; `open()` binds a free port."""

    def __init__(self, user: str, answer: AnswerPolicy | None = None) -> None:
        self.user = user
        self.answer = answer or (lambda _msg: Answer())
        self.bye_answer: tuple[int, str] = (200, "OK")  # how this phone answers a BYE
        self.transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.dialogs: dict[str, Dialog] = {}
        self.received: list[SipMessage] = []
        self._waiters: dict[tuple[str, str, int], asyncio.Queue[SipMessage]] = {}
        self._uas_pending: set[str] = set()  # call-ids of 2xx waiting for their ACK
        self._tasks: set[asyncio.Task[None]] = set()
        self._cseq = itertools.count(1)
        self.updates = 0  # UPDATEs answered 200 (session refreshes)
        # A CANCEL crosses this phone's answer (its 2xx already sent when the CANCEL
        # arrives): the CANCEL is answered 200 and the INVITE still 2xx (RFC 3261 §9.2).
        self.answer_crosses_cancel = False
        # The dialogs of other branches' 2xx to a forked INVITE, by their To tag: ACKed
        # and ended at once with a BYE (RFC 3261 §13.2.2.4).
        self.forked: dict[str, Dialog] = {}

    @classmethod
    async def open(cls, user: str, answer: AnswerPolicy | None = None) -> SipPhone:
        phone = cls(user, answer)
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: phone, local_addr=("127.0.0.1", 0))
        return phone

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.port = transport.get_extra_info("sockname")[1]

    @property
    def contact(self) -> str:
        return f"<sip:{self.user}@127.0.0.1:{self.port}>"

    def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.transport is not None:
            self.transport.close()

    # -- wire ------------------------------------------------------------------------

    def _send(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        self.transport.sendto(msg.encode(), addr)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = parse(data)
        except ValueError:
            return
        self.received.append(msg)
        if msg.is_request:
            self._on_request(msg, addr)
        else:
            key = (msg.call_id, msg.cseq_method, msg.cseq)
            inbox = self._waiters.get(key)
            if inbox is not None:
                inbox.put_nowait(msg)
            elif msg.status >= 200 and msg.cseq_method == "INVITE":
                self._on_late_invite_response(msg)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- UAC: placing a call -----------------------------------------------------------

    async def call(
        self,
        proxy: tuple[str, int],
        callee: str,
        *,
        from_user: str = "",
        headers: list[tuple[str, str]] | None = None,
        call_id: str = "",
        retry_of: Dialog | None = None,
    ) -> Dialog:
        """Send an INVITE through `proxy` (From: `from_user`, else this phone's user) and
        return its Dialog at once; `dialog.finished` is set on the final answer.
        `call_id`: this Call-ID rather than a new one (two phones may pick the same).
        `retry_of`: a failed INVITE this one retries (RFC 3261 §8.1.3.5: its Call-ID
        and From tag, the next CSeq)."""
        dialog = Dialog(call_id=call_id or f"{_token()}@127.0.0.1", local_tag=_token())
        if retry_of is not None:
            dialog.call_id, dialog.local_tag = retry_of.call_id, retry_of.local_tag
            dialog.local_cseq = retry_of.local_cseq + 1
        dialog.proxy = proxy
        dialog.local_uri = f"sip:{from_user or self.user}@127.0.0.1"
        dialog.remote_uri = f"sip:{callee}@{proxy[0]}:{proxy[1]}"
        self.dialogs[dialog.call_id] = dialog
        invite = self._request(dialog, "INVITE", dialog.remote_uri, extra=headers or [])
        invite.headers.append(("content-type", "application/sdp"))
        invite.body = SDP.format(sess=int(time.time()), port=self.port + 2)
        dialog.invite = invite
        self._spawn(self._run_invite(dialog, invite, proxy))
        return dialog

    async def cancel(self, dialog: Dialog) -> SipMessage | None:
        """CANCEL a ringing INVITE (RFC 3261 §9.1: its Request-URI, Call-ID, From, To,
        CSeq number, Route and top Via); returns the CANCEL's final response. The
        INVITE's own final answer (487) ends `dialog`."""
        invite = dialog.invite
        assert invite is not None
        names = ("via", "from", "to", "call-id", "route")
        headers = [(k, v) for k, v in invite.headers if k in names][:5]
        headers.append(("cseq", f"{invite.cseq} CANCEL"))
        headers.append(("max-forwards", "70"))
        cancel = SipMessage(f"CANCEL {invite.request_uri} SIP/2.0", headers)
        return await self._transact(cancel, dialog.proxy)

    async def reinvite(self, dialog: Dialog, *, hold: bool = False) -> SipMessage | None:
        """A re-INVITE in the dialog (a session refresh, RFC 4028; with ``hold`` an offer
        of sendonly media, RFC 3264 §8.4); ACKed on a 2xx. Returns its final response."""
        dialog.local_cseq += 1
        invite = self._request(dialog, "INVITE", dialog.remote_target, extra=[])
        invite.headers.append(("content-type", "application/sdp"))
        invite.body = SDP.format(sess=int(time.time()) + dialog.local_cseq, port=self.port + 2)
        if hold:
            invite.body += HOLD
        hop = self._next_hop(dialog, dialog.proxy)
        reply = await self._transact(invite, hop, invite=True)
        if reply is not None and reply.status < 300:
            ack = self._request(dialog, "ACK", dialog.remote_target, extra=[])
            self._send(ack, hop)
        return reply

    async def update(self, dialog: Dialog) -> SipMessage | None:
        """An UPDATE in the dialog without a body: an RFC 4028 session refresh (§9, the
        refresher's UPDATE). Returns its final response."""
        dialog.local_cseq += 1
        update = self._request(dialog, "UPDATE", dialog.remote_target, extra=[])
        return await self._transact(update, self._next_hop(dialog, dialog.proxy))

    def _request(
        self, dialog: Dialog, method: str, ruri: str, *, extra: list[tuple[str, str]]
    ) -> SipMessage:
        to = f"<{dialog.remote_uri}>" + (f";tag={dialog.remote_tag}" if dialog.remote_tag else "")
        headers = [
            ("via", f"SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{_token()};rport"),
            ("max-forwards", "70"),
            ("from", f"<{dialog.local_uri}>;tag={dialog.local_tag}"),
            ("to", to),
            ("call-id", dialog.call_id),
            ("cseq", f"{dialog.local_cseq} {method}"),
        ]
        headers += [("route", r) for r in dialog.route_set]
        if method == "INVITE":
            headers.append(("contact", self.contact))
        headers += [(k.lower(), v) for k, v in extra]
        return SipMessage(f"{method} {ruri} SIP/2.0", headers)

    def _next_hop(self, dialog: Dialog, fallback: tuple[str, int]) -> tuple[str, int]:
        if dialog.route_set:
            return _hostport(_uri_of(dialog.route_set[0]))
        if dialog.remote_target:
            return _hostport(dialog.remote_target)
        return fallback

    async def _transact(
        self, msg: SipMessage, addr: tuple[str, int], *, invite: bool = False
    ) -> SipMessage | None:
        """Send, retransmit on T1 doubling until a response (provisional stops it for
        INVITE), return the final response or None after timer B/F (32 s). Responses
        are queued while the transaction runs: a proxy's 100 and the far end's 200 can
        arrive back to back, before this task reads the first."""
        loop = asyncio.get_running_loop()
        key = (msg.call_id, msg.cseq_method, msg.cseq)
        deadline = loop.time() + 64 * T1_S
        interval = T1_S
        retransmit = True
        inbox: asyncio.Queue[SipMessage] = asyncio.Queue()
        self._waiters[key] = inbox
        try:
            while loop.time() < deadline:
                if retransmit:
                    self._send(msg, addr)
                try:
                    reply = await asyncio.wait_for(
                        inbox.get(), interval if retransmit else deadline - loop.time()
                    )
                except TimeoutError:
                    interval = min(interval * 2, 4.0)
                    continue
                if reply.status >= 200:
                    return reply
                if invite:
                    retransmit = False  # RFC 3261 §17.1.1.2: a provisional stops timer A
            return None
        finally:
            self._waiters.pop(key, None)

    async def _run_invite(self, dialog: Dialog, invite: SipMessage, proxy: tuple[str, int]) -> None:
        reply = await self._transact(invite, proxy, invite=True)
        if reply is None:
            dialog.final_status, dialog.final_reason = 408, "no answer (timer B)"
            dialog.finished.set()
            dialog.ended.set()
            return
        dialog.final_status, dialog.final_reason = reply.status, reply.reason
        dialog.final_response = reply
        if reply.status >= 300:
            # RFC 3261 §17.1.1.3: ACK for a failure is hop by hop, same branch as the INVITE.
            self._send(self._failure_ack(invite, reply), proxy)
            dialog.finished.set()
            dialog.ended.set()
            return
        self._confirm(dialog, reply)
        dialog.finished.set()

    def _confirm(self, dialog: Dialog, reply: SipMessage) -> None:
        dialog.answered_at = time.monotonic()
        dialog.remote_tag = reply.tag("to")
        dialog.remote_target = _uri_of(reply.get("contact"))
        dialog.route_set = list(reversed(reply.get_all("record-route")))
        self._send_ack(dialog)
        dialog.answered.set()

    def _send_ack(self, dialog: Dialog) -> None:
        ack = self._request(dialog, "ACK", dialog.remote_target, extra=[])
        self._send(ack, self._next_hop(dialog, ("127.0.0.1", 0)))

    def _on_late_invite_response(self, reply: SipMessage) -> None:
        # A retransmitted 2xx (our ACK was lost or late): ACK again (RFC 3261 §13.2.2.4).
        dialog = self.dialogs.get(reply.call_id)
        if dialog is None or reply.status >= 300 or not dialog.remote_tag:
            return
        if reply.tag("to") == dialog.remote_tag:
            self._send_ack(dialog)
            return
        # A 2xx of another branch of a forked INVITE (RFC 3261 §13.2.2.4): a dialog of
        # its own, ACKed, then ended with a BYE (this phone keeps the first one).
        extra = self.forked.get(reply.tag("to"))
        if extra is not None:
            self._send_ack(extra)  # its 2xx again
            return
        extra = Dialog(call_id=dialog.call_id, local_tag=dialog.local_tag)
        extra.local_uri, extra.remote_uri = dialog.local_uri, dialog.remote_uri
        extra.local_cseq = dialog.local_cseq
        extra.proxy = dialog.proxy
        self.forked[reply.tag("to")] = extra
        self._confirm(extra, reply)
        self._spawn(self._end_forked(extra))

    async def _end_forked(self, dialog: Dialog) -> None:
        await self.hangup(dialog)

    def _failure_ack(self, invite: SipMessage, reply: SipMessage) -> SipMessage:
        headers = [(k, v) for k, v in invite.headers if k in ("via", "from", "call-id", "route")]
        headers.insert(2, ("to", reply.get("to")))
        headers.append(("cseq", f"{invite.cseq} ACK"))
        headers.append(("max-forwards", "70"))
        return SipMessage(f"ACK {invite.request_uri} SIP/2.0", headers)

    async def hangup(self, dialog: Dialog) -> SipMessage | None:
        """Send BYE in the dialog; returns its final response."""
        dialog.local_cseq += 1
        bye = self._request(dialog, "BYE", dialog.remote_target, extra=[])
        dialog.last_bye = bye
        dialog.ended_at = time.monotonic()
        dialog.ended_by = "local"
        reply = await self._transact(bye, self._next_hop(dialog, ("127.0.0.1", 0)))
        dialog.ended.set()
        return reply

    def resend_bye(self, dialog: Dialog) -> None:
        """Send the last BYE again, byte for byte (a retransmission: its 200 was lost)."""
        assert dialog.last_bye is not None
        self._send(dialog.last_bye, self._next_hop(dialog, ("127.0.0.1", 0)))

    # -- UAS: answering ---------------------------------------------------------------

    def _on_request(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        method = msg.method
        if method == "INVITE" and not msg.tag("to"):
            self._on_invite(msg, addr)
        elif method == "INVITE":
            self._on_reinvite(msg, addr)
        elif method == "ACK":
            self._uas_pending.discard(msg.call_id)
        elif method == "BYE":
            self._on_bye(msg, addr)
        elif method == "CANCEL":
            self._on_cancel(msg, addr)
        elif method == "UPDATE":
            self._on_update(msg, addr)
        else:
            self._send(self._response(msg, 501, "Not Implemented"), addr)

    def _response(
        self, req: SipMessage, status: int, reason: str, *, to_tag: str = ""
    ) -> SipMessage:
        headers = [
            (k, v)
            for k, v in req.headers
            if k in ("via", "record-route", "from", "call-id", "cseq")
        ]
        to = req.get("to")
        if to_tag and "tag=" not in to:
            to += f";tag={to_tag}"
        headers.insert(headers.index(("call-id", req.call_id)), ("to", to))
        return SipMessage(f"SIP/2.0 {status} {reason}", headers)

    def _on_invite(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        existing = self.dialogs.get(msg.call_id)
        key = msg.call_id
        if existing is not None:
            if existing.remote_tag == msg.tag("from"):
                return  # retransmission: the 2xx is retransmitted by its own timer
            # another caller's call of the same Call-ID (its own From tag): a dialog of
            # its own, kept under Call-ID;from-tag
            key = f"{msg.call_id};{msg.tag('from')}"
            if key in self.dialogs:
                return
        dialog = Dialog(call_id=msg.call_id, local_tag=_token())
        dialog.remote_tag = msg.tag("from")
        dialog.remote_target = _uri_of(msg.get("contact"))
        dialog.route_set = msg.get_all("record-route")
        dialog.local_uri = _uri_of(msg.get("to"))
        dialog.remote_uri = _uri_of(msg.get("from"))
        dialog.local_cseq = 100
        dialog.invite = msg
        self.dialogs[key] = dialog
        self._send(self._response(msg, 100, "Trying"), addr)
        self._spawn(self._answer(dialog, msg, addr))

    async def _answer(self, dialog: Dialog, invite: SipMessage, addr: tuple[str, int]) -> None:
        policy = self.answer(invite)
        self._send(self._response(invite, 180, "Ringing", to_tag=dialog.local_tag), addr)
        if policy.ring_s:
            await asyncio.sleep(policy.ring_s)
        if dialog.cancelled:  # answered 487 by _on_cancel
            return
        final = self._response(invite, policy.status, policy.reason, to_tag=dialog.local_tag)
        dialog.final_status, dialog.final_reason = policy.status, policy.reason
        if policy.status >= 300:
            self._send(final, addr)
            dialog.finished.set()
            dialog.ended.set()
            return
        final.headers.append(("contact", self.contact))
        final.headers.append(("content-type", "application/sdp"))
        final.body = SDP.format(sess=int(time.time()), port=self.port + 2)
        dialog.answered_at = time.monotonic()
        dialog.answered.set()
        dialog.finished.set()
        self._uas_pending.add(dialog.call_id)
        interval = T1_S
        for _ in range(7):  # RFC 3261 §13.3.1.4: retransmit the 2xx until the ACK
            if dialog.call_id not in self._uas_pending:
                return
            self._send(final, addr)
            await asyncio.sleep(interval)
            interval = min(interval * 2, 4.0)

    def _dialog_of(self, msg: SipMessage) -> Dialog | None:
        """The dialog an in-dialog request (or a CANCEL) belongs to: its Call-ID and our
        tag in its To (a CANCEL has none: its From tag, the caller's)."""
        to_tag, from_tag = msg.tag("to"), msg.tag("from")
        for dialog in self.dialogs.values():
            if dialog.call_id != msg.call_id:
                continue
            if to_tag and dialog.local_tag == to_tag:
                return dialog
            if not to_tag and dialog.remote_tag == from_tag:
                return dialog
        return None

    def _on_cancel(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        """200 to the CANCEL; a ringing INVITE is then answered 487 (RFC 3261 §9.2)."""
        self._send(self._response(msg, 200, "OK"), addr)
        dialog = self._dialog_of(msg)
        if dialog is None or dialog.invite is None or dialog.finished.is_set():
            return
        if self.answer_crosses_cancel:
            return  # its 2xx is on the way already: it still answers
        dialog.cancelled = True
        dialog.final_status, dialog.final_reason = 487, "Request Terminated"
        final = self._response(dialog.invite, 487, "Request Terminated", to_tag=dialog.local_tag)
        self._send(final, addr)
        dialog.finished.set()
        dialog.ended.set()

    def _on_reinvite(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        """A re-INVITE in a dialog: 200 with an answer (481 when the dialog is unknown)."""
        dialog = self._dialog_of(msg)
        if dialog is None or dialog.ended.is_set():
            self._send(self._response(msg, 481, "Call/Transaction Does Not Exist"), addr)
            return
        ok = self._response(msg, 200, "OK")
        ok.headers.append(("contact", self.contact))
        ok.headers.append(("content-type", "application/sdp"))
        ok.body = SDP.format(sess=int(time.time()) + msg.cseq, port=self.port + 2)
        self._send(ok, addr)

    def _on_update(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        """An UPDATE in a dialog (a session refresh): 200 (481 when the dialog is unknown).
        Counted in ``updates``."""
        dialog = self._dialog_of(msg)
        if dialog is None or dialog.ended.is_set():
            self._send(self._response(msg, 481, "Call/Transaction Does Not Exist"), addr)
            return
        self.updates += 1
        ok = self._response(msg, 200, "OK")
        ok.headers.append(("contact", self.contact))
        self._send(ok, addr)

    def _on_bye(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        dialog = self._dialog_of(msg)
        if dialog is None:
            self._send(self._response(msg, 481, "Call/Transaction Does Not Exist"), addr)
            return
        if not dialog.ended.is_set():
            dialog.ended_at = time.monotonic()
            dialog.ended_by = "remote"
            dialog.bye_headers = list(msg.headers)
            dialog.ended.set()
        self._send(self._response(msg, *self.bye_answer), addr)
