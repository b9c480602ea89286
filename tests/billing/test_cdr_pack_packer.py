"""CDR.pack by one shared msgpack Packer (round 13b; msgpack.packb built a Packer and
its buffer per close): the same bytes as msgpack.packb of dataclasses.asdict on varied
CDRs, and a pack that fails (a value msgpack refuses) leaves the next one whole."""

from __future__ import annotations

import dataclasses
import random

import msgpack
import pytest
from cdr_factory import make_cdr

from chargingd.billing.cdr import CDR


def _asdict_bytes(cdr: CDR) -> bytes:
    raw: bytes = msgpack.packb(dataclasses.asdict(cdr), use_bin_type=True)
    return raw


def test_pack_is_packb_of_asdict_on_varied_cdrs() -> None:
    rng = random.Random(4)
    texts = ["", "é", "中" * 40, "x" * 300, "a" * 70000]
    for i in range(400):
        extra = {rng.choice(texts)[:9] + str(k): rng.choice(texts) for k in range(rng.randrange(6))}
        cdr = make_cdr(
            i,
            extra=extra,
            caller=rng.choice(texts),
            cost_micros=rng.choice([0, 1, 2**31, 2**63 - 1, -5]),
            charged_micros=rng.randrange(2**40),
            revision=rng.randrange(3),
        )
        assert cdr.pack() == _asdict_bytes(cdr)
        assert CDR.of(dict(cdr.__dict__)).pack() == _asdict_bytes(cdr)


def test_a_failed_pack_leaves_the_next_one_whole() -> None:
    good = make_cdr(1)
    for bad in (
        dataclasses.replace(good, extra={"x": object()}),  # type: ignore[dict-item]
        dataclasses.replace(good, cost_micros=2**70),
        dataclasses.replace(good, caller="\udcff"),
    ):
        with pytest.raises((TypeError, OverflowError, UnicodeEncodeError)):
            bad.pack()
        assert good.pack() == _asdict_bytes(good)
