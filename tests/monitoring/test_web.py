"""The HTTP endpoint's guard: read-only, token when configured, headers, no CDN."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from chargingd.monitoring.web import build_app

TOKEN = "0123456789abcdef-token"


async def summary() -> dict[str, Any]:
    return {"active_calls": 3}


async def metrics() -> bytes:
    return b"chargingd_active_calls 3\n"


async def client_for(token: str) -> TestClient:  # type: ignore[type-arg]
    app = build_app(
        metrics=metrics, summary=summary, token=token, dashboard=True, stop=asyncio.Event()
    )
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def open_client() -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    client = await client_for("")
    yield client
    await client.close()


@pytest.fixture
async def token_client() -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    client = await client_for(TOKEN)
    yield client
    await client.close()


async def test_local_endpoint_serves_page_assets_and_metrics(open_client: Any) -> None:
    page = await open_client.get("/")
    assert page.status == 200
    html = await page.text()
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    # Every asset comes from the daemon itself: no http(s) URL anywhere in the page.
    assert not re.search(r"(src|href)=\"https?:", html)
    for asset in ("/static/dashboard.js", "/static/dashboard.css"):
        response = await open_client.get(asset)
        assert response.status == 200
        assert "http://" not in (await response.text()).replace("http://www.w3.org", "")
    metrics_response = await open_client.get("/metrics")
    assert metrics_response.headers["Content-Type"].startswith("text/plain")
    assert await metrics_response.text() == "chargingd_active_calls 3\n"
    assert (await (await open_client.get("/api/summary")).json()) == {"active_calls": 3}
    assert (await open_client.get("/static/../web.py")).status == 404
    assert (await open_client.post("/metrics")).status == 405


async def test_token_is_required_everywhere(token_client: Any) -> None:
    for path in ("/", "/metrics", "/api/summary", "/static/dashboard.js"):
        response = await token_client.get(path)
        assert response.status == 401, path
    bad = await token_client.get("/metrics", headers={"Authorization": "Bearer wrong"})
    assert bad.status == 401
    good = await token_client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert good.status == 200
    # Opened once with ?token=: a cookie, and the token leaves the address bar.
    first = await token_client.get(f"/?token={TOKEN}", allow_redirects=False)
    assert first.status == 302 and first.headers["Location"] == "/"
    assert (await token_client.get("/")).status == 200  # the cookie jar sends it now
    assert (await token_client.get("/api/summary")).status == 200
    # The query token counts only on the page itself.
    token_client.session.cookie_jar.clear()
    assert (await token_client.get(f"/metrics?token={TOKEN}")).status == 401


async def test_events_stream_pushes_summaries() -> None:
    stop = asyncio.Event()
    app = build_app(metrics=metrics, summary=summary, token="", dashboard=True, stop=stop)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/api/events")
        assert response.headers["Content-Type"] == "text/event-stream"
        line = await response.content.readline()
        assert line == b"event: summary\n"
        assert await response.content.readline() == b'data: {"active_calls":3}\n'
        stop.set()
