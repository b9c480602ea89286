"""A real Kamailio (Debian: kamailio, kamailio-radius-modules) in front of chargingd.

The tests run the repository's own config/kamailio/kamailio.cfg, the one
docs/kamailio.md documents, with its site values given on the command line
(`--substdef`): SIP on a free UDP port of 127.0.0.1, JSON-RPC over HTTP on a free TCP
port, radcli's radiusclient.conf written per run (chargingd's ports and secret, the
repository's radcli dictionary), and the answering phone as the next hop. Kamailio
resolves nothing (the cfg sets dns=no, rev_dns=no, no SRV/NAPTR), runs in the
foreground as the current user with its own runtime directory, and logs to a file
that the fixtures print when a test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ports
from paths import REPO
from sipua import Dialog, SipPhone

KAMAILIO_CFG = REPO / "config" / "kamailio" / "kamailio.cfg"
RADCLI_DICTIONARY = REPO / "config" / "kamailio" / "dictionary"
MODULE_DIRS = (
    Path("/usr/lib/x86_64-linux-gnu/kamailio/modules"),
    Path("/usr/lib/aarch64-linux-gnu/kamailio/modules"),
    Path("/usr/lib/kamailio/modules"),
)
# kamailio-radius-modules: misc_radius, acc_radius; kamailio itself: the rest.
NEEDED_MODULES = ("misc_radius", "acc_radius", "acc", "dialog", "jsonrpcs", "xhttp", "htable")
READY_TIMEOUT_S = 20.0


def kamailio_binary() -> str | None:
    return shutil.which("kamailio") or next(
        (p for p in ("/usr/sbin/kamailio", "/usr/local/sbin/kamailio") if Path(p).exists()),
        None,
    )


def missing_reason() -> str | None:
    """Why Kamailio tests cannot run here (None: they can)."""
    if kamailio_binary() is None:
        return (
            "kamailio is not installed (Debian: apt-get install kamailio kamailio-radius-modules)"
        )
    for directory in MODULE_DIRS:
        if directory.is_dir():
            absent = [m for m in NEEDED_MODULES if not (directory / f"{m}.so").exists()]
            if absent:
                return f"kamailio modules missing in {directory}: {', '.join(absent)}"
            return None
    return "kamailio module directory not found (kamailio-radius-modules installed?)"


def free_port(kind: socket.SocketKind = socket.SOCK_DGRAM) -> int:
    """A port free on 127.0.0.1 right now, outside the ephemeral range (tests/ports.py)."""
    return ports.free_port(kind)


def write_radcli(
    directory: Path, *, auth_port: int, acct_port: int, secret: str, timeout_s: int = 2
) -> Path:
    """radcli's radiusclient.conf and servers file pointing at chargingd; returns the conf.

    IP literals only (radcli resolves host names); nas-ip set so radcli does not look
    up its own host name; a short timeout so a dropped request fails fast.
    """
    directory.mkdir(parents=True, exist_ok=True)
    servers = directory / "servers"
    servers.write_text(f"127.0.0.1\t{secret}\n")
    servers.chmod(0o600)
    conf = directory / "radiusclient.conf"
    conf.write_text(
        f"nas-ip\t\t127.0.0.1\n"
        f"authserver\t127.0.0.1:{auth_port}\n"
        f"acctserver\t127.0.0.1:{acct_port}\n"
        f"servers\t\t{servers}\n"
        f"dictionary\t{RADCLI_DICTIONARY}\n"
        "default_realm\n"
        f"radius_timeout\t{timeout_s}\n"
        "radius_retries\t1\n"
        "bindaddr\t127.0.0.1\n"
    )
    return conf


class RpcError(Exception):
    """A JSON-RPC error from Kamailio (HTTP status and its message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True)
class KamailioPorts:
    """Kamailio's SIP (UDP) and JSON-RPC (HTTP) ports on 127.0.0.1. Reserve them before
    the daemon starts when its config must name them (a cut backend's RPC URL); every
    Kamailio of the module then reuses them, one after the other."""

    sip: int
    rpc: int

    @classmethod
    def reserve(cls) -> KamailioPorts:
        return cls(sip=free_port(), rpc=free_port(socket.SOCK_STREAM))

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc}/RPC"


