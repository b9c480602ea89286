"""fraud/_local.c (the daemon's authorize rules evaluated in C on the stored bytes)
against fraud/local.py's Python evaluation, which tests/fraud/test_local_rules.py holds
to fraud.lua on real Redis (those tests run the C path too when it is built): random
calls on random values, the same answers and byte for byte the same values, call by
call; values written as Lua's cmsgpack writes them (other string and integer
encodings, another key order) and damaged or odd values (floats, booleans, ext types,
truncated bytes) give the same as in Python, where the C declines what it does not
read exactly."""

from __future__ import annotations

import random
import zlib
from typing import Any

import msgpack
import pytest

from chargingd.fraud import local as L
from chargingd.fraud.local import LocalRules
from chargingd.fraud.plan import AuthPlan

_c = pytest.importorskip("chargingd.fraud._local", reason="fraud/_local.c not built")

MIN = 60_000


def op(kind: str, slot: str, win_ms: int, limit: int, act: str, *, ip: bool = False,
       extra: int = 0) -> list[Any]:  # fmt: skip
    """One authorize op as fraud.lua's ARGV has it (compiled.py)."""
    return [kind, 5 if ip else 1, slot, win_ms, limit, act, 0, extra]


# Every kind; small limits so that rules fire, and some refuse and block
OPS = [
    op("c", "1/60", MIN, 6, "a"),
    op("c", "2/60", MIN, 9, "a", ip=True),
    op("i", "3/60", MIN, 4, "a"),
    op("g", "4/600", 10 * MIN, 5, "a", extra=3),
    op("d", "5/300", 5 * MIN, 3, "a"),
    op("l", "6", 3 * MIN, 2, "a"),
    op("n", "7", 90 * 86_400_000, 0, "a"),
    op("c", "8/3600", 60 * MIN, 40, "b"),
    op("c", "9/60", MIN, 12, "r"),
    op("c", "10/60", MIN, 0, "x"),  # bookkeeping: never fires
    op("n", "11", 3_600_000, 0, "x"),  # a short memory: the country rewritten often
    op("p", "scan", 0, 0, "r", ip=True),  # identity_scan: the caller IP's deny flag (below)
]


def plan(ops: list[list[Any]]) -> AuthPlan:
    flat = [field for o in ops for field in o]
    return AuthPlan(
        now_ms=0, rules=(None,) * len(ops), ops=msgpack.packb(flat), may_block=False,
        learns=True, ttl_ms=2 * 3_600_000, ip_ttl_ms=3_600_000,
    )  # fmt: skip


PLANS = [plan(OPS), plan(OPS[:7]), plan([OPS[5], OPS[6], OPS[3]]), plan(OPS[2:5] + OPS[8:])]
NUMBERS = ["+442079460001", "+442079460002", "+442079469999", "+33140000000",
           "+5355512345", "+882123", "+1"]  # fmt: skip
# many ranges (past the 64 counters an account keeps) and numbers of every length
MANY = [
    f"+44{n:0{rnd_len}d}"
    for n, rnd_len in zip(range(0, 90_000, 997), [3, 5, 7, 9, 11] * 19, strict=False)
]
COUNTRIES = ["GB", "FR", "CU", "", "ZZ"]


def lua_style(value: Any, rnd: random.Random) -> Any:
    """The value as Lua might have written it: a map's keys in another order, as an
    ext-free msgpack object (bytes are re-encoded below)."""
    if isinstance(value, dict):
        items = list(value.items())
        rnd.shuffle(items)
        return {k: lua_style(v, rnd) for k, v in items}
    if isinstance(value, (list, tuple)):
        return [lua_style(v, rnd) for v in value]
    return value


