"""A second daemon must not join RADIUS ports another program holds (SO_REUSEPORT);
the processes of one daemon share a port by Request Authenticator, not by source."""

from __future__ import annotations

import logging
import os
import random
import select
import socket
import subprocess
from pathlib import Path

import pytest
from radius_e2e_harness import Daemon, write_setup

from chargingd.radius import ports
from chargingd.radius.ports import (
    SPREAD_ATTRIBUTES,
    PortInUse,
    bind_udp,
    ensure_ports_free,
    spread_index,
)


def _holder(port: int) -> socket.socket:
    """What another chargingd looks like to the kernel: SO_REUSEPORT on the port."""
    return bind_udp("127.0.0.1", port)


async def test_probe_refuses_a_port_held_with_reuseport() -> None:
    holder = _holder(0)
    port = holder.getsockname()[1]
    try:
        with pytest.raises(PortInUse, match=f"127.0.0.1:{port} is already in use"):
            await ensure_ports_free("127.0.0.1", (port,), wait_s=0.3, step_s=0.1)
    finally:
        holder.close()
    await ensure_ports_free("127.0.0.1", (port, 0), wait_s=0)  # free again: no error


def test_serve_refuses_to_share_its_radius_port(tmp_path: Path) -> None:
    setup = write_setup(tmp_path)
    holder = _holder(setup.auth_port)
    daemon = Daemon(setup, tmp_path / "d.log")
    try:
        daemon.start()
        assert daemon.proc is not None
        try:
            code = daemon.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            code = None  # it started and shares the port: the bug
        assert code == 1, daemon.log()
        assert f"RADIUS port 127.0.0.1:{setup.auth_port} is already in use" in daemon.log()
        assert "chargingd ready" not in daemon.log()
    finally:
        holder.close()
        daemon.kill()  # SIGTERM, and never leave the embedded redis-server behind


def _request(authenticator: bytes, ident: int = 7) -> bytes:
    """An Access-Request header (the program reads nothing past it)."""
    return bytes([1, ident, 0, 20]) + authenticator


def _drain(socks: dict[str, socket.socket]) -> dict[str, list[bytes]]:
    """What each socket of the group received (waits until nothing more arrives)."""
    got: dict[str, list[bytes]] = {name: [] for name in socks}
    while select.select(list(socks.values()), [], [], 0.05)[0]:
        for name, sock in socks.items():
            while True:
                try:
                    got[name].append(sock.recv(4096))
                except BlockingIOError:
                    break
    return got


def _word_xor(packet: bytes) -> int:
    return (
        int.from_bytes(packet[4:8])
        ^ int.from_bytes(packet[8:12])
        ^ int.from_bytes(packet[12:16])
        ^ int.from_bytes(packet[16:20])
    )


def test_one_source_socket_is_spread_by_authenticator_and_retransmissions_stay() -> None:
    group = {"a": bind_udp("127.0.0.1", 0, spread=3)}
    port = group["a"].getsockname()[1]
    group |= {name: bind_udp("127.0.0.1", port, spread=3) for name in "bc"}
    gateway = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # ONE source port
    gateway.bind(("127.0.0.1", 0))
    try:
        # Half the Authenticators share their first word (a gateway's counter or weak
        # generator): the XOR of all four words still spreads them.
        sent = [_request(os.urandom(16), ident=i) for i in range(30)]
        sent += [_request(b"\x00\x00\x00\x07" + os.urandom(12), ident=i) for i in range(30)]
        for packet in sent:
            gateway.sendto(packet, ("127.0.0.1", port))
        first = _drain(group)
        # Socket i (in bind order) takes the XOR of the Authenticator's words mod 3.
        for index, name in enumerate("abc"):
            assert first[name] == [p for p in sent if _word_xor(p) % 3 == index]
            assert first[name]  # 60 random words: each socket has a share
            assert [p for p in first[name] if p[4:8] == b"\x00\x00\x00\x07"]  # the same
        for packet in sent[:10]:  # retransmissions: the same bytes, the same socket
            gateway.sendto(packet, ("127.0.0.1", port))
        again = _drain(group)
        assert {n: [p for p in first[n] if p in sent[:10]] for n in group} == again
        # A process that goes: the kernel moves the last socket into its slot, and a
        # restarted one joins at the end (what docs/operations.md says).
        group.pop("a").close()
        group["d"] = bind_udp("127.0.0.1", port, spread=3)
        for packet in sent:
            gateway.sendto(packet, ("127.0.0.1", port))
        moved = _drain(group)
        assert moved == {"c": first["a"], "b": first["b"], "d": first["c"]}
    finally:
        gateway.close()
        for sock in group.values():
            sock.close()


