"""Round 13b's shortcuts of the accounting path, ported to both stored layouts (round
13d), give what the general code gives: the record read straight from its bytes
(record._read) against msgpack + from_fields, the noted and granted records built
positionally against replace(**fields), fields_map written pair by pair against
msgpack's bytes. Random records and odd maps, in LEGACY and COMPACT (and maps mixing
them): each compared with the general code's answer (or its exception), and the
shortcut taken where it must be (else it would only ever test the fallback)."""

from __future__ import annotations

import random
from typing import Any

import msgpack
import pytest

from chargingd.sessions import record
from chargingd.sessions.noting import Noted, note
from chargingd.sessions.record import (
    CODES,
    COMPACT,
    FIELDS,
    INT_CODES,
    INT_SAME_CONF_ID,
    LEGACY,
    SAME_CONF_ID,
    Layout,
    SessionRecord,
    fields_map,
)
from chargingd.sessions.store import USAGE_SLACK_S
from tests.sessions.test_record_bytes import CLOSED, NEW, _random_record

WRITTEN = {*CODES.values(), SAME_CONF_ID, *INT_CODES.values(), INT_SAME_CONF_ID}
packb = msgpack.Packer(use_bin_type=True).pack
LAYOUTS = pytest.mark.parametrize("layout", [LEGACY, COMPACT], ids=["legacy", "compact"])


def _same_conf(layout: Layout) -> str | int:
    return INT_SAME_CONF_ID if layout.compact else SAME_CONF_ID


def _old_unpack_known(acc: str, sid: str, blob: bytes) -> tuple[SessionRecord, bool]:
    """unpack_known without _read: msgpack (either layout's keys), then from_fields."""
    raw = msgpack.unpackb(blob, raw=False, unicode_errors="surrogateescape", strict_map_key=False)
    return SessionRecord.from_fields(acc, sid, raw), WRITTEN.issuperset(raw)


def _same_as_before(acc: str, sid: str, blob: bytes) -> None:
    """unpack and unpack_known answer as the general code does: the same record (every
    field, of the same type), or the same exception type."""
    try:
        want, known = _old_unpack_known(acc, sid, blob)
    except Exception as exc:
        with pytest.raises(type(exc)):
            SessionRecord.unpack(acc, sid, blob)
        with pytest.raises(type(exc)):
            record.unpack_known(acc, sid, blob)
        return
    got = SessionRecord.unpack(acc, sid, blob)
    got_known, known_now = record.unpack_known(acc, sid, blob)
    for rec in (got, got_known):
        assert rec.as_dict() == want.as_dict(), blob.hex()
        assert [type(v) for v in rec.as_dict().values()] == [
            type(v) for v in want.as_dict().values()
        ]
    assert known_now is known, blob.hex()


@LAYOUTS
def test_every_written_record_is_read_straight_and_the_same(layout: Layout) -> None:
    rng = random.Random(13)
    straight = 0
    for _ in range(3000):
        rec = _random_record(rng)
        try:
            blob = rec.pack(layout=layout)
        except Exception:  # not UTF-8, out of 64 bits: never stored
            continue
        acc, sid = rec.account_id, rec.session_id
        _same_as_before(acc, sid, blob)
        read = record._read(acc, sid, blob)
        assert read is not None, rec  # what the writers write is read straight
        straight += 1
        assert read == rec.replace(last_seen_ms=rec.last_seen_ms or rec.auth_ms)
    assert straight > 800  # (the others hold a value no writer writes)
    for rec in (NEW, CLOSED):
        blob = rec.pack(layout=layout)
        assert record._read(rec.account_id, rec.session_id, blob) == rec
        _same_as_before(rec.account_id, rec.session_id, blob)


