"""The admin socket's JSON-RPC 2.0 protocol against a real Redis and the real ledger."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from admin_harness import Harness, running_admin
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from chargingd.admin.methods import AdminMethods
from chargingd.admin.params import Peer, RpcError
from chargingd.admin.server import MAX_LINE_BYTES, AdminServer, AdminSocketInUse, AsyncAdminClient
from chargingd.ledger import Ledger


@pytest.fixture
async def admin(redis: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_admin(redis, tmp_path) as harness:
        yield harness


@pytest.fixture
async def client(admin: Harness) -> AsyncIterator[AsyncAdminClient]:
    async with AsyncAdminClient(admin.path) as c:
        yield c


async def create_alice(client: AsyncAdminClient, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "id": "alice",
        "mode": "prepaid",
        "currency": "EUR",
        "balance": "10.00",
        "identities": ["user:alice", "ani:+4930111111"],
    }
    params.update(extra)
    result: dict[str, Any] = await client.call("account.create", params)
    return result


async def raw(client: AsyncAdminClient, obj: Any) -> dict[str, Any]:
    line = obj if isinstance(obj, bytes) else json.dumps(obj).encode() + b"\n"
    response: dict[str, Any] = json.loads(await client.raw(line))
    return response


async def snapshot(client: AsyncAdminClient, account_id: str = "alice") -> tuple[Any, Any]:
    """Account and audit trail, to prove a refused request changed nothing."""
    acc = await client.call("account.get", {"id": account_id})
    hist = await client.call("account.history", {"id": account_id, "count": 1000})
    return acc, hist


async def test_socket_is_a_socket_with_mode_0660(admin: Harness) -> None:
    st = os.stat(admin.path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660


async def test_create_get_list(client: AsyncAdminClient) -> None:
    created = await create_alice(client, credit_limit="0", tariff="std", max_calls=3)
    assert created["balance"] == "10.00"
    assert created["mode"] == "prepaid"
    assert created["identities"] == ["user:alice", "ani:+4930111111"]
    assert created["max_calls"] == 3
    got = await client.call("account.get", {"id": "alice"})
    assert got["balance"] == "10.00" and got["currency"] == "EUR" and got["tariff"] == "std"
    assert got["available"] == "10.00" and got["status"] == "active"
    await client.call(
        "account.create",
        {"id": "acme", "mode": "postpaid", "currency": "EUR", "credit_limit": "500.00"},
    )
    listed = await client.call("account.list", {})
    by_id = {a["id"]: a for a in listed["accounts"]}
    assert set(by_id) == {"alice", "acme"}
    assert by_id["acme"]["credit_limit"] == "500.00"
    assert by_id["acme"]["available"] == "500.00"


async def test_prepaid_account_with_a_credit_limit_is_refused(client: AsyncAdminClient) -> None:
    """It was created, showed its limit, and the limit was never granted."""
    with pytest.raises(RpcError) as err:
        await create_alice(client, credit_limit="50.00")
    assert (err.value.code, err.value.data) == (-32007, {"code": "invalid_request"})
    assert err.value.message == (
        "a prepaid account has no credit limit (it spends its balance only):"
        " credit_limit 50.00 EUR needs mode postpaid, or set credit_limit 0"
    )
    with pytest.raises(RpcError) as err:
        await client.call("account.get", {"id": "alice"})
    assert err.value.code == -32001
    await create_alice(client)
    with pytest.raises(RpcError) as err:
        await client.call("account.update", {"id": "alice", "credit_limit": "50"})
    assert err.value.code == -32007 and "needs mode postpaid" in err.value.message
    assert (await client.call("account.get", {"id": "alice"}))["credit_limit"] == "0.00"


async def test_create_twice_is_refused(client: AsyncAdminClient) -> None:
    await create_alice(client)
    with pytest.raises(RpcError) as err:
        await create_alice(client, balance="99.00")
    assert err.value.code == -32002
    assert err.value.data == {"code": "account_exists"}
    assert (await client.call("account.get", {"id": "alice"}))["balance"] == "10.00"


async def test_update(client: AsyncAdminClient) -> None:
    await create_alice(client)
    updated = await client.call(
        "account.update",
        {"id": "alice", "tariff": "gold", "max_calls": 2, "mode": "postpaid", "credit_limit": "20"},
    )
    assert updated["tariff"] == "gold" and updated["max_calls"] == 2
    assert updated["mode"] == "postpaid" and updated["credit_limit"] == "20.00"
    assert updated["available"] == "30.00"
    with pytest.raises(RpcError) as err:
        await client.call("account.update", {"id": "alice"})
    assert err.value.code == -32602 and "nothing to update" in err.value.message


async def test_topup_applies_once_per_txn_id(client: AsyncAdminClient) -> None:
    await create_alice(client)
    params = {"id": "alice", "amount": "5.25", "txn_id": "t-1", "reason": "shop"}
    first = await client.call("account.topup", params)
    again = await client.call("account.topup", params)
    assert first["balance"] == "15.25"
    assert again["balance"] == "15.25"
    hist = await client.call("account.history", {"id": "alice"})
    topups = [e for e in hist["entries"] if e["why"] == "shop"]
    assert len(topups) == 1
    assert topups[0]["who"] == f"admin:{os.getuid()}"
    # Amounts in the audit trail are decimal strings too, like everywhere on the socket.
    assert topups[0]["before"]["balance"] == "10.00"
    assert topups[0]["after"]["balance"] == "15.25"
    assert topups[0]["details"]["amount"] == "5.25"
    assert topups[0]["details"]["txn"] == "t-1"


async def test_operator_name_goes_to_the_audit_trail(client: AsyncAdminClient) -> None:
    await create_alice(client)
    await client.call(
        "account.adjust",
        {"id": "alice", "amount": "-2.50", "txn_id": "adj-1", "reason": "refund", "operator": "jo"},
    )
    hist = await client.call("account.history", {"id": "alice", "count": 1})
    newest = hist["entries"][0]
    assert newest["who"] == "admin:jo" and newest["why"] == "refund"
    assert (await client.call("account.get", {"id": "alice"}))["balance"] == "7.50"


async def test_adjust_needs_a_reason_and_a_nonzero_amount(client: AsyncAdminClient) -> None:
    await create_alice(client)
    before = await snapshot(client)
    for params in (
        {"id": "alice", "amount": "-1.00", "txn_id": "a1"},
        {"id": "alice", "amount": "-1.00", "txn_id": "a1", "reason": " "},
        {"id": "alice", "amount": "0", "txn_id": "a1", "reason": "x"},
    ):
        with pytest.raises(RpcError) as err:
            await client.call("account.adjust", params)
        assert err.value.code == -32602
    assert await snapshot(client) == before


async def test_suspend_and_resume(client: AsyncAdminClient) -> None:
    await create_alice(client)
    suspended = await client.call("account.suspend", {"id": "alice", "reason": "fraud check"})
    assert suspended["status"] == "suspended"
    resumed = await client.call("account.resume", {"id": "alice"})
    assert resumed["status"] == "active"
    hist = await client.call("account.history", {"id": "alice", "count": 2})
    assert [e["who"] for e in hist["entries"]] == [f"admin:{os.getuid()}"] * 2


async def test_history_is_newest_first_and_paged(client: AsyncAdminClient) -> None:
    await create_alice(client)
    for i in range(5):
        await client.call(
            "account.topup", {"id": "alice", "amount": "1", "txn_id": f"p{i}", "reason": f"r{i}"}
        )
    page1 = await client.call("account.history", {"id": "alice", "count": 3})
    assert [e["why"] for e in page1["entries"]] == ["r4", "r3", "r2"]
    assert page1["next_before"] == page1["entries"][-1]["id"]
    page2 = await client.call(
        "account.history", {"id": "alice", "count": 3, "before": page1["next_before"]}
    )
    whys = [e["why"] for e in page2["entries"]]
    assert whys[:2] == ["r1", "r0"]
    assert len(whys) == 3  # the creation entry comes last
    stamps = [e["ts_ms"] for e in page1["entries"] + page2["entries"]]
    assert stamps == sorted(stamps, reverse=True)


async def test_server_status(admin: Harness, client: AsyncAdminClient) -> None:
    status = await client.call("server.status", {})
    assert status["uptime_s"] >= 0
    assert status["pid"] == os.getpid()
    assert status["redis"]["version"].count(".") == 2
    assert status["redis"]["used_memory_bytes"] > 0
    assert status["redis"]["connected_clients"] >= 1
    assert isinstance(status["redis"]["aof_enabled"], bool)
    # This request itself is counted.
    assert status["components"]["admin"]["requests"] >= 1
    assert admin.registry.component("admin").get("connections") == 1


BAD_TOPUPS = [
    ({"amount": "1.1234567", "txn_id": "b1"}, -32602, "more than 6 decimals"),
    ({"amount": "-5.00", "txn_id": "b2"}, -32602, "negative"),
    ({"amount": 5.5, "txn_id": "b3"}, -32602, "decimal string"),
    ({"amount": "abc", "txn_id": "b4"}, -32602, "not a plain decimal amount"),
    ({"amount": "0", "txn_id": "b5"}, -32602, "positive"),
    ({"amount": "5.00"}, -32602, "txn_id"),
    ({"amount": "5.00", "txn_id": "b6", "currency": "USD"}, -32006, ""),
    ({"amount": "5.00", "txn_id": "b7", "colour": "red"}, -32602, "unknown parameter 'colour'"),
]


@pytest.mark.parametrize(("extra", "code", "text"), BAD_TOPUPS)
async def test_bad_topup_changes_nothing(
    client: AsyncAdminClient, extra: dict[str, Any], code: int, text: str
) -> None:
    await create_alice(client)
    before = await snapshot(client)
    with pytest.raises(RpcError) as err:
        await client.call("account.topup", {"id": "alice", **extra})
    assert err.value.code == code
    assert text in err.value.message
    assert err.value.message  # an operator can read it
    assert await snapshot(client) == before


async def test_unknown_account(client: AsyncAdminClient) -> None:
    for method, params in (
        ("account.get", {"id": "nobody"}),
        ("account.topup", {"id": "nobody", "amount": "1", "txn_id": "u1"}),
        ("account.suspend", {"id": "nobody"}),
        ("account.history", {"id": "nobody"}),
        ("account.update", {"id": "nobody", "tariff": "x"}),
    ):
        with pytest.raises(RpcError) as err:
            await client.call(method, params)
        assert err.value.code == -32001, method
        assert err.value.data == {"code": "unknown_account"}
    assert (await client.call("account.list", {}))["accounts"] == []


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"id": "carol", "mode": "prepay", "currency": "EUR"}, "prepaid or postpaid"),
        ({"id": "carol", "mode": "prepaid", "currency": "euro"}, "ISO 4217"),
        ({"id": "carol", "mode": "prepaid"}, "missing parameter 'currency'"),
        ({"id": "carol", "mode": "prepaid", "currency": "EUR", "balance": 1.5}, "decimal string"),
        ({"id": "carol", "mode": "prepaid", "currency": "EUR", "identities": "x"}, "list"),
        ({"id": "carol", "mode": "prepaid", "currency": "EUR", "max_calls": "2"}, "integer"),
        # The ledger's limit, said alike on both sides of it (it said "between 0 and
        # 2147483648" for -1 and 2**31 + 1, "in [0, 1000000]" for 2**31).
        ({"id": "carol", "mode": "prepaid", "currency": "EUR", "max_calls": -1}, "0 and 1000000"),
        (
            {"id": "carol", "mode": "prepaid", "currency": "EUR", "max_calls": 2**31},
            "0 and 1000000",
        ),
        ({"id": "car ol", "mode": "prepaid", "currency": "EUR"}, "without spaces"),
    ],
)
async def test_bad_create_creates_nothing(
    client: AsyncAdminClient, params: dict[str, Any], text: str
) -> None:
    with pytest.raises(RpcError) as err:
        await client.call("account.create", params)
    assert err.value.code == -32602
    assert text in err.value.message
    assert (await client.call("account.list", {}))["accounts"] == []


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"{not json\n", -32700),
        (b'{"id": 1, "method": "account.get", "params": {"id": "alice"}}\n', -32600),
        (b'{"jsonrpc": "2.0", "id": 1, "method": 5}\n', -32600),
        (b'{"jsonrpc": "2.0", "id": true, "method": "account.get"}\n', -32600),
        (b"[]\n", -32600),
        (b'{"jsonrpc": "2.0", "id": 7, "method": "account.delete", "params": {}}\n', -32601),
        (b'{"jsonrpc": "2.0", "id": 8, "method": "account.get", "params": ["alice"]}\n', -32602),
        (b'{"jsonrpc": "2.0", "id": 9, "method": "account.get", "params": {}}\n', -32602),
    ],
)
async def test_protocol_errors(client: AsyncAdminClient, line: bytes, code: int) -> None:
    await create_alice(client)
    before = await snapshot(client)
    response = await raw(client, line)
    assert response["jsonrpc"] == "2.0"
    assert response["error"]["code"] == code
    assert response["error"]["message"]
    # The connection survives a bad request.
    assert await snapshot(client) == before


async def test_response_id_echoes_request_id(client: AsyncAdminClient) -> None:
    await create_alice(client)
    response = await raw(
        client, {"jsonrpc": "2.0", "id": "abc", "method": "account.get", "params": {"id": "alice"}}
    )
    assert response["id"] == "abc" and response["result"]["balance"] == "10.00"


async def test_notification_gets_no_answer_and_batch_gets_one_line(
    client: AsyncAdminClient,
) -> None:
    await create_alice(client)
    note = {"jsonrpc": "2.0", "method": "account.topup", "params": {"id": "alice"}}
    batch = [
        note,
        {"jsonrpc": "2.0", "id": 1, "method": "account.get", "params": {"id": "alice"}},
        {"jsonrpc": "2.0", "id": 2, "method": "no.such"},
    ]
    # The notification line yields nothing; the batch's line is the next one read.
    line = json.dumps(note).encode() + b"\n" + json.dumps(batch).encode() + b"\n"
    responses = json.loads(await client.raw(line))
    assert [r["id"] for r in responses] == [1, 2]
    assert responses[0]["result"]["id"] == "alice"
    assert responses[1]["error"]["code"] == -32601


async def test_too_long_line_is_refused(admin: Harness) -> None:
    reader, writer = await asyncio.open_unix_connection(admin.path, limit=MAX_LINE_BYTES * 2)
    writer.write(b'{"x": "' + b"a" * (MAX_LINE_BYTES + 10) + b'"}\n')
    await writer.drain()
    response = json.loads(await reader.readline())
    assert response["error"]["code"] == -32600
    assert "longer than" in response["error"]["message"]
    writer.close()


async def test_many_concurrent_clients(admin: Harness, client: AsyncAdminClient) -> None:
    await create_alice(client)

    async def one(i: int) -> None:
        async with AsyncAdminClient(admin.path) as c:
            for j in range(5):
                params = {"id": "alice", "amount": "0.01", "txn_id": f"c{i}-{j}"}
                await c.call("account.topup", params)

    await asyncio.gather(*(one(i) for i in range(20)))
    assert (await client.call("account.get", {"id": "alice"}))["balance"] == "11.00"


async def test_stale_socket_is_replaced_and_live_one_refused(
    redis: aioredis.Redis, tmp_path: Path
) -> None:
    stale = tmp_path / "admin.sock"
    import socket as socketmod

    s = socketmod.socket(socketmod.AF_UNIX, socketmod.SOCK_STREAM)
    s.bind(str(stale))
    s.close()  # a socket file nobody listens on, as after a crash
    async with running_admin(redis, tmp_path) as harness:
        async with AsyncAdminClient(harness.path) as c:
            assert (await c.call("account.list", {}))["accounts"] == []
        second = AdminServer(
            AdminMethods(harness.ledger, harness.server.methods.status), harness.path
        )
        with pytest.raises(AdminSocketInUse, match="another chargingd is running"):
            await second.start()
        assert stat.S_ISSOCK(os.stat(harness.path).st_mode)
    assert not harness.path.exists()


async def test_stop_with_idle_client_is_prompt(admin: Harness) -> None:
    async with AsyncAdminClient(admin.path) as c:
        await c.call("account.list", {})
        started = time.monotonic()
        await admin.server.stop()
        assert time.monotonic() - started < 1.0
        assert not admin.path.exists()
        with pytest.raises(ConnectionError):
            await c.call("account.list", {})


async def test_redis_down_is_an_error_not_a_crash(tmp_path: Path) -> None:
    dead = aioredis.Redis(
        unix_socket_path=str(tmp_path / "no-redis.sock"), retry=Retry(NoBackoff(), 0)
    )
    methods = AdminMethods(Ledger(dead), lambda: asyncio.sleep(0, {}))
    request = {"jsonrpc": "2.0", "id": 1, "method": "account.get", "params": {"id": "alice"}}
    response = await methods.dispatch(request, Peer(pid=1, uid=0, gid=0))
    assert response is not None
    assert response["error"]["code"] == -32010
    assert "Redis unavailable" in response["error"]["message"]
    await dead.aclose()


async def test_a_status_during_a_redis_outage_is_no_recovery(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """server.status answers while Redis is down; its success logged "admin requests
    failed, Redis unavailable: recovered after 1 failures" mid-outage (and every health
    check's `ctl status` then restarted the rate-limited episode)."""
    dead = aioredis.Redis(
        unix_socket_path=str(tmp_path / "no-redis.sock"), retry=Retry(NoBackoff(), 0)
    )
    methods = AdminMethods(Ledger(dead), lambda: asyncio.sleep(0, {"redis": {"error": "down"}}))
    peer = Peer(pid=1, uid=0, gid=0)
    get = {"jsonrpc": "2.0", "id": 1, "method": "account.get", "params": {"id": "alice"}}
    status = {"jsonrpc": "2.0", "id": 2, "method": "server.status"}
    with caplog.at_level(logging.INFO, logger="chargingd.admin"):
        assert (await methods.dispatch(get, peer) or {})["error"]["code"] == -32010
        assert "result" in (await methods.dispatch(status, peer) or {})
        assert (await methods.dispatch(get, peer) or {})["error"]["code"] == -32010
    lines = [r.getMessage() for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(lines) == 1 and "recovered" not in lines[0], lines
    await dead.aclose()
