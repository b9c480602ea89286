"""JSON-RPC 2.0 error codes and the error both sides raise: the admin socket's server
(admin/params.py, which adds the application codes) and its clients (admin/client.py,
imported by `chargingd ctl` without the daemon's parts)."""

from __future__ import annotations

from typing import Any

# JSON-RPC 2.0 §5.1 standard codes.
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# Application code: the object named does not exist (no live session, no open
# incident). Not -32602: `chargingd ctl` exits 2 (usage) on invalid params, 1 on this.
NOT_FOUND = -32011


class RpcError(Exception):
    """A JSON-RPC error: raised by handlers, and by the clients on an error response."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