def _odd_maps(rng: random.Random, layout: Layout) -> list[bytes]:
    """Maps a writer of this version does not write, or writes otherwise: each must read
    as msgpack and from_fields read it (most through the fallback)."""
    base: dict[Any, Any] = NEW.replace(answer_ms=NEW.auth_ms + 2500).stored(layout=layout)
    codes = list(base)
    odd: list[bytes] = []
    values: list[Any] = [None, True, False, 1.5, 0.0, b"bin", [1], {"a": 1}, "x", 7, -7]
    values += [2**63, -(2**63), 2**64 - 1, "é", "", "1234"]
    # every code of both layouts (a map mixing them), unknown codes of both kinds
    others: list[Any] = [*CODES.values(), SAME_CONF_ID, *INT_CODES.values(), INT_SAME_CONF_ID]
    others += ["zz", "Au", "a", "abc", 34, 127, 128, 255, 300, -1, -33]
    for code in [*codes, *others]:
        for value in values:
            odd.append(packb({**base, code: value}))
    for code in codes:  # a field missing (required or not)
        odd.append(packb({k: v for k, v in base.items() if k != code}))
    for key in (True, False, 1.0, 0.0, b"at"):  # keys msgpack's dict takes as a code's
        odd.append(packb({**base, key: 7}))
        odd.append(packb({**base, key: "x"}))
    blob = packb(base)
    odd += [blob + b"\x00", blob[:-1], blob[:1], b"", b"\x80", b"\xc0", b"\x90"]
    # the same map under a map16 and a map32 header
    odd.append(b"\xde" + len(base).to_bytes(2, "big") + blob[1:])
    odd.append(b"\xdf" + len(base).to_bytes(4, "big") + blob[1:])
    # a str that is not UTF-8 (msgpack reads it with surrogateescape), as a value and a key
    odd.append(blob[:1] + blob[1:].replace(b"\xa5alice", b"\xa5al\xffce"))
    odd.append(blob.replace(b"\xa2cg", b"\xa2c\xff"))
    # duplicate keys (the last wins), conf flag forms, other key forms
    user, same, auth = _key(layout, "user_name"), _key(layout, None), _key(layout, "auth_ms")
    answer, seen = _key(layout, "answer_ms"), _key(layout, "last_seen_ms")
    odd.append(bytes([blob[0] + 1]) + blob[1:] + user + b"\xa3bob")
    odd.append(bytes([blob[0] + 1]) + blob[1:] + same + b"\x00")
    odd.append(bytes([blob[0] + 1]) + blob[1:] + same + b"\x05")
    odd.append(bytes([blob[0] + 1]) + blob[1:] + auth + b"\x05")  # a later auth_ms
    odd.append(bytes([blob[0] + 1]) + blob[1:] + answer + b"\xd0\x85")
    odd.append(bytes([blob[0] + 2]) + blob[1:] + seen + b"\x7f" + seen + b"\xff")
    if layout.compact:  # a key of more bytes than COMPACT writes (msgpack reads it)
        odd.append(blob.replace(b"\x01\xa5alice", b"\xcc\x01\xa5alice"))
        odd.append(blob.replace(b"\x01\xa5alice", b"\xd0\x01\xa5alice"))
    else:
        odd.append(bytes([blob[0]]) + blob[1:].replace(b"\xa2cq\x01", b"\xd9\x02cq\x01"))
    for _ in range(300):  # random truncations and byte flips
        cut = bytearray(blob)
        cut[rng.randrange(len(cut))] = rng.randrange(256)
        odd.append(bytes(cut[: rng.randrange(1, len(cut) + 1)]))
    return odd


def _key(layout: Layout, name: str | None) -> bytes:
    """A field's key in ``layout`` as msgpack writes it (None: the conf flag's)."""
    code = _same_conf(layout) if name is None else layout.codes[name]
    packed: bytes = packb(code)
    return packed


@LAYOUTS
def test_odd_maps_read_as_msgpack_and_from_fields_read_them(layout: Layout) -> None:
    rng = random.Random(5)
    for blob in _odd_maps(rng, layout):
        _same_as_before("acc1", "c0ffee-1", blob)


@LAYOUTS
def test_ints_of_every_width_and_strs_of_every_header(layout: Layout) -> None:
    base: dict[Any, Any] = NEW.stored(layout=layout)
    codes = layout.codes
    ints = [0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**64 - 1]
    ints += [-1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63)]
    for value in ints:
        for name in ("debited_micros", "answer_ms", "last_seen_ms", "auth_ms"):
            blob = packb({**base, codes[name]: value})
            _same_as_before("acc1", "c0ffee-1", blob)
            assert record._read("acc1", "c0ffee-1", blob) is not None
    for size in (0, 1, 31, 32, 255, 256, 65535, 65536):
        blob = packb({**base, codes["user_name"]: "é" * size})
        _same_as_before("acc1", "c0ffee-1", blob)
        assert record._read("acc1", "c0ffee-1", blob) is not None


def test_noted_and_granted_are_replace() -> None:
    rng = random.Random(21)
    for _ in range(500):
        rec = _random_record(rng)
        args = (rng.randrange(2**40), rng.randrange(10**6), rng.randrange(2**40), "n", "o")
        want = rec.replace(
            last_seen_ms=args[0],
            last_usage_s=args[1],
            answer_ms=args[2],
            nas_session_id=args[3],
            call_origin=args[4],
        )
        assert rec.noted(*args).as_dict() == want.as_dict()
        grant = [rng.randrange(-5, 2**50) for _ in range(5)]
        want = rec.replace(
            debited_micros=grant[0],
            held_micros=grant[1],
            paid_usage_s=grant[2],
            limited=grant[3],
            deadline_ms=grant[4],
        )
        assert rec.granted(*grant).as_dict() == want.as_dict()


