"""freeze_after_start moves what start-up built out of the collector's way."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from chargingd.core.heap import YOUNG_THRESHOLD, freeze_after_start


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_objects_alive_at_start_are_frozen(restore_gc: None) -> None:
    built_at_start = [{"rate": n} for n in range(1000)]
    frozen = freeze_after_start()
    assert frozen >= len(built_at_start) == 1000
    assert gc.get_freeze_count() == frozen
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    # Cycles made afterwards are still collected.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