def encode(value: Any, rnd: random.Random) -> bytes:
    """msgpack with the encodings another writer uses: strings as str8/str16/bin
    (cmsgpack: str8), integers in wider forms than needed."""
    if isinstance(value, dict):
        n = len(value)
        head = (
            bytes([0x80 | n]) if n < 16 and rnd.random() < 0.7 else b"\xde" + n.to_bytes(2, "big")
        )
        return head + b"".join(encode(k, rnd) + encode(v, rnd) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        n = len(value)
        head = (
            bytes([0x90 | n]) if n < 16 and rnd.random() < 0.7 else b"\xdc" + n.to_bytes(2, "big")
        )
        return head + b"".join(encode(v, rnd) for v in value)
    if isinstance(value, bytes):
        n, pick = len(value), rnd.random()
        if n < 32 and pick < 0.4:
            return bytes([0xA0 | n]) + value
        if n < 256 and pick < 0.7:
            return b"\xd9" + bytes([n]) + value
        if pick < 0.85:
            return (
                b"\xc4" + bytes([n]) + value if n < 256 else b"\xc5" + n.to_bytes(2, "big") + value
            )
        return b"\xda" + n.to_bytes(2, "big") + value
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) >= 2**63:
        return msgpack.packb(value)  # as any writer: None, floats, ext, large integers
    if isinstance(value, int):
        if value >= 0 and rnd.random() < 0.3:
            return b"\xcf" + value.to_bytes(8, "big")
        if rnd.random() < 0.2:
            return b"\xd3" + value.to_bytes(8, "big", signed=True)
        return msgpack.packb(value)


