"""Per-session Credit-Control state the Diameter frontend keeps (not money).

RFC 4006 §5.1: CC-Request-Numbers of a session grow; (Session-Id, CC-Request-Number)
is the idempotency key, and Used-Service-Unit reports the units used since the
last report, while sessions/ charges the *cumulative* usage. So per session this
keeps the last request number, the cumulative usage of each rating group and of
the call (the longest of them: one call's time is charged once), what the last
request said (to tell a retransmission from a changed request) and the answer
given to it.

It lives in this process's memory and in Redis (``dia:cc:SESSION``, a hash with a
TTL), so a peer that fails over to another chargingd process or host finds it.
Keys are per session, never per account: no money is here (ledger/ owns money).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

KEY_PREFIX = "dia:cc:"
# Sent as EVAL (Redis caches it by its hash): the shared pipeline's NOSCRIPT reload
# knows the session scripts only. Not money: ledger/ owns every balance key.
PUT_LUA = (resources.files("chargingd.diameter") / "lua" / "cc_put.lua").read_text()
Send = Callable[[list[tuple[Any, ...]]], Awaitable[list[Any]]]
MEMORY_MAX = 200_000


def cc_key(session_id: str) -> str:
    return KEY_PREFIX + session_id


def digest_of(parts: tuple[object, ...]) -> str:
    """A short stable digest of what a request said (compared, never trusted)."""
    return hashlib.blake2s(repr(parts).encode(), digest_size=12).hexdigest()


@dataclass(frozen=True)
class CcSession:
    """What the frontend remembers of one Credit-Control session."""

    session_id: str
    number: int  # the last CC-Request-Number answered
    used_s: int  # cumulative Used-Service-Unit CC-Time reported so far
    digest: str  # digest of the last request (same number + other digest = refused)
    answer: bytes  # the body of the answer given to it (resent on a retransmission)
    ended: bool = False  # a CCR-T was answered
    # Cumulative CC-Time per service key (translate.Service.key): rating groups of one
    # call report the same seconds, each in its own CCRs (TS 32.299 §5.2.2: a group
    # reports when its quota is used up or its Validity-Time ends).
    groups: tuple[tuple[str, int], ...] = ()
    legacy: bool = False  # written before per-group usage was kept: used_s is each's
    # A direct debit (EVENT) being worked on: written before the money moves, so that
    # the same request sent again after its answer was lost is told apart from a
    # reused Session-Id (RFC 4006 §8.15; credit.py asks sessions what was done).
    pending: bool = False

    def after(self, reported: dict[str, int]) -> tuple[int, tuple[tuple[str, int], ...]]:
        """The call's cumulative usage and the groups' after a CCR's reports: each group's
        reports summed, the call's usage the longest of them (never less than before)."""
        groups = dict(self.groups)
        base_s = self.used_s if self.legacy else 0
        for key, used_s in reported.items():
            groups[key] = groups.get(key, base_s) + used_s
        return max(self.used_s, *groups.values(), 0), tuple(sorted(groups.items()))

    def to_mapping(self) -> dict[str, str | int | bytes]:
        return {
            "n": self.number,
            "u": self.used_s,
            "d": self.digest,
            "a": self.answer,
            "e": int(self.ended),
            "g": ",".join(f"{k}={v}" for k, v in self.groups),
            "p": int(self.pending),
        }

    @classmethod
    def from_raw(cls, session_id: str, raw: dict[bytes, bytes]) -> CcSession | None:
        try:
            return cls(
                session_id=session_id,
                number=int(raw[b"n"]),
                used_s=int(raw[b"u"]),
                digest=raw[b"d"].decode(),
                answer=raw[b"a"],
                ended=raw.get(b"e") == b"1",
                groups=_groups(raw[b"g"]) if b"g" in raw else (),
                legacy=b"g" not in raw,
                pending=raw.get(b"p") == b"1",
            )
        except (KeyError, ValueError):
            return None  # written by another version, or damaged: treat as unknown


def _groups(raw: bytes) -> tuple[tuple[str, int], ...]:
    """ "10=30,20=40" -> (("10", 30), ("20", 40))."""
    out = []
    for item in raw.decode().split(","):
        if item:
            key, _, used = item.rpartition("=")
            out.append((key, int(used)))
    return tuple(out)


