"""ASR / RAR from a process that has no connection to the session's peer.

Any chargingd process may claim a deadline (sessions live in Redis), but an ASR
must leave on the TCP connection of the session's peer, which one process holds.
The process holding it answers requests queued for it in Redis:

  dia:owner:PEER     string  "HOST:PID" of the process with an open link to PEER (TTL)
  dia:relay:OWNER    list    requests for that process: JSON {op, ref, arg, reply}
  dia:reply:ID       list    "1" (confirmed) or "0", pushed once by the owner (TTL)

``RelayClient`` is a ccapi.CallCutter for the RADIUS workers (and for a process whose
own links to a peer are down); ``RelayServer`` runs in the process that serves
Diameter. A request nobody answers in time is a failure, which the cutter retries
with its back-off, exactly as an unanswered Disconnect-Request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import uuid
from typing import Any

from redis.exceptions import RedisError

from chargingd.core.ratelog import RateLimitedLog
from chargingd.core.redisconn import block_below_timeout
from chargingd.sessions.ccapi import CallCutter, SessionRef
from chargingd.sessions.cutter import cut_not_sent

log = logging.getLogger("chargingd.diameter.relay")

QUEUE_DOWN = "relay queue unavailable"

OWNER_TTL_S = 30
REPLY_TTL_S = 60
POLL_S = 1.0


def owner_key(peer_name: str) -> str:
    return f"dia:owner:{peer_name}"


def queue_key(owner: str) -> str:
    return f"dia:relay:{owner}"


def this_owner() -> str:
    """This process's name in the relay keys."""
    return f"{socket.gethostname()}:{os.getpid()}"


class RelayClient:
    """CallCutter that queues ASR/RAR for the process owning the peer's connection."""

    def __init__(self, redis: Any, *, timeout_s: float) -> None:
        self.redis = redis
        self.timeout_s = timeout_s
        self.sent = 0
        self.unanswered = 0

    async def disconnect(self, ref: SessionRef, reason: str) -> bool:
        return await self._ask("disconnect", ref, reason)

    async def change_timeout(self, ref: SessionRef, session_timeout_s: int) -> bool:
        return await self._ask("change_timeout", ref, session_timeout_s)

    async def _ask(self, op: str, ref: SessionRef, arg: str | int) -> bool:
        raw = await self.redis.get(owner_key(ref.client))
        if raw is None:
            log.warning("no process holds a connection to %s for %s", ref.client, ref.session_id)
            if op == "disconnect":
                cut_not_sent()  # nothing went out: no CCR-T confirms this attempt
            return False
        reply = f"dia:reply:{uuid.uuid4().hex}"
        request = {"op": op, "ref": list(_ref_fields(ref)), "arg": arg, "reply": reply}
        await self.redis.rpush(queue_key(raw.decode()), json.dumps(request))
        self.sent += 1
        answer = await self._wait_reply(reply)
        if answer is None:
            self.unanswered += 1
            return False
        return bool(answer[1] == b"1")

    async def _wait_reply(self, reply: str) -> Any:
        """BLPOP the reply for up to timeout_s, in waits that end before the client's
        socket timeout: one as long as it ([redis] command_timeout_s, 2 s, against
        request_timeout_s, 2 s) raced it, and an unanswered relay raised TimeoutError
        (the cutter logged a traceback) instead of returning "unanswered"."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        most_s = block_below_timeout(self.redis, max(int(self.timeout_s * 1000), 1)) / 1000
        while True:
            left = deadline - loop.time()
            answer = await self.redis.blpop([reply], timeout=max(min(most_s, left), 0.001))
            if answer is not None or loop.time() >= deadline:
                return answer


def _ref_fields(ref: SessionRef) -> tuple[str, str, str, str]:
    return ref.session_id, ref.user_name, ref.gateway, ref.client


class RelayServer:
    """Answers the relay queue of this process with the local ASR/RAR sender."""

    def __init__(self, redis: Any, local: CallCutter, *, peers_open: Any = None) -> None:
        self.redis = redis
        self.local = local
        self.owner = this_owner()
        self.peers_open = peers_open  # () -> names of peers with an open link here
        self.served = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # A Redis outage fails every poll: one line per interval and one on recovery.
        self._outage = RateLimitedLog(log, level=logging.WARNING)
        # Each poll's BLPOP ends before the client's socket timeout ([redis]
        # command_timeout_s): at or under POLL_S every poll failed (TimeoutError), so
        # nothing queued here was served.
        self.poll_s = block_below_timeout(redis, int(POLL_S * 1000)) / 1000

    async def announce(self, peer_names: list[str]) -> None:
        """Say (again, TTL) that this process holds a link to each of these peers."""
        if not peer_names:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in peer_names:
                pipe.set(owner_key(name), self.owner, ex=OWNER_TTL_S)
            await pipe.execute()

    async def run(self, stop: asyncio.Event) -> None:
        """Serve queued requests until ``stop`` is set."""
        key = queue_key(self.owner)
        while not stop.is_set():
            try:
                if self.peers_open is not None:
                    await self.announce(list(self.peers_open()))
                item = await self.redis.blpop([key], timeout=self.poll_s)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self._outage.failure(QUEUE_DOWN, exc)
                await asyncio.sleep(POLL_S)
                continue
            self._outage.recovered(QUEUE_DOWN)
            if item is not None:
                task = asyncio.create_task(self._serve(item[1]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)

    async def _serve(self, raw: bytes) -> None:
        try:
            req = json.loads(raw)
            ref = SessionRef(*req["ref"])
            if req["op"] == "disconnect":
                ok = await self.local.disconnect(ref, str(req["arg"]))
            else:
                ok = await self.local.change_timeout(ref, int(req["arg"]))
            self.served += 1
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.rpush(req["reply"], b"1" if ok else b"0")
                pipe.expire(req["reply"], REPLY_TTL_S)
                await pipe.execute()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("relayed request failed")
