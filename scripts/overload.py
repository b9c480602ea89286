#!/usr/bin/env python3
"""Overload: a 10x flood of Access-Requests, and what a probe sees during and after it.

Starts `chargingd serve` (embedded Redis, sample tariff, one funded account) with the
given [radius] max_wait_ms, measures its capacity (closed loop, 32 outstanding),
then floods it open-loop at --factor x that rate for --seconds while a probe sends
one Access-Request every 20 ms and waits up to 3 s for each (a gateway's retransmit
timer). Prints, for during and after the flood: the share of probes answered, the
age of the answers (p50/p99/max) and, after the flood, how long until answers are
fresh again; then the daemon's counters (shed_stale, dropped_overload).

Usage: scripts/overload.py [--max-wait-ms 500] [--factor 10] [--seconds 10]
(--max-wait-ms -1 leaves the key out of the config, for a daemon older than it)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from chargingd.radius import codec as rc

SECRET = b"overload-secret"
REPO = Path(__file__).resolve().parent.parent
PY = sys.executable
PROBE_EVERY_S = 0.02
PROBE_TIMEOUT_S = 3.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _request(ident: int, n: int, tag: bytes) -> bytes:
    attrs = b"".join(
        (
            rc.attr_bytes(rc.USER_NAME, b"load"),
            rc.attr_bytes(rc.CALLING_STATION_ID, b"+4930%07d" % (n % 10**7)),
            rc.attr_bytes(rc.CALLED_STATION_ID, b"0044207946%04d" % (n % 10**4)),
            rc.attr_ipv4(rc.NAS_IP_ADDRESS, "127.0.0.1"),
            rc.attr_bytes(rc.ACCT_SESSION_ID, b"%s-%d-%d" % (tag, os.getpid(), n)),
        )
    )
    return rc.encode_access_request(ident, os.urandom(16), attrs, SECRET)


class Daemon:
    def __init__(self, max_wait_ms: int, workers: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="chargingd-overload-"))
        self.port = _free_port()
        self.acct_port = _free_port()
        cfg = self.dir / "chargingd.toml"
        # A negative value leaves the key out (a daemon from before the key existed).
        max_wait_line = f"max_wait_ms = {max_wait_ms}" if max_wait_ms >= 0 else ""
        cfg.write_text(
            f"""[server]
data_dir = "{self.dir}/data"
log_level = "warning"
workers = {workers}

[export]
run_in_serve = false

[rating]
default_plan = "{REPO}/config/tariffs/sample.toml"

[radius]
bind = "127.0.0.1"
auth_port = {self.port}
acct_port = {self.acct_port}
{max_wait_line}

[[radius.clients]]
name = "load"
address = "127.0.0.1"
secret = "{SECRET.decode()}"
coa_port = 0
"""
        )
        self.ctl = [PY, "-m", "chargingd", "ctl", "--socket", f"{self.dir}/data/chargingd.sock"]
        log = (self.dir / "daemon.log").open("wb")
        self.proc = subprocess.Popen(
            [PY, "-m", "chargingd", "serve", "--config", str(cfg)], stderr=log, cwd=REPO
        )

    def wait_ready(self) -> None:
        for _ in range(600):
            if self.proc.poll() is not None:
                raise SystemExit(f"chargingd exited: see {self.dir}/daemon.log")
            if subprocess.run([*self.ctl, "status"], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        subprocess.run(
            [*self.ctl, "account", "create", "load", "--mode", "prepaid", "--currency", "EUR",
             "--balance", "1000000000.00", "--identity", "user:load"],
            check=True, capture_output=True,
        )  # fmt: skip

    def counters(self) -> list[dict[str, int]]:
        out = subprocess.run([*self.ctl, "--json", "status"], capture_output=True, check=True)
        return [p["frontend"] for p in json.loads(out.stdout)["radius"]["processes"]]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        shutil.rmtree(self.dir, ignore_errors=True)


def capacity(port: int, seconds: float = 3.0, window: int = 32) -> float:
    """Closed loop: answers per second with `window` requests outstanding."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    n = 0
    for i in range(window):
        sock.send(_request(i % 256, n, b"cap"))
        n += 1
    answered = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if select.select([sock], [], [], 1.0)[0]:
            while True:
                try:
                    sock.recv(4096)
                except BlockingIOError:
                    break
                answered += 1
                sock.send(_request(n % 256, n, b"cap"))
                n += 1
    sock.close()
    return answered / seconds


