"""A session record's stored bytes are the same in every build and version: daemons of
the older version (pure Python, record.py interpreted) read what this one writes and
the other way round during a rolling upgrade. The expected bytes below were packed by
the pure-Python record.py before it was compiled (main at 25eae8a); the compiled build
(setup.py) must pack and read exactly them."""

from __future__ import annotations

import random

import msgpack
import pytest

from chargingd.sessions.record import (
    CODES,
    COMPACT,
    FIELDS,
    LEGACY,
    REQUIRED,
    Layout,
    SessionRecord,
    fields_map,
)

NEW = SessionRecord.build(
    session_id="c0ffee-1",
    account_id="acc1",
    user_name="alice",
    caller="+4930123456",
    callee="+4940987654",
    destination="DE-HAM",
    plan="std",
    currency="EUR",
    gateway="10.0.0.1",
    client="kam",
    auth_ms=1764940000123,
    last_seen_ms=1764940000123,
    held_micros=300000,
    paid_usage_s=180,
    nas_session_id="nas-7",
    conf_id="c0ffee-1",
    call_origin="answer",
)
NEW_BYTES = bytes.fromhex(
    "8fa175a5616c696365a26367ab2b34393330313233343536a26364ab2b34393430393837363534"
    "a26473a644452d48414da2706ca3737464a26375a3455552a26777a831302e302e302e31a2636c"
    "a36b616da26174cf0000019aee9f2b7ba26864ce000493e0a27075ccb4a26e73a56e61732d37a2"
    "6f72a6616e73776572a27374a46c697665a2637101"
)
# Every field away from its default (a 16+ field map header, negative and 64-bit ints).
CLOSED = SessionRecord.build(
    session_id="s2",
    account_id="acc1",
    user_name="bob",
    caller="+4930",
    callee="+4940",
    destination="DE",
    plan="p",
    currency="EUR",
    gateway="gw",
    client="c",
    auth_ms=1000,
    answer_ms=2000,
    last_seen_ms=99000,
    last_usage_s=97,
    debited_micros=-5,
    held_micros=0,
    paid_usage_s=70000,
    limited=1,
    deadline_ms=2**40,
    cut_reason="credit_cut",
    cut_attempts=2,
    cut_ms=98000,
    cut_ok=1,
    adopted=1,
    conf_id="other",
    credit_micros=12345678901,
    state="closed",
    status="completed",
    cost_micros=1500000,
    charged_micros=1500000,
    provisional=1,
    reported_usage_s=97,
    cdr_revision=3,
)
CLOSED_BYTES = bytes.fromhex(
    "de001ea175a3626f62a26367a52b34393330a26364a52b34393430a26473a24445a2706ca170a2"
    "6375a3455552a26777a26777a2636ca163a26174cd03e8a2616ecd07d0a26c73ce000182b8a26c"
    "7561a26462fba27075ce00011170a26c6d01a2646ccf0000010000000000a26372aa6372656469"
    "745f637574a2636102a2636dce00017ed0a2636f01a2616401a26366a56f74686572a26363cf00"
    "000002dfdc1c35a27374a6636c6f736564a27373a9636f6d706c65746564a26373ce0016e360a2"
    "6368ce0016e360a2707601a2727561a2727603"
)


def test_records_pack_to_the_bytes_the_pure_module_wrote() -> None:
    assert NEW.pack() == NEW_BYTES
    assert CLOSED.pack() == CLOSED_BYTES


def test_the_bytes_read_back_as_the_same_records() -> None:
    assert SessionRecord.unpack("acc1", "c0ffee-1", NEW_BYTES) == NEW
    assert SessionRecord.unpack("acc1", "s2", CLOSED_BYTES) == CLOSED
    assert SessionRecord.unpack("acc1", "s2", CLOSED_BYTES).pack() == CLOSED_BYTES


def test_a_script_appended_value_and_a_merged_map_keep_their_bytes() -> None:
    # Two pairs appended by a script (the header counts them), two fields it writes.
    packed = NEW.pack(extra=2, omit=("held_micros", "paid_usage_s"))
    assert packed == bytes.fromhex(
        "8fa175a5616c696365a26367ab2b34393330313233343536a26364ab2b34393430393837363534"
        "a26473a644452d48414da2706ca3737464a26375a3455552a26777a831302e302e302e31a2636c"
        "a36b616da26174cf0000019aee9f2b7ba26e73a56e61732d37a26f72a6616e73776572a27374a4"
        "6c697665a2637101"
    )
    merged = fields_map({"last_seen_ms": 1764940005000, "nas_session_id": "x"})
    assert merged == bytes.fromhex("82a26c73cf0000019aee9f3e88a26e73a178")
    assert msgpack.unpackb(merged) == {"ls": 1764940005000, "ns": "x"}


