"""Round 13b's keys of the accounting path are the keys built before: a close's
lastseen, locator and old locator from one crc32 (shards.close_keys), and the record,
live and close-lease keys from session_keys' memory of the account's tag
(ledger.keys.tag_of), on random ids, gateways, shard counts and accounts, remembered
or not."""

from __future__ import annotations

import random

from chargingd.ledger import keys
from chargingd.ledger.keys import account_tag, session_keys, tag_of
from chargingd.sessions.shards import close_keys, lastseen_key, locator_key, old_locator_key
from chargingd.sessions.store import fin_key, live_key, record_key


def _text(rng: random.Random) -> str:
    return "".join(rng.choice("ab{}:~é中0") for _ in range(rng.randrange(0, 20)))


def test_close_keys_are_the_three_keys() -> None:
    rng = random.Random(2)
    for _ in range(3000):
        gateway, sid = _text(rng), _text(rng)
        shards = rng.choice([1, 2, 7, 16, 64, 4096, 5000])
        assert close_keys(gateway, sid, shards) == (
            lastseen_key(gateway, sid, shards),
            locator_key(sid, shards),
            old_locator_key(sid, shards),
        )


class _Str(str):
    __slots__ = ()


def test_session_keys_from_the_remembered_tag_are_the_built_ones() -> None:
    rng = random.Random(7)
    for i in range(2000):
        acc, sid = f"acc{rng.randrange(50)}{_text(rng)}", _text(rng)
        if rng.randrange(2):
            session_keys(acc, sid)  # remembered (its tag and keys)
        if i % 500 == 0:
            keys._ACCOUNT_KEYS.clear()
        tag = "{a:" + acc + "}"
        assert tag_of(acc) == account_tag(acc) == tag
        assert record_key(acc, sid) == f"{tag}:r:{sid}"
        assert live_key(acc) == f"{tag}:calls"
        assert fin_key(acc, sid) == f"{tag}:s:{sid}:fin"
    sub = _Str("acc-sub")
    session_keys(sub, "s")
    assert tag_of(sub) == "{a:acc-sub}" and record_key(sub, "s") == "{a:acc-sub}:r:s"
