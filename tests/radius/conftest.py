"""The fixtures the Kamailio end-to-end modules share (test_kamailio_*.py): each module
starts its own daemon (its module-scoped ``shared``, with its own sessions and credit
mode); these give each test that daemon with its log checked, the module's Kamailio
ports, and a Kamailio in front of the daemon."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from kamailio_daemon import switch_in_front, with_log
from kamailio_harness import KamailioPorts, Switch
from radius_e2e_harness import Daemon


@pytest.fixture(scope="module")
def kamailio_ports() -> KamailioPorts:
    """One pair of Kamailio ports for the module, reserved before the daemon starts (a
    cut backend's config will name the RPC URL); each test's Kamailio reuses them."""
    return KamailioPorts.reserve()


@pytest.fixture
def daemon(shared: Daemon) -> Iterator[Daemon]:
    """The module's daemon (its ``shared`` fixture), its log checked after the test."""
    yield from with_log(shared)


@pytest.fixture
async def switch(
    daemon: Daemon, tmp_path: Path, kamailio_ports: KamailioPorts
) -> AsyncIterator[Switch]:
    async with switch_in_front(daemon, tmp_path, kamailio_ports) as sw:
        yield sw
