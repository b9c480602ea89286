"""Known call traffic through the real daemon, for the monitoring tests.

A two-destination tariff (UK 44, FR 33, both 0.60/min), the daemon with two worker
processes, HTTP on a free port, and calls whose outcome, duration and quality are
known, each from its own UDP socket (so SO_REUSEPORT spreads them over the processes).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radius_e2e_harness import BIN, SECRET, TARIFF, Daemon, GatewaySocket, write_setup

from chargingd.radius import codec as rc

TARIFF_2 = TARIFF.replace('UK = ["44"]', 'UK = ["44"]\nFR = ["33"]').replace(
    'destinations = ["UK"]', 'destinations = ["UK", "FR"]'
)
MONITORING = """
[monitoring]
min_samples = 2
report_interval_s = 0.2
sample_interval_s = 0.5

[[monitoring.alerts]]
name = "low-asr"
kpi = "asr"
dimension = "gateway"
window_s = 300
below = 0.5
min_attempts = 5

[http]
enabled = true
port = 0
"""
UK = "00442079460000"
FR = "0033140000000"
GW_A = "127.0.0.1"
GW_B = "127.0.0.2"


def start_daemon(tmp_path: Path, workers: int = 2) -> Daemon:
    setup = write_setup(tmp_path, workers=workers, extra=MONITORING)
    (tmp_path / "tariff.toml").write_text(TARIFF_2)
    daemon = Daemon(setup, tmp_path / "daemon.log")
    daemon.start()
    return daemon


def http_port(daemon: Daemon) -> int:
    return int(daemon.call("server.status")["http"]["port"])


def http_get(daemon: Daemon, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port(daemon)}{path}", timeout=10) as r:
        return str(r.read().decode())


def ctl(daemon: Daemon, *args: str) -> str:
    """`chargingd ctl` as an operator runs it; its stdout."""
    out = subprocess.run(
        [str(BIN), "ctl", "--config", str(daemon.setup.config), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout


def ctl_json(daemon: Daemon, *args: str) -> dict[str, Any]:
    return json.loads(ctl(daemon, *args, "--json"))  # type: ignore[no-any-return]


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
    """Poll ``check`` until it returns something true (never a fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@dataclass
class KnownCall:
    """One call: who, where to, through which NAS, how it ends."""

    session_id: str
    user: str
    called: str = UK
    nas: str = GW_A
    usage_s: int = 0  # > 0: answered for that long
    cause_hex: str = ""  # h323-disconnect-cause (Q.850 in hex); "" = none reported
    quality: tuple[bytes, ...] = ()  # extra VSAs of the Stop
    input_packets: int | None = None
    ident: int = field(default=0)

    def attrs(self) -> bytes:
        return b"".join(
            (
                rc.attr_bytes(rc.USER_NAME, self.user.encode()),
                rc.attr_bytes(rc.CALLING_STATION_ID, b"+4930111111"),
                rc.attr_bytes(rc.CALLED_STATION_ID, self.called.encode()),
                rc.attr_ipv4(rc.NAS_IP_ADDRESS, self.nas),
                rc.attr_bytes(rc.ACCT_SESSION_ID, self.session_id.encode()),
                rc.cisco_vsa(rc.H323_CONF_ID, b"h323-conf-id=" + self.session_id.encode()),
            )
        )

    def _id(self) -> int:
        self.ident = (self.ident + 1) % 256
        return self.ident

    def access_request(self) -> bytes:
        return rc.encode_access_request(self._id(), os.urandom(16), self.attrs(), SECRET)

    def accounting(self, status: int, usage_s: int, event_s: int, extra: bytes = b"") -> bytes:
        attrs = self.attrs() + rc.attr_u32(rc.ACCT_STATUS_TYPE, status)
        attrs += rc.attr_u32(rc.ACCT_SESSION_TIME, usage_s)
        attrs += rc.attr_u32(rc.EVENT_TIMESTAMP, event_s) + extra
        return rc.encode_request(rc.ACCOUNTING_REQUEST, self._id(), attrs, SECRET)

    def stop_extra(self) -> bytes:
        extra = b"".join(self.quality)
        if self.cause_hex:
            extra += rc.cisco_vsa(
                rc.H323_DISCONNECT_CAUSE, b"h323-disconnect-cause=" + self.cause_hex.encode()
            )
        if self.input_packets is not None:
            extra += rc.attr_u32(47, self.input_packets)
        return extra


async def authorize(daemon: Daemon, call: KnownCall) -> tuple[GatewaySocket, bool]:
    sock = await GatewaySocket.open()
    answer = await sock.ask(call.access_request(), daemon.setup.auth_port, timeout_s=5.0)
    return sock, answer.code == rc.ACCESS_ACCEPT


async def play(daemon: Daemon, call: KnownCall) -> bool:
    """Access-Request; if accepted, Start (answered calls) and Stop. True if accepted."""
    sock, accepted = await authorize(daemon, call)
    try:
        if not accepted:
            return False
        port = daemon.setup.acct_port
        # Answered one second ahead of now (Event-Timestamp is whole seconds and the
        # CDR's answer time is never before the authorize), ended usage_s later: the
        # CDR's conversation time is then exactly usage_s.
        answer_s = int(time.time()) + 1
        if call.usage_s:
            start = call.accounting(rc.STATUS_START, 0, answer_s)
            assert (await sock.ask(start, port, timeout_s=5.0)).code == rc.ACCOUNTING_RESPONSE
        stop = call.accounting(
            rc.STATUS_STOP, call.usage_s, answer_s + call.usage_s, call.stop_extra()
        )
        assert (await sock.ask(stop, port, timeout_s=5.0)).code == rc.ACCOUNTING_RESPONSE
        return True
    finally:
        sock.close()


def avpair(text: str) -> bytes:
    return rc.cisco_vsa(1, text.encode())


def known_traffic() -> list[KnownCall]:
    """11 accepted calls (4 answered 30/60/90/120 s, 2 busy, 2 no answer, 1 abandoned,
    1 failed, 1 without a cause) and 3 refusals (2 no money, 1 unknown user)."""
    q1 = (
        rc.cisco_vsa(25, b"h323-setup-time=*10:00:00.000 UTC Mon Jan 5 2026"),
        avpair("alert-timepoint=*10:00:02.000 UTC Mon Jan 5 2026"),  # Cisco's name
        avpair("mos=4.2"),
        avpair("jitter=10"),
        avpair("lost-packets=10"),
    )
    q2 = (avpair("pdd=3000"), avpair("mos=3.8"), avpair("jitter=20"), avpair("packet-loss=3"))
    return [
        KnownCall("ans-30", "kpi", usage_s=30, cause_hex="10"),
        KnownCall("ans-60", "kpi", usage_s=60, cause_hex="10", quality=q1, input_packets=990),
        KnownCall("ans-90", "kpi", usage_s=90, cause_hex="10", quality=q2),
        KnownCall("ans-120", "kpi", usage_s=120),
        KnownCall("busy-1", "kpi", cause_hex="11"),
        KnownCall("busy-2", "kpi", cause_hex="11"),
        KnownCall("noans-uk", "kpi", cause_hex="13"),
        KnownCall("noans-fr", "kpi", called=FR, cause_hex="13"),
        KnownCall("abandon-fr", "kpi", called=FR, cause_hex="10"),
        KnownCall("failed-fr", "kpi", called=FR, nas=GW_B, cause_hex="22"),
        KnownCall("nocause", "kpi"),
        KnownCall("poor-1", "poor"),
        KnownCall("poor-2", "poor"),
        KnownCall("ghost-1", "nobody"),
    ]
