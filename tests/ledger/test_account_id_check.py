"""keys.check_account_id remembers the ids it passed (round 11: a set look-up in place
of the pattern's match on every reserve, commit and release): the same answer as the
pattern for every id, the first time and every time after, and after the set is
cleared."""

from __future__ import annotations

import random
import re

from chargingd.ledger import keys as K
from chargingd.ledger.types import InvalidRequest

PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,63}")


def _passes(account_id: object) -> bool:
    try:
        assert K.check_account_id(account_id) is account_id
    except InvalidRequest:
        return False
    return True


def test_remembered_ids_are_answered_as_the_pattern_answers() -> None:
    rng = random.Random(15)
    alphabet = "aZ09._:@+-{} \n\x00é"
    ids = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(70))) for _ in range(3000)]
    ids += ["a" * 64, "a" * 65, "acc1", "", "-acc", "acc}", "{a:acc}"]
    for _ in range(3):
        for account_id in rng.sample(ids, len(ids)):
            assert _passes(account_id) == bool(PATTERN.fullmatch(account_id)), account_id
    assert "acc1" in K._CHECKED_IDS and "acc}" not in K._CHECKED_IDS


def test_the_set_is_bounded_and_answers_the_same_once_cleared() -> None:
    # (the bound read, not patched: the compiled module keeps its value)
    ids = [f"acc{i}" for i in range(K._CHECKED_MAX + 50)]
    for account_id in ids:
        assert _passes(account_id)
    assert 0 < len(K._CHECKED_IDS) <= K._CHECKED_MAX
    assert all(_passes(account_id) for account_id in ids[:100] + ids[-100:])
    assert not _passes("bad id")


def test_other_types_are_refused_as_before() -> None:
    class Text(str):
        pass

    for value in (None, 1, 1.5, b"acc1", ["acc1"]):
        assert not _passes(value)
    assert _passes(Text("acc1")) and not _passes(Text("acc 1"))
    assert all(type(x) is str for x in K._CHECKED_IDS)


def test_session_keys_remembered_per_account_are_the_keys_built() -> None:
    """session_keys remembers an account's tag and four keys (round 12a): the same keys
    as built each time, for ids seen again, a str subclass (never remembered), and
    after the memory is cleared when full."""

    class Name(str):
        pass

    def built(account_id: str, session_id: str) -> list[str]:
        tag = "{a:" + str.__str__(account_id) + "}"
        return [f"{tag}:{k}" for k in ("acct", "holds", "leases", "audit")] + [
            f"{tag}:ls:{session_id}"
        ]

    rng = random.Random(12)
    for i in range(3000):
        account_id = f"{rng.randrange(50):012d}" if i % 7 else f"acc-{i}"
        session_id = f"m-{rng.getrandbits(40):X}"
        assert K.session_keys(account_id, session_id) == built(account_id, session_id)
        subclassed = Name(account_id)
        assert K.session_keys(subclassed, session_id) == built(account_id, session_id)
        if i == 2000:
            K._ACCOUNT_KEYS.clear()
    assert all(type(k) is str for k in K._ACCOUNT_KEYS)
    assert "000000000007" in K._ACCOUNT_KEYS


def test_session_keys_memory_stays_bounded() -> None:
    """More accounts than the memory holds: it is cleared when full, never past its
    cap, and the keys stay right for the ids it forgot."""
    K._ACCOUNT_KEYS.clear()
    cap = K._ACCOUNT_KEYS_MAX
    for n in range(cap + 50):
        K.session_keys(f"acc-{n}", "s")
        assert len(K._ACCOUNT_KEYS) <= cap
    assert len(K._ACCOUNT_KEYS) == 50  # cleared once, at the cap
    tag = K.account_tag("acc-3")
    assert K.session_keys("acc-3", "x") == [
        f"{tag}:acct", f"{tag}:holds", f"{tag}:leases", f"{tag}:audit", f"{tag}:ls:x"
    ]  # fmt: skip