def _with_attributes(attrs: list[tuple[int, bytes]], ident: int = 1) -> bytes:
    """An Accounting-Request with these attributes and a random Authenticator."""
    body = b"".join(bytes([kind, len(value) + 2]) + value for kind, value in attrs)
    return bytes([4, ident]) + (20 + len(body)).to_bytes(2) + os.urandom(16) + body


@pytest.mark.parametrize("mode", ["user", "ani"])
def test_spread_by_caller_keeps_one_callers_requests_in_one_process(mode: str) -> None:
    """[radius] spread = "user" / "ani": the program hashes that attribute's value, so a
    caller's requests from every gateway socket reach one process (its kept fraud
    values are not moved by another), callers still spread over all processes, and a
    packet without the attribute goes by its Authenticator."""
    attribute = SPREAD_ATTRIBUTES[mode]
    group = {"a": bind_udp("127.0.0.1", 0, spread=3, spread_attribute=attribute)}
    port = group["a"].getsockname()[1]
    group |= {n: bind_udp("127.0.0.1", port, spread=3, spread_attribute=attribute) for n in "bc"}
    gateways = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
    rng = random.Random(7)
    try:
        callers = [f"{1000 + i}" for i in range(40)] + ["", "x", "ab", "abc"]  # 0-3 bytes
        callers += [f"sip:+4930{i:09d}@sbc.example.net;user=phone{'x' * i}" for i in range(8)]
        sent: dict[bytes, str | None] = {}
        for caller in callers:
            for n in range(6):
                # Other attributes first (0-4 of them, random values) and after it.
                before = [(4, os.urandom(4)) for _ in range(rng.randrange(5))]
                after = [(44, os.urandom(8)), (40, b"\x00\x00\x00\x03")]
                packet = _with_attributes([*before, (attribute, caller.encode()), *after], n)
                sent[packet] = caller
        for n in range(30):  # no such attribute (or past the 16 searched): by Authenticator
            sent[_with_attributes([(4, os.urandom(4))] * (n % 20), n)] = None
        for index, packet in enumerate(sent):
            gateways[index % len(gateways)].sendto(packet, ("127.0.0.1", port))
        got = _drain(group)
        where = {p: name for name, packets in got.items() for p in packets}
        assert set(where) == set(sent)  # nothing dropped by the program
        for packet in sent:  # the kernel ran what spread_index says
            assert where[packet] == "abc"[spread_index(packet, 3, attribute)], packet
        for caller in callers:  # one caller: one process, whatever the gateway socket
            assert len({where[p] for p, c in sent.items() if c == caller}) == 1, caller
        for name in "abc":  # 52 callers: each process has a share of them
            assert len({c for p, c in sent.items() if c is not None and where[p] == name}) > 5
        no_attribute = [p for p, c in sent.items() if c is None]
        assert all(where[p] == "abc"[_word_xor(p) % 3] for p in no_attribute)
        # Malformed: a zero length before the attribute, or the attribute's own length
        # byte 0/1: delivered (by Authenticator), never dropped.
        broken = [
            bytes([4, 9]) + (26).to_bytes(2) + os.urandom(16) + bytes([4, 0, 1, 2, 3, 4]),
            bytes([4, 9]) + (26).to_bytes(2) + os.urandom(16) + bytes([attribute, 1, 1, 2]),
            bytes([4, 9]) + (20).to_bytes(2) + os.urandom(16),
        ]
        for packet in broken:
            gateways[0].sendto(packet, ("127.0.0.1", port))
        again = _drain(group)
        assert sorted(p for ps in again.values() for p in ps) == sorted(broken)
        assert all(p in again["abc"[_word_xor(p) % 3]] for p in broken)
    finally:
        for sock in [*gateways, *group.values()]:
            sock.close()


def test_a_refused_program_keeps_the_hash_and_is_said_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ports, "_refusal_logged", False)
    # Bound without SO_REUSEPORT: no group, the kernel refuses the program (EINVAL).
    plain = [bind_udp("127.0.0.1", 0, reuse_port=False) for _ in range(2)]
    try:
        with caplog.at_level(logging.WARNING, logger="chargingd.radius"):
            assert [ports.spread_by_authenticator(s, 2) for s in plain] == [False, False]
        assert ports.spread_by_authenticator(plain[0], 1) is False  # one process: nothing
    finally:
        for sock in plain:
            sock.close()
    said = [r.getMessage() for r in caplog.records if "not spread" in r.getMessage()]
    assert len(said) == 1 and "over 2 processes" in said[0], said
