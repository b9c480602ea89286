"""The admin socket's clients: `chargingd ctl`'s blocking one and an asyncio twin.

Kept apart from the server (admin/server.py) so that a `chargingd ctl` process imports
the socket protocol only, not the daemon's method handlers and what they build on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from pathlib import Path
from typing import Any

from chargingd.admin.rpc import INVALID_REQUEST, RpcError

MAX_LINE_BYTES = 1 << 20  # one request line; longer lines are refused


class AdminUnreachable(ConnectionError):
    """No daemon answers on the admin socket. ``sent``: the request had been sent (the
    daemon closed the connection or gave no answer in time): it may have been applied."""

    def __init__(self, path: str, reason: str, *, sent: bool = False) -> None:
        super().__init__(f"cannot reach chargingd at {path}: {reason}")
        self.path = path
        self.sent = sent


def encode_line(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _unwrap(response: Any, method: str) -> Any:
    if not isinstance(response, dict):
        raise RpcError(INVALID_REQUEST, f"malformed response to {method}")
    if "error" in response:
        err = response["error"]
        raise RpcError(int(err.get("code", 0)), str(err.get("message", "")), err.get("data"))
    return response.get("result")


class AdminClient:
    """A blocking client (used by `chargingd ctl`): ``call(method, params) -> result``.

    Raises RpcError for an error response and AdminUnreachable when no daemon answers.
    """

    def __init__(self, path: str | Path, *, timeout_s: float = 10.0) -> None:
        self.path = str(path)
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._buf = b""
        self._next_id = 0

    def _connect(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout_s)
            try:
                sock.connect(self.path)
            except OSError as exc:
                sock.close()
                raise AdminUnreachable(self.path, exc.strerror or str(exc)) from None
            self._sock = sock
        return self._sock

    def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        sock = self._connect()
        self._next_id += 1
        request = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        request["params"] = params or {}
        try:
            sock.sendall(encode_line(request))
        except TimeoutError:
            raise AdminUnreachable(self.path, f"not read within {self.timeout_s} s") from None
        except OSError as exc:
            raise AdminUnreachable(self.path, exc.strerror or str(exc)) from None
        try:
            while b"\n" not in self._buf:
                chunk = sock.recv(65536)
                if not chunk:
                    raise AdminUnreachable(self.path, "connection closed by the daemon", sent=True)
                self._buf += chunk
        except TimeoutError:
            raise AdminUnreachable(
                self.path, f"no answer within {self.timeout_s} s", sent=True
            ) from None
        except OSError as exc:
            raise AdminUnreachable(self.path, exc.strerror or str(exc), sent=True) from None
        line, _, self._buf = self._buf.partition(b"\n")
        return _unwrap(json.loads(line), method)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncAdminClient:
    """The asyncio twin of AdminClient (tests, scripts, other components)."""

    def __init__(self, path: str | Path, *, timeout_s: float = 10.0) -> None:
        self.path = str(path)
        self.timeout_s = timeout_s
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._next_id = 0

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        line = await self.raw(
            encode_line(
                {
                    "jsonrpc": "2.0",
                    "id": self._next_id + 1,
                    "method": method,
                    "params": params or {},
                }
            )
        )
        return _unwrap(json.loads(line), method)

    async def raw(self, data: bytes) -> bytes:
        """Send raw bytes (one line), return the raw response line."""
        if self._writer is None:
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(
                    self.path, limit=MAX_LINE_BYTES
                )
            except OSError as exc:
                raise AdminUnreachable(self.path, exc.strerror or str(exc)) from None
        assert self._reader is not None
        self._next_id += 1
        self._writer.write(data)
        await self._writer.drain()
        line = await asyncio.wait_for(self._reader.readline(), self.timeout_s)
        if not line:
            raise AdminUnreachable(self.path, "connection closed by the daemon")
        return line

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(Exception):
                await self._writer.wait_closed()
            self._writer = self._reader = None

    async def __aenter__(self) -> AsyncAdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
