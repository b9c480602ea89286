"""Per-session Credit-Control state the Diameter frontend keeps (not money).

RFC 4006 §5.1: CC-Request-Numbers of a session grow; (Session-Id, CC-Request-Number)
is the idempotency key, and Used-Service-Unit reports the units used since the
last report, while sessions/ charges the *cumulative* usage. So per session this
keeps the last request number, the cumulative usage of each rating group and of
the call (one call's time is charged once: ``Spans`` below), what the last request
said (to tell a retransmission from a changed request) and the answer given to it.

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
from typing import Any, NamedTuple

KEY_PREFIX = "dia:cc:"
# Sent as EVAL (Redis caches it by its hash): the shared pipeline's NOSCRIPT reload
# knows the session scripts only. Not money: ledger/ owns every balance key.
PUT_LUA = (resources.files("chargingd.diameter") / "lua" / "cc_put.lua").read_text()
Send = Callable[[list[tuple[Any, ...]]], Awaitable[list[Any]]]
MEMORY_MAX = 200_000


# Cut points (CCRs) a session's Spans keeps open at most; past them the oldest is made
# final (a report whose window reaches back past it then counts in the per-group sums
# only, as before Spans).
SPANS_OPEN_MAX = 16
Report = tuple[str, int, int, int]  # (service key, window start, window end, CC-Time)


class Spans(NamedTuple):
    """The least time a call's rating groups' reports can mean, used one after another
    or at once.

    RFC 4006 §8.19: a Used-Service-Unit holds the units used "from the point when the
    service became active or, if interim interrogations are used during the session,
    from the point when the previous measurement ended". So a report of a rating
    group in the CCR numbered ``m`` lies in that group's *window* ``(a, m]``: ``a`` the
    CCR of the group's previous report, else the CCR that first asked quota for it
    (its Requested-Service-Unit; the CCR-I for the groups it names), else the CCR-I.
    A group whose report said its use ended (Reporting-Reason FINAL, or QHT without
    asking again) has no window until a CCR asks quota for it again: its next window
    begins there (what it reports later lies after its last report).
    CCRs are the points of the call's timeline. Reports whose windows overlap may be
    the same seconds (voice and video of one call: charged once); reports in windows
    that do not overlap cannot be (a group that ended, then another group: each is
    charged). The call's usage is the least union of time all reports can mean: the
    best split of the timeline at CCRs into pieces, each worth the largest sum one
    group reports inside it (a report counts in a piece when its window lies in it).
    It is never more than any placement of the reported seconds in their windows can
    cover (nothing is charged twice), and never less than the largest group's sum
    (one piece: the rule before, also taken as the least up to each CCR when larger,
    e.g. for reports whose windows are not known).

    ``least`` is computed at each CCR for the timeline up to it (an earlier CCR's value
    does not change: later reports end later), so only the pieces' starts since the
    last *final* cut are kept: a CCR every group has reported at or after, with no
    report's window across it (every split there only adds). Past SPANS_OPEN_MAX open
    starts the oldest is made final (a window reaching back past it is left out here,
    still in the per-group sums)."""

    at: int  # the CC-Request-Number this was computed for
    start: int  # the CCR-I's number (-1: not known, a state written before Spans)
    cut: int  # the final cut: no piece begins before it
    base: int  # the least usage up to the cut
    # (CCR number, least usage up to it) of the open starts after the cut, ascending
    open: tuple[tuple[int, int], ...] = ()
    marks: tuple[tuple[str, int], ...] = ()  # service key -> the start of its window
    reports: tuple[Report, ...] = ()  # the reports whose windows begin at the cut or later

    @classmethod
    def initial(cls, number: int, keys: tuple[str, ...]) -> Spans:
        """At the CCR-I: every service it names has its window begin there."""
        return cls(number, number, number, 0, marks=tuple((k, number) for k in sorted(set(keys))))

    @classmethod
    def before(cls, number: int, used_s: int) -> Spans:
        """For a state written without Spans: a final cut at its last CCR, worth the usage
        so far; the windows of its groups are not known (their next report counts in
        the per-group sums only)."""
        return cls(number, -1, number, used_s)

    def step(
        self,
        number: int,
        reported: dict[str, int],
        asked: tuple[str, ...],
        floor: int = 0,
        ended: tuple[str, ...] = (),
    ) -> Spans:
        """After the CCR ``number``: its reports (service key -> CC-Time, also 0: a
        measurement ended), the services it asks quota for and those whose use ended
        with this report (Reporting-Reason FINAL, or QHT without asking again: no
        window is open for them until a CCR asks quota for them again, there). ``floor``:
        another least usage up to it (the longest group's sum), taken when larger."""
        if len(self.marks) == 1 and len(reported) == 1 and not self.open and not self.reports:
            # One service (most calls), settled: what follows, without its work per CCR.
            ((key, mark),) = self.marks
            used_s = reported.get(key)
            if used_s is not None and (not asked or asked == (key,)):
                piece = used_s if mark >= self.cut else 0
                least = max(self.base + piece, floor)
                kept: tuple[tuple[str, int], ...] = ((key, number),)
                if key in ended and key not in asked:
                    kept = ()  # its use ended: no window until it is asked again
                return Spans(number, self.start, number, least, (), kept, ())
        marks = dict(self.marks)
        reports = list(self.reports)
        for key, used_s in sorted(reported.items()):
            begin = marks.get(key, self.start)
            if used_s > 0 and begin >= self.cut:
                reports.append((key, begin, number, used_s))
            marks[key] = number
        for key in ended:
            # Its last report is in; it is not used again before it is asked for: a
            # service started later (asked then) lies after this CCR, never beside
            # what was reported up to it, and its stale window does not hold the
            # final cuts back.
            marks.pop(key, None)
        for key in asked:
            marks.setdefault(key, number)
        if not self.open and not self.reports and all(m == number for m in marks.values()):
            # Every group reported here (one group, or all at once: the usual calls),
            # after a final cut: one piece, and a final cut here. (The same as below.)
            piece = max([r[3] for r in reports], default=0)
            return Spans(
                number, self.start, number, max(self.base + piece, floor),
                marks=tuple(sorted(marks.items())),
            )  # fmt: skip
        least = max(_least(((self.cut, self.base), *self.open), reports), floor)
        spans = Spans(
            number, self.start, self.cut, self.base, (*self.open, (number, least)),
            tuple(sorted(marks.items())), tuple(reports),
        )  # fmt: skip
        return spans._settled()

    @property
    def idle(self) -> bool:
        """No service is in use after the CCR this was computed for: every one that had
        a window ended (FINAL, or QHT without asking again) and none asks quota. False
        for a state written before Spans (its groups are not known)."""
        return not self.marks and self.start >= 0

    @property
    def least(self) -> int:
        """The least usage up to the CCR this was computed for."""
        return self.open[-1][1] if self.open else self.base

    def _settled(self) -> Spans:
        """The latest final cut made (then the oldest open starts past the bound)."""
        first_mark = min((m for _, m in self.marks), default=self.at)
        final = None
        for j, least in self.open:
            if j > first_mark:
                break
            if not any(a < j < b for _, a, b, _ in self.reports):
                final = (j, least)
        spans = self if final is None else self._cut_at(*final)
        while len(spans.open) > SPANS_OPEN_MAX:
            spans = spans._cut_at(*spans.open[0])
        return spans

    def _cut_at(self, cut: int, base: int) -> Spans:
        return Spans(
            self.at, self.start, cut, base,
            tuple(o for o in self.open if o[0] > cut),
            self.marks,
            tuple(r for r in self.reports if r[1] >= cut),
        )  # fmt: skip

    def encode(self) -> str:
        """One hash field: "at|start|cut|base|n=v,..|key=n,..|key:a:b:u,..". Service keys
        are digits, "s1-2" or "" (translate.Service.key): none holds | , = or :."""
        if len(self.marks) == 1 and not self.open and not self.reports:  # (most calls)
            ((key, mark),) = self.marks
            return f"{self.at}|{self.start}|{self.cut}|{self.base}||{key}={mark}|"
        return "|".join(
            (
                str(self.at),
                str(self.start),
                str(self.cut),
                str(self.base),
                ",".join(f"{n}={v}" for n, v in self.open),
                ",".join(f"{k}={n}" for k, n in self.marks),
                ",".join(f"{k}:{a}:{b}:{u}" for k, a, b, u in self.reports),
            )
        )

    @classmethod
    def decode(cls, raw: bytes) -> Spans:
        at, start, cut, base, open_, marks, reports = raw.decode().split("|")
        return cls(
            int(at),
            int(start),
            int(cut),
            int(base),
            tuple((int(n), int(v)) for n, _, v in (i.partition("=") for i in _items(open_))),
            tuple((k, int(n)) for k, _, n in (i.rpartition("=") for i in _items(marks))),
            tuple(
                (k, int(a), int(b), int(u))
                for k, a, b, u in (i.rsplit(":", 3) for i in _items(reports))
            ),
        )


def _items(text: str) -> list[str]:
    return [i for i in text.split(",") if i] if text else []


def _least(starts: tuple[tuple[int, int], ...], reports: list[Report]) -> int:
    """The least usage up to the CCR the last reports end at: the best of "the least up
    to a piece's start + the largest sum one group reports inside the piece"."""
    best = 0
    for begin, before in starts:
        sums: dict[str, int] = {}
        for key, a, _, used_s in reports:
            if a >= begin:
                sums[key] = sums.get(key, 0) + used_s
        best = max(best, before + max(sums.values(), default=0))
    return best


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
    # Where the groups' reports lie on the call's timeline (Spans); None: not kept
    # (written before Spans, or by an EVENT).
    spans: Spans | None = None

    def after(self, reported: dict[str, int]) -> tuple[int, tuple[tuple[str, int], ...]]:
        """The call's cumulative usage and the groups' after a CCR's reports: each group's
        reports summed, the call's usage the longest of them (never less than before)."""
        groups = dict(self.groups)
        base_s = self.used_s if self.legacy else 0
        for key, used_s in reported.items():
            groups[key] = groups.get(key, base_s) + used_s
        return max(self.used_s, *groups.values(), 0), tuple(sorted(groups.items()))

    def reported(
        self,
        number: int,
        reported: dict[str, int],
        asked: tuple[str, ...],
        ended: tuple[str, ...] = (),
    ) -> tuple[int, tuple[tuple[str, int], ...], Spans]:
        """The call's cumulative usage, the groups' sums and the Spans after the CCR
        ``number`` (its CC-Time per service key, 0 included, the keys it asks quota
        for and those whose use ended there): the larger of the longest group's sum
        (``after``) and the least time the reports can mean when groups are used one
        after another (Spans)."""
        longest_s, groups = self.after({k: v for k, v in reported.items() if v})
        spans = self.spans
        if spans is None or spans.at != self.number:  # written before Spans, or stale
            spans = Spans.before(self.number, self.used_s)
        floor = max(longest_s, self.used_s)
        spans = spans.step(number, reported, asked, floor=floor, ended=ended)
        return spans.least, groups, spans

    def to_mapping(self) -> dict[str, str | int | bytes]:
        return {
            "n": self.number,
            "u": self.used_s,
            "d": self.digest,
            "a": self.answer,
            "e": int(self.ended),
            "g": ",".join(f"{k}={v}" for k, v in self.groups),
            "p": int(self.pending),
            "w": self.spans.encode() if self.spans is not None else "",
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
                spans=Spans.decode(raw[b"w"]) if raw.get(b"w") else None,
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