def _old_note(
    before: bytes, rec: SessionRecord, *, usage_s: int, now_ms: int, answer_ms: int, **ids: str
) -> Noted | None:
    """noting.note before round 13b: the record by replace(**fields)."""
    if usage_s * 1000 > now_ms - rec.auth_ms + USAGE_SLACK_S * 1000:
        return None
    fields: dict[str, Any] = {"last_seen_ms": now_ms}
    if usage_s > rec.last_usage_s:
        fields["last_usage_s"] = usage_s
    if ids.get("nas_session_id"):
        fields["nas_session_id"] = ids["nas_session_id"]
    if ids.get("call_origin"):
        fields["call_origin"] = ids["call_origin"]
    if answer_ms > 0 and not rec.answer_ms:
        fields["answer_ms"] = answer_ms
    return Noted(before, rec.replace(**fields), fields, ids.get("gateway", ""))


def _old_fields_map(fields: dict[str, str | int], layout: Layout | None) -> bytes:
    """fields_map before round 13d: msgpack's map of the layout's codes."""
    codes = CODES if layout is None else layout.codes
    packed: bytes = packb({codes[name]: value for name, value in fields.items()})
    return packed


@pytest.mark.parametrize("layout", [None, LEGACY, COMPACT], ids=["none", "legacy", "compact"])
def test_note_and_after_grant_are_the_old_replace(layout: Layout | None) -> None:
    rng = random.Random(8)
    for _ in range(2000):
        rec = NEW.replace(
            last_usage_s=rng.choice([0, 30, 60]),
            answer_ms=rng.choice([0, NEW.auth_ms + 2000]),
            nas_session_id=rng.choice(["", "nas-7"]),
            call_origin=rng.choice(["", "answer"]),
            deadline_ms=rng.choice([0, NEW.auth_ms + 90_000]),
        )
        kwargs: dict[str, Any] = {
            "usage_s": rng.choice([0, 15, 30, 45, 60, 90, 10**6]),
            "now_ms": NEW.auth_ms + rng.choice([1000, 60_000, 120_000]),
            "answer_ms": rng.choice([0, -1, NEW.auth_ms + 1000]),
            "nas_session_id": rng.choice(["", "nas-8"]),
            "call_origin": rng.choice(["", "originate"]),
            "gateway": rng.choice(["", "gw2"]),
        }
        new, old = note(b"v", rec, **kwargs), _old_note(b"v", rec, **kwargs)
        if old is None:
            assert new is None
            continue
        assert new is not None
        assert new.rec.as_dict() == old.rec.as_dict()
        assert (new.before, new.fields, new.gateway) == (old.before, old.fields, old.gateway)
        assert new.fields_map(layout) == _old_fields_map(old.fields, layout)
        debited, held, paid = rng.randrange(10**9), rng.randrange(1, 10**9), rng.randrange(999)
        deadline = rng.choice([0, NEW.auth_ms + 300_000])
        grant: dict[str, int] = {"debited_micros": debited, "held_micros": held}
        grant |= {"paid_usage_s": paid, "limited": 0}
        if deadline:
            grant["deadline_ms"] = deadline
        got_rec, got_bytes = new.after_grant(layout, debited, held, paid, deadline)
        want_rec, want_bytes = old.after(layout, **grant)
        assert got_rec.as_dict() == want_rec.as_dict() and got_bytes == want_bytes


@pytest.mark.parametrize("layout", [None, LEGACY, COMPACT], ids=["none", "legacy", "compact"])
def test_fields_map_is_msgpacks_map(layout: Layout | None) -> None:
    rng = random.Random(3)
    names = [name for name, _, _ in FIELDS if name in CODES]
    values: list[Any] = [0, 1, -1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, "", "é", "x" * 40]
    values += ["\udcff", True, "中" * 100]  # (str | int: compiled, a float is a TypeError)
    written = 0
    for _ in range(3000):
        fields = {rng.choice(names): rng.choice(values) for _ in range(rng.randrange(8))}
        try:
            want = _old_fields_map(fields, layout)
        except Exception as exc:
            with pytest.raises(type(exc)):
                fields_map(fields, layout)
            continue
        assert fields_map(fields, layout) == want, fields
        try:
            keys = (layout or LEGACY).fields
            assert record._write_fields(fields, keys) == want, fields
            written += 1
        except record._Unwritten:
            pass
    assert written > 1000  # (the shortcut's bytes, not only the fallback's)
    with pytest.raises(KeyError):
        fields_map({"no_such_field": 1}, layout)


@LAYOUTS
def test_a_closes_fields_are_written_straight(layout: Layout) -> None:
    """A close's fields (SessionCloser.closed_fields: the status a CdrStatus, a str
    subclass) are written by _write_fields, not left to msgpack, with its bytes."""
    from chargingd.billing.cdr import CdrStatus

    class Odd(str):
        __slots__ = ()

        def encode(self, *args: Any, **kwargs: Any) -> bytes:  # msgpack never calls it
            return b"not this"

    for status in [*CdrStatus, Odd("normal"), Odd("é中")]:
        fields: dict[str, str | int] = {"last_usage_s": 95, "status": status, "state": "closed"}
        fields |= {"cost_micros": 120000, "charged_micros": 120000, "provisional": 0}
        want = _old_fields_map(fields, layout)
        got = record._write_fields(fields, layout.fields)
        assert got == want == fields_map(fields, layout), status