def odd(raw: bytes, rnd: random.Random) -> bytes:
    """A stored value the C declines (or Python refuses): a float or a boolean where a
    count is, nil, an ext type, a map key of another type, damaged bytes."""
    try:
        value = L.unpack(raw)
    except (ValueError, msgpack.ExtraData):  # damaged already
        return raw
    pick = rnd.randrange(7)
    if pick == 0 and value[L.W]:
        key = rnd.choice(list(value[L.W]))
        value[L.W][key] = rnd.choice([1.5, True, None, 2.0**53, 10**19])
    elif pick == 1:
        value[b"z"] = msgpack.ExtType(1, b"x")
    elif pick == 2:
        value[L.L] = {b"s1": 1.25e9, 7: 3}
    elif pick == 3:
        return raw[: max(1, len(raw) // 2)]
    elif pick == 4:
        return raw + b"\x00"
    elif pick == 5:
        value[L.D] = {b"r|user:acc1u0": 9.9e12, 5: 0}
    else:
        value[L.C] = [b"GB", 3]
    return msgpack.packb(value, use_bin_type=False)


def rewrite(stored: dict[str, bytes], k: str, rnd: random.Random, foreign: float,
            damaged: float) -> None:  # fmt: skip
    """Another writer's value now and then (Lua's encoding), or an odd or damaged one."""
    if rnd.random() < foreign:
        try:
            stored[k] = encode(lua_style(L.unpack(stored[k]), rnd), rnd)
        except (ValueError, msgpack.ExtraData):  # a damaged one: rewritten
            stored[k] = b""
    if rnd.random() < damaged:
        stored[k] = odd(stored[k] or msgpack.packb({b"w": {}}), rnd)


def deny(stored: dict[str, bytes], k: str, until: int) -> None:
    """The deny flag of op p's rule in a caller IP's value (until ms), as fraud_event
    writes it (its other flags and counters kept)."""
    try:
        value = L.unpack(stored[k])
    except (ValueError, msgpack.ExtraData):  # a damaged one: left as it is
        return
    flags = value.get(L.D)
    value[L.D] = {**(flags if isinstance(flags, dict) else {}), b"scan": until}
    stored[k] = msgpack.packb(value, use_bin_type=False)


def both(sides: tuple[LocalRules, LocalRules], call: tuple[Any, ...]) -> list[Any]:
    """The two evaluations' outcomes, or the exceptions they raised."""
    answers: list[Any] = []
    for side in sides:
        try:
            answers.append(side.evaluate(*call))
        except Exception as exc:  # the two must fail alike
            answers.append(type(exc))
    return answers


def a_call(
    rnd: random.Random, key: str, ip_key: str, now: int, sid: str, many: bool
) -> tuple[Any, ...]:
    number = rnd.choice(MANY if many else NUMBERS)
    user = f"user:{key[3:7]}u{rnd.randrange(3)}"
    if many:  # identities of 0 to 40 bytes (counter ids across the 31/32 byte encodings)
        user = (user + "x" * rnd.randrange(30))[: rnd.randrange(40)]
    plans = PLANS[1:3] if many else PLANS
    return (
        rnd.choice(plans), now, key, ip_key, user, sid, number, rnd.choice(COUNTRIES),
        zlib.crc32(number.encode()) - 2**31,
    )  # fmt: skip


def step(rnd: random.Random, now: int, many: bool) -> int:
    if many:  # bursts in whole seconds: many counters at once, windows' edges met exactly
        now += rnd.choice([0, 0, 1000, 1000, 2000, 6000])
        now += 3_600_000 if rnd.random() < 0.005 else 0
        return now - now % 1000
    return now + rnd.choice([0, 1, 500, 1000, 5999, 6000, 6001, 30_000, 60_000, -1000, 3_600_000])


def compare(
    rnd: random.Random, steps: int, foreign: float, damaged: float, many: bool = False
) -> tuple[int, int]:
    """Random calls through the Python and the C evaluation, each on what the other
    writer left: the same outcomes and kept bytes each time. (outcomes, by the C)"""
    py, cc = LocalRules(64, compiled=False), LocalRules(64, compiled=True)
    assert py._c is None and cc._c is not None
    accounts = [f"{{a:acc{i}}}:fr:v" for i in range(3)]
    ips = ["{fip:192.0.2.1}:fr:v", "{fip:192.0.2.2}:fr:v"]
    stored: dict[str, bytes] = {k: b"" for k in accounts + ips}
    now, sids, decided = 1_796_000_000_000, ["s0"], 0
    for i in range(steps):
        key = rnd.choice(accounts)
        ip_key = rnd.choice([*ips, key])
        for k in (key, ip_key):
            rewrite(stored, k, rnd, foreign, damaged)
            if k in ips and rnd.random() < 0.05:  # identity_scan's flag (fraud_event)
                deny(stored, k, now + rnd.choice([-1000, 0, 1, 5000, 60_000]))
            for side in (py, cc):
                if side.values.raw(k) != stored[k]:
                    side.learnt(k, stored[k])
        sids.append(f"s{i}" if rnd.random() > 0.08 else rnd.choice(sids))
        a, b = both((py, cc), a_call(rnd, key, ip_key, now, sids[-1], many))
        if isinstance(a, L.Outcome) and isinstance(b, L.Outcome):
            assert (a.expect, a.value, a.px, a.ip_expect, a.ip_value, a.ip_px, a.reply) == (
                b.expect, b.value, b.px, b.ip_expect, b.ip_value, b.ip_px, b.reply
            ), i  # fmt: skip
            decided += 1
            if a.px:
                stored[key] = a.value
            if a.ip_expect is not None and a.ip_px:
                stored[ip_key] = a.ip_value
        else:
            assert a == b, (i, a, b)
        for k in stored:
            assert py.values.raw(k) == cc.values.raw(k), (i, k)
        now = step(rnd, now, many)
    return decided, cc.by_c


@pytest.mark.parametrize("seed", range(6))
def test_random_calls_give_the_same_bytes_in_c_and_python(seed: int) -> None:
    """600 calls of three accounts and two caller IPs on values this process wrote:
    the same outcomes and kept bytes; the C evaluated nearly all of them."""
    decided, by_c = compare(random.Random(seed), 600, foreign=0.0, damaged=0.0)
    assert decided > 300
    assert by_c == decided  # nothing declined on values it wrote itself


@pytest.mark.parametrize("seed", range(6))
def test_many_ranges_identities_and_edges_give_the_same_bytes(seed: int) -> None:
    """Hundreds of ranges and identities of every length (the 64 counters' cap, the
    31/32-byte string encodings), the clock on whole seconds (windows' edges met
    exactly): the same outcomes and bytes, all by the C."""
    decided, by_c = compare(random.Random(300 + seed), 900, foreign=0.1, damaged=0.0, many=True)
    assert decided > 400 and by_c == decided


@pytest.mark.parametrize("seed", range(6))
def test_values_written_as_lua_writes_them_read_the_same(seed: int) -> None:
    """Values re-encoded as another writer's (str8, bin, wide integers, shuffled keys)
    before a third of the calls: still the same bytes, all evaluated by the C."""
    decided, by_c = compare(random.Random(100 + seed), 600, foreign=0.35, damaged=0.0)
    assert decided > 300 and by_c == decided


@pytest.mark.parametrize("seed", range(6))
def test_odd_values_go_to_python_with_the_same_outcome(seed: int) -> None:
    """Odd and damaged values now and then: the C declines them (Python evaluates, or
    raises as before), and the calls after read the same."""
    decided, by_c = compare(random.Random(200 + seed), 600, foreign=0.2, damaged=0.05)
    assert decided > 200 and 0 < by_c < decided


def test_each_odd_shape_is_declined_not_misread() -> None:
    """Each shape the C does not read exactly makes it decline (-1), never answer."""
    c_ops = _c.compile_ops([o.spec() for o in L._ops(PLANS[0].ops)])
    base = {b"w": {b"1/60": [6000, 299_333_333, 2, 10]}, b"l": {b"s9": 1_796_000_100}}
    shapes = [
        {**base, b"w": {b"1/60": 1.5}},
        {**base, b"w": {b"1/60": True}},
        {**base, b"w": {b"1/60": [6000, 1.0, 2, 10]}},
        {**base, b"w": {b"1/60": []}},
        {**base, b"l": {b"s9": 2.5}},
        {**base, b"x": 1.5},
        {**base, 1.5: 1},
        {**base, b"z": msgpack.ExtType(1, b"x")},
        {**base, b"w": {b"1/60": 2**63}},
    ]
    for shape in shapes:
        raw = msgpack.packb(shape, use_bin_type=False, strict_types=False)
        got = _c.evaluate(c_ops, raw, None, 1_796_000_000_000, "u", "s1", "+4420", "GB", 7,
                          1000, 1000)  # fmt: skip
        assert got == L.C_BAIL, shape
    for raw in (b"\xc1", b"\x81\xa1w", b"\x81\xa1w\x80\x00", b"\x91\x81"):
        assert _c.evaluate(c_ops, raw, None, 1, "u", "s1", "+4420", "GB", 7, 1, 1) == L.C_BAIL
    # and a plain value is evaluated: a tuple of the outcome
    raw = msgpack.packb(base, use_bin_type=False)
    got = _c.evaluate(c_ops, raw, None, 1_796_000_000_000, "u", "s1", "+4420", "GB", 7, 1, 1)
    assert isinstance(got, tuple) and isinstance(got[2], bytes)


def random_value(rnd: random.Random, depth: int = 0) -> Any:
    """Any msgpack value of the shapes a value's fields could take, and others."""
    pick = rnd.random()
    if depth > 4 or pick < 0.3:
        return rnd.choice([0, 1, -1, 2**40, 1.5, True, None, b"", b"s1", b"x" * 40, -(2**33)])
    if pick < 0.6:
        return tuple(random_value(rnd, depth + 1) for _ in range(rnd.randrange(12)))
    fields = [L.W, L.G, L.H, L.N, L.L, L.C, L.D, L.R, L.RO, L.Q, L.X, L.P, b"1/60", b"s1", 5]
    return {rnd.choice(fields): random_value(rnd, depth + 1) for _ in range(rnd.randrange(8))}


@pytest.mark.parametrize("seed", range(3))
def test_random_shapes_the_c_evaluates_come_out_as_in_python(seed: int) -> None:
    """1,500 values of random shapes and encodings, some with bytes changed or cut:
    whenever the C gives an outcome, the Python gives the same one, byte for byte
    (and a call the C finds seen or refused, Python finds so too)."""
    rnd = random.Random(400 + seed)
    key, ip_key = "{a:acc0}:fr:v", "{fip:192.0.2.1}:fr:v"
    evaluated = 0
    for _ in range(1500):
        try:
            raw = msgpack.packb(random_value(rnd), use_bin_type=rnd.random() < 0.5)
        except (ValueError, TypeError):
            continue
        if rnd.random() < 0.3:  # damaged
            b = bytearray(raw)
            b[rnd.randrange(len(b))] = rnd.randrange(256)
            raw = bytes(b[: rnd.randrange(len(b) + 1)]) if rnd.random() < 0.3 else bytes(b)
        own_ip = rnd.random() < 0.5
        call = (
            rnd.choice(PLANS), 1_796_000_000_000 + rnd.randrange(-(10**6), 10**6), key,
            ip_key if own_ip else key, "user:u1", rnd.choice(["s1", "s2"]),
            rnd.choice(NUMBERS), rnd.choice(["GB", ""]), rnd.randrange(-(2**40), 2**40),
        )  # fmt: skip
        sides = LocalRules(8, compiled=False), LocalRules(8, compiled=True)
        for side in sides:
            side.learnt(key, raw)
            side.learnt(ip_key, msgpack.packb({b"w": {}}))
        try:
            c_said = sides[1].evaluate(*call)
        except (TypeError, KeyError, IndexError, ValueError, ZeroDivisionError, AttributeError):
            assert sides[1].c_declined  # the C declined it; the Python raised, as before
            continue
        if sides[1].c_declined:
            continue
        evaluated += 1
        py_said = sides[0].evaluate(*call)
        if c_said is None:
            assert py_said is None
            continue
        assert py_said is not None
        assert (py_said.value, py_said.px, py_said.ip_value, py_said.ip_px, py_said.reply) == (
            c_said.value, c_said.px, c_said.ip_value, c_said.ip_px, c_said.reply
        )  # fmt: skip
    assert evaluated > 300


def both_said(raw: bytes, ops: AuthPlan, number: str = "+442079460001") -> list[Any]:
    """One call on a stored value through the Python and the C evaluation: each side's
    outcome (value, px, reply), None, or the exception's type; and whether the C
    evaluated it."""
    said: list[Any] = []
    key = "{a:acc0}:fr:v"
    for compiled in (False, True):
        side = LocalRules(8, compiled=compiled)
        side.learnt(key, raw)
        try:
            got = side.evaluate(ops, 1_796_000_000_000, key, key, "user:u1", "s1", number, "GB", 7)
        except Exception as exc:
            said.append(type(exc))
        else:
            said.append(None if got is None else (got.value, got.px, got.reply))
    return said


def test_duplicate_map_keys_read_as_python_reads_them() -> None:
    """A map with a key twice (another writer's, or damaged): Python's dict keeps the
    key once, where it first came, with the last value. The C read the first value and
    packed both entries back."""
    late = (1_796_000_030_000).to_bytes(8, "big")
    shapes = [
        b"\x83\xa1w\x80\xa1x\x05\xa1x\xce\x7f\x00\x00\x00",  # {w: {}, x: 5, x: 2**31 - 2**24}
        b"\x81\xa1w\x82\xa41/60\xcf" + late + b"\xa41/60\x05",  # w: {1/60: t, 1/60: 5}
        # n: {5/300: {7: 5, 7: 2e9}} (an integer key in two encodings)
        b"\x82\xa1w\x80\xa1n\x81\xa55/300\x82\x07\x05\xd3"
        + (7).to_bytes(8, "big")
        + b"\xce"
        + (2_000_000_000).to_bytes(4, "big"),
        b"\x82\xa1w\x80\xa1l\x82\xa2s9\xce\x7f\x00\x00\x00\xc4\x02s9\x05",  # l: s9 as str and bin
    ]
    for raw in shapes:
        py, cc = both_said(raw, PLANS[0])
        assert py == cc, raw


def test_counts_past_int64_are_not_wrapped() -> None:
    """Counts the rules add past 2**63 (a counter's buckets summed, a counter's last call
    in _cap): Python's integers do not wrap, so the C must not answer with wrapped ones."""
    cur = 1_796_000_000_000 // 6000
    many = {b"w": {b"1/60": (6000,) + (cur, 2**52, 0) * 4096}}  # 4096 * 2**52 = 2**64
    py, cc = both_said(
        msgpack.packb(many, use_bin_type=False), plan([op("c", "1/60", MIN, 6, "a")])
    )
    assert py == cc
    g: dict[bytes, Any] = {b"4/600|+44%03d" % i: (6000, 1, 1, 0) for i in range(64)}
    g[b"4/600|+44zzz"] = (2047, 2**52, 1, 2**52)  # last call 2047 * 2**52 + 2**52 = 2**63
    ranges = plan([op("g", "4/600", 10 * MIN, 5, "a", extra=3)])
    py, cc = both_said(msgpack.packb({b"w": {}, b"g": g}, use_bin_type=False), ranges)
    assert py == cc


def test_a_number_not_utf8_is_left_to_python() -> None:
    """A callee with a lone surrogate on a call already seen: Python answers None (seen:
    it encodes the number only after), where the C raised UnicodeEncodeError."""
    raw = msgpack.packb({b"w": {}, b"l": {b"s1": 2_000_000_000}}, use_bin_type=False)
    py, cc = both_said(raw, PLANS[0], number="+44\udcff")
    assert py == cc is None
    py, cc = both_said(msgpack.packb({b"w": {}}), PLANS[0], number="+44\udcff")
    assert py == cc is UnicodeEncodeError
