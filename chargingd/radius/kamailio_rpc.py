"""Kamailio cut backend: end a call through Kamailio's dialog module over JSON-RPC.

Implements ccapi.CallCutter for the RADIUS clients with ``cut_backend =
"kamailio_jsonrpc"``: Kamailio has no RFC 5176 receiver, but its ``jsonrpcs`` module
(HTTP transport through ``xhttp``) answers JSON-RPC 2.0 POSTs at ``jsonrpc_url``. A cut
is two calls (docs/kamailio.md "Cutting a call from outside"):

1. ``dlg.list_match ["callid", "eq", CALL-ID]``: the dialogs of the call (the
   session id is Kamailio's Call-ID); 404 ``Not found``: the call is gone already.
2. ``dlg.end_dlg [h_entry, h_id]`` for each: ``{}`` once Kamailio sent BYE both ways
   (its ``tm:local-request`` route accounts the Stop); 404 ``Dialog not found``: gone.
   The cut attempt's time is stamped anew just before (``cut_going_out``): the Stop
   comes before this answer, and is the cut's when it ends within the tolerance of it.

Gone counts as confirmed (what a Disconnect-NAK 503 means in RFC 5176). Anything else
(no connection, a timeout, an HTTP or JSON-RPC error, a dialog not yet confirmed) is
unconfirmed: the exchange is retried here with doubling waits (as the RFC 5176 client
retransmits), then the cutter retries the cut with its back-off. Every outcome is
counted. There is no CoA: ``change_timeout`` answers False.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, fields
from typing import Any

import aiohttp

from chargingd.radius.clients import ClientTable, RadiusClient
from chargingd.sessions.ccapi import SessionRef
from chargingd.sessions.cutter import cut_going_out, cut_not_sent

log = logging.getLogger("chargingd.aaa.kamailio")

KAMAILIO_JSONRPC = "kamailio_jsonrpc"
CONFIRMED_STATE = 4  # dlg state: confirmed (answered, ACKed)
GONE_STATE = 5  # dlg state: deleted


@dataclass
class RpcCounters:
    sent: int = 0  # cut exchanges started
    retried: int = 0  # requests sent again after a transport failure
    ended: int = 0  # dlg.end_dlg answered {}: Kamailio sent the BYEs
    not_found: int = 0  # no such dialog: the call had ended (confirmed)
    errors: int = 0  # an HTTP or JSON-RPC error answer (unconfirmed)
    timed_out: int = 0  # no answer after the retries (unconfirmed)
    unroutable: int = 0  # the client has no JSON-RPC URL

    def as_dict(self) -> dict[str, int]:
        """The counters by name, for monitoring."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class RpcError(Exception):
    """An error answer: the HTTP status (or the JSON-RPC error code) and its message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


class RpcUnreachable(Exception):
    """No answer: connection refused or reset, or a timeout, after the retries."""


class KamailioRpcCutter:
    """Cuts calls of kamailio_jsonrpc clients; ``start()`` before use, ``close()`` after."""

    def __init__(self, clients: ClientTable, *, timeout_s: float = 1.0, retries: int = 3) -> None:
        self.clients = clients
        self.counters = RpcCounters()
        self._timeout_s = timeout_s
        self._retries = retries
        self._session: aiohttp.ClientSession | None = None
        self._next_id = 0

    async def start(self) -> None:
        # No proxy from the environment: the URL is an IP on the switch's network.
        self._session = aiohttp.ClientSession(trust_env=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def owns(self, ref: SessionRef) -> bool:
        """The sessions of clients whose cut backend is Kamailio's JSON-RPC."""
        client = self.clients.by_name(ref.client)
        return client is not None and client.cut_backend == KAMAILIO_JSONRPC

    async def disconnect(self, ref: SessionRef, reason: str) -> bool:
        """End the call's dialog; True once Kamailio ended it or knows it no more."""
        client = self.clients.by_name(ref.client)
        if client is None or not client.jsonrpc_url:
            self.counters.unroutable += 1
            log.warning("no JSON-RPC route to client %r for %s", ref.client, ref.session_id)
            cut_not_sent()
            return False
        self.counters.sent += 1
        call_id = ref.nas_session_id or ref.session_id
        try:
            ended = await self._end_call(client, call_id)
        except RpcUnreachable as exc:
            self.counters.timed_out += 1
            log.warning("cut of %s: Kamailio at %s did not answer (%s)", call_id, _url(client), exc)
            return False
        except RpcError as exc:
            self.counters.errors += 1
            log.warning("cut of %s: Kamailio at %s answered %s", call_id, _url(client), exc)
            return False
        if ended:
            self.counters.ended += 1
            log.info("ended %s at Kamailio %s (%s)", call_id, _url(client), reason)
        else:
            self.counters.not_found += 1
            log.info("cut of %s: no such dialog at Kamailio, the call had ended", call_id)
        return True

    async def change_timeout(self, ref: SessionRef, session_timeout_s: int) -> bool:
        """Kamailio's dialog timeout is not changed over JSON-RPC here: never confirmed."""
        return False

    async def _end_call(self, client: RadiusClient, call_id: str) -> bool:
        """True when a dialog was ended, False when there was none (gone); raises."""
        try:
            live = await self._live_dialogs(client, call_id)
        except Exception:
            # Raised before dlg.end_dlg went out: nothing could have ended the call, so
            # its Stop does not confirm this attempt (sessions/cutter.py cut_not_sent).
            cut_not_sent()
            raise
        if not live:
            return False
        ended = False
        url = client.jsonrpc_url
        # The cut goes out now (the look-up may have waited out a stall): Kamailio
        # accounts the call's Stop before it answers end_dlg, and that Stop is the
        # cut's when it ends within the tolerance of this time (sessions/cutter.py).
        await cut_going_out()
        for dialog in live:
            try:
                await self.call(url, "dlg.end_dlg", dialog["h_entry"], dialog["h_id"])
                ended = True
            except RpcError as exc:
                if exc.code != 404:
                    raise
        return ended

    async def _live_dialogs(self, client: RadiusClient, call_id: str) -> list[dict[str, Any]]:
        """The call's confirmed dialogs ([]: gone); raises, also for one not confirmed."""
        try:
            found = await self.call(client.jsonrpc_url, "dlg.list_match", "callid", "eq", call_id)
        except RpcError as exc:
            if exc.code == 404:
                return []
            raise
        dialogs = [d for d in _dialogs(found) if d.get("call-id") == call_id]
        live = [d for d in dialogs if d.get("state") != GONE_STATE]
        early = [d for d in live if d.get("state") != CONFIRMED_STATE]
        if early:
            # Kamailio ends confirmed dialogs only: not answered yet, try again later.
            raise RpcError(409, f"dialog not confirmed (state {early[0].get('state')})")
        return live

    async def call(self, url: str, method: str, *params: Any) -> Any:
        """One JSON-RPC 2.0 request: its result; RpcError for an error answer,
        RpcUnreachable when no answer came (retried with doubling waits first)."""
        if self._session is None:
            raise RuntimeError("KamailioRpcCutter.start() was not called")
        self._next_id += 1
        body = {"jsonrpc": "2.0", "method": method, "params": list(params), "id": self._next_id}
        wait_s = self._timeout_s
        last: BaseException | None = None
        for attempt in range(self._retries + 1):
            if attempt:
                self.counters.retried += 1
            try:
                return await self._post(url, body, wait_s)
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                last = exc
                await asyncio.sleep(min(wait_s, 1.0) if attempt < self._retries else 0)
                wait_s *= 2
        raise RpcUnreachable(f"{type(last).__name__}: {last}")

    async def _post(self, url: str, body: dict[str, Any], wait_s: float) -> Any:
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=wait_s)
        async with self._session.post(url, json=body, timeout=timeout) as resp:
            raw = await resp.read()
        try:
            answer = json.loads(raw) if raw else {}
        except ValueError:
            raise RpcError(resp.status, f"not JSON: {raw[:80]!r}") from None
        if not isinstance(answer, dict):
            raise RpcError(resp.status, "not a JSON-RPC answer")
        error = answer.get("error")
        if isinstance(error, dict):
            # jsonrpcs answers a fault with its code as the HTTP status as well.
            code = error.get("code")
            status = code if isinstance(code, int) else resp.status
            raise RpcError(status, str(error.get("message", "")))
        if resp.status != 200 or "result" not in answer:
            raise RpcError(resp.status, f"no result: {raw[:80]!r}")
        return answer["result"]


def _dialogs(found: Any) -> list[dict[str, Any]]:
    if isinstance(found, dict):
        found = [found]
    if not isinstance(found, list) or not all(
        isinstance(d, dict) and "h_entry" in d and "h_id" in d for d in found
    ):
        raise RpcError(500, "dlg.list_match: not a list of dialogs")
    return found


def _url(client: RadiusClient) -> str:
    return client.jsonrpc_url
