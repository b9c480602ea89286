"""The stored record keeps nothing twice: a conf_id equal to the session id (Cisco
gateways key the session by the h323-conf-id) is a one-byte flag, a last_seen_ms equal
to auth_ms (a new call) is left out; both come back on unpack, and records stored in
full (before this) read the same. The session scripts keep the flag when they rewrite
the record (a real Redis: touch, then a partial update)."""

from __future__ import annotations

import msgpack
import pytest
import redis.asyncio as aioredis

from chargingd.sessions.record import CODES, INT_SAME_CONF_ID, SAME_CONF_ID, SessionRecord
from chargingd.sessions.store import SessionStore, record_key

SID = "6F1C0D2A-7E11-11EF-8000-0A0B0C0D0E0F"
BASE = SessionRecord.build(
    session_id=SID,
    account_id="acc1",
    user_name="alice",
    caller="+4940555666",
    callee="+4930123456",
    destination="DE_BERLIN",
    plan="retail",
    currency="EUR",
    gateway="10.0.0.1",
    client="gw1",
    auth_ms=1_700_000_000_000,
    last_seen_ms=1_700_000_000_000,
    conf_id=SID,
    held_micros=20_000,
)


def test_conf_id_and_last_seen_are_not_stored_twice() -> None:
    assert SAME_CONF_ID not in CODES.values()
    stored = BASE.stored()
    assert CODES["conf_id"] not in stored and stored[SAME_CONF_ID] == 1
    assert CODES["last_seen_ms"] not in stored
    assert SessionRecord.unpack("acc1", SID, BASE.pack()) == BASE
    full = BASE.as_dict()
    packed_full = {CODES[k]: v for k, v in full.items() if k in CODES and v not in ("", 0)}
    assert len(BASE.pack()) < len(msgpack.packb(packed_full)) - len(SID)


def test_other_values_are_stored_as_they_are() -> None:
    for changes in (
        {"conf_id": ""},
        {"conf_id": "another-conf-id"},
        {"last_seen_ms": BASE.auth_ms + 60_000},
        {"last_seen_ms": BASE.auth_ms + 1, "conf_id": "x"},
    ):
        rec = BASE.replace(**changes)
        stored = rec.stored()
        assert (SAME_CONF_ID in stored) == (rec.conf_id == SID)
        if rec.conf_id not in ("", SID):
            assert stored[CODES["conf_id"]] == rec.conf_id
        if rec.last_seen_ms != rec.auth_ms:
            assert stored[CODES["last_seen_ms"]] == rec.last_seen_ms
        assert SessionRecord.unpack("acc1", SID, rec.pack()) == rec


def test_records_stored_in_full_read_the_same() -> None:
    old = {CODES[k]: v for k, v in BASE.as_dict().items() if k in CODES and v}
    assert old[CODES["conf_id"]] == SID and CODES["last_seen_ms"] in old
    assert SessionRecord.unpack("acc1", SID, msgpack.packb(old)) == BASE


@pytest.mark.parametrize("compact", [False, True])
async def test_scripts_keep_the_flag(redis: aioredis.Redis, compact: bool) -> None:
    store = SessionStore(redis, session_ttl_s=3600, closed_ttl_s=60, compact_records=compact)
    assert await store.create(BASE)
    state, _usage, rec = await store.touch(
        "acc1", SID, usage_s=0, now_ms=BASE.auth_ms + 5_000, answer_ms=BASE.auth_ms + 5_000
    )
    assert state == "live" and rec is not None
    assert rec == BASE.replace(last_seen_ms=BASE.auth_ms + 5_000, answer_ms=BASE.auth_ms + 5_000)
    await store.update(rec, cut_reason="killed")
    raw = msgpack.unpackb(await redis.get(record_key("acc1", SID)), raw=False, strict_map_key=False)
    flag = INT_SAME_CONF_ID if compact else SAME_CONF_ID
    assert raw[flag] == 1 and store.layout.codes["conf_id"] not in raw
    got = await store.get("acc1", SID)
    assert got is not None and (got.conf_id, got.cut_reason) == (SID, "killed")
    assert got.last_seen_ms == BASE.auth_ms + 5_000
