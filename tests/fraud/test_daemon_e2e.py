"""The fraud rules through the real daemon (`chargingd serve` subprocesses) over RADIUS
on loopback: codec-built Access/Accounting-Requests from real UDP sockets, a test
gateway on the client's coa_port that answers Disconnect-Requests (radius_peer,
pyrad), alert webhooks received by a local HTTP server (webhook_receiver).

- A hijacked account fires calls to a premium range of a high-risk country (Liberia)
  at a steady pace while a normal account calls the UK: the hijacked one is blocked
  after the configured count, its live calls are cut, exactly one alert is raised
  (one webhook POST); the normal one is untouched. In shadow mode nothing changes
  but the alert is recorded.
- Two daemons on one Redis, calls sent to both at once: velocity and concurrent-call
  limits hold cluster-wide (the call over the limit is refused, the ones up to it are
  not).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from fraud_harness import LIBERIA_PREMIUM, fraud_value, live_calls
from radius_e2e_harness import BIN, SECRET, Call, Daemon, GatewaySocket, Setup, write_setup
from radius_peer import TestGateway, UdpPeer, wait_until
from webhook_receiver import Receiver, webhook_receiver

from chargingd.billing.cdr import CDR, CDR_STREAM
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

UK = "+442079460000"
# A flat 0.60 per minute to the UK and to Liberia (rated: the rules, not rating, stop it).
TARIFF = """
[tariff]
id = "e2e"
currency = "EUR"
timezone = "UTC"
decimals = 4

[destinations]
UK = ["44"]
LR = ["231"]

[rates.FLAT]
connect_fee = "0"
rate = "0.60"
unit = "60s"
increment = "1s"

[plans.FLAT]
[[plans.FLAT.rates]]
destinations = ["UK", "LR"]
rate = "FLAT"

[[profiles]]
subject = "*any"
plan = "FLAT"
from = 2020-01-01T00:00:00Z
"""
BLOCK_AFTER = 5  # risky calls allowed in the window; the next one blocks
HIJACK_CALLS = 60
PACE_S = 0.1  # one call every 100 ms: a minute's 60 calls, ten times faster

_ids = itertools.count(1)


def fraud_toml(
    rules: str, *, webhook: str = "", shadow: bool = False, local_values: int = 0
) -> str:
    alerts = f'[alerts]\nwebhook_url = "{webhook}"\nwebhook_backoff_s = 0.2\n' if webhook else ""
    return f"""
{alerts}
[fraud]
enabled = true
shadow = {str(shadow).lower()}
local_values = {local_values}
{rules}
"""


# The scenario's rule set: risky destinations block; velocity (the default threshold)
# and concurrency (above the 60 live calls of the shadow run) alert.
SCENARIO_RULES = f"""
[[fraud.rules]]
name = "risky-destinations"
kind = "destination"
match = ["high_risk_country", "high_risk_prefix", "premium_rate", "shared_cost"]
max_calls = {BLOCK_AFTER}
window_s = 3600
action = "block"

[[fraud.rules]]
name = "velocity-account"
kind = "velocity"
scope = "account"
max_calls = 120
window_s = 60

[[fraud.rules]]
name = "concurrent"
kind = "concurrent"
max_calls = 100
"""


def start_daemon(make_setup: Callable[[], Setup], log: Path) -> Daemon:
    """A ready daemon. Its ports are picked free just before it binds them; when another
    program on the machine took one meanwhile (it says so and exits), once more on
    fresh ports. Any other failure fails the test, with the daemon's log."""
    for attempt in (1, 2):
        daemon = Daemon(make_setup(), log)
        daemon.start()
        try:
            daemon.wait_ready()
            return daemon
        except BaseException:
            text = daemon.log()
            daemon.kill()
            if attempt == 1 and "already in use" in text:
                continue
            print(text)
            raise
    raise AssertionError("unreachable")


@pytest.fixture
async def hook() -> AsyncIterator[Receiver]:
    async with webhook_receiver() as receiver:
        yield receiver


def scenario_daemon(tmp_path: Path, hook: Receiver, *, shadow: bool) -> Iterator[Daemon]:
    """Two RADIUS processes (the main one and a worker, SO_REUSEPORT): each runs the
    rules, the kernel spreads the calls over both."""
    top = fraud_toml(SCENARIO_RULES, webhook=hook.url, shadow=shadow)
    daemon = start_daemon(
        lambda: write_setup(tmp_path, top=top, tariff_text=TARIFF, workers=2),
        tmp_path / "daemon.log",
    )
    try:
        daemon.create_account("hijack", "100.00")
        daemon.create_account("normal", "100.00")
        yield daemon
    finally:
        print(f"---- daemon log ----\n{daemon.log()}")  # shown when the test fails
        daemon.kill()


