"""Every bad line on the real admin socket gets a JSON-RPC error on a live connection
(issue 9 finding 7: a deeply nested line raised RecursionError and dropped it)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from admin_harness import Harness, running_admin

from chargingd.admin.server import MAX_DEPTH, AsyncAdminClient

DEEP = 100_000  # 200 KB of brackets: far below the 1 MiB line limit


def _nested_params(depth: int) -> bytes:
    inner = "[" * depth + "]" * depth
    return (
        '{"jsonrpc": "2.0", "id": 5, "method": "account.get", "params": {"id": ' + inner + "}}\n"
    ).encode()


_DEEP_BATCH_ITEM = b'{"jsonrpc": "2.0", "id": 1, "method": "account.get", "params": '

BAD_LINES: list[tuple[bytes, int]] = [
    (b"[" * DEEP + b"]" * DEEP + b"\n", -32600),
    (b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"\n", -32600),
    (b"[" * DEEP + b"\n", -32600),  # deep and unterminated: still refused, not dropped
    (_nested_params(DEEP), -32600),
    (_nested_params(MAX_DEPTH + 1), -32600),
    (b"[" + _DEEP_BATCH_ITEM * 40 + b"{}" + b"}" * 40 + b"]\n", -32600),
    (b"\xff\xfe{}\n", -32700),
    (b'{"jsonrpc": "2.0", "id": 1, "method": "account.get", "params": {"id": "al\n', -32700),
    (b"1" * 5000 + b"\n", -32700),  # beyond Python's int digit limit: a parse error
    (b'"just a string"\n', -32600),
    (b"null\n", -32600),
]


@pytest.fixture
async def admin(redis: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_admin(redis, tmp_path) as harness:
        yield harness


@pytest.mark.parametrize(("line", "code"), BAD_LINES, ids=range(len(BAD_LINES)))
async def test_bad_line_gets_an_error_and_the_connection_lives(
    admin: Harness, line: bytes, code: int
) -> None:
    async with AsyncAdminClient(admin.path, timeout_s=20) as client:
        response: dict[str, Any] = json.loads(await client.raw(line))
        assert response["jsonrpc"] == "2.0" and response["id"] is None
        assert response["error"]["code"] == code, response
        assert response["error"]["message"]
        # The same connection still answers.
        status = await client.call("server.status")
        assert status["components"]["admin"]["errors"] >= 1


async def test_many_deep_lines_in_a_row_on_one_connection(admin: Harness) -> None:
    async with AsyncAdminClient(admin.path, timeout_s=20) as client:
        for line, code in BAD_LINES * 2:
            response = json.loads(await client.raw(line))
            assert response["error"]["code"] == code
        await client.call("account.create", {"id": "alice", "mode": "prepaid", "currency": "EUR"})
        assert (await client.call("account.get", {"id": "alice"}))["balance"] == "0.00"
