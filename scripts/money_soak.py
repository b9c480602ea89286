"""Money conservation under mixed traffic and failures (issue 9): prints figures, exits
1 on any violation.

Two real daemons (A with worker processes, B) share one redis-server (started here,
appendfsync always) and one PostgreSQL (the CDR exporters of both). Simulated
gateways place concurrent calls over RADIUS on loopback, every packet to a random
daemon and often its copy to the other one (retransmissions across daemons):

- normal prepaid and postpaid calls (Start, Interims, Stop);
- calls cut for credit (poor prepaid accounts: the gateway stops a second after its
  Session-Timeout or the Disconnect-Request);
- silent gateways (Start, then nothing: reaped as stale) whose Stop comes late;
- refused calls (broke accounts).

Meanwhile: daemon B is killed (SIGKILL) and restarted, Redis is stopped (SIGSTOP) for
a few seconds, then killed and restarted. Then a mediated file charges calls of the
same and of other accounts (charge = "ledger"), and a rerate with a cheaper plan is
applied. Checked at the end:

- for every account: balance == initial + top-ups - sum(charged_micros of its CDRs),
  debits == sum(charged_micros), nothing reserved, no live session;
- every accepted call has exactly one CDR, with the status and cause its gateway
  reported; no refused call has a CDR;
- no prepaid account that was cut is below zero.

With --cluster, the daemons run on a Redis Cluster (tests/redis_cluster.py: 3 masters
with a replica each) and its failures replace Redis's (scripts/cluster_chaos.py: a
master paused 3 s, two slots of busy accounts migrated key by key during their calls,
the CDR stream's master SIGKILLed, a graceful CLUSTER FAILOVER), with top-ups sent twice
each over the admin socket all along (checked: each applied once).

    .venv/bin/python scripts/money_soak.py --calls 400 --concurrency 40
    .venv/bin/python scripts/money_soak.py --cluster --calls 300 --concurrency 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from chargingd.sessions.shards import SHARDS_KEY, parse_shards, shard_keys

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the daemon harness of the end-to-end tests

from cluster_chaos import chaos as cluster_chaos  # noqa: E402
from radius_e2e_harness import (  # noqa: E402
    BIN,
    TARIFF,
    Call,
    Daemon,
    free_udp_ports,
)
from redis_cluster import start_cluster  # noqa: E402
from soak_world import (  # noqa: E402
    DisconnectListener,
    Gateway,
    Outcome,
    World,
    start_redis,
    write_config,
)

from chargingd.billing.db import start_embedded  # noqa: E402
from chargingd.core.money import parse_amount  # noqa: E402
from chargingd.radius import codec as rc  # noqa: E402

PER_S = 10_000  # TARIFF: 0.01 per second to +44
CHEAP_TARIFF = TARIFF.replace('rate = "0.60"', 'rate = "0.45"')


# -- calls ------------------------------------------------------------------------------


def ports(world: World, kind: str, rng: random.Random) -> list[int]:
    setups = [d.setup for d in world.daemons]
    rng.shuffle(setups)
    chosen = [s.auth_port if kind == "auth" else s.acct_port for s in setups]
    return chosen if rng.random() < 0.5 else chosen[:1]


async def one_call(world: World, out: Outcome, rng: random.Random) -> None:
    loop = asyncio.get_running_loop()
    _, gateway = await loop.create_datagram_endpoint(Gateway, local_addr=("127.0.0.1", 0))
    call = Call(out.session_id, out.account_id)
    try:
        answer = await gateway.ask(call.access_request(), ports(world, "auth", rng))
        if answer is None or answer.code != rc.ACCESS_ACCEPT:
            return
        out.accepted = True
        timeout_s = out.timeout_s = answer.integer(rc.SESSION_TIMEOUT)
        await play(world, out, call, gateway, timeout_s, rng)
    finally:
        gateway.transport.close()  # type: ignore[union-attr]


async def acct(world: World, gw: Gateway, packet: bytes, rng: random.Random) -> None:
    while await gw.ask(packet, ports(world, "acct", rng)) is None:
        await asyncio.sleep(0.5)  # a daemon down: keep trying, as a gateway does


async def play(
    world: World, out: Outcome, call: Call, gw: Gateway, timeout_s: int, rng: random.Random
) -> None:
    """The call as its gateway runs it. A gateway that acknowledged a Disconnect-Request
    stops then; its CDR must say credit_cut (see check)."""
    now = int(time.time())
    cut = world.dms[out.session_id] = asyncio.Event()
    if out.kind == "cut":
        # Answered so long ago that its money runs out in a second or two.
        age = max(0, timeout_s - 2)
        await acct(world, gw, call.accounting(rc.STATUS_START, 0, event_s=now - age), rng)
        # No cut within 4 s: the gateway's own Session-Timeout ends the call.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cut.wait(), 4.0)
        out.status, out.cause = "credit_cut", 16
        stop = call.accounting(rc.STATUS_STOP, timeout_s + 1, cause_hex="10")
        await acct(world, gw, stop, rng)
        return
    # Within its Session-Timeout: a normal call.
    usage = max(1, min(rng.randint(5, 120), timeout_s - 2))  # its deadline stays ahead
    await acct(world, gw, call.accounting(rc.STATUS_START, 0, event_s=now - usage), rng)
    if out.kind == "late":
        # Silent: reaped after 2 x 10 s (unless its money runs out and it is cut first).
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(cut.wait(), 25.0)
        out.status, out.cause = ("credit_cut" if usage >= timeout_s else "normal"), 31
        if not cut.is_set():  # hung up: a cut from now on finds no call (NAKed)
            world.dms.pop(out.session_id, None)
        await acct(world, gw, call.accounting(rc.STATUS_STOP, usage, cause_hex="1F"), rng)
        return
    if usage > 10:
        await acct(world, gw, call.accounting(rc.STATUS_INTERIM, usage // 2), rng)
    # A call that ran to the Session-Timeout its money set (told 1 s) is credit_cut.
    out.status, out.cause = ("credit_cut" if usage >= timeout_s else "normal"), 16
    if not cut.is_set():
        # The gateway hangs up first: a cut that reaches it after this (another daemon's
        # cutter a few ms behind the Stop) finds no call and is NAKed; the CDR says normal.
        world.dms.pop(out.session_id, None)
    await acct(world, gw, call.accounting(rc.STATUS_STOP, usage, cause_hex="10"), rng)


# -- chaos ------------------------------------------------------------------------------


async def chaos(world: World, start_s: float) -> None:
    a_pid = world.redis_proc.pid if world.redis_proc else 0
    await asyncio.sleep(start_s)
    b = world.daemons[1]
    assert b.proc is not None
    world.events.append(f"{time.strftime('%X')} SIGKILL daemon B")
    b.proc.kill()
    b.proc.wait()
    await asyncio.sleep(1.0)
    b.start()
    await asyncio.to_thread(b.wait_ready)
    world.events.append(f"{time.strftime('%X')} daemon B restarted")
    await asyncio.sleep(2.0)
    world.events.append(f"{time.strftime('%X')} SIGSTOP redis 3 s")
    os.kill(a_pid, signal.SIGSTOP)
    await asyncio.sleep(3.0)
    os.kill(a_pid, signal.SIGCONT)
    await asyncio.sleep(3.0)
    world.events.append(f"{time.strftime('%X')} SIGKILL redis, restarted")
    assert world.redis_proc is not None
    world.redis_proc.kill()
    world.redis_proc.wait()
    await asyncio.sleep(1.0)
    await asyncio.to_thread(start_redis, world)


# -- after the traffic: mediation, rerate, checks ----------------------------------------


def mediate(world: World, accounts: list[str], rng: random.Random) -> int:
    start = int(time.time()) - 3600
    rows = ["id,account,from,to,start,answer,end,talk"]
    for i in range(len(accounts) * 3):
        account = accounts[i % len(accounts)]
        talk = rng.randint(0, 200)
        answer = start + i + 2 if talk else ""
        end = start + i + 2 + talk
        rows.append(
            f"med-{i},{account},+4930111111,+442079460000,{start + i},{answer},{end},{talk}"
        )
    path = world.tmp / "pbx.csv"
    path.write_text("\n".join(rows) + "\n")
    config = world.daemons[0].setup.config
    run = subprocess.run(
        [str(BIN), "mediate", str(path), "--source", "pbx",
         "--config", str(config), "--quiet"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"mediate failed: {run.stdout}{run.stderr}")
    world.events.append(f"mediated: {run.stdout.strip().splitlines()[-1]}")
    return len(rows) - 1


def rerate(world: World) -> None:
    config = world.daemons[0].setup.config
    day = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    tomorrow = time.strftime("%Y-%m-%d", time.gmtime(time.time() + 86400))
    run = subprocess.run(
        [str(BIN), "rerate", "--config", str(config),
         "--from", day, "--to", tomorrow, "--plan", str(world.tmp / "cheap.toml"), "--apply"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"rerate failed: {run.stdout}{run.stderr}")
    world.events.append(f"rerate: {run.stdout.strip().splitlines()[-1]}")


async def settled(world: World, timeout_s: float) -> bool:
    """No live session, no spooled entry, every CDR in the stream exported."""
    deadline = time.monotonic() + timeout_s
    r = world.redis()
    while time.monotonic() < deadline:
        shards = parse_shards(r.get(SHARDS_KEY))
        gateways = [g.decode() for g in r.smembers("sess:gateways")]
        live = sum(r.zcard(k) for g in gateways for k in shard_keys(g, shards))
        spooled = [p for d in world.daemons for p in (d.setup.data / "spool").glob("*jsonl*")]
        pending = sum(g["pending"] + g.get("lag", 0) for g in r.xinfo_groups("cdr:stream"))
        if live == 0 and not spooled and pending == 0:
            return True
        await asyncio.sleep(0.5)
    return False


def cdr_figures(world: World) -> dict[str, Any]:
    """What the billing database and the orphan stream say, for the report."""
    with psycopg.connect(world.pg_url) as conn:
        statuses = conn.execute(
            "SELECT status, count(*) FROM cdrs WHERE charge = 'live' GROUP BY 1 ORDER BY 1"
        ).fetchall()
        corrected = conn.execute("SELECT count(*) FROM cdrs WHERE revision > 0").fetchone()
        reasons = conn.execute(
            "SELECT charge_reason, count(*) FROM cdrs WHERE charge_reason <> ''"
            " GROUP BY 1 ORDER BY 1"
        ).fetchall()
    r = world.redis()
    return {
        "cdrs": ",".join(f"{s}:{n}" for s, n in statuses),
        "corrected": corrected[0] if corrected else 0,
        "reasons": ",".join(f"{s}:{n}" for s, n in reasons),
        "orphans": r.xlen("cdr:orphans"),
    }


def expected_status(world: World, out: Outcome) -> str:
    """What the call's CDR must say: credit_cut once its gateway acknowledged a cut."""
    cut = world.dms.get(out.session_id)
    return "credit_cut" if cut is not None and cut.is_set() else out.status