def flood(port: int, rate: float, seconds: float) -> int:
    """Open loop from a child process: `rate` distinct Access-Requests per second."""
    total = int(rate * seconds)
    packets = [_request(i % 256, i, b"flood") for i in range(total)]
    pid = os.fork()
    if pid:
        return pid
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    sock.connect(("127.0.0.1", port))
    start = time.monotonic()
    for i, packet in enumerate(packets):
        due = start + i / rate
        while time.monotonic() < due:
            pass
        with contextlib.suppress(OSError):
            sock.send(packet)
    os._exit(0)


def probe(port: int, until: float) -> list[tuple[float, float | None]]:
    """(sent at, answer age in s or None) for one request every PROBE_EVERY_S; an
    identifier comes back after 256 probes (5 s), past PROBE_TIMEOUT_S."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    by_ident: dict[int, int] = {}
    out: list[tuple[float, float | None]] = []
    next_send = time.monotonic()
    while (now := time.monotonic()) < until + PROBE_TIMEOUT_S:
        if now >= next_send and now < until:
            by_ident[len(out) % 256] = len(out)
            sock.send(_request(len(out) % 256, 10**9 + len(out), b"probe"))
            out.append((now, None))
            next_send += PROBE_EVERY_S
        if select.select([sock], [], [], 0.002)[0]:
            data = sock.recv(4096)
            index = by_ident.pop(data[1], None)
            if index is not None:
                sent = out[index][0]
                out[index] = (sent, time.monotonic() - sent)
    sock.close()
    return out


def _ages(rows: list[tuple[float, float | None]]) -> str:
    got = sorted(a for _, a in rows if a is not None)
    if not rows:
        return "no probes"
    share = 100 * len(got) / len(rows)
    if not got:
        return f"answered=0/{len(rows)} (0%)"

    def pick(q: float) -> float:
        return got[min(len(got) - 1, int(q * len(got)))] * 1000

    return (
        f"answered={len(got)}/{len(rows)} ({share:.0f}%) age_ms p50={pick(0.5):.1f} "
        f"p99={pick(0.99):.1f} max={got[-1] * 1000:.1f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-wait-ms", type=int, default=500)
    parser.add_argument("--factor", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    daemon = Daemon(args.max_wait_ms, args.workers)
    try:
        daemon.wait_ready()
        cap = capacity(daemon.port)
        rate = cap * args.factor
        print(f"load={os.getloadavg()[0]:.2f} max_wait_ms={args.max_wait_ms} "
              f"capacity={cap:.0f}/s flood={rate:.0f}/s for {args.seconds:.0f}s")  # fmt: skip
        child = flood(daemon.port, rate, args.seconds)
        start = time.monotonic()
        flood_end = start + args.seconds
        rows = probe(daemon.port, flood_end + 3.0)
        os.waitpid(child, 0)
        during = [r for r in rows if r[0] < flood_end]
        after = [r for r in rows if r[0] >= flood_end]
        fresh = next((t for t, a in after if a is not None and a < 0.05), None)
        print("during flood:", _ages(during))
        print("after flood: ", _ages(after))
        recovery = f"{(fresh - flood_end) * 1000:.0f} ms" if fresh is not None else "never (3 s)"
        print(f"first answer under 50 ms after the flood: {recovery}")
        for c in daemon.counters():
            print(
                f"daemon: received={c['received']} accepted={c['accepted']} "
                f"shed_stale={c.get('shed_stale', 'n/a')} dropped_overload={c['dropped_overload']}"
            )
    finally:
        daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
