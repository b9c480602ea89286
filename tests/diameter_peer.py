"""The Erlang/OTP Diameter peer (tests/diameter/erlang/) driven from pytest.

``compile_dictionaries`` runs OTP's diameterc on the RFC 4006 example dictionary
that erlang-examples ships and on chargingd_ro.dia; ``ErlangPeer`` runs the
escript, writes Erlang terms to its stdin and reads its JSON lines.
"""

from __future__ import annotations

import asyncio
import glob
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

ERLANG_DIR = Path(__file__).parent / "diameter" / "erlang"
ESCRIPT = ERLANG_DIR / "chargingd_peer.escript"
EXAMPLE_DICTS = "/usr/lib/erlang/lib/diameter-*/examples/dict"


def erlang_missing() -> str:
    """Why the Erlang peer cannot run here ("" when it can)."""
    for tool in ("escript", "diameterc", "erlc"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (Debian: erlang-base erlang-diameter erlang-dev)"
    if not glob.glob(f"{EXAMPLE_DICTS}/rfc4006_cc.dia"):
        return "rfc4006_cc.dia not found (Debian: erlang-examples)"
    return ""


def compile_dictionaries(out: Path) -> Path:
    """diameterc + erlc of rfc4005_nas, rfc4006_cc (OTP's examples) and chargingd_ro."""
    (src,) = glob.glob(EXAMPLE_DICTS)[:1]
    for name in ("rfc4005_nas", "rfc4006_cc"):
        # The examples inherit "common", the RFC 6733 base dictionary under its old name.
        text = Path(src, f"{name}.dia").read_text()
        text = text.replace("@inherits common", "@inherits diameter_gen_base_rfc6733")
        (out / f"{name}.dia").write_text(text)
    shutil.copy(ERLANG_DIR / "chargingd_ro.dia", out / "chargingd_ro.dia")
    for name in ("rfc4005_nas", "rfc4006_cc", "chargingd_ro"):
        subprocess.run(["diameterc", "-i", ".", f"{name}.dia"], cwd=out, check=True)
        subprocess.run(["erlc", "-I", ".", f"{name}.erl"], cwd=out, check=True)
    return out


def term(value: Any) -> str:
    """A Python value as an Erlang term (str -> string, tuples, lists, atoms via Atom)."""
    if isinstance(value, Atom):
        return value.name
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # an Erlang string literal reads the same escapes
    if isinstance(value, tuple):
        return "{" + ",".join(term(v) for v in value) + "}"
    if isinstance(value, list):
        return "[" + ",".join(term(v) for v in value) + "]"
    raise TypeError(value)


class Atom:
    def __init__(self, name: str) -> None:
        self.name = name


class ErlangPeer:
    """One running escript: commands in, JSON events out (kept for the test to read)."""

    def __init__(self, dict_dir: Path) -> None:
        self.dict_dir = dict_dir
        self.proc: asyncio.subprocess.Process | None = None
        self.events: list[dict[str, Any]] = []
        self.stderr = b""
        self._new = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            "escript",
            str(ESCRIPT),
            str(self.dict_dir),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        await self.wait_for(lambda e: e.get("event") == "ready", timeout_s=30)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"event": "noise", "line": line.decode(errors="replace")})
            self._new.set()

    async def send(self, *values: Any) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write((term(values if len(values) > 1 else values[0]) + ".\n").encode())
        await self.proc.stdin.drain()

    async def wait_for(self, pred: Any, *, timeout_s: float = 20) -> dict[str, Any]:
        """The first event (old or new) matching ``pred``; TimeoutError with the log."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        seen = 0
        while True:
            for event in self.events[seen:]:
                if pred(event):
                    return event
            seen = len(self.events)
            left = deadline - loop.time()
            if left <= 0 or (self.proc is not None and self.proc.returncode is not None):
                raise TimeoutError(f"peer events so far: {self.events}")
            self._new.clear()
            try:
                await asyncio.wait_for(self._new.wait(), min(left, 0.5))
            except TimeoutError:
                continue

    async def connect(
        self,
        port: int,
        *,
        origin_host: str,
        realm: str,
        form: str = "plain",
        dest_realm: str = "chargingd.test",
        watchdog_ms: int = 30000,
    ) -> dict[str, Any]:
        await self.send(Atom("start"), origin_host, realm, dest_realm, Atom(form))
        await self.wait_for(lambda e: e.get("event") in ("started", "error"))
        await self.send(Atom("connect"), port, watchdog_ms)
        return await self.wait_for(lambda e: e.get("event") in ("up", "closed", "timeout"))

    async def ccr(
        self, tag: str, session_id: str, request_type: int, number: int, **props: Any
    ) -> dict[str, Any]:
        plist = [(Atom(k), v) for k, v in props.items() if v is not None]
        await self.send(Atom("ccr"), tag, session_id, request_type, number, plist)
        answer = await self.wait_for(lambda e: e.get("tag") == tag)
        # OTP decoded the CCA against RFC 4006's grammar without complaint (a strict
        # client with answer_errors = discard, OTP's default, would drop it otherwise).
        assert answer.get("decode_errors", "[]") == "[]", answer
        return answer

    async def answer_with(self, which: str, code: int) -> None:
        await self.send(Atom("answer_with"), Atom(which), code)
        await self.wait_for(lambda e: e.get("event") == "answer_with" and e["request"] == which)

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            try:
                await self.send(Atom("stop"))
                await asyncio.wait_for(self.proc.wait(), 10)
            except (TimeoutError, ConnectionError, BrokenPipeError):
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=5)
        if self.proc.stderr is not None:
            self.stderr = await self.proc.stderr.read()