def below_zero(world: World) -> list[str]:
    """Prepaid accounts that were cut and ended below zero (live traffic alone)."""
    r = world.redis()
    found = []
    for account_id in sorted(world.cut_accounts & world.prepaid):
        balance = int(r.hget(f"{{a:{account_id}}}:acct", "balance") or 0)
        if balance < 0:
            found.append(f"{account_id}: a prepaid account that was cut is at {balance}")
    return found


def check(world: World) -> list[str]:
    problems: list[str] = []
    r = world.redis()
    with psycopg.connect(world.pg_url) as conn:
        rows = conn.execute(
            "SELECT account_id, call_id, status, disconnect_cause, charged_micros, charge FROM cdrs"
        ).fetchall()
    charged: dict[str, int] = {}
    by_call: dict[str, tuple[str, int]] = {}
    for account_id, call_id, status, cause, micros, charge in rows:
        if charge in ("live", "mediated_debit"):
            charged[account_id] = charged.get(account_id, 0) + int(micros)
        by_call[call_id] = (status, cause)
    for account_id, initial in sorted(world.initial.items()):
        acc = {k.decode(): v.decode() for k, v in r.hgetall(f"{{a:{account_id}}}:acct").items()}
        balance, debits = int(acc["balance"]), int(acc["debits"])
        reserved, topups = int(acc["reserved"]), int(acc["topups"])
        moved = charged.get(account_id, 0)
        if world.topped and topups != world.topped.get(account_id, 0):
            problems.append(f"{account_id}: top-ups {topups}, sent {world.topped.get(account_id)}")
        if balance != initial + topups - moved or debits != moved or reserved != 0:
            problems.append(
                f"{account_id}: balance {balance} debits {debits} reserved {reserved}"
                f" topups {topups} vs initial {initial} - charged {moved}"
            )
    for out in world.outcomes:
        got = by_call.get(out.session_id)
        if not out.accepted and got is not None:
            problems.append(f"{out.session_id}: refused, but has a CDR {got}")
        elif out.accepted and got != (expected_status(world, out), out.cause):
            expected = (expected_status(world, out), out.cause)
            # A cut call's CDR says credit_cut whether or not a cut came: its gateway
            # ran to its Session-Timeout otherwise (and stopped a second past it).
            cut = world.dms.get(out.session_id)
            why = f"told {out.timeout_s} s, cut ACKed: {'yes' if cut and cut.is_set() else 'no'}"
            problems.append(
                f"{out.session_id} ({out.kind}): CDR {got}, expected {expected} ({why})"
            )
    return problems


