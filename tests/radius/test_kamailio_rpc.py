"""The Kamailio cut backend (radius/kamailio_rpc.py) against a small local HTTP server
that answers as Kamailio's jsonrpcs does (the answers docs/kamailio.md records from the
real one), and as a broken one would: error answers, garbage, a dropped connection, a
silent server. The real Kamailio is test_kamailio_cut.py's."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from chargingd.core.config import RadiusClientConfig, RadiusConfig
from chargingd.monitoring import sources
from chargingd.radius.clients import ClientTable, RadiusClient
from chargingd.radius.kamailio_rpc import KamailioRpcCutter
from chargingd.sessions.ccapi import CallCutterRouter, SessionRef

CALL_ID = "a84b4c76e66710@pc33"
DIALOG = {"h_entry": 7, "h_id": 1234, "call-id": CALL_ID, "state": 4}

Reply = Callable[[dict[str, Any]], Any]


def ok(result: Any) -> Reply:
    return lambda req: web.json_response({"jsonrpc": "2.0", "result": result, "id": req["id"]})


def fault(status: int, message: str) -> Reply:
    """jsonrpcs: the fault's code is the HTTP status too."""
    body = {"jsonrpc": "2.0", "error": {"code": status, "message": message}}
    return lambda req: web.json_response(body | {"id": req["id"]}, status=status)


@dataclass
class FakeKamailio:
    """Answers each method from its queue of replies (the last one repeats)."""

    replies: dict[str, list[Reply]] = field(default_factory=dict)
    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.received.append(body)
        queue = self.replies[body["method"]]
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        answer = reply(body)
        if asyncio.iscoroutine(answer):
            answer = await answer
        return answer  # type: ignore[no-any-return]

    def methods(self) -> list[tuple[str, list[Any]]]:
        return [(r["method"], r["params"]) for r in self.received]


@pytest.fixture
async def kamailio() -> AsyncIterator[FakeKamailio]:
    fake = FakeKamailio()
    app = web.Application()
    app.router.add_post("/RPC", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}/RPC"
    try:
        yield fake
    finally:
        await runner.cleanup()


def table(url: str) -> ClientTable:
    kam = RadiusClientConfig(
        name="kam",
        address="127.0.0.1",
        secret="s",
        cut_backend="kamailio_jsonrpc",
        jsonrpc_url=url,
        flavour="generic",
    )
    gw = RadiusClientConfig(name="gw", address="10.0.0.1", secret="s")
    radius = RadiusConfig()
    return ClientTable(RadiusClient.from_config(c, radius) for c in (kam, gw))


@pytest.fixture
async def cutter(kamailio: FakeKamailio) -> AsyncIterator[KamailioRpcCutter]:
    made = KamailioRpcCutter(table(kamailio.url), timeout_s=0.2, retries=2)
    await made.start()
    try:
        yield made
    finally:
        await made.close()


REF = SessionRef(CALL_ID, "alice", "127.0.0.1", "kam")


async def test_a_cut_finds_the_dialog_by_call_id_and_ends_it(
    kamailio: FakeKamailio, cutter: KamailioRpcCutter
) -> None:
    kamailio.replies = {"dlg.list_match": [ok([DIALOG])], "dlg.end_dlg": [ok({})]}
    assert await cutter.disconnect(REF, "credit_cut") is True
    assert kamailio.methods() == [
        ("dlg.list_match", ["callid", "eq", CALL_ID]),
        ("dlg.end_dlg", [7, 1234]),
    ]
    assert all(r["jsonrpc"] == "2.0" for r in kamailio.received)
    samples = sources.kamailio_rpc_samples(cutter.counters.as_dict())
    assert ("chargingd_kamailio_rpc_cuts_total", ("ended",), 1) in samples
    assert cutter.counters.as_dict() | {} == {
        "sent": 1,
        "retried": 0,
        "ended": 1,
        "not_found": 0,
        "errors": 0,
        "timed_out": 0,
        "unroutable": 0,
    }


@pytest.mark.parametrize(
    ("replies", "counter"),
    [
        # dlg.list_match of an unknown Call-ID: 404 Not found (as Kamailio 5.6 answers).
        ({"dlg.list_match": [fault(404, "Not found")]}, "not_found"),
        # Ended between the two calls: dlg.end_dlg's 404 Dialog not found.
        ({"dlg.list_match": [ok([DIALOG])], "dlg.end_dlg": [fault(404, "Dialog not found")]},
         "not_found"),
        # A deleted dialog still listed.
        ({"dlg.list_match": [ok([DIALOG | {"state": 5}])]}, "not_found"),
    ],
)  # fmt: skip
async def test_an_unknown_dialog_means_the_call_is_gone_confirmed(
    kamailio: FakeKamailio,
    cutter: KamailioRpcCutter,
    replies: dict[str, list[Reply]],
    counter: str,
) -> None:
    kamailio.replies = replies
    assert await cutter.disconnect(REF, "killed") is True
    assert cutter.counters.as_dict()[counter] == 1
    assert cutter.counters.ended == 0