def test_the_records_own_writer_packs_as_msgpack() -> None:
    """SessionRecord.pack writes the map itself (round 10b): the bytes of
    msgpack.Packer(use_bin_type=True) for str and int values across every header size
    (a value it does not write, a bool or a float, is left to msgpack: None)."""
    import random

    from chargingd.sessions.record import _write_map, map_header

    packb = msgpack.Packer(use_bin_type=True).pack
    rng = random.Random(9)
    ints = [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, 2**64 - 1]
    ints += [-1, -32, -33, -128, -129, -32768, -32769, -(2**31) - 1, -(2**63)]

    def value() -> str | int:
        kind = rng.randrange(4)
        if kind == 0:
            return rng.choice(ints)
        if kind == 1:
            return rng.randrange(-(2**63), 2**64)
        size = rng.choice([0, 1, 31, 32, 255, 256, 65536])
        return rng.choice(["a", "é", "中"]) * size

    for _ in range(600):
        fields = {f"k{i}": value() for i in range(rng.choice([0, 1, 15, 16, 40]))}
        extra = rng.choice([0, 1, 3])
        want = packb(fields)
        if extra:
            want = map_header(len(fields) + extra) + want[len(map_header(len(fields))) :]
        assert _write_map(fields, len(fields) + extra) == want
    assert _write_map({"a": True}, 1) is None and _write_map({"a": 2**64}, 1) is None
    assert _write_map({"a": "\udcff"}, 1) is None


def test_every_field_alone_is_stored_and_read_back() -> None:
    # stored(), as_dict and replace are written out field by field (round 8a): a field
    # one of them forgets is lost on every write of the record (money, the CDR). Each
    # field away from its default alone, and all of them at once, read back the same.
    required = {
        name: (1 if kind is int else f"v-{name}") for name, kind, d in FIELDS if d is REQUIRED
    }
    # (last_seen_ms as every record has it: auth_ms at least; a 0 reads back as auth_ms)
    base = SessionRecord(**required, last_seen_ms=1)
    assert SessionRecord.unpack(base.account_id, base.session_id, base.pack()) == base
    every = dict(required)
    for name, kind, default in FIELDS:
        if default is REQUIRED:
            continue
        value: int | str = 7 if kind is int else f"x-{name}"
        assert value != default
        every[name] = value
        rec = base.replace(**{name: value})
        assert getattr(rec, name) == value and rec.as_dict() == {**base.as_dict(), name: value}
        assert CODES[name] in rec.stored(), name
        assert SessionRecord.unpack(rec.account_id, rec.session_id, rec.pack()) == rec, name
    full = SessionRecord(**every)
    assert SessionRecord.unpack(full.account_id, full.session_id, full.pack()) == full
    assert set(full.stored()) == {CODES[n] for n, _, _ in FIELDS if n in CODES}


_INTS = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63, 2**64 - 1]
_INTS += [-1, -32, -33, -128, -129, -32768, -32769, -(2**31) - 1, -(2**63), 2**64, -(2**63) - 1]
_TEXTS = ["", "a", "é", "中", "\udcff", "x" * 31, "y" * 32, "é" * 16, "z" * 255, "w" * 256]
_TEXTS += ["v" * 65536]