@pytest.fixture
def daemon(tmp_path: Path, hook: Receiver) -> Iterator[Daemon]:
    yield from scenario_daemon(tmp_path, hook, shadow=False)


@pytest.fixture
def shadow_daemon(tmp_path: Path, hook: Receiver) -> Iterator[Daemon]:
    yield from scenario_daemon(tmp_path, hook, shadow=True)


@asynccontextmanager
async def gateway_listening(daemon: Daemon) -> AsyncIterator[TestGateway]:
    """The gateway's Disconnect/CoA listener on the client's coa_port (answers ACK)."""
    gw = TestGateway(await UdpPeer.open("127.0.0.1", daemon.setup.coa_port), SECRET)
    try:
        yield gw
    finally:
        await gw.close()


async def place(daemon: Daemon, call: Call, *, start: bool = True) -> rc.Packet:
    """Access-Request; when accepted (and ``start``), Accounting Start: a live call."""
    sock = await GatewaySocket.open()
    try:
        answer = await sock.ask(call.access_request(), daemon.setup.auth_port)
        if answer.code == rc.ACCESS_ACCEPT and start:
            acct = await sock.ask(call.accounting(rc.STATUS_START, 0), daemon.setup.acct_port)
            assert acct.code == rc.ACCOUNTING_RESPONSE
        return answer
    finally:
        sock.close()


async def stop(daemon: Daemon, call: Call, usage_s: int) -> None:
    sock = await GatewaySocket.open()
    try:
        acct = await sock.ask(call.accounting(rc.STATUS_STOP, usage_s), daemon.setup.acct_port)
        assert acct.code == rc.ACCOUNTING_RESPONSE
    finally:
        sock.close()


async def paced(daemon: Daemon, user: str, called: str, count: int, pace_s: float) -> list[Any]:
    """``count`` calls of ``user``, one every ``pace_s``: (call, answer) in order."""
    out = []
    for _ in range(count):
        call = Call(f"{user}-{next(_ids)}", user, called=called)
        out.append((call, await place(daemon, call)))
        await asyncio.sleep(pace_s)
    return out


def disconnected(gateway: TestGateway) -> list[str]:
    return sorted(str(r["Acct-Session-Id"][0]) for r in gateway.requests)


def fraud_incidents(daemon: Daemon) -> list[dict[str, Any]]:
    incidents: list[dict[str, Any]] = daemon.call("alert.list", {"kind": "fraud."})["incidents"]
    return incidents


async def test_hijacked_account_is_blocked_its_calls_cut_one_alert_normal_untouched(
    daemon: Daemon, hook: Receiver
) -> None:
    async with gateway_listening(daemon) as gateway:
        await _hijack_blocked(daemon, gateway, hook)


