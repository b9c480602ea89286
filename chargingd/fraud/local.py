"""The authorize rules evaluated in the daemon, on the account's value as this process
last saw it stored, and written by the authorize only while it still is.

fraud.lua evaluates a call's ops on the account's value (and the caller IP's) inside
Redis: ~160k of Redis's instructions per call on its one thread (docs/fraud-cost.md
"Seventeenth round"), the bottleneck with the rules on. Here the same ops run in the
process that answers the call, on the same value, decoded: the process keeps, per value
key, the bytes it last knew stored and their decoded table (``Values``). For a call
whose values are known, ``LocalRules.evaluate`` counts it as fraud_check and
fraud_admit would (their helpers ported: bucket, capped, distinct, live, the admit's
live call and country, the prune and the expiry of fraud_save) and packs the value the
call leaves once granted. The plain authorize (sessions/lua/session_authorize.lua) then
compares the stored bytes with the ones the evaluation started from: equal (nobody
wrote the value since), it reserves and, when it grants a new call, SETs the packed
value; no rule runs in Lua. Not equal (another daemon or worker, a CDR's event, an
unblock, an expiry), it does nothing and says so (``moved``) with the stored bytes: the
call is evaluated again here on them, once (engine.Prepared.moved), else it goes to the
fused script with the rules in Lua (session_authorize_fraud.lua), exactly as before,
whose reply says the bytes the rules left: kept for the account's next call. A value
this process does not know yet (its first call of the account) is read first, one MGET
(engine.Fraud.fetch), and the call evaluated here.

So a rule decides on the exact state either way: the comparison is of the whole stored
value, byte for byte, in the script that writes it. What stays with Lua: every call a
rule would refuse or block (this process sees it coming and sends the call there), a
deny flag, a retransmission or a remembered answer, a call the ledger refuses (the
rules count it and remember the ledger's answer there), a value that moved again
between its re-evaluation and the script. Both paths read and write one stored layout
(fraud.lua's value): daemons of the previous release and this one can serve the same
accounts.

The evaluation itself runs in C when fraud/_local.c is built (both of the Makefile's
modes build it; optional): the same ops on a typed tree parsed from the stored bytes,
packed back to exactly the bytes this module's Python would pack (tests/fraud/
test_local_c.py), ~12k instructions per call where the Python took ~90k. It declines a
value it does not read exactly (floats where counts are, odd keys, damaged bytes), and
the Python below evaluates that call, as before. ``CHARGINGD_FRAUD_C=0`` turns it off.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from typing import Any, Final

import msgpack

from chargingd.fraud.plan import AuthPlan

NB: Final = 10  # buckets per window (fraud.lua NB)
G_MAX: Final = 64  # same-range and identity counters per account (fraud.lua G_MAX)
DAY_MS: Final = 86_400_000
PRUNE_MS: Final = 10_000  # fraud.lua PRUNE_MS

# The fields of fraud.lua's value, as cmsgpack writes them (raw strings: bytes here)
W, G, H, N, L, C, D, R, RO, Q, X, P = (
    b"w", b"g", b"h", b"n", b"l", b"c", b"d", b"r", b"ro", b"q", b"x", b"p"
)  # fmt: skip

OP: Final = 8  # fields of an authorize op (fraud.lua OP)


def unpack(raw: bytes) -> dict[Any, Any]:
    """A stored value (cmsgpack), strings left as bytes as Lua has them; its arrays as
    tuples (a counter's buckets: numbers only, so the collector stops tracking them at
    its first look, and a process keeping thousands of values is not walked through
    their ~75 containers each in every full collection: docs/fraud.md)."""
    if not raw:
        return {W: {}}
    value = msgpack.unpackb(raw, raw=True, strict_map_key=False, use_list=False)
    if not isinstance(value, dict):
        value = {}
    if not isinstance(value.get(W), dict):  # fr_load: v.w = v.w or {} (an empty {} is [])
        value[W] = {}
    return value


_PACKER: Final = msgpack.Packer(use_bin_type=False)


def pack(value: dict[Any, Any]) -> bytes:
    """As cmsgpack packs the table (strings as raw strings, as Lua writes them). One
    Packer for the process (packb makes one per call; its pack resets it after each)."""
    packed: bytes = _PACKER.pack(value)
    return packed


def _table(value: dict[Any, Any], field: bytes) -> dict[Any, Any]:
    """A map of the value, made when absent (Lua: v[f] = v[f] or {}). cmsgpack writes an
    empty or 1..n keyed table as an array: taken back as the map Lua has."""
    t = value.get(field)
    if isinstance(t, dict):
        return t
    out: dict[Any, Any] = {}
    if isinstance(t, (tuple, list)):
        for i, item in enumerate(t):
            out[i + 1] = item
    value[field] = out
    return out


def _bucket(w: dict[Any, Any], cid: Any, now: int, win: int, width: int) -> int:
    """fraud.lua fr_bucket (the walk; a library's kept sums write the same table)."""
    old = w.get(cid)
    one = isinstance(old, (int, float))
    if old is None or (one and old < now):
        w[cid] = now + win
        return 1
    cur = now // width
    if one:
        at = int(old) - win
        b = at // width
        if b == cur:
            w[cid] = (width, cur, 2, now - cur * width)
        else:
            w[cid] = (width, b, 1, at - b * width, cur, 1, now - cur * width)
        return 2
    start = now - win  # a call before this is out of the window
    lo = start // width
    kept: list[Any] = [old[0]]
    total = 0
    for k in range(1, len(old) - 2, 3):
        b = old[k]
        if b > lo or (b == lo and b * width + old[k + 2] >= start):
            kept.append(b)
            kept.append(old[k + 1])
            kept.append(old[k + 2])
            total += old[k + 1]
    at = now - cur * width
    if len(kept) > 1 and kept[-3] == cur:
        kept[-2] += 1
        kept[-1] = at
    else:
        kept.append(cur)
        kept.append(1)
        kept.append(at)
    w[cid] = tuple(kept)  # (a tuple: see unpack)
    return total + 1


def _before(a: Any, b: Any) -> bool:
    """fraud.lua fr_before: of keys alike, which is dropped first: numbers first, in their
    order, then strings (bytes) byte by byte; a key of another type is no error."""
    number = not isinstance(a, bytes)
    if number != (not isinstance(b, bytes)):
        return number
    return bool(a < b)


def _cap(t: dict[Any, Any], cid: Any) -> None:
    """fraud.lua fr_cap_ranges: beyond G_MAX, drop the counter called once whose call is
    the oldest, else the one whose last call is the oldest; of those alike, the least id
    (bytes: fr_before), never the first in the table's order (Lua's differs)."""
    if len(t) <= G_MAX:
        return
    once = many = None
    once_at = many_at = 0.0
    for k, c in t.items():
        if k == cid:
            continue
        if isinstance(c, (int, float)):
            if once is None or c < once_at or (c == once_at and _before(k, once)):
                once, once_at = k, c
        else:
            last = c[-3] * c[0] + c[-1]
            if many is None or last < many_at or (last == many_at and _before(k, many)):
                many, many_at = k, last
    t.pop(once if once is not None else many, None)


def _capped(value: dict[Any, Any], part: bytes, cid: bytes, now: int, win: int, width: int) -> int:
    t = _table(value, part)
    fresh = cid not in t
    count = _bucket(t, cid, now, win, width)
    if fresh:
        _cap(t, cid)
    return count


def _distinct(value: dict[Any, Any], now: int, slot: bytes, win: int, limit: int, h: int) -> int:
    """fraud.lua fr_distinct (of the oldest alike, the least hash dropped)."""
    n = _table(_table(value, N), slot)
    up = now + 999
    n[h] = up // 1000  # seconds, rounded up
    count, start = 0, now - win
    for k, s in list(n.items()):
        if s * 1000 < start:
            del n[k]
        else:
            count += 1
    if count > limit + 1:
        oldest, oldest_s = None, 0
        for k, s in n.items():
            if oldest is None or s < oldest_s or (s == oldest_s and _before(k, oldest)):
                oldest, oldest_s = k, s
        del n[oldest]
    return count


def _live(value: dict[Any, Any], now: int, sid: bytes) -> int:
    """fraud.lua fr_live: the live calls whose lapse is ahead, this one once."""
    live = value.get(L)
    n = 0
    if isinstance(live, dict):
        for s, lapse in live.items():
            if lapse * 1000 > now and s != sid:
                n += 1
    return n + 1


def _admit_live(value: dict[Any, Any], now: int, sid: bytes, win: int, limit: int) -> None:
    """fraud.lua fr_admit_live (of the first to lapse alike, the least session id)."""
    live = _table(value, L)
    up = now + win + 999
    live[sid] = up // 1000
    n, first, first_s = 0, None, 0
    for s, lapse in list(live.items()):
        if lapse * 1000 <= now:
            del live[s]
        else:
            n += 1
            if first is None or lapse < first_s or (lapse == first_s and _before(s, first)):
                first, first_s = s, lapse
    if n > limit + 1:
        del live[first]


def _prune_table(w: Any, now: int) -> None:
    if not isinstance(w, dict):
        return
    for cid, c in list(w.items()):
        if isinstance(c, (int, float)):
            if c < now:
                del w[cid]
        elif c[-3] < now // c[0] - NB - 1:
            del w[cid]


def _prune(value: dict[Any, Any], now: int) -> None:
    """fraud.lua fr_prune."""
    if (value.get(P) or 0) > now:
        return
    value[P] = now + PRUNE_MS
    _prune_table(value.get(W), now)
    _prune_table(value.get(G), now)
    _prune_table(value.get(H), now)


def _expiry(value: dict[Any, Any], now: int, ttl: int) -> int:
    """fraud_save: the value lives until now + ttl, never less than it did; its PX."""
    until = now + ttl
    x = value.get(X) or 0
    if x > until:
        until = x
    value[X] = until
    return int(until - now)


# An op's kind (fraud.lua's letters) as a small number
K_COUNT, K_IDENTITY, K_RANGE, K_DISTINCT, K_LIVE, K_COUNTRY, K_NONE, K_DENY = range(8)
_KINDS: Final = {"c": K_COUNT, "i": K_IDENTITY, "g": K_RANGE, "d": K_DISTINCT, "l": K_LIVE,
                 "n": K_COUNTRY, "p": K_DENY}  # fmt: skip


class Op:
    """One authorize op (fraud.lua's 8 fields), decoded once per ops text: its kind, the
    value it counts in, its counter's id as the value keys it, window and bucket width,
    limit, rank of its act (-1: never fires)."""

    __slots__ = (
        "counts", "extra", "kind", "limit", "on_ip", "pre", "rank", "slot", "slot_b", "width",
        "win",
    )  # fmt: skip

    def __init__(self, fields: Sequence[Any]) -> None:
        kind, key, slot, win, limit, act = (
            fields[0], fields[1], fields[2], fields[3], fields[4], fields[5]
        )  # fmt: skip
        self.kind: int = _KINDS.get(kind, K_NONE)
        self.on_ip: bool = key == 5
        self.slot: str = str(slot)  # the counter's id ('SLOT/WIN_S', or SLOT: compiled.py)
        self.slot_b: bytes = self.slot.encode()  # as the value keys it
        self.pre: bytes = self.slot_b + b"|"  # an identity's or range's counter: + its own
        self.win: int = int(win)
        self.width: int = -(-self.win // NB)  # math.ceil(win / NB)
        self.limit: int = 0 if self.kind == K_COUNTRY else int(limit)
        self.rank: int = -1 if act == "x" else _rank(act)
        self.extra: int = int(fields[7])  # range digits
        # counts in its value (the value is written): not the live calls, not countries,
        # not a deny flag read
        self.counts: bool = self.kind not in (K_LIVE, K_COUNTRY, K_DENY)

    def spec(self) -> tuple[Any, ...]:
        """The op as fraud/_local.c's compile_ops takes it."""
        return (
            self.kind, int(self.on_ip), self.slot_b, self.pre, self.win, self.width,
            self.limit, self.rank, self.extra, int(self.counts),
        )  # fmt: skip


def _ops(raw: bytes) -> tuple[Op, ...]:
    flat = msgpack.unpackb(raw, raw=False)
    return tuple(Op(flat[i : i + OP]) for i in range(0, len(flat), OP))


# now, identity, session id, number, country, the number's hash (text as bytes: as the
# value keys them)
Call = tuple[int, bytes, bytes, bytes, bytes, int]


def _count(op: Op, val: dict[Any, Any], v: dict[Any, Any], call: Call) -> int:
    """One op's count (fraud.lua fraud_check's loop, op by op); 'n' counts the countries
    called when this one was not called within its memory (it fires on any: limit 0)."""
    now, identity, sid, number, country, number_hash = call
    kind = op.kind
    if kind == K_COUNT:
        return _bucket(val[W], op.slot_b, now, op.win, op.width)
    if kind == K_IDENTITY:
        return _capped(val, H, op.pre + identity, now, op.win, op.width)
    if kind == K_RANGE:
        e = max(len(number) - op.extra, 2)
        return _capped(val, G, op.pre + number[:e], now, op.win, op.width)
    if kind == K_DISTINCT:
        return _distinct(val, now, op.slot_b, op.win, op.limit, number_hash)
    if kind == K_LIVE:
        return _live(val, now, sid)
    if kind == K_COUNTRY:
        countries = v.get(C)
        if not isinstance(countries, dict):
            return 0
        last = countries.get(country, 0)
        return len(countries) if last < now - op.win else 0
    if kind == K_DENY:  # fraud.lua 'p': the rule's deny flag in the caller IP's value
        deny = val.get(D)
        until = deny.get(op.slot_b, 0) if isinstance(deny, dict) else 0
        return 1 if until > now else 0
    return 0


def _check(
    ops: tuple[Op, ...],
    v: dict[Any, Any],
    ipv: dict[Any, Any],
    own_ip: bool,
    call: Call,
) -> tuple[list[int], int, bool, bool, bool]:
    """The ops counted: (fired: op, count, ...; the deciding op; whether one refuses or
    blocks; the account's value changed; the caller IP's)."""
    fired: list[int] = []
    worst, worst_i = -1, 0
    dirty = ip_dirty = False
    for i, op in enumerate(ops, 1):
        on_ip = op.on_ip
        count = _count(op, ipv if on_ip else v, v, call)
        if op.counts:
            if on_ip and own_ip:
                ip_dirty = True
            else:
                dirty = True
        rank = op.rank
        if rank >= 0 and count > op.limit:
            fired.append(i)
            fired.append(count)
            if rank > worst:
                worst, worst_i = rank, i
    return fired, worst_i, worst >= 2, dirty, ip_dirty


def _admit(ops: tuple[Op, ...], v: dict[Any, Any], now: int, sid: bytes, country: bytes) -> bool:
    """fraud_admit of a granted call: live ('l'), its country known ('n', rewritten at
    most once per memory / 100, a day at most). Whether the value changed."""
    dirty = False
    for op in ops:
        if op.kind == K_LIVE:
            _admit_live(v, now, sid, op.win, op.limit)
            dirty = True
        elif op.kind == K_COUNTRY:
            c = _table(v, C)
            if (c.get(country) or 0) < now - min(DAY_MS, op.win / 100):
                c[country] = now
                dirty = True
    return dirty


def _rank(act: str) -> int:
    return 3 if act == "b" else 2 if act == "r" else 1 if act == "a" else 0


class Outcome:
    """A call evaluated here: what the script compares and writes, and the verdict as
    fraud_check replies it (no rule refuses: those go to Lua)."""

    __slots__ = ("expect", "ip_expect", "ip_px", "ip_value", "px", "reply", "value")

    def __init__(
        self,
        expect: bytes,
        value: bytes,
        px: int,
        ip_expect: bytes | None,
        ip_value: bytes,
        ip_px: int,
        reply: tuple[Any, ...],
    ) -> None:
        self.expect = expect  # the stored bytes it started from (b"": none stored)
        self.value = value  # the value once the call is granted
        self.px = px  # its PX (0: unchanged, not written)
        self.ip_expect = ip_expect  # the caller IP's (None: no value of its own)
        self.ip_value = ip_value
        self.ip_px = ip_px
        self.reply = reply  # fraud_check's reply: (b"ok", 0, 0, fired, b"")

    def argv(self) -> list[Any]:
        """The script's trailing ARGV (3, or 6 with the caller IP's value)."""
        out: list[Any] = [self.expect, self.value, self.px]
        if self.ip_expect is not None:
            out += [self.ip_expect, self.ip_value, self.ip_px]
        return out


class Values:
    """The values this process knows stored: key -> [bytes, decoded or None], at most
    ``size`` (the one written longest ago dropped first: an account calling steadily
    stays, however many others call once). An entry is what the last script that wrote or
    read the key for this process said, or what this process's evaluation packed (the
    script writes it unless the stored bytes moved, and then says what they are)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._known: dict[str, list[Any]] = {}
        self.known: Final = self._known  # (read-only: whether a key is known, by `in`)

    def __len__(self) -> int:
        return len(self._known)

    def get(self, key: str) -> tuple[bytes, dict[Any, Any]] | None:
        entry = self._known.get(key)
        if entry is None:
            return None
        if entry[1] is None:
            entry[1] = unpack(entry[0])
        return entry[0], entry[1]

    def put(self, key: str, raw: bytes, value: dict[Any, Any] | None = None) -> None:
        known = self._known
        entry = known.pop(key, None)
        if entry is None:
            if len(known) >= self.size:
                del known[next(iter(known))]
            entry = [raw, value]
        else:  # its list again (one allocation fewer a call)
            entry[0] = raw
            entry[1] = value
        known[key] = entry  # last: the newest

    def raw(self, key: str) -> bytes | None:
        """The bytes known stored under ``key`` (b"": none), not decoded; None: not known."""
        entry = self._known.get(key)
        return None if entry is None else entry[0]

    def drop(self, key: str) -> None:
        self._known.pop(key, None)


def _c_module() -> Any:
    """fraud/_local.c (the evaluation on the stored bytes), or None when it is not built
    (no compiler, or `CHARGINGD_FRAUD_C=0`): local.py's Python evaluation then, the same
    bytes."""
    if os.environ.get("CHARGINGD_FRAUD_C", "1") == "0":
        return None
    try:
        return importlib.import_module("chargingd.fraud._local")
    except ImportError:
        return None


# what fraud/_local.c's evaluate answers instead of an outcome
C_BAIL, C_SEEN, C_REFUSES = -1, 0, 1


class LocalRules:
    """The authorize ops of a call evaluated on the values this process knows."""

    def __init__(self, size: int, compiled: bool = True) -> None:
        self.values = Values(size)
        self._ops: dict[bytes, tuple[Op, ...]] = {}
        self._c_ops: dict[bytes, Any] = {}
        self._c: Any = _c_module() if compiled else None
        # its evaluate, looked up once (not a method look-up on the module per call)
        self._c_evaluate: Any = None if self._c is None else self._c.evaluate
        self.counters = {"local": 0, "lua": 0, "moved": 0, "fetched": 0}
        # calls fraud/_local.c evaluated, and those it left to the Python evaluation
        self.by_c = self.c_declined = 0

    def ops(self, raw: bytes) -> tuple[Op, ...]:
        ops = self._ops.get(raw)
        if ops is None:
            if len(self._ops) >= 256:
                self._ops.clear()
                self._c_ops.clear()
            ops = self._ops[raw] = _ops(raw)
        return ops

    def _compiled(self, raw: bytes, ops: tuple[Op, ...]) -> Any:
        """The ops as fraud/_local.c takes them (None: ops it cannot take)."""
        c_ops = self._c_ops.get(raw, False)
        if c_ops is False:
            try:
                c_ops = self._c.compile_ops([op.spec() for op in ops])
            except (ValueError, OverflowError, TypeError):
                c_ops = None
            self._c_ops[raw] = c_ops
        return c_ops

    def _evaluate_c(
        self,
        c_ops: Any,
        plan: AuthPlan,
        now: int,
        key: str,
        ip_key: str,
        identity: str,
        sid: str,
        number: str,
        country: str,
        number_hash: int,
    ) -> tuple[bool, Outcome | None]:
        """evaluate by fraud/_local.c on the stored bytes: (whether it decided, evaluate's
        answer); not decided: a value it does not read exactly, evaluated here."""
        raw = self.values.raw(key)
        if raw is None:
            return True, None
        own_ip = ip_key != key
        ip_raw = None
        if own_ip:
            ip_raw = self.values.raw(ip_key)
            if ip_raw is None:
                return True, None
        got = self._c_evaluate(
            c_ops, raw, ip_raw, now, identity, sid, number, country, number_hash,
            plan.ttl_ms, plan.ip_ttl_ms,
        )  # fmt: skip
        if type(got) is not tuple:
            if got == C_SEEN:
                return True, None
            if got == C_REFUSES:  # refused or blocked: fraud.lua decides, on what is stored
                self.values.drop(key)
                if own_ip:
                    self.values.drop(ip_key)
                return True, None
            self.c_declined += 1
            return False, None
        self.by_c += 1
        worst_i, fired, value, px, ip_value, ip_px = got
        if ip_value is not None:
            self.values.put(ip_key, ip_value)
        else:
            ip_value = b""
        if value is not None:
            self.values.put(key, value)
        else:
            value = raw
        reply: tuple[Any, ...] = (b"ok", worst_i, 0, fired, b"")  # fraud_check's
        return True, Outcome(raw, value, px, ip_raw, ip_value, ip_px, reply)

    def evaluate(
        self,
        plan: AuthPlan,
        now: int,
        key: str,
        ip_key: str,
        identity: str,
        sid: str,
        number: str,
        country: str,
        number_hash: int,
    ) -> Outcome | None:
        """The call counted on the known values (and the values it leaves when granted),
        or None: a value not known, the call seen before, a deny flag, or a rule that
        would refuse or block: fraud.lua decides those. A call evaluated here leaves the
        values it packed as known (the script writes them, or says what is stored)."""
        ops = self.ops(plan.ops)
        if self._c is not None:
            c_ops = self._compiled(plan.ops, ops)
            if c_ops is not None:
                decided, outcome = self._evaluate_c(
                    c_ops, plan, now, key, ip_key, identity, sid, number, country, number_hash
                )
                if decided:
                    return outcome
        known = self.values.get(key)
        if known is None:
            return None
        raw, v = known
        own_ip = ip_key != key
        ip_raw, ipv = b"", v
        if own_ip:
            ip_known = self.values.get(ip_key)
            if ip_known is None:
                return None
            ip_raw, ipv = ip_known
        sid_b, identity_b = sid.encode(), identity.encode()
        if _seen(v, now, sid_b, identity_b):
            return None
        cc = country.encode()
        call = (now, identity_b, sid_b, number.encode(), cc, number_hash)
        fired, worst_i, refuses, dirty, ip_dirty = _check(ops, v, ipv, own_ip, call)
        if refuses:  # refused or blocked: fraud.lua decides, on what is stored
            self.values.drop(key)
            if own_ip:
                self.values.drop(ip_key)
            return None
        dirty = _admit(ops, v, now, sid_b, cc) or dirty
        ip_value, ip_px = b"", 0
        if own_ip and ip_dirty:
            _prune(ipv, now)
            ip_px = _expiry(ipv, now, plan.ip_ttl_ms)
            ip_value = pack(ipv)
            self.values.put(ip_key, ip_value, ipv)
        value, px = raw, 0
        if dirty:
            _prune(v, now)
            px = _expiry(v, now, plan.ttl_ms)
            value = pack(v)
            self.values.put(key, value, v)
        reply: tuple[Any, ...] = (b"ok", worst_i, 0, tuple(fired), b"")  # fraud_check's
        return Outcome(raw, value, px, ip_raw if own_ip else None, ip_value, ip_px, reply)

    def learnt(self, key: str, raw: Any) -> None:
        """What a script said is stored under ``key`` (False/None: nothing)."""
        self.values.put(key, raw if isinstance(raw, bytes) else b"")


def _seen(v: dict[Any, Any], now: int, sid: bytes, identity: bytes) -> bool:
    """Anything fraud_seen or fr_deny would answer from: a remembered answer (or one that
    may be in its own key), a live or counted call of this id, a deny flag in force."""
    recent = v.get(R)
    if isinstance(recent, dict) and sid in recent:
        return True
    if (v.get(RO) or 0) > now:
        return True
    live = v.get(L)
    if isinstance(live, dict) and sid in live:
        return True
    counted = v.get(Q)
    if isinstance(counted, (tuple, list)) and sid in counted:
        return True
    deny = v.get(D)
    if isinstance(deny, dict):
        for flag, until in deny.items():
            if until > now:
                _, _, who = flag.partition(b"|")
                if not who or who == identity:
                    return True
    return False
