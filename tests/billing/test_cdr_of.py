"""CDR.of and the CDR's pack/unpack without the frozen __init__: the same CDR (equality,
hash, repr, dataclasses.replace/asdict, frozen), the same bytes as the map of its fields
by name (what pack wrote before: dataclasses.asdict's map), from the close path too."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis
from cdr_factory import make_cdr
from sessions_harness import EUR, Clock, add_account, call, make_ledger, make_sessions, usage

from chargingd.billing.cdr import CDR, CDR_STREAM
from chargingd.sessions.ccapi import UsageKind

ORDER = [f.name for f in dataclasses.fields(CDR)]


def _asdict_bytes(cdr: CDR) -> bytes:
    """What CDR.pack wrote before: msgpack of dataclasses.asdict."""
    raw: bytes = msgpack.packb(dataclasses.asdict(cdr), use_bin_type=True)
    return raw


def _fields(cdr: CDR) -> dict[str, Any]:
    return {name: getattr(cdr, name) for name in ORDER}


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"charged_micros": 5, "charge": "live", "charge_reason": "capped", "revision": 2},
        {"extra": {}, "status": "credit_cut", "answer_ms": 0, "duration_s": 0},
    ],
)
def test_of_is_the_dataclass(changes: dict[str, Any]) -> None:
    built = make_cdr(7, **changes)
    fast = CDR.of(_fields(built))
    assert type(fast) is CDR
    assert fast == built and repr(fast) == repr(built)  # (unhashable: extra is a dict)
    assert dataclasses.asdict(fast) == dataclasses.asdict(built)
    assert fast.pack() == built.pack() == _asdict_bytes(built)
    assert dataclasses.replace(fast, revision=9) == dataclasses.replace(built, revision=9)
    assert dataclasses.replace(fast, revision=9).pack() == _asdict_bytes(
        dataclasses.replace(built, revision=9)
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.cost_micros = 1  # type: ignore[misc]


def test_of_takes_every_field_in_order_only() -> None:
    fields = _fields(make_cdr(1))
    missing = dict(fields)
    del missing["revision"]
    with pytest.raises(ValueError):
        CDR.of(missing)
    with pytest.raises(ValueError):
        CDR.of({**fields, "surprise": 1})
    reordered = dict(reversed(list(fields.items())))
    with pytest.raises(ValueError):
        CDR.of(reordered)


def test_unpack_takes_the_packed_map_and_still_checks_the_others() -> None:
    cdr = make_cdr(3, charged_micros=5, charge="mediated_debit")
    back = CDR.unpack(cdr.pack())
    assert back == cdr and list(vars(back)) == ORDER and back.pack() == cdr.pack()
    # another order, a foreign field, a missing optional or required one: as before
    reordered = dict(reversed(list(dataclasses.asdict(cdr).items())))
    again = CDR.unpack(msgpack.packb(reordered, use_bin_type=True))
    assert again == cdr and again.pack() == cdr.pack()
    assert CDR.unpack(msgpack.packb({**dataclasses.asdict(cdr), "x": 1})) == cdr
    no_revision = dataclasses.asdict(cdr)
    del no_revision["revision"]
    assert CDR.unpack(msgpack.packb(no_revision)) == cdr
    no_caller = dataclasses.asdict(cdr)
    del no_caller["caller"]
    with pytest.raises(TypeError):
        CDR.unpack(msgpack.packb(no_caller))


async def test_a_live_close_writes_the_bytes_of_its_fields(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    sessions = make_sessions(redis, ledger, clock, tmp_path)
    await add_account(ledger, balance_micros=10 * EUR)
    for sid, stop_s in (("of-1", 90), ("of-2", 0)):
        info = call(sid)
        await sessions.authorize(info)
        await sessions.account(usage(info, UsageKind.START, 0, clock.now_ms))
        clock.advance(60)
        await sessions.account(usage(info, UsageKind.INTERIM, 60, clock.now_ms))
        clock.advance(30)
        await sessions.account(usage(info, UsageKind.STOP, stop_s, clock.now_ms))
    entries = await redis.xrange(CDR_STREAM)
    assert len(entries) == 2
    for _, fields in entries:
        raw = fields[b"cdr"]
        decoded = msgpack.unpackb(raw, raw=False)
        assert list(decoded) == ORDER
        rebuilt = CDR(**decoded)  # by the dataclass's own __init__
        assert raw == _asdict_bytes(rebuilt) == rebuilt.pack()