async def _hijack_blocked(daemon: Daemon, gateway: TestGateway, hook: Receiver) -> None:
    hijack, normal = await asyncio.gather(
        paced(daemon, "hijack", LIBERIA_PREMIUM, HIJACK_CALLS, PACE_S),
        paced(daemon, "normal", UK, 12, 0.5),
    )
    codes = [answer.code for _, answer in hijack]
    assert codes == [rc.ACCESS_ACCEPT] * BLOCK_AFTER + [rc.ACCESS_REJECT] * (
        HIJACK_CALLS - BLOCK_AFTER
    )
    for _, reject in hijack[BLOCK_AFTER:]:
        assert reject.text(rc.REPLY_MESSAGE) == "account blocked"
        assert reject.cisco_value(rc.H323_RETURN_CODE) == "7"  # [radius.h323_return_codes]
    account = daemon.call("account.get", {"id": "hijack"})
    assert (account["status"], account["status_reason"]) == ("blocked", "fraud")

    # Its live calls were cut: a Disconnect-Request for each, none for the normal one.
    live = sorted(call.session_id for call, _ in hijack[:BLOCK_AFTER])
    await wait_until(lambda: disconnected(gateway) == live, timeout_s=10)
    for call, _ in hijack[:BLOCK_AFTER]:  # the gateway hangs up and reports
        await stop(daemon, call, 3)
    cdrs = await wait_cdrs(daemon, "hijack", BLOCK_AFTER)
    assert sorted(c.status for c in cdrs) == ["killed"] * BLOCK_AFTER

    # The normal account: every call accepted, none cut, still active.
    assert all(answer.code == rc.ACCESS_ACCEPT for _, answer in normal)
    assert daemon.call("account.get", {"id": "normal"})["status"] == "active"

    # Exactly one alert: one incident, one webhook POST.
    posts = await hook.wait_for(1)
    await asyncio.sleep(1.0)  # a second POST would have arrived by now
    assert len(hook.received) == 1
    body = posts[0].json
    assert body["incident"] == "fraud.risky-destinations:hijack"
    assert body["details"]["action"] == "block"
    assert body["details"]["account"] == "hijack"
    (incident,) = fraud_incidents(daemon)
    assert incident["incident"] == "fraud.risky-destinations:hijack"
    assert incident["count"] == 1

    # The operator's `ctl status` table shows the rules' and the alerts' counters
    # (docs/fraud.md "Operator commands"); it used to show neither.
    def status_rows() -> dict[str, str]:
        shown = subprocess.run([str(BIN), "ctl", "--config", str(daemon.setup.config), "status"],
                               capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
        lines = shown.stdout.splitlines()
        return {line.split("│")[1].strip(): line for line in lines if "│" in line}

    def counted(row: str, key: str) -> int:
        return int(row.split(f"{key}=")[1].split(",")[0].split()[0])

    # Summed over the processes (workers = 2: the kernel spreads the calls over both):
    # every accepted call went through the rules, whichever process answered it (a
    # worker's counts come with its report, every [monitoring] report_interval_s).
    for _ in range(20):
        rows = status_rows()
        if counted(rows["fraud"], "checked") >= BLOCK_AFTER + len(normal):
            break
        await asyncio.sleep(0.25)
    assert counted(rows["fraud"], "checked") >= BLOCK_AFTER + len(normal), rows["fraud"]
    assert counted(rows["fraud"], "blocked") == 1, rows["fraud"]
    assert counted(rows["alerts"], "opened") == 1, rows["alerts"]
    assert counted(rows["alerts"], "webhook.sent") == 1, rows["alerts"]

    # Until an operator unblocks it (and its counts start over).
    daemon.call("fraud.unblock", {"id": "hijack", "reason": "customer confirmed"})
    again = await place(daemon, Call(f"hijack-{next(_ids)}", "hijack", called=LIBERIA_PREMIUM))
    assert again.code == rc.ACCESS_ACCEPT


async def test_shadow_mode_changes_nothing_but_records_the_alert(
    shadow_daemon: Daemon, hook: Receiver
) -> None:
    daemon = shadow_daemon
    async with gateway_listening(daemon) as gateway:
        hijack, normal = await asyncio.gather(
            paced(daemon, "hijack", LIBERIA_PREMIUM, HIJACK_CALLS, PACE_S),
            paced(daemon, "normal", UK, 12, 0.5),
        )
        await asyncio.sleep(1.0)  # a cut would have been sent by now
        assert gateway.requests == []  # nothing cut
    assert all(answer.code == rc.ACCESS_ACCEPT for _, answer in hijack + normal)
    assert daemon.call("account.get", {"id": "hijack"})["status"] == "active"
    posts = await hook.wait_for(1)
    await asyncio.sleep(1.0)
    assert len(hook.received) == 1
    body = posts[0].json
    assert body["incident"] == "fraud.risky-destinations:hijack"
    assert body["details"]["shadow"] is True
    assert body["details"]["outcome"] == "shadow: would block"
    (incident,) = fraud_incidents(daemon)
    # Every call past the threshold counted into the one incident.
    assert incident["count"] == HIJACK_CALLS - BLOCK_AFTER


async def wait_cdrs(daemon: Daemon, account_id: str, count: int) -> list[CDR]:
    for _ in range(500):
        found = [c for c in daemon.cdrs() if c.account_id == account_id]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.02)
    raise AssertionError(f"{account_id}: fewer than {count} CDRs")


# -- two daemons on one Redis ---------------------------------------------------------

# velocity and concurrent refuse; each account below meets one of them (an override
# turns the other off for it).
LIMIT_RULES = """
[[fraud.rules]]
name = "velocity"
kind = "velocity"
scope = "account"
max_calls = 6
window_s = 60
action = "refuse"
message = "too many calls a minute"

[[fraud.rules]]
name = "concurrent"
kind = "concurrent"
max_calls = 4
action = "refuse"
message = "too many calls at once"

[fraud.account_overrides.fast.concurrent]
enabled = false
[fraud.account_overrides.under.concurrent]
enabled = false
[fraud.account_overrides.wide.velocity]
enabled = false
[fraud.account_overrides.narrow.velocity]
enabled = false
[fraud.account_overrides.slots.velocity]
enabled = false
"""


@pytest.fixture(params=[0, 1000], ids=["rules-in-lua", "decided-in-daemons"])
def two_daemons(
    tmp_path: Path, redis_server: EmbeddedRedis, redis: aioredis.Redis, request: Any
) -> Iterator[tuple[Daemon, Daemon]]:
    """Two `chargingd serve` on the test session's Redis (flushed first: ``redis``); the
    rules in Redis's Lua, or decided in each daemon on the values it keeps ([fraud]
    local_values: docs/fraud-cost.md "Seventeenth round"): the limits hold either way."""
    daemons = []
    try:
        for name in ("one", "two"):
            where = tmp_path / name
            where.mkdir()
            setup = functools.partial(
                write_setup,
                where,
                top=fraud_toml(LIMIT_RULES, local_values=request.param),
                redis=f'url = "{redis_server.url}"',
                tariff_text=TARIFF,
            )
            daemons.append(start_daemon(setup, where / "daemon.log"))
        yield daemons[0], daemons[1]
    finally:
        for d in daemons:
            print(f"---- daemon log {d.setup.data} ----\n{d.log()}")
            d.kill()


