"""docs/kamailio.md's Kamailio command line gives the setup the rest of the page uses.

The page runs Kamailio at 192.0.2.10 and chargingd at 192.0.2.5 (radcli's authserver)
and points chargingd's cut backend at `jsonrpc_url = "http://192.0.2.10:5071/RPC"`.
Its command line overrode only SIP_IP and NEXT_HOP: Kamailio's JSON-RPC listener
stayed on the cfg's default 127.0.0.1:5071, answering only 127.0.0.1 (RPC_CLIENT), so
every cut, kill and fraud block of an operator who followed the page went unconfirmed.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from kamailio_harness import kamailio_binary

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "kamailio.md").read_text()
CFG = REPO / "config" / "kamailio" / "kamailio.cfg"
KAMAILIO = kamailio_binary()

pytestmark = pytest.mark.skipif(KAMAILIO is None, reason="kamailio is not installed")


def _documented_command() -> list[str]:
    found = re.search(r"^    (kamailio -f .*?)\n\n", DOC, re.S | re.M)
    assert found is not None, "docs/kamailio.md: the kamailio command line not found"
    return shlex.split(found.group(1).replace("\\\n", " "))


def _substdefs(argv: list[str]) -> dict[str, str]:
    values = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--substdef"]
    return {v.split("!")[1]: v.split("!")[2] for v in values}


def test_the_documented_command_line_listens_where_chargingd_sends_its_cuts() -> None:
    client = tomllib.loads(re.search(r"```toml\n(.*?)```", DOC, re.S).group(1))  # type: ignore[union-attr]
    rpc = urlsplit(client["radius"]["clients"][0]["jsonrpc_url"])
    radcli = re.search(r"^authserver\s+([0-9.]+):", DOC, re.M)
    assert radcli is not None
    chargingd_ip = radcli.group(1)

    argv = _documented_command()
    assert argv[:3] == ["kamailio", "-f", "/etc/kamailio/kamailio.cfg"]
    checked = subprocess.run(
        [str(KAMAILIO), "-c", "-f", str(CFG), *argv[3:]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    listeners = re.findall(r"tcp: \S+ \[([0-9.]+)\]:(\d+)", checked.stdout + checked.stderr)
    assert (rpc.hostname, str(rpc.port)) in listeners, listeners
    # The JSON-RPC route answers only RPC_CLIENT: chargingd's address.
    assert _substdefs(argv).get("RPC_CLIENT") == chargingd_ip