def _random_record(rng: random.Random) -> SessionRecord:
    """Every field at its default or not: str values of every header size and not
    UTF-8, ints of every width and out of 64 bits, conf_id the session id, last_seen_ms
    auth_ms."""

    def value(kind: type) -> str | int:
        if kind is int:
            if rng.randrange(3) == 0:
                return rng.randrange(-(2**63), 2**64)
            return rng.choice(_INTS)
        if rng.randrange(3) == 0:
            return "".join(rng.choice("ab中é") for _ in range(rng.randrange(40)))
        return rng.choice(_TEXTS)

    values: dict[str, str | int] = {}
    for name, kind, default in FIELDS:
        if default is REQUIRED or rng.randrange(3) == 0:
            values[name] = value(kind)
    if rng.randrange(4) == 0:
        values["conf_id"] = values["session_id"]
    if rng.randrange(4) == 0:
        values["last_seen_ms"] = values["auth_ms"]
    return SessionRecord(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize("layout", [LEGACY, COMPACT], ids=["legacy", "compact"])
def test_pack_writes_the_stored_map_as_msgpack_packs_it(layout: Layout) -> None:
    """SessionRecord.pack writes the record's fields straight (round 11), not through
    stored(): on random records (_random_record), with and without a script's extra
    pairs and omitted fields, its bytes are msgpack's of stored() (or its error), and
    read back; in both layouts (round 13c)."""
    from chargingd.sessions.record import map_header

    packb = msgpack.Packer(use_bin_type=True).pack
    rng = random.Random(11)
    omits = [(), ("credit_micros",), ("held_micros", "paid_usage_s"), ("state",)]
    for _ in range(3000):
        rec = _random_record(rng)
        extra, omit = rng.choice([0, 0, 1, 2]), rng.choice(omits)
        fields = rec.stored(omit=omit, layout=layout)
        try:
            want = packb(fields)
        except Exception as exc:  # a str not UTF-8, an int out of 64 bits
            with pytest.raises(type(exc)):
                rec.pack(extra=extra, omit=omit, layout=layout)
            continue
        if extra:
            want = map_header(len(fields) + extra) + want[len(map_header(len(fields))) :]
        assert rec.pack(extra=extra, omit=omit, layout=layout) == want, (rec, extra, omit)
        if not extra and not omit:
            blob = rec.pack(layout=layout)
            assert SessionRecord.unpack(rec.account_id, rec.session_id, blob) == rec.replace(
                last_seen_ms=rec.last_seen_ms or rec.auth_ms
            )


def test_a_kept_head_packs_the_same_bytes_as_a_fresh_record() -> None:
    """A packed record keeps the bytes of its first fields (user .. auth_ms, fixed for a
    call) for its layout, and noted / granted / closed carry them (round 17b): every
    record of a call's chain, packed in either layout in any order, is the bytes of the
    same record built fresh (nothing kept), and replace (which may change those
    fields) never carries them."""
    rng = random.Random(17)
    layouts = [LEGACY, COMPACT]
    checked = 0
    for _ in range(1500):
        rec = _random_record(rng)
        for _ in range(6):
            layout = rng.choice(layouts)
            step = rng.randrange(5)
            if step == 0:
                rec = rec.noted(
                    rng.choice(_INTS), rng.randrange(10**6), rng.choice(_INTS),
                    rng.choice(_TEXTS), rng.choice(_TEXTS),
                )  # fmt: skip
            elif step == 1:
                rec = rec.granted(*(rng.choice(_INTS) for _ in range(5)))
            elif step == 2:
                rec = rec.closed(
                    rng.randrange(10**6), rng.choice(["normal", "credit_cut", "é" * 40]),
                    *(rng.choice(_INTS) for _ in range(5)),
                )  # fmt: skip
            elif step == 3:  # a head field changed: never the old head
                name = rng.choice(["user_name", "caller", "callee", "destination", "plan",
                                   "currency", "gateway", "client", "auth_ms"])  # fmt: skip
                value = rng.randrange(2**40) if name == "auth_ms" else rng.choice(_TEXTS)
                rec = rec.replace(**{name: value})
            fresh = SessionRecord(**rec.as_dict())
            extra, omit = rng.choice([(0, ()), (1, ()), (1, ("credit_micros",))])
            try:
                want = fresh.pack(extra=extra, omit=omit, layout=layout)
            except Exception as exc:  # a str not UTF-8, an int out of 64 bits
                with pytest.raises(type(exc)):
                    rec.pack(extra=extra, omit=omit, layout=layout)
                continue
            assert rec.pack(extra=extra, omit=omit, layout=layout) == want, (rec, layout)
            checked += 1
    assert checked > 1500
    # what the head is kept for: a record of the call's chain packs the first fields once
    call = SessionRecord("s", "a", "u", "+49", "+44", "UK", "p", "EUR", "gw", "c", 1000)
    call.pack(layout=COMPACT)
    noted = call.noted(2000, 5, 1500, "", "")
    assert noted._head == call._head != b"" and noted._head_keys is COMPACT
    assert call.replace(caller="+33")._head == b""


@pytest.mark.parametrize("layout", [LEGACY, COMPACT], ids=["legacy", "compact"])
def test_the_start_keeps_the_head_of_the_authorizes_prefix(layout: Layout) -> None:
    """The fused authorize keeps its record's prefix for the call's Start
    (SessionStore.cache_authorized) with its packed head's size; the record the Start
    decodes from it keeps those bytes as its head (round 17b): its packs are the bytes
    of the same record built fresh, with fixmap and map16 headers."""
    import redis.asyncio as aioredis

    from chargingd.sessions.store import SessionStore

    store = SessionStore(
        aioredis.Redis(), session_ttl_s=86400, closed_ttl_s=86400, batch_commands=True,
        compact_records=layout is COMPACT,
    )  # fmt: skip
    rng = random.Random(29)
    kept = 0
    for n in range(1500):
        rec = _random_record(rng).replace(state="live", account_id="acc", session_id=f"s{n}")
        try:
            prefix = rec.pack(extra=1, omit=("credit_micros",), layout=layout)
        except Exception:  # a str not UTF-8, an int out of 64 bits: never authorized
            continue
        credit = rng.choice([0, 1, 2**40])
        store.cache_authorized("acc", rec.session_id, prefix, credit, rec.head_size(layout))
        held = store.cached(rec.session_id)
        if held is None:  # (a value the fast reader leaves: nothing kept, as before)
            continue
        got = held[2]
        noted = got.noted(rng.choice(_INTS), got.last_usage_s, got.answer_ms, "n", "")
        for one in (got, noted):
            try:
                want = SessionRecord(**one.as_dict()).pack(layout=layout)
            except Exception as exc:  # an int out of 64 bits
                with pytest.raises(type(exc)):
                    one.pack(layout=layout)
                continue
            assert one.pack(layout=layout) == want, one
        kept += got.head_size(layout) > 0
    assert kept > 300