async def burst(daemons: tuple[Daemon, Daemon], user: str, count: int) -> list[rc.Packet]:
    """``count`` calls of ``user`` at once, alternately to each daemon."""
    calls = [Call(f"{user}-{next(_ids)}", user, called=UK) for _ in range(count)]
    return await asyncio.gather(*(place(daemons[i % 2], c) for i, c in enumerate(calls)))


def accepted(answers: list[rc.Packet]) -> int:
    return sum(a.code == rc.ACCESS_ACCEPT for a in answers)


async def test_velocity_and_concurrent_limits_hold_across_two_daemons(
    two_daemons: tuple[Daemon, Daemon], redis: aioredis.Redis
) -> None:
    one, _ = two_daemons
    for account in ("fast", "under", "wide", "narrow"):
        one.create_account(account, "100.00")

    # velocity: 6 calls a minute. 6 at once on two daemons: all accepted (just under).
    under = await burst(two_daemons, "under", 6)
    assert accepted(under) == 6

    # concurrent: 4 live calls. 4 at once: accepted; 9 at once: exactly 4 live.
    narrow = await burst(two_daemons, "narrow", 4)
    assert accepted(narrow) == 4
    wide = await burst(two_daemons, "wide", 9)
    assert accepted(wide) == 4
    refused = [a for a in wide if a.code == rc.ACCESS_REJECT]
    assert {a.text(rc.REPLY_MESSAGE) for a in refused} == {"too many calls at once"}
    assert {a.cisco_value(rc.H323_RETURN_CODE) for a in refused} == {"7"}

    # Velocity over the limit: 12 at once, exactly 6 accepted.
    fast = await burst(two_daemons, "fast", 12)
    assert accepted(fast) == 6
    assert {a.text(rc.REPLY_MESSAGE) for a in fast if a.code == rc.ACCESS_REJECT} == {
        "too many calls a minute"
    }
    # Both daemons answered some of each burst; the counts are in one Redis.
    assert len(live_calls(await fraud_value(redis, "wide"))) == 4


async def test_a_call_that_ends_frees_its_place_for_the_next(
    two_daemons: tuple[Daemon, Daemon], redis: aioredis.Redis
) -> None:
    one, two = two_daemons
    one.create_account("slots", "100.00")
    calls = [Call(f"slots-{next(_ids)}", "slots", called=UK) for _ in range(4)]
    answers = await asyncio.gather(*(place(two_daemons[i % 2], c) for i, c in enumerate(calls)))
    assert accepted(answers) == 4
    fifth = await place(two, Call(f"slots-{next(_ids)}", "slots", called=UK))
    assert fifth.code == rc.ACCESS_REJECT
    await stop(one, calls[0], 5)  # its CDR reaches the fraud events consumer
    await wait_until_async(lambda: _live(redis, "slots"), 3)
    sixth = await place(one, Call(f"slots-{next(_ids)}", "slots", called=UK))
    assert sixth.code == rc.ACCESS_ACCEPT
    assert await redis.xlen(CDR_STREAM) >= 1


async def _live(redis: aioredis.Redis, account: str) -> int:
    return len(live_calls(await fraud_value(redis, account)))