# -- main --------------------------------------------------------------------------------


def accounts_for(world: World, count: int) -> list[tuple[str, str, str, str]]:
    """(id, mode, balance, credit limit) of the live-traffic accounts."""
    made = []
    for i in range(count):
        made.append((f"rich{i}", "prepaid", "20.00", "0"))
        made.append((f"poor{i}", "prepaid", "0.30", "0"))
        made.append((f"post{i}", "postpaid", "0", "5.00"))
        made.append((f"broke{i}", "prepaid", "0", "0"))
    made += [(f"medonly{i}", "postpaid", "0", "50.00") for i in range(2)]
    return made


async def prepare(world: World, args: argparse.Namespace) -> list[tuple[str, str, str, str]]:
    """Redis, the billing database, both daemons' configs; the accounts' plan."""
    world.coa_port = free_udp_ports(1)[0]
    (world.tmp / "tariff.toml").write_text(TARIFF)
    cheap = world.tmp / "cheap.toml"
    cheap.write_text(CHEAP_TARIFF.replace('id = "e2e"', 'id = "cheap"'))
    if world.cluster is None:
        start_redis(world)
    pg_server = args.pg_url or start_embedded(world.tmp / "pg", "postgres", delete_at_exit=True)
    name = f"soak_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    world.pg_url = urlunsplit(urlsplit(pg_server)._replace(path=f"/{name}"))
    plan = accounts_for(world, args.accounts)
    world.initial = {a: parse_amount(bal) for a, _, bal, _ in plan}
    world.prepaid = {a for a, mode, _, _ in plan if mode == "prepaid"}
    extra = ""
    if args.fraud_local_values >= 0:  # every call counted by the rules, none acted on
        extra = (
            f"\n[fraud]\nenabled = true\nshadow = true\nlocal_values = {args.fraud_local_values}\n"
        )
    world.daemons = [
        Daemon(write_config(world, "a", workers=2, cheap=cheap, extra=extra), world.tmp / "a.log"),
        Daemon(write_config(world, "b", workers=1, cheap=cheap, extra=extra), world.tmp / "b.log"),
    ]
    return plan


