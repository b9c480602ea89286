"""The cost of monitoring on the request path: loadgen against `chargingd serve` with
[monitoring] on (and /metrics scraped every second) and off, side by side.

    .venv/bin/python scripts/bench_metrics_load.py [--workers 2] [--seconds 10]
        [--pairs 3] [--mode call] [LOADGEN OPTIONS...]

Runs are interleaved on, off, off, on, on, off, ... (so a drift of the machine's load
hits both alike); each run starts a fresh daemon (embedded Redis, sample tariff) in
a temporary directory. Prints each run's requests/s and p99, the medians and the
ratio on/off. Run from the repository root.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_config(data: Path, workers: int, ports: dict[str, int]) -> str:
    """A daemon for loadgen: its users' client on 127.0.0.1, the sample tariff, no
    exporter (shared by the benchmarks that run `chargingd serve` side by side)."""
    return f"""
[server]
data_dir = "{data}"
log_level = "warning"
workers = {workers}

[export]
run_in_serve = false

[rating]
default_plan = "{ROOT}/config/tariffs/sample.toml"

[radius]
bind = "127.0.0.1"
auth_port = {ports["auth"]}
acct_port = {ports["acct"]}

[[radius.clients]]
name = "load"
address = "127.0.0.1"
secret = "testing123"
coa_port = 0
"""


def config(data: Path, workers: int, monitoring: bool, ports: dict[str, int]) -> str:
    return (
        base_config(data, workers, ports)
        + f"""
[monitoring]
enabled = {str(monitoring).lower()}

[http]
enabled = {str(monitoring).lower()}
port = {ports["http"]}
"""
    )


def ctl(sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [PY, "-m", "chargingd", "ctl", "--socket", str(sock), *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (/proc/PID/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


def daemon_pids(
    sock: Path, main: int, data: Path, redis_pid: int | None = None
) -> tuple[list[int], list[int]]:
    """(chargingd processes, the embedded redis-server, or ``redis_pid``) of a running
    daemon."""
    out = ctl(sock, "--json", "status").stdout
    found = re.findall(r'"pids":\s*\[([\d,\s]*)\]', out)
    if not found:
        raise SystemExit(f"no worker pids in `ctl --json status`:\n{out}")
    workers = [int(p) for p in found[0].replace("\n", " ").split(",") if p.strip()]
    if redis_pid is None:
        redis_pid = int((data / "redis" / "redis.pid").read_text())
    return [main, *workers], [redis_pid]


def scrape_every_second(port: int, stop: threading.Event, counts: list[int]) -> None:
    while not stop.wait(1.0):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                r.read()
            counts[0] += 1
        except OSError:
            pass


Result = tuple[float, float, float, float]  # req/s, p99 ms, daemon and Redis CPU us/request


def one_run(args: argparse.Namespace, monitoring: bool, extra: list[str]) -> Result:
    base = Path(tempfile.mkdtemp(prefix="chargingd-metrics-bench."))
    ports = {"auth": free_port(), "acct": free_port(), "http": free_port(socket.SOCK_STREAM)}
    cfg = base / "chargingd.toml"
    cfg.write_text(config(base / "data", args.workers, monitoring, ports))
    log = open(base / "daemon.log", "wb")  # noqa: SIM115 (closed below)
    daemon = subprocess.Popen([PY, "-m", "chargingd", "serve", "--config", str(cfg)], stderr=log)
    sock = base / "data" / "chargingd.sock"
    stop = threading.Event()
    scrapes = [0]
    try:
        for _ in range(300):
            if ctl(sock, "status").returncode == 0:
                break
            time.sleep(0.1)
        ctl(sock, "account", "create", "load", "--mode", "prepaid", "--currency", "EUR",
            "--balance", "1000000000.00", "--identity", "user:load")  # fmt: skip
        scraper = threading.Thread(
            target=scrape_every_second, args=(ports["http"], stop, scrapes), daemon=True
        )
        if monitoring:
            scraper.start()
        procs, redis = daemon_pids(sock, daemon.pid, base / "data")
        before = cpu_s(procs), cpu_s(redis)
        out = subprocess.run(
            [PY, str(ROOT / "scripts" / "loadgen.py"), "--mode", args.mode,
             "--seconds", str(args.seconds), "--user", "load", "--secret", "testing123",
             "--auth-port", str(ports["auth"]), "--acct-port", str(ports["acct"]), *extra],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        after = cpu_s(procs), cpu_s(redis)
    finally:
        stop.set()
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()
        shutil.rmtree(base, ignore_errors=True)
    if os.environ.get("BENCH_DEBUG"):
        print(out)
    if monitoring and scrapes[0] == 0:
        raise SystemExit("monitoring run: /metrics was never scraped")
    return loadgen_result(out, before, after)


def loadgen_result(out: str, before: tuple[float, float], after: tuple[float, float]) -> Result:
    """req/s and p99 from loadgen's output, and the daemon's and Redis's CPU per request
    from their CPU seconds before and after the run."""
    rate = float(re.search(r"requests/s=([\d.,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    p99 = float(re.search(r"p99=([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"requests=(\d+)", out).group(1))  # type: ignore[union-attr]
    per_request = [(a - b) * 1e6 / max(requests, 1) for a, b in zip(after, before, strict=True)]
    return rate, p99, per_request[0], per_request[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--mode", default="call", choices=["auth", "acct", "call"])
    args, extra = parser.parse_known_args()
    os.chdir(ROOT)
    order: list[bool] = []
    for i in range(args.pairs):
        order += [True, False] if i % 2 == 0 else [False, True]
    results: dict[bool, list[Result]] = {True: [], False: []}
    print(f"mode={args.mode} workers={args.workers} seconds={args.seconds} pairs={args.pairs}")
    for monitoring in order:
        load = os.getloadavg()[0]
        result = one_run(args, monitoring, extra)
        results[monitoring].append(result)
        label = "on " if monitoring else "off"
        print(f"  metrics {label}: {_row(result)}  (load avg {load:.2f})")
    medians = {m: tuple(statistics.median(r[i] for r in results[m]) for i in range(4))
               for m in (True, False)}  # fmt: skip
    print(f"median metrics on : {_row(medians[True])}")
    print(f"median metrics off: {_row(medians[False])}")
    for i, what in ((0, "requests/s"), (2, "daemon CPU per request"), (3, "Redis CPU per request")):
        ratio = medians[True][i] / medians[False][i]
        print(f"on / off, {what}: {ratio:.3f} ({(ratio - 1) * 100:+.1f} %)")


def _row(r: tuple[float, ...]) -> str:
    return (
        f"{r[0]:8.0f} req/s  p99 {r[1]:7.2f} ms  daemon {r[2]:6.1f} us/req  "
        f"redis {r[3]:5.1f} us/req"
    )


if __name__ == "__main__":
    main()
