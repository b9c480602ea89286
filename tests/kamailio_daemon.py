"""What the Kamailio end-to-end tests share: a `chargingd serve` for a test module,
a Kamailio in front of it for each test, and reading the results back.

Each test module keeps its own thin fixtures (its daemon's config differs); they are
built from these.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from kamailio_harness import KamailioPorts, Switch
from radius_e2e_harness import SECRET, Daemon, Setup

from chargingd.billing.cdr import CDR


def own_timer_client(ports: KamailioPorts) -> str:
    """The [[radius.clients]] lines of a Kamailio that sends no Interim, whose calls
    chargingd times itself and cuts over Kamailio's JSON-RPC (docs/kamailio.md)."""
    return f"""
flavour = "generic"
require_message_authenticator = false
credit_mode = "own_timer"
cut_backend = "kamailio_jsonrpc"
jsonrpc_url = "{ports.rpc_url}"
"""


@contextlib.contextmanager
def running_daemon(setup: Setup, log: Path) -> Iterator[Daemon]:
    """A started and ready daemon, killed afterwards."""
    daemon = Daemon(setup, log)
    daemon.start()
    try:
        daemon.wait_ready()
        yield daemon
    finally:
        daemon.kill()


def with_log(daemon: Daemon) -> Iterator[Daemon]:
    """A module daemon handed to one test; its log is printed after the test (pytest
    shows it only when the test fails)."""
    yield daemon
    print(f"---- daemon log ----\n{daemon.log()}")


@contextlib.asynccontextmanager
async def switch_in_front(
    daemon: Daemon, tmp_path: Path, ports: KamailioPorts
) -> AsyncIterator[Switch]:
    """A Kamailio (and its SIP phones) sending RADIUS to ``daemon``; its report is
    printed afterwards."""
    setup = daemon.setup
    sw = await Switch.open(
        tmp_path,
        auth_port=setup.auth_port,
        acct_port=setup.acct_port,
        secret=SECRET.decode(),
        ports=ports,
    )
    try:
        yield sw
    finally:
        sw.close()
        print(sw.report())


async def wait_cdr(daemon: Daemon, call_id: str, timeout_s: float = 10.0) -> CDR:
    """The CDR of one call, once the daemon wrote it (polled, never a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [c for c in daemon.cdrs() if c.call_id == call_id]
        if found:
            assert len(found) == 1, found
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no CDR for {call_id}")


def account(daemon: Daemon, account_id: str) -> dict[str, Any]:
    return daemon.call("account.get", {"id": account_id})  # type: ignore[no-any-return]
