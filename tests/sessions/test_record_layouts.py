"""The record's two stored layouts ([sessions] compact_records, docs/performance.md
round 13c): LEGACY (two-letter codes, the state always: what every version before
reads) and COMPACT (integer keys, the state left out while live). Both pack and read
back to the same record, COMPACT is smaller by a fixed rule, the LEGACY bytes are
those an older daemon reads, and every script and reader of this version takes a record
of either layout (a deployment switching layouts, daemon by daemon), on a real Redis."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
import redis.asyncio as aioredis
from sessions_harness import (
    BERLIN,
    BERLIN_PER_S,
    EUR,
    T0_MS,
    Clock,
    add_account,
    call,
    make_ledger,
    make_sessions,
    read_cdrs,
    usage,
)

from chargingd.billing.cdr import CdrStatus
from chargingd.sessions.ccapi import Authorized, UsageKind
from chargingd.sessions.record import (
    CLOSED,
    CODES,
    COMPACT,
    FIELDS,
    INT_CODES,
    LEGACY,
    LIVE,
    REQUIRED,
    SAME_CONF_ID,
    Layout,
    SessionRecord,
    state_of,
)
from chargingd.sessions.store import SessionStore, record_key

# A started call as the kit's `memory` cell stores it (docs/performance.md, round 13c).
KIT = SessionRecord.build(
    session_id="m0-0000ABCD-12345678-1A2B",
    account_id="000000000601",
    user_name="000000000601",
    caller="+49316123407113",
    callee="+442079880162",
    destination="UK_FIXED",
    plan="default",
    currency="EUR",
    gateway="127.0.0.1",
    client="load",
    auth_ms=1796553530209,
    answer_ms=1796553532781,
    last_seen_ms=1796553532781,
    held_micros=20000,
    paid_usage_s=120,
    credit_micros=999999999820000,
)
KIT_COMPACT = bytes.fromhex(
    "8e01ac303030303030303030363031"
    "02af2b3439333136313233343037313133"
    "03ad2b343432303739383830313632"
    "04a8554b5f4649584544"
    "05a764656661756c74"
    "06a3455552"
    "07a93132372e302e302e31"
    "08a46c6f6164"
    "00cf000001a24aef5b61"
    "09cd0a0c"  # answer_ms: 2,572 ms after auth_ms
    "0acd0a0c"  # last_seen_ms: the same
    "0dcd4e20"
    "0e78"
    "19cf00038d7ea4c3c0e0"
)


def _old_reader(account_id: str, session_id: str, blob: bytes) -> SessionRecord:
    """How a daemon before the COMPACT layout decodes a record (its record.py): msgpack
    with its default strict map keys (str only), the two-letter codes, an absent
    last_seen_ms the auth's, the conf-id flag; and its scripts need the state stored."""
    raw = msgpack.unpackb(blob, raw=False, unicode_errors="surrogateescape")
    assert raw[CODES["state"]] in (LIVE, CLOSED)  # r[$state] == 'live' in its scripts
    by_code = {CODES[name]: name for name, _, _ in FIELDS if name in CODES}
    values = {by_code[code]: v for code, v in raw.items() if code in by_code}
    if raw.get(SAME_CONF_ID):
        values["conf_id"] = session_id
    values.setdefault("last_seen_ms", values["auth_ms"])
    return SessionRecord.build(account_id=account_id, session_id=session_id, **values)


def test_compact_bytes_and_their_size() -> None:
    """The kit's started call: 169 bytes LEGACY, 122 COMPACT (47 less: 2 a two-letter
    code, 1 for "u", the live state's 8, 6 each for answer_ms and last_seen_ms as ms
    since auth_ms); the bytes are fixed (stored data)."""
    legacy, compact = KIT.pack(), KIT.pack(layout=COMPACT)
    assert (len(legacy), len(compact)) == (169, 122)
    assert compact == KIT_COMPACT
    for blob in (legacy, compact):
        assert SessionRecord.unpack(KIT.account_id, KIT.session_id, blob) == KIT
        assert state_of(blob) == LIVE


@pytest.mark.parametrize("state", [LIVE, CLOSED])
@pytest.mark.parametrize("answer_s", [0, 2, 70, 4000])
@pytest.mark.parametrize("seen_s", [0, 5, 70, 86_000])
def test_compact_saves_each_keys_letters_the_live_state_and_the_times_digits(
    state: str, answer_s: int, seen_s: int
) -> None:
    """Per field stored, COMPACT's key is one byte where LEGACY's is 1 + its letters;
    the live state's pair is left out; answer_ms and last_seen_ms are ms since auth_ms
    (3 or 5 bytes where the time takes 9) and read back as the times."""
    rec = KIT.replace(
        state=state,
        status="completed" if state == CLOSED else "",
        answer_ms=KIT.auth_ms + answer_s * 1000 if answer_s else 0,
        last_seen_ms=KIT.auth_ms + seen_s * 1000,
    )
    stored = rec.stored()
    saved = sum(len(code) for code in stored)
    if state == LIVE:
        saved += 1 + len(msgpack.packb(LIVE))  # its one-byte key and value left out
    for name in ("answer_ms", "last_seen_ms"):
        if CODES[name] in stored:
            since = stored[CODES[name]] - rec.auth_ms
            saved += len(msgpack.packb(stored[CODES[name]])) - len(msgpack.packb(since))
    compact = rec.pack(layout=COMPACT)
    assert len(rec.pack()) - len(compact) == saved >= 2 * len(stored) - 1
    assert SessionRecord.unpack(rec.account_id, rec.session_id, compact) == rec
    assert state_of(compact) == state