async def start_daemons(world: World, plan: list[tuple[str, str, str, str]]) -> None:
    for d in world.daemons:
        d.start()
        await asyncio.to_thread(d.wait_ready)
    for account_id, mode, bal, limit in plan:
        params: dict[str, Any] = {"id": account_id, "mode": mode, "currency": "EUR",
                                  "balance": bal, "identities": [f"user:{account_id}"]}  # fmt: skip
        if mode == "postpaid":
            params["credit_limit"] = limit
        world.daemons[0].call("account.create", params)


def plan_calls(world: World, args: argparse.Namespace, rng: random.Random) -> None:
    kinds = ["normal", "normal", "cut", "late", "postpaid", "refused"]
    for i in range(args.calls):
        kind = kinds[i % len(kinds)]
        n = rng.randrange(args.accounts)
        account = {"normal": f"rich{n}", "cut": f"poor{n}", "late": f"rich{n}",
                   "postpaid": f"post{n}", "refused": f"broke{n}"}[kind]  # fmt: skip
        world.outcomes.append(Outcome(f"soak-{i}-{kind}", account, kind))
        if kind == "cut":
            world.cut_accounts.add(account)


async def traffic(world: World, args: argparse.Namespace, rng: random.Random) -> None:
    """Every call at once (at most ``concurrency`` in flight), the failures beside."""
    gate = asyncio.Semaphore(args.concurrency)

    async def paced(out: Outcome) -> None:
        async with gate:
            await one_call(world, out, rng)

    failures = cluster_chaos if world.cluster is not None else chaos
    chaos_task = asyncio.create_task(failures(world, args.chaos_after_s))
    await asyncio.gather(*(paced(o) for o in world.outcomes))
    await chaos_task


