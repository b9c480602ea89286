"""The admin socket: JSON-RPC 2.0 over a Unix stream socket, one request per line.

Operators (``chargingd ctl``, scripts, socat) send newline-delimited JSON-RPC 2.0
requests; every request runs inside an error boundary and gets exactly one response
line (none for a notification). Methods are by-name only. The method handlers live
in admin/methods.py, the clients in admin/client.py; this module is the socket
lifecycle.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chargingd.admin.client import (
    MAX_LINE_BYTES,
    AdminClient,
    AdminUnreachable,
    AsyncAdminClient,
    encode_line,
)
from chargingd.admin.methods import AdminMethods
from chargingd.admin.params import (
    INTERNAL_ERROR,
    INVALID_REQUEST,
    PARSE_ERROR,
    Peer,
    error_response,
)
from chargingd.core.status import ComponentStats

log = logging.getLogger("chargingd.admin")

# Deepest nesting of arrays/objects a request may have. Real requests are 3 deep; a
# deeper line is refused before anything walks it recursively (json, repr, logging).
MAX_DEPTH = 32


class AdminSocketInUse(RuntimeError):
    """Another live daemon answers on the admin socket."""


def _peer(writer: asyncio.StreamWriter) -> Peer:
    """The connecting process's pid/uid/gid from SO_PEERCRED (Linux unix(7))."""
    sock = writer.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
    except (OSError, AttributeError):
        return Peer(pid=-1, uid=-1, gid=-1)
    return Peer(pid=pid, uid=uid, gid=gid)


def claim_socket_path(path: Path) -> None:
    """Remove a stale socket file; refuse when a live daemon still answers on it."""
    if not os.path.lexists(path):
        return
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise AdminSocketInUse(f"admin socket path {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        log.info("removing stale admin socket %s", path)
        path.unlink(missing_ok=True)
        return
    except OSError as exc:
        raise AdminSocketInUse(f"admin socket {path} is not usable: {exc}") from None
    finally:
        probe.close()
    raise AdminSocketInUse(f"another chargingd is running: it answers on {path}")


@dataclass(eq=False)
class _Conn:
    task: asyncio.Task[None]
    busy: bool = False


class AdminServer:
    """The admin socket as a daemon component (``async start()`` / ``async stop()``)."""

    name = "admin"

    def __init__(
        self,
        methods: AdminMethods,
        path: Path,
        *,
        mode: int = 0o660,
        stats: ComponentStats | None = None,
        grace_s: float = 5.0,
    ) -> None:
        self.methods = methods
        self.path = Path(path)
        self.mode = mode
        self.stats = stats or ComponentStats()
        self.grace_s = grace_s
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_Conn] = set()
        self._stopping = False
        self._inode: int | None = None

    async def start(self) -> None:
        """Bind the socket with the configured file mode and start accepting."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        claim_socket_path(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bind under a tight umask so the socket is never wider than 0600, then chmod.
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        except OSError as exc:
            sock.close()
            raise AdminSocketInUse(f"cannot bind admin socket {self.path}: {exc}") from None
        finally:
            os.umask(old_umask)
        os.chmod(self.path, self.mode)
        self._inode = os.stat(self.path).st_ino
        self._server = await asyncio.start_unix_server(
            self._on_client, sock=sock, limit=MAX_LINE_BYTES
        )
        log.info("admin socket listening on %s mode %04o", self.path, self.mode)

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish within the grace period."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            if not conn.busy:
                conn.task.cancel()
        tasks = [c.task for c in self._conns]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        self._unlink_own_socket()

    def _unlink_own_socket(self) -> None:
        # Only remove the file we created (a new daemon may have replaced it).
        with contextlib.suppress(OSError):
            if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                self.path.unlink()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        conn = _Conn(task=task)
        self._conns.add(conn)
        self.stats.inc("connections")
        peer = _peer(writer)
        try:
            await self._serve(conn, reader, writer, peer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.discard(conn)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(
        self,
        conn: _Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: Peer,
    ) -> None:
        while not self._stopping:
            try:
                line = await reader.readline()
            except ValueError:  # longer than MAX_LINE_BYTES
                self.stats.inc("errors")
                msg = f"request line longer than {MAX_LINE_BYTES} bytes"
                writer.write(encode_line(error_response(None, INVALID_REQUEST, msg)))
                await writer.drain()
                return
            if not line:
                return
            if not line.strip():
                continue
            conn.busy = True
            try:
                out = await self.handle_line(line, peer)
                if out is not None:
                    writer.write(out)
                    await writer.drain()
            finally:
                conn.busy = False

    async def handle_line(self, line: bytes, peer: Peer) -> bytes | None:
        """One request line in, one response line out (None for notifications).

        The error boundary of a line: whatever the line holds, the answer is a
        response or a JSON-RPC error, never a dropped connection."""
        self.stats.inc("requests")
        try:
            return await self._handle(line, peer)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("admin line failed (%d bytes)", len(line))
            self.stats.inc("errors")
            return encode_line(error_response(None, INTERNAL_ERROR, "internal error; see the log"))

    async def _handle(self, line: bytes, peer: Peer) -> bytes | None:
        try:
            request = json.loads(line)
            too_deep = _too_deep(request)
        except RecursionError:
            too_deep = True  # nested beyond what the parser walks
        except (ValueError, UnicodeDecodeError) as exc:
            self.stats.inc("errors")
            return encode_line(error_response(None, PARSE_ERROR, f"parse error: {exc}"))
        if too_deep:
            self.stats.inc("errors")
            msg = f"invalid request: nested deeper than {MAX_DEPTH} levels"
            return encode_line(error_response(None, INVALID_REQUEST, msg))
        if isinstance(request, list):
            response: Any = await self._batch(request, peer)
        else:
            response = await self.methods.dispatch(request, peer)
            self._count(response)
        return None if response is None else encode_line(response)

    async def _batch(self, requests: list[Any], peer: Peer) -> Any:
        # JSON-RPC 2.0 §6: an empty batch is one Invalid Request error.
        if not requests:
            return error_response(None, INVALID_REQUEST, "invalid request: empty batch")
        out = []
        for request in requests:
            response = await self.methods.dispatch(request, peer)
            self._count(response)
            if response is not None:
                out.append(response)
        return out or None

    def _count(self, response: dict[str, Any] | None) -> None:
        if response is not None and "error" in response:
            self.stats.inc("errors")


def _too_deep(value: Any) -> bool:
    """True when arrays/objects nest deeper than MAX_DEPTH (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, (dict, list)):
            continue
        if depth > MAX_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


# The clients moved to admin/client.py; importing them from here keeps working.
__all__ = [
    "MAX_DEPTH",
    "MAX_LINE_BYTES",
    "AdminClient",
    "AdminServer",
    "AdminSocketInUse",
    "AdminUnreachable",
    "AsyncAdminClient",
    "claim_socket_path",
]
