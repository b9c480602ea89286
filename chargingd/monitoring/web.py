"""The daemon's HTTP endpoint (aiohttp): /metrics, the live dashboard and its JSON feed.

Read-only: GET and HEAD only. Local-only by default (``[http] bind`` loopback);
anywhere else ``[http] token`` is required and checked on every request (a bearer
token, or the cookie the dashboard gets when opened once as ``/?token=...``),
compared with ``hmac.compare_digest``. Every asset is served from the package
(no CDN): the page works on an offline NOC screen. Live updates: the page holds an
EventSource on /api/events, which sends the summary every ``PUSH_INTERVAL_S``.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger("chargingd.http")

PUSH_INTERVAL_S = 1.0
COOKIE = "chargingd_token"
STATIC = {
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
SECURITY_HEADERS = {
    # Only the daemon's own files: no inline script, no third-party origin.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Summary = Callable[[], Awaitable[dict[str, Any]]]
Metrics = Callable[[], Awaitable[bytes]]


def _asset(name: str) -> bytes:
    return resources.files("chargingd.monitoring").joinpath("static", name).read_bytes()


def build_app(
    *, metrics: Metrics, summary: Summary, token: str, dashboard: bool, stop: asyncio.Event
) -> web.Application:
    """The aiohttp application; ``stop`` ends the event streams on shutdown."""
    app = web.Application(middlewares=[_guard(token)])
    assets = {name: _asset(name) for name in STATIC} if dashboard else {}
    page = _asset("dashboard.html") if dashboard else b""

    async def get_metrics(request: web.Request) -> web.Response:
        body = await metrics()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def get_summary(request: web.Request) -> web.Response:
        return web.json_response(await summary())

    async def get_page(request: web.Request) -> web.StreamResponse:
        if token and request.query.get("token"):
            # Opened as /?token=...: keep it in a cookie and drop it from the address bar.
            response = web.HTTPFound("/")
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
            raise response
        return web.Response(body=page, content_type="text/html", charset="utf-8")

    async def get_asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in assets:
            raise web.HTTPNotFound()
        return web.Response(body=assets[name], headers={"Content-Type": STATIC[name]})

    async def get_events(request: web.Request) -> web.StreamResponse:
        return await _event_stream(request, summary, stop)

    app.router.add_get("/metrics", get_metrics)
    if dashboard:
        app.router.add_get("/", get_page)
        app.router.add_get("/static/{name}", get_asset)
        app.router.add_get("/api/summary", get_summary)
        app.router.add_get("/api/events", get_events)
    return app


async def _event_stream(
    request: web.Request, summary: Summary, stop: asyncio.Event
) -> web.StreamResponse:
    """Server-sent events: one ``summary`` event per PUSH_INTERVAL_S until the client
    leaves or the daemon stops."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    await response.prepare(request)
    try:
        while not stop.is_set():
            data = json.dumps(await summary(), separators=(",", ":"))
            await response.write(f"event: summary\ndata: {data}\n\n".encode())
            try:
                await asyncio.wait_for(stop.wait(), PUSH_INTERVAL_S)
            except TimeoutError:
                continue
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the page went away, or the daemon stops
    return response


def _guard(token: str) -> Any:
    """Read-only methods, the token when one is configured, and the security headers."""

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        if token and not _authorized(request, token):
            raise web.HTTPUnauthorized(
                text="token required: Authorization: Bearer TOKEN, or open /?token=TOKEN\n",
                headers={"WWW-Authenticate": 'Bearer realm="chargingd"'},
            )
        response = await handler(request)
        if not response.prepared:
            response.headers.update(SECURITY_HEADERS)
        return response

    return guard


def _authorized(request: web.Request, token: str) -> bool:
    expected = token.encode()
    header = request.headers.get("Authorization", "")
    candidates = [
        header[7:] if header.startswith("Bearer ") else "",
        request.cookies.get(COOKIE, ""),
        request.query.get("token", "") if request.path == "/" else "",
    ]
    return any(c and hmac.compare_digest(c.encode(), expected) for c in candidates)


class HttpBindError(RuntimeError):
    """[http] bind:port cannot be listened on: the message names the port and the keys."""


class HttpServer:
    """Runs the application on [http] bind:port; ``port`` is the bound one after start."""

    def __init__(self, app: web.Application, bind: str, port: int, *, dashboard: bool) -> None:
        self.app = app
        self.dashboard = dashboard
        self.bind = bind
        self.port = port
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.bind, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                why = "is already in use by another process (another chargingd?)"
            else:
                why = f"cannot be listened on: {exc}"
            raise HttpBindError(
                f"HTTP port {self.bind}:{self.port} ([http] bind, port: /metrics and the "
                f"dashboard) {why}"
            ) from None
        server = site._server  # the bound port when [http] port = 0
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        pages = ", dashboard on /" if self.dashboard else ""
        log.info("HTTP on %s:%d: /metrics%s", self.bind, self.port, pages)

    async def stop(self) -> None:
        await self._runner.cleanup()