async def wait_until_async(probe: Any, want: int, timeout_s: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while await probe() != want:
        if loop.time() > deadline:
            raise AssertionError(f"not {want} in time")
        await asyncio.sleep(0.05)


async def test_spread_by_user_keeps_each_accounts_value_in_one_process(tmp_path: Path) -> None:
    """[radius] spread = "user", workers = 2: every call comes from a new gateway
    socket (a new source port), yet each account's calls reach one process, so each
    account's rule value is read once (its first call) and never moved by the other
    process. (By Request Authenticator or source port, an account's calls reach both
    processes: each reads the value, and they move it under each other.)"""
    top = fraud_toml("", local_values=1000)  # the default rule set, decided in the daemon
    daemon = start_daemon(
        lambda: write_setup(
            tmp_path, top=top, tariff_text=TARIFF, workers=2, radius_options={"spread": "user"}
        ),
        tmp_path / "daemon.log",
    )
    try:
        accounts = [f"spread{n}" for n in range(12)]
        for account in accounts:
            daemon.create_account(account, "100.00")
        for turn in range(4):
            for account in accounts:
                answer = await place(daemon, Call(f"{account}-{turn}", account, called=UK))
                assert answer.code == rc.ACCESS_ACCEPT
        calls = 4 * len(accounts)

        def fraud() -> dict[str, int]:
            return dict(daemon.call("server.status")["fraud"])

        # A worker's counters arrive with its report (every report_interval_s).
        for _ in range(100):
            status = fraud()
            if status["decided_here"] >= calls:
                break
            await asyncio.sleep(0.2)
        assert status["decided_here"] == calls and status["decided_in_lua"] == 0, status
        assert status["values_fetched"] == len(accounts), status  # once per account
        assert status["moved_elsewhere"] == 0, status
        processes = daemon.call("server.status")["radius"]["processes"]
        assert len(processes) == 2
    finally:
        print(f"---- daemon log ----\n{daemon.log()}")  # shown when the test fails
        daemon.kill()


# -- failed_attempts through the real daemon over RADIUS: a refusal it made ends
# after its cooldown while the gateway keeps retrying, and `ctl fraud lift` ends it
# at once.
#
# An identity hammering the daemon is refused (here: an account with no money, every
# Access-Request an Access-Reject); past `max_calls` the rule refuses the identity for
# `cooldown_s`. The gateway keeps retrying. Each of those retries is refused by the rule
# itself: counted again as a failed attempt, it renewed the refusal, so the identity
# stayed refused for as long as the gateway retried, whatever its cooldown. Now the
# rule's own refusals are not new failed attempts: the cooldown ends, and the call of an
# account topped up meanwhile is accepted. An operator who knows the cause is fixed
# lifts the refusal at once (`ctl fraud lift`), audited as an unblock is.

FA_COOLDOWN_S = 2
FA_MESSAGE = "too many failed attempts"
FA_RULES = f"""
[[fraud.rules]]
name = "failed"
kind = "failed_attempts"
max_calls = 3
window_s = 60
cooldown_s = {FA_COOLDOWN_S}
action = "refuse"
message = "{FA_MESSAGE}"

# the same rule with a cooldown no test waits for: only an operator ends it early
[fraud.account_overrides.held]
failed = {{ cooldown_s = 600 }}

[fraud.account_overrides.pbx]
failed = {{ cooldown_s = 600 }}
"""


@pytest.fixture
def fa_daemon(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """``request.param``: [fraud] local_values (0: the rules decided in Lua)."""
    top = fraud_toml(FA_RULES, local_values=getattr(request, "param", 0))
    daemon = start_daemon(
        lambda: write_setup(tmp_path, top=top, tariff_text=TARIFF),
        tmp_path / "daemon.log",
    )
    try:
        yield daemon
    finally:
        print(f"---- daemon log ----\n{daemon.log()}")  # shown when the test fails
        daemon.kill()


async def attempt(daemon: Daemon, user: str) -> rc.Packet:
    return await place(daemon, Call(f"{user}-{next(_ids)}", user, called=UK), start=False)


def refused_by_rule(answer: rc.Packet) -> bool:
    return answer.code == rc.ACCESS_REJECT and answer.text(rc.REPLY_MESSAGE) == FA_MESSAGE


async def hammer_until_refused(daemon: Daemon, user: str) -> float:
    """Access-Requests of ``user`` (no money: each an Access-Reject) until the rule
    refuses it (counted in the background: the 4th reject fires it); when it did."""
    for _ in range(50):
        answer = await attempt(daemon, user)
        assert answer.code == rc.ACCESS_REJECT
        if refused_by_rule(answer):
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise AssertionError(f"{user} never refused by failed_attempts")


def topup(daemon: Daemon, account: str) -> None:
    daemon.call("account.topup", {"id": account, "amount": "5.00", "txn_id": f"{account}-t1"})


@pytest.mark.parametrize("fa_daemon", [0, 1000], ids=["rules-in-lua", "decided-in-daemon"],
                         indirect=True)  # fmt: skip
async def test_a_refusal_ends_after_its_cooldown_while_the_gateway_retries(
    fa_daemon: Daemon,
) -> None:
    daemon = fa_daemon
    daemon.create_account("guess", "0.00")
    refused_at = await hammer_until_refused(daemon, "guess")
    topup(daemon, "guess")  # the cause is gone; the refusal holds for its cooldown
    answers: list[tuple[float, rc.Packet]] = []
    while time.monotonic() - refused_at < FA_COOLDOWN_S + 3:
        answer = await attempt(daemon, "guess")  # a retry every 100 ms
        answers.append((time.monotonic() - refused_at, answer))
        if answer.code == rc.ACCESS_ACCEPT:
            break
        await asyncio.sleep(0.1)
    seen = [(round(t, 2), a.code, a.text(rc.REPLY_MESSAGE)) for t, a in answers]
    assert answers[-1][1].code == rc.ACCESS_ACCEPT, seen  # stayed refused while retried
    assert all(refused_by_rule(a) for _, a in answers[:-1]), seen
    assert answers[-1][0] >= FA_COOLDOWN_S - 0.5, seen  # not before its cooldown
    state = daemon.call("fraud.state", {"id": "guess"})["state"]
    assert int(state["deny:failed|user:guess"]) <= time.time() * 1000, state


async def test_an_operator_lifts_the_refusal_at_once(fa_daemon: Daemon) -> None:
    daemon = fa_daemon
    daemon.create_account("held", "0.00")
    await hammer_until_refused(daemon, "held")
    topup(daemon, "held")
    assert refused_by_rule(await attempt(daemon, "held"))  # 600 s of cooldown left
    # `ctl fraud unblock` is for blocked accounts; this one is active
    shown = subprocess.run(
        [str(BIN), "ctl", "--config", str(daemon.setup.config), "fraud", "lift", "held",
         "--reason", "customer fixed the phone's password"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "held: refusals lifted" in shown.stdout, shown.stdout
    assert (await attempt(daemon, "held")).code == rc.ACCESS_ACCEPT
    audit = daemon.call("account.history", {"id": "held", "count": 5})["entries"]
    lifted = [e for e in audit if e["what"] == "fraud_lift"]
    assert [(e["who"], e["why"]) for e in lifted] == [
        (lifted[0]["who"], "customer fixed the phone's password")
    ], audit
    assert lifted[0]["details"]["lifted"] == "failed|user:held", lifted


async def test_lifting_one_identity_leaves_the_others_refusal(fa_daemon: Daemon) -> None:
    """An account with two SIP identities: one hijacked and brute-forced (refused by
    failed_attempts), the legitimate one refused too by the account's count. The operator
    lifts the legitimate identity (`ctl fraud lift --identity`): its refusal ends, the
    hijacked one's stays (it used to be lifted with it: the whole account's flags and
    counts were reset), and the audit entry names the identity."""
    daemon = fa_daemon
    daemon.create_account("pbx", "0.00", identities=["user:pbx", "user:pbx-ext"])
    await hammer_until_refused(daemon, "pbx-ext")  # the hijacked extension
    await hammer_until_refused(daemon, "pbx")  # the account's count is past the limit
    topup(daemon, "pbx")
    assert refused_by_rule(await attempt(daemon, "pbx"))
    assert refused_by_rule(await attempt(daemon, "pbx-ext"))
    shown = subprocess.run(
        [str(BIN), "ctl", "--config", str(daemon.setup.config), "fraud", "lift",
         "--identity", "user:pbx", "--reason", "the owner's phone is fine"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "identity user:pbx of account pbx: refusal lifted (failed)" in shown.stdout, shown.stdout
    assert (await attempt(daemon, "pbx")).code == rc.ACCESS_ACCEPT
    assert refused_by_rule(await attempt(daemon, "pbx-ext"))  # still the hijacker's
    state = daemon.call("fraud.state", {"id": "pbx"})["state"]
    assert "deny:failed|user:pbx-ext" in state and "deny:failed|user:pbx" not in state, state
    audit = daemon.call("account.history", {"id": "pbx", "count": 5})["entries"]
    (lifted,) = [e for e in audit if e["what"] == "fraud_lift"]
    assert lifted["details"] == {"identity": "user:pbx", "lifted": "failed|user:pbx"}, lifted


# A destination rule that names its refusals' h323-return-code (9, "called number
# blocked"), and a velocity rule that names none ([radius.h323_return_codes] fraud, 7).
CODE_RULES = """
[[fraud.rules]]
name = "premium-lr"
kind = "destination"
match = ["high_risk_country"]
max_calls = 1
window_s = 3600
action = "refuse"
message = "destination barred"
h323_return_code = 9

[[fraud.rules]]
name = "fast"
kind = "velocity"
scope = "account"
max_calls = 3
window_s = 3600
action = "refuse"
"""


async def test_a_rules_refusal_carries_the_h323_return_code_it_names(tmp_path: Path) -> None:
    daemon = start_daemon(
        lambda: write_setup(tmp_path, top=fraud_toml(CODE_RULES), tariff_text=TARIFF),
        tmp_path / "daemon.log",
    )
    try:
        daemon.create_account("risky", "10.00")
        daemon.create_account("quick", "10.00")
        answers = [await place(daemon, Call(f"c-{next(_ids)}", "risky", called=LIBERIA_PREMIUM),
                               start=False) for _ in range(2)]  # fmt: skip
        assert [a.code for a in answers] == [rc.ACCESS_ACCEPT, rc.ACCESS_REJECT]
        assert answers[1].text(rc.REPLY_MESSAGE) == "destination barred"
        assert answers[1].cisco_value(rc.H323_RETURN_CODE) == "9"  # the rule's own
        answers = [await place(daemon, Call(f"c-{next(_ids)}", "quick", called=UK), start=False)
                   for _ in range(4)]  # fmt: skip
        assert [a.code for a in answers] == [rc.ACCESS_ACCEPT] * 3 + [rc.ACCESS_REJECT]
        assert answers[3].text(rc.REPLY_MESSAGE) == "call not allowed"
        assert answers[3].cisco_value(rc.H323_RETURN_CODE) == "7"  # [radius.h323_return_codes]
    finally:
        print(f"---- daemon log ----\n{daemon.log()}")
        daemon.kill()


# -- identity_scan: a SIPVicious-style scan of unknown identities from one caller IP ----
# Each Access-Request of the scan is refused as `unknown account`. Before, those rejects
# were counted per identity only (each tried once: never near failed_attempts' limit),
# and no rule saw the scan. Two daemons on one Redis, the scan spread over both: the
# address that tried more than max_identities unknown identities raises exactly one
# alert (one incident, counted) and, with action refuse, is refused for its cooldown, for
# known accounts too, with the rule's Reply-Message; an address just under the limit
# stays quiet; another address's account is untouched; `ctl fraud lift --caller-ip`
# ends it.

SCANNER = "203.0.113.66"
QUIET = "198.51.100.7"
OTHER = "192.0.2.10"
LIMIT = 5  # distinct unknown identities in the window; the 6th fires
MESSAGE = "scanning: refused"

SCAN_RULES = f"""
[[fraud.rules]]
name = "velocity-ip"
kind = "velocity"
scope = "caller_ip"
max_calls = 300
window_s = 60

[[fraud.rules]]
name = "identity-scan"
kind = "identity_scan"
max_identities = {LIMIT}
window_s = 300
cooldown_s = 600
action = "refuse"
message = "{MESSAGE}"
"""


@dataclass
class IpCall(Call):
    """A call whose gateway names the caller's signalling address (h323-remote-address,
    what the rules per caller IP count by)."""

    caller_ip: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        remote = b"h323-remote-address=" + self.caller_ip.encode()
        self.attrs += rc.cisco_vsa(rc.H323_REMOTE_ADDRESS, remote)


def make_call(user: str, ip: str) -> IpCall:
    return IpCall(f"{user}-{next(_ids)}", user, called=UK, caller_ip=ip)


@pytest.fixture(params=[0, 1000], ids=["rules-in-lua", "decided-in-daemons"])
def scan_daemons(
    tmp_path: Path, redis_server: EmbeddedRedis, redis: aioredis.Redis, request: Any
) -> Iterator[tuple[Daemon, Daemon]]:
    started = []
    try:
        for name in ("one", "two"):
            where = tmp_path / name
            where.mkdir()
            setup = functools.partial(
                write_setup,
                where,
                top=fraud_toml(SCAN_RULES, local_values=request.param),
                redis=f'url = "{redis_server.url}"',
                tariff_text=TARIFF,
            )
            started.append(start_daemon(setup, where / "daemon.log"))
        yield started[0], started[1]
    finally:
        for d in started:
            print(f"---- daemon log {d.setup.data} ----\n{d.log()}")
            d.kill()


async def scan(daemons: tuple[Daemon, Daemon], ip: str, count: int, tag: str) -> None:
    """``count`` unknown extensions tried from ``ip``, alternately on each daemon: each an
    Access-Reject `unknown account`."""
    for i in range(count):
        answer = await place(daemons[i % 2], make_call(f"{tag}{100 + i}", ip), start=False)
        assert answer.code == rc.ACCESS_REJECT
        assert answer.text(rc.REPLY_MESSAGE) == "unknown account"


def scan_incidents(daemon: Daemon) -> list[dict[str, Any]]:
    return [i for i in fraud_incidents(daemon) if i["kind"] == "fraud.identity_scan"]


async def wait_for_incident(daemon: Daemon) -> dict[str, Any]:
    for _ in range(100):
        found = scan_incidents(daemon)
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError("no identity_scan alert")


async def test_a_scan_of_unknown_identities_refuses_its_caller_ip(
    scan_daemons: tuple[Daemon, Daemon],
) -> None:
    daemons = scan_daemons
    one, two = daemons
    one.create_account("alice", "100.00")
    one.create_account("bob", "100.00")
    # alice calls from the address before the scan: each daemon knows its value
    for d in daemons:
        assert (await place(d, make_call("alice", SCANNER), start=False)).code == rc.ACCESS_ACCEPT

    # just under: LIMIT unknown identities (one of them retried) stay quiet
    await scan(daemons, QUIET, LIMIT, "q")
    await place(one, IpCall("q-retry", "q100", called=UK, caller_ip=QUIET), start=False)
    await scan(daemons, SCANNER, LIMIT, "s")
    await asyncio.sleep(0.5)  # the rejects are counted in the background
    assert scan_incidents(one) == []
    for d in daemons:
        assert (await place(d, make_call("alice", SCANNER), start=False)).code == rc.ACCESS_ACCEPT

    # the scan goes on: the 6th unknown identity fires; 12 in all
    await scan(daemons, SCANNER, 7, "t")
    incident = await wait_for_incident(one)
    await asyncio.sleep(0.5)
    (incident,) = scan_incidents(one)  # one incident, however many rejects fired it
    assert incident["incident"] == f"fraud.identity-scan:{SCANNER}", incident
    assert incident["count"] >= 2, incident  # the 6th..12th counted into it
    assert incident["details"]["outcome"] == "next calls refused", incident

    # the address is refused for known accounts too, on both daemons, with its message
    for d in daemons:
        answer = await place(d, make_call("alice", SCANNER), start=False)
        assert answer.code == rc.ACCESS_REJECT
        assert answer.text(rc.REPLY_MESSAGE) == MESSAGE
        assert (await place(d, make_call("bob", OTHER), start=False)).code == rc.ACCESS_ACCEPT
        assert (await place(d, make_call("alice", QUIET), start=False)).code == rc.ACCESS_ACCEPT
    assert [i["incident"] for i in scan_incidents(two)] == [f"fraud.identity-scan:{SCANNER}"]

    # what the operator sees of the address (`ctl fraud state --caller-ip`)
    state = one.call("fraud.state", {"caller_ip": SCANNER})["state"]
    assert int(state["deny:identity-scan"]) > time.time() * 1000, state
    assert state["unknown_identities"] == str(LIMIT + 1), state  # kept: the limit + 1
    shown = subprocess.run(
        [str(BIN), "ctl", "--config", str(one.setup.config), "fraud", "state",
         "--caller-ip", SCANNER],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert shown.returncode == 0 and "deny:identity-scan" in shown.stdout, shown
    assert f"fraud state of caller IP {SCANNER}" in shown.stdout, shown.stdout
    shown = subprocess.run(
        [str(BIN), "ctl", "--config", str(one.setup.config), "fraud", "lift",
         "--caller-ip", SCANNER, "--reason", "the SBC blocks the scanner now"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stdout + shown.stderr
    for d in daemons:
        assert (await place(d, make_call("alice", SCANNER), start=False)).code == rc.ACCESS_ACCEPT
    (resolved,) = scan_incidents(one)
    assert resolved["state"] == "resolved", resolved
    assert one.call("fraud.state", {"caller_ip": SCANNER})["state"] == {}


async def test_a_scan_counts_the_identities_a_lookup_by_ani_first_tried(tmp_path: Path) -> None:
    """A client that looks callers up by ANI first, then by user: the scanner's one calling
    number is the first identity of every request, the extensions it tries the second.
    Each request is a new unknown identity all the same (it used to be counted by the
    first alone: one identity, however many extensions were scanned)."""
    top = fraud_toml(SCAN_RULES.replace('action = "refuse"', 'action = "alert"'))
    daemon = start_daemon(
        lambda: write_setup(
            tmp_path, top=top, tariff_text=TARIFF, extra='lookup = ["ani", "user"]'
        ),
        tmp_path / "daemon.log",
    )
    try:
        for i in range(LIMIT + 1):
            call = make_call(f"ext{200 + i}", SCANNER)  # calling +4930111111, always
            answer = await place(daemon, call, start=False)
            assert answer.text(rc.REPLY_MESSAGE) == "unknown account"
        incident = await wait_for_incident(daemon)
        assert incident["incident"] == f"fraud.identity-scan:{SCANNER}", incident
        assert incident["details"]["count"] == LIMIT + 1, incident
    finally:
        print(f"---- daemon log ----\n{daemon.log()}")
        daemon.kill()


async def test_a_wangiri_callback_wave_raises_one_alert(tmp_path: Path) -> None:
    """The shipped rules: customers call back, once each, the Liberian premium number that
    rang them. No per-account rule sees one call each (it used to raise no alert at all);
    callback-wave (shared_destination) raises one incident for the number."""
    daemon = start_daemon(
        lambda: write_setup(tmp_path, top=fraud_toml(""), tariff_text=TARIFF),
        tmp_path / "daemon.log",
    )
    try:
        for i in range(6):  # the shipped limit is 5 accounts an hour
            daemon.create_account(f"cb{i}", "100.00")
            call = Call(f"cb{i}-{next(_ids)}", f"cb{i}", called="00231332021234")
            assert (await place(daemon, call)).code == rc.ACCESS_ACCEPT
            await stop(daemon, call, 120)
        for _ in range(100):
            found = [i for i in fraud_incidents(daemon) if i["kind"] == "fraud.shared_destination"]
            if found:
                break
            await asyncio.sleep(0.1)
        (incident,) = found
        assert incident["incident"] == "fraud.callback-wave:+231332021234", incident
        assert incident["details"]["count"] == 6, incident
        assert [i["kind"] for i in fraud_incidents(daemon)] == ["fraud.shared_destination"]
    finally:
        print(f"---- daemon log ----\n{daemon.log()}")
        daemon.kill()