def test_compact_maps_are_never_arrays() -> None:
    """auth_ms (always stored) is key 0: Lua's cmsgpack packs a table whose keys are
    exactly 1..n as an array; key 0 keeps every record a map."""
    assert INT_CODES["auth_ms"] == 0
    assert next(d for name, _, d in FIELDS if name == "auth_ms") is REQUIRED
    assert sorted(INT_CODES.values()) == list(range(len(INT_CODES)))
    assert max(INT_CODES.values()) < 128  # one byte each (positive fixint)


def test_an_older_daemon_reads_the_legacy_layout_it_always_read() -> None:
    """With compact_records = false a daemon writes the bytes older versions read (the
    first step of the upgrade); COMPACT is what they cannot read (the second step)."""
    for rec in (KIT, KIT.replace(state=CLOSED, status="completed", conf_id=KIT.session_id)):
        assert _old_reader(rec.account_id, rec.session_id, rec.pack(layout=LEGACY)) == rec
        with pytest.raises(ValueError):  # int keys: refused by its strict msgpack
            _old_reader(rec.account_id, rec.session_id, rec.pack(layout=COMPACT))


def _layout_of_stored(blob: bytes) -> Layout:
    raw = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    kinds = {type(code) for code in raw}
    assert len(kinds) == 1, raw  # never a mix of both layouts' keys
    return COMPACT if kinds == {int} else LEGACY


@pytest.mark.parametrize("writer", [False, True], ids=["legacy-writer", "compact-writer"])
@pytest.mark.parametrize("reader", [False, True], ids=["legacy-reader", "compact-reader"])
async def test_scripts_take_either_layout(
    redis: aioredis.Redis, writer: bool, reader: bool
) -> None:
    """A record one daemon wrote, touched and merged into by a daemon of the other
    setting (session_touch.lua, session_set.lua): the same values, rewritten whole in
    the reader's layout (the live state put back for LEGACY, left out for COMPACT)."""
    rec = KIT.replace(last_seen_ms=KIT.auth_ms, answer_ms=0, conf_id=KIT.session_id)
    mine = SessionStore(redis, session_ttl_s=3600, closed_ttl_s=60, compact_records=writer)
    other = SessionStore(redis, session_ttl_s=3600, closed_ttl_s=60, compact_records=reader)
    key = record_key(rec.account_id, rec.session_id)
    assert await mine.create(rec)
    assert _layout_of_stored(await redis.get(key)) is mine.layout
    now = rec.auth_ms + 2_000
    state, _usage, touched = await other.touch(
        rec.account_id, rec.session_id, usage_s=0, now_ms=now, answer_ms=now
    )
    assert state == LIVE and touched == rec.replace(last_seen_ms=now, answer_ms=now)
    blob = await redis.get(key)
    assert _layout_of_stored(blob) is other.layout
    raw = msgpack.unpackb(blob, raw=False, strict_map_key=False)
    assert (other.layout.codes["state"] in raw) == (not reader)
    await mine.update(touched, cut_reason="killed", cut_attempts=1)
    got = await other.get(rec.account_id, rec.session_id)
    assert got == touched.replace(cut_reason="killed", cut_attempts=1)
    assert _layout_of_stored(await redis.get(key)) is mine.layout
    await other.update(got, state=CLOSED, status="completed")
    closed = await mine.get(rec.account_id, rec.session_id)
    assert closed is not None and (closed.state, closed.conf_id) == (CLOSED, rec.session_id)
    assert state_of(await redis.get(key)) == CLOSED
    # a closed record is not touched (its state read right in either layout)
    state, _usage, again = await mine.touch(
        rec.account_id, rec.session_id, usage_s=5, now_ms=now + 5_000, answer_ms=0
    )
    assert state == CLOSED and again is None


@pytest.mark.parametrize("first", [False, True], ids=["legacy-first", "compact-first"])
async def test_a_call_across_both_settings_is_charged_once(
    redis: aioredis.Redis, tmp_path: Path, first: bool
) -> None:
    """Authorize, Start and Interim, Stop, each on a daemon of the other setting
    (the fused authorize, renew and close scripts, the noted path's cached bytes): the
    same money and one CDR as on one daemon."""
    clock = Clock()
    ledger = await make_ledger(redis, clock)
    daemons = [
        make_sessions(redis, ledger, clock, tmp_path / "a", compact_records=first),
        make_sessions(redis, ledger, clock, tmp_path / "b", compact_records=not first),
    ]
    await add_account(ledger)
    info = call("s1", called=BERLIN)
    assert isinstance(await daemons[0].authorize(info), Authorized)
    steps = [(UsageKind.START, 0), (UsageKind.INTERIM, 60), (UsageKind.INTERIM, 120)]
    for n, (kind, usage_s) in enumerate([*steps, (UsageKind.STOP, 150)]):
        clock.advance(30 if n == 0 else 60 if n < 3 else 30)
        daemon = daemons[(n + 1) % 2]
        await daemon.account(usage(info, kind, usage_s, T0_MS + usage_s * 1000))
        stored = await redis.get(record_key("acc1", "s1"))
        if kind != UsageKind.STOP:
            rec = await daemons[n % 2].store.get("acc1", "s1")
            assert rec is not None and rec.state == LIVE and rec.last_usage_s == usage_s
            assert state_of(stored) == LIVE
    (cdr,) = await read_cdrs(redis)
    assert cdr.status == CdrStatus.NORMAL and cdr.duration_s == 150
    account = await ledger.get_account("acc1")
    assert account.balance_micros == 10 * EUR - 150 * BERLIN_PER_S
    assert account.reserved_micros == 0
    for daemon in daemons:
        rec = await daemon.store.get("acc1", "s1")
        assert rec is not None and rec.state == CLOSED