class Kamailio:
    """One kamailio process started from the repository's cfg with site values."""

    def __init__(
        self,
        directory: Path,
        *,
        radcli_conf: Path,
        next_hop: tuple[str, int],
        cfg: Path = KAMAILIO_CFG,
        ports: KamailioPorts | None = None,
    ) -> None:
        self.directory = directory
        self.cfg = cfg
        self.ports = ports or KamailioPorts.reserve()
        self.sip_port = self.ports.sip
        self.rpc_port = self.ports.rpc
        self.radcli_conf = radcli_conf
        self.next_hop = next_hop
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.sip_port)

    @property
    def log_path(self) -> Path:
        return self.directory / "kamailio.log"

    def command(self) -> list[str]:
        binary = kamailio_binary()
        assert binary is not None
        run = self.directory / "run"
        values = {
            "SIP_IP": "127.0.0.1",
            "SIP_PORT": str(self.sip_port),
            "RPC_IP": "127.0.0.1",
            "RPC_PORT": str(self.rpc_port),
            "RPC_CLIENT": "127.0.0.1",
            "RADCLI_CONF": str(self.radcli_conf),
            "NEXT_HOP": f"sip:{self.next_hop[0]}:{self.next_hop[1]}",
        }
        substs = [f"--substdef=!{name}!{value}!g" for name, value in values.items()]
        return [
            binary,
            "-f", str(self.cfg),
            *substs,
            "-DD",  # foreground, no daemon
            "-E",  # log to stderr (the log file)
            "-Y", str(run),
            "-P", str(run / "kamailio.pid"),
            "-w", str(self.directory),
            "-m", "32",
            "-M", "4",
        ]  # fmt: skip

    def start(self) -> None:
        (self.directory / "run").mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its children die with the group on stop()
            )
        self.wait_ready()

    def wait_ready(self) -> None:
        """Poll JSON-RPC and a SIP OPTIONS until both answer (never a fixed sleep)."""
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"kamailio exited with {self.proc.returncode}:\n{self.log()}")
            try:
                self.rpc("core.version")
                if self._options_ok():
                    return
            except (OSError, RpcError):
                pass
            time.sleep(0.05)
        raise AssertionError(f"kamailio not ready in time:\n{self.log()}")

    def _options_ok(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.5)
            port = s.getsockname()[1]
            s.sendto(
                (
                    f"OPTIONS sip:127.0.0.1:{self.sip_port} SIP/2.0\r\n"
                    f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{os.urandom(6).hex()}\r\n"
                    "Max-Forwards: 70\r\n"
                    f"From: <sip:probe@127.0.0.1>;tag={os.urandom(4).hex()}\r\n"
                    f"To: <sip:127.0.0.1:{self.sip_port}>\r\n"
                    f"Call-ID: probe-{os.urandom(6).hex()}\r\n"
                    "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                ).encode(),
                self.address,
            )
            try:
                return s.recv(4096).startswith(b"SIP/2.0 200")
            except TimeoutError:
                return False

    def rpc(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call over HTTP (jsonrpcs + xhttp): the result, or RpcError."""
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1})
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.rpc_port}/RPC",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            # jsonrpcs answers an RPC fault with the HTTP status of the fault.
            error = json.loads(exc.read() or b"{}").get("error", {})
            raise RpcError(exc.code, str(error.get("message", exc.reason))) from None
        if "error" in answer:
            raise RpcError(int(answer["error"].get("code", 500)), str(answer["error"]))
        return answer.get("result")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class Switch:
    """Kamailio between two phones: `caller` places calls, `gateway` answers them
    (its `answer` policy decides how), chargingd authorizes and accounts each call."""

    def __init__(self, kamailio: Kamailio, caller: SipPhone, gateway: SipPhone) -> None:
        self.kamailio = kamailio
        self.caller = caller
        self.gateway = gateway

    @classmethod
    async def open(
        cls,
        directory: Path,
        *,
        auth_port: int,
        acct_port: int,
        secret: str,
        radius_timeout_s: int = 2,
        edit_cfg: Callable[[str], str] | None = None,
        ports: KamailioPorts | None = None,
    ) -> Switch:
        """Phones, radcli files and Kamailio for one test (radcli tries twice, waiting
        `radius_timeout_s` each time). `edit_cfg` runs Kamailio with a changed copy of
        the repository's cfg (to show what another config does)."""
        gateway = await SipPhone.open("gw")
        caller = await SipPhone.open("caller")
        radcli = write_radcli(
            directory / "radcli",
            auth_port=auth_port,
            acct_port=acct_port,
            secret=secret,
            timeout_s=radius_timeout_s,
        )
        cfg = KAMAILIO_CFG
        if edit_cfg is not None:
            cfg = directory / "kamailio-edited.cfg"
            cfg.write_text(edit_cfg(KAMAILIO_CFG.read_text()))
        kamailio = Kamailio(
            directory / "kamailio",
            radcli_conf=radcli,
            next_hop=("127.0.0.1", gateway.port),
            cfg=cfg,
            ports=ports,
        )
        try:
            kamailio.start()
        except BaseException:
            gateway.close()
            caller.close()
            raise
        return cls(kamailio, caller, gateway)

    async def call(self, payer: str, callee: str = "00442079460000") -> Dialog:
        """Place a call from `payer` (the From user Kamailio charges) and wait for its
        final answer."""
        dialog = await self.caller.call(self.kamailio.address, callee, from_user=payer)
        await asyncio.wait_for(dialog.finished.wait(), 40)
        return dialog

    def close(self) -> None:
        self.caller.close()
        self.gateway.close()
        self.kamailio.stop()

    def report(self) -> str:
        """Kamailio's log and what each phone received, for a failing test's output."""
        lines = [f"---- kamailio log ----\n{self.kamailio.log()}"]
        for phone in (self.caller, self.gateway):
            lines.append(f"---- {phone.user} (port {phone.port}) received ----")
            lines += [f"{m.call_id} {m.first_line}" for m in phone.received]
        return "\n".join(lines)