async def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    world = World(Path(tempfile.mkdtemp(prefix="money-soak-")), Path())
    world.redis_socket = world.tmp / "redis.sock"
    if args.cluster:
        world.cluster = await asyncio.to_thread(start_cluster)
    plan = await prepare(world, args)
    plan_calls(world, args, rng)
    loop = asyncio.get_running_loop()
    listener, _ = await loop.create_datagram_endpoint(
        lambda: DisconnectListener(world), local_addr=("127.0.0.1", world.coa_port)
    )
    began = time.monotonic()
    try:
        await start_daemons(world, plan)
        await traffic(world, args, rng)
        figures: dict[str, Any] = {"traffic_s": round(time.monotonic() - began, 1)}
        if not await settled(world, args.settle_s):
            print("did not settle: live sessions, spool or export left", file=sys.stderr)
        if args.fraud_local_values >= 0:  # where each daemon decided the rules
            for name, d in zip("ab", world.daemons, strict=True):
                fraud = d.call("server.status").get("fraud") or {}
                figures[f"fraud_{name}"] = ",".join(f"{k}:{v}" for k, v in sorted(fraud.items()))
        problems = below_zero(world)  # before mediation and rerate move money
        # Mediated calls of live accounts and of others (never of the cut ones: a
        # mediated debt may take a prepaid account below zero, and that is no cut).
        medi = [a for a, *_ in plan if a.startswith(("rich", "post", "medonly"))]
        figures["mediated_rows"] = mediate(world, medi, rng)
        rerate(world)
        problems += check(world)
        figures |= cdr_figures(world)
    finally:
        listener.close()
        for d in reversed(world.daemons):
            d.kill()
        if world.redis_proc is not None:
            world.redis_proc.kill()
        if world.cluster is not None:
            world.cluster.stop()
    return report(world, args, figures, problems, time.monotonic() - began)


def report(
    world: World, args: argparse.Namespace, figures: dict[str, Any], problems: list[str],
    total_s: float,
) -> int:  # fmt: skip
    accepted = sum(o.accepted for o in world.outcomes)
    head = {"calls": len(world.outcomes), "accepted": accepted,
            "refused": len(world.outcomes) - accepted}  # fmt: skip
    tail = {"total_s": round(total_s, 1), "violations": len(problems)}
    print(" ".join(f"{k}={v}" for k, v in (head | figures | tail).items()))
    for event in world.events:
        print(f"  {event}")
    for problem in problems[:50]:
        print(f"VIOLATION {problem}")
    if problems or args.keep:
        print(f"kept {world.tmp} (daemon logs a.log, b.log)")
    else:
        shutil.rmtree(world.tmp, ignore_errors=True)
    return 1 if problems else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=40)
    parser.add_argument("--accounts", type=int, default=6, help="accounts of each kind")
    parser.add_argument("--chaos-after-s", type=float, default=3.0)
    parser.add_argument("--settle-s", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--pg-url", default="", help="a PostgreSQL server (default: embedded)")
    parser.add_argument("--keep", action="store_true", help="keep the run's directory")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="a Redis Cluster (3 masters + replicas) instead of one redis-server, and its"
        " failures (scripts/cluster_chaos.py: pause, slot migration, kill, failover)",
    )
    parser.add_argument(
        "--fraud-local-values",
        type=int,
        default=-1,
        metavar="N",
        help="the default fraud rules on in shadow mode (they count every call, never act), "
        "decided in the daemons with [fraud] local_values N (0: in Redis's Lua); "
        "default: rules off",
    )
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