def _as_dict(raw: Any) -> dict[bytes, bytes]:
    """A raw HGETALL reply (a dict, or a flat list from a pipelined command) as a dict."""
    if isinstance(raw, dict):
        return raw
    items = list(raw or ())
    return dict(zip(items[::2], items[1::2], strict=True))


class CcStore:
    """Session states by Session-Id: memory first (Redis when a request number shows it
    stale), Redis behind it; one lock per session
    so the CCRs of a session are worked one at a time in this process (RFC 4006 §5.1:
    one request in flight per session)."""

    def __init__(self, send: Send, *, ttl_s: int, ended_ttl_s: int) -> None:
        """``send``: commands in one round trip (sessions' store.send: one pipeline per
        loop tick shared with the session and ledger commands of the same tick)."""
        self.send = send
        self.ttl_s = ttl_s
        self.ended_ttl_s = ended_ttl_s
        self._memory: OrderedDict[str, CcSession] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiters: dict[str, int] = {}

    async def get(self, session_id: str, number: int | None = None) -> CcSession | None:
        """The session's state, or None when this frontend never answered its CCR-I.

        ``number`` is the CC-Request-Number being worked on. Clients number a session's
        requests 0, 1, 2, ... (RFC 4006 §8.2), so one beyond the next this process
        expects means another process answered the ones between (the client failed
        over and came back): this memory is stale and Redis is read, else the usage
        reported there would be left out of the cumulative (a call charged short)."""
        memory = self._memory.get(session_id)
        if memory is not None and (number is None or number <= memory.number + 1):
            return memory
        (flat,) = await self.send([("HGETALL", cc_key(session_id))])
        raw = _as_dict(flat)
        state = CcSession.from_raw(session_id, raw) if raw else None
        if state is None or (memory is not None and state.number < memory.number):
            return memory  # nothing newer in Redis
        self._remember(state)
        return state

    async def put(self, state: CcSession) -> None:
        """Remember the answered request, here and in Redis (with its TTL), unless a
        newer request of the session was answered meanwhile: a late answer of a process
        the client left (its Tx expired, RFC 4006 §13) must not roll the state back."""
        key = cc_key(state.session_id)
        ttl_s = self.ended_ttl_s if state.ended else self.ttl_s
        fields = [item for pair in state.to_mapping().items() for item in pair]
        (written,) = await self.send([("EVAL", PUT_LUA, 1, key, state.number, ttl_s, *fields)])
        if state.ended or not written:
            # The Redis copy answers a retransmitted CCR-T until it expires; a newer
            # state there is read again by the next request.
            self._memory.pop(state.session_id, None)
        else:
            self._remember(state)

    def _remember(self, state: CcSession) -> None:
        memory = self._memory
        memory[state.session_id] = state
        memory.move_to_end(state.session_id)
        while len(memory) > MEMORY_MAX:
            memory.popitem(last=False)

    def forget(self, session_id: str) -> None:
        """Drop this process's copy (Redis keeps its own until the TTL)."""
        self._memory.pop(session_id, None)

    def lock(self, session_id: str) -> _SessionLock:
        """``async with store.lock(sid):`` serialises the requests of one session."""
        return _SessionLock(self, session_id)

    def __len__(self) -> int:
        return len(self._memory)


class _SessionLock:
    def __init__(self, store: CcStore, session_id: str) -> None:
        self._store = store
        self._sid = session_id

    async def __aenter__(self) -> None:
        store, sid = self._store, self._sid
        lock = store._locks.get(sid)
        if lock is None:
            lock = store._locks[sid] = asyncio.Lock()
        store._waiters[sid] = store._waiters.get(sid, 0) + 1
        try:
            await lock.acquire()
        except BaseException:
            self._release_waiter()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._store._locks[self._sid].release()
        self._release_waiter()

    def _release_waiter(self) -> None:
        store, sid = self._store, self._sid
        left = store._waiters[sid] - 1
        if left:
            store._waiters[sid] = left
        else:  # nobody holds or waits: drop the lock (bounded memory)
            del store._waiters[sid]
            del store._locks[sid]