def garbage(_req: dict[str, Any]) -> web.Response:
    return web.Response(text="<html>proxy error</html>", status=502)


@pytest.mark.parametrize(
    ("replies", "why"),
    [
        ({"dlg.list_match": [fault(500, "Method Not Found")]}, "500 Method Not Found"),
        ({"dlg.list_match": [fault(403, "forbidden")]}, "403 forbidden"),
        ({"dlg.list_match": [garbage]}, "502 not JSON"),
        ({"dlg.list_match": [ok([DIALOG])], "dlg.end_dlg": [fault(500, "Internal error")]},
         "500 Internal error"),
        # Ringing: Kamailio ends only confirmed dialogs.
        ({"dlg.list_match": [ok([DIALOG | {"state": 2}])]}, "409 dialog not confirmed"),
        ({"dlg.list_match": [ok({"unexpected": True})]}, "not a list"),
    ],
)  # fmt: skip
async def test_error_answers_are_unconfirmed_counted_and_logged(
    kamailio: FakeKamailio,
    cutter: KamailioRpcCutter,
    replies: dict[str, list[Reply]],
    why: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    kamailio.replies = replies
    assert await cutter.disconnect(REF, "credit_cut") is False
    assert cutter.counters.errors == 1 and cutter.counters.ended == 0
    assert any(why.split()[0] in r.getMessage() for r in caplog.records), caplog.text
    assert CALL_ID in caplog.text


async def test_a_silent_kamailio_is_retried_with_doubling_waits_then_unconfirmed(
    kamailio: FakeKamailio, cutter: KamailioRpcCutter
) -> None:
    async def never(_req: dict[str, Any]) -> web.Response:
        await asyncio.sleep(2)
        return web.Response()

    kamailio.replies = {"dlg.list_match": [never]}
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await cutter.disconnect(REF, "credit_cut") is False
    took = loop.time() - started
    # 0.2 + 0.4 + 0.8 s of waiting plus the pauses between: under the 2 s answer.
    assert 1.4 <= took <= 3.0, took
    assert (cutter.counters.timed_out, cutter.counters.retried) == (1, 2)
    assert len(kamailio.received) == 3


async def test_a_transient_failure_is_retried_and_then_succeeds(
    kamailio: FakeKamailio, cutter: KamailioRpcCutter
) -> None:
    async def slow(_req: dict[str, Any]) -> web.Response:
        await asyncio.sleep(1)
        return web.Response()

    kamailio.replies = {"dlg.list_match": [slow, ok([DIALOG])], "dlg.end_dlg": [ok({})]}
    assert await cutter.disconnect(REF, "killed") is True
    assert (cutter.counters.retried, cutter.counters.ended) == (1, 1)


async def test_nobody_listening_is_unconfirmed() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connection refused
    made = KamailioRpcCutter(table(f"http://127.0.0.1:{port}/RPC"), timeout_s=0.1, retries=1)
    await made.start()
    try:
        assert await made.disconnect(REF, "killed") is False
    finally:
        await made.close()
    assert (made.counters.timed_out, made.counters.retried) == (1, 1)


async def test_the_router_sends_each_client_to_its_own_backend(
    kamailio: FakeKamailio, cutter: KamailioRpcCutter
) -> None:
    kamailio.replies = {"dlg.list_match": [ok([DIALOG])], "dlg.end_dlg": [ok({})]}

    @dataclass
    class Dm:
        refs: list[SessionRef] = field(default_factory=list)

        async def disconnect(self, ref: SessionRef, reason: str) -> bool:
            self.refs.append(ref)
            return True

        async def change_timeout(self, ref: SessionRef, session_timeout_s: int) -> bool:
            return True

    dm = Dm()
    router = CallCutterRouter(dm)
    router.add(cutter, owns=cutter.owns)
    gw_ref = SessionRef("x1", "bob", "10.0.0.1", "gw")
    assert await router.disconnect(gw_ref, "killed") and dm.refs == [gw_ref]
    assert await router.disconnect(REF, "killed") and cutter.counters.ended == 1
    assert await router.change_timeout(REF, 60) is False  # no CoA through JSON-RPC
    assert json.dumps(kamailio.methods()).count("dlg.end_dlg") == 1
