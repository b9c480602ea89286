"""A new call's index keys as the fused authorize takes them in one call
(SessionStore.new_call_keys, shards.call_keys: the session id's crc32 once, round 12a):
the same keys as lastseen, needs_locator and locator give one by one (the locator's
returned: the fused call places it, last with the fraud rules)."""

from __future__ import annotations

import random

import redis.asyncio as aioredis

from chargingd.sessions.record import SessionRecord
from chargingd.sessions.shards import call_keys, lastseen_key, locator_key
from chargingd.sessions.store import SessionStore


def test_call_keys_are_lastseen_and_locator_keys() -> None:
    rng = random.Random(12)
    gateways = ["10.0.0.1", "load", "", "a}b", "{x}", "gw-é", "{"]
    for _ in range(5000):
        sid = "".join(rng.choice("abcXYZ019-_.@é") for _ in range(rng.randrange(0, 40)))
        gateway = rng.choice(gateways)
        shards = rng.choice([1, 2, 7, 128, 4096])
        locator = rng.random() < 0.7
        keys = ["before"]
        found = call_keys(keys, gateway, sid, shards, locator=locator)
        assert keys == ["before", lastseen_key(gateway, sid, shards)]
        assert found == (locator_key(sid, shards) if locator else None)


def test_new_call_keys_as_the_methods_one_by_one() -> None:
    store = SessionStore(
        aioredis.Redis(), session_ttl_s=60, closed_ttl_s=60, echo_class=frozenset({"echo"}),
        shards=64,
    )  # fmt: skip
    rng = random.Random(3)
    for i in range(2000):
        sid = f"m-{rng.getrandbits(32):08X}-{i}"
        client = rng.choice(["echo", "gw1"])
        account = rng.choice(["000000000042", "x" * 300])  # too long for a Class: locator
        rec = SessionRecord(
            sid, account, "u", "", "", "d", "p", "EUR", rng.choice(["10.0.0.1", "gw"]), client, 1
        )
        keys: list[str] = []
        found = store.new_call_keys(rec, keys)
        assert keys == [store.lastseen(rec.gateway, sid)]
        assert found == (store.locator(sid) if store.needs_locator(rec) else None)
        assert (found is not None) == (client != "echo" or len(account) > 200)


def test_shard_keys_from_remembered_prefixes_are_the_keys_built() -> None:
    """shard_key remembers a gateway's prefix (round 12a): the key as built each time
    (``sess:seen:{GW}:N``, or ``{~}:GW`` for a name that would give an empty or cut
    tag) for repeated gateways, a str subclass (never remembered), shards past the
    number table, and after the memory is cleared."""
    from chargingd.sessions import shards as S

    class Name(str):
        pass

    def built(gateway: str, shard: int) -> str:
        tagged = f"{{{gateway}}}" if gateway and "}" not in gateway else f"{{~}}:{gateway}"
        return f"sess:seen:{tagged}:{shard}"

    rng = random.Random(7)
    gateways = ["10.0.0.1", "load", "", "a}b", "{x}", "gw-é", "{", "}"]
    for i in range(5000):
        gateway = rng.choice(gateways) if i % 5 else f"gw{i}"
        shard = rng.choice([0, 1, 127, 4095, 4096, 70_000, rng.randrange(4096)])
        assert S.shard_key(gateway, shard) == built(gateway, shard)
        assert S.shard_key(Name(gateway), shard) == built(gateway, shard)
        if i == 3000:
            S._PREFIXES.clear()
    assert all(type(g) is str for g in S._PREFIXES)
    assert S._PREFIXES["load"] == "sess:seen:{load}:"
