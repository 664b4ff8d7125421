"""The HTTP app (aiohttp): Slack's endpoint, the webhooks, health and metrics.

`serve` and `socket` both run it; in Socket Mode Slack's events arrive over the
WebSocket instead, and the other endpoints stay here. With no Slack credentials the
app still runs (and the sender with it); `/slack/events` then says how to connect.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from aiohttp import web

from bot.bootstrap import Root, Server, build_server
from bot.config import SettingsError
from bot.entrypoints.access_log import RUNNER_OPTIONS
from bot.entrypoints.feedback_http import add_feedback_routes
from bot.entrypoints.metrics import render as render_metrics
from bot.entrypoints.playground.routes import Playground
from bot.entrypoints.playground.setup import playground_server, wanted
from bot.entrypoints.slack_http import SlackEndpoint
from bot.services.metrics import gauges
from bot.store.db import StoreUnavailable, ping

log = logging.getLogger(__name__)
SERVER: web.AppKey[Server] = web.AppKey("server")
SOCKET_MODE: web.AppKey[Any] = web.AppKey("socket_mode")

NOT_CONNECTED = (
    "Slack is not connected: create the app from manifest.yml, then set SLACK_BOT_TOKEN "
    "and SLACK_SIGNING_SECRET (HTTP mode) or SLACK_APP_TOKEN (Socket Mode) in .env; "
    "README.md, section 'Connecting Slack', shows each step."
)


NO_SECRET = (
    "SLACK_SIGNING_SECRET is not set: in HTTP mode every Slack request must be verified. "
    "Copy the app's Signing Secret (Basic Information) into SLACK_SIGNING_SECRET, or run "
    "Socket Mode (`python -m bot socket` with SLACK_APP_TOKEN), which needs no public URL."
)


def check_slack_settings(root: Root, socket_mode: bool) -> None:
    """HTTP mode with a bot token must verify requests: refuse to start without a secret."""
    settings = root.settings
    if not socket_mode and settings.slack_bot_token and settings.slack_signing_secret is None:
        raise SettingsError(NO_SECRET)


def build_web_app(
    server: Server, socket_mode: bool = False, playground: Playground | None = None
) -> web.Application:
    """The HTTP app. In Socket Mode there is no Slack route: Slack speaks over the socket.

    With the playground (`bot.entrypoints.playground`), its page and its stand-in for
    Slack's Web API are served too; its requests come to `/slack/events` signed.
    """
    app = web.Application()
    app[SERVER] = server

    async def not_connected(request: web.Request) -> web.Response:
        return web.json_response({"ok": False, "error": NOT_CONNECTED}, status=503)

    slack_route: Any = not_connected
    secret = server.root.settings.slack_signing_secret
    if server.slack is not None and secret is not None:
        slack_route = SlackEndpoint(server.ctx, server.slack, secret.get_secret_value())

    async def slack_events(request: web.Request) -> web.StreamResponse:
        server.metrics["slack_requests"] = server.metrics.get("slack_requests", 0) + 1
        response: web.StreamResponse = await slack_route(request)
        return response

    async def healthz(request: web.Request) -> web.Response:
        """Healthy means the database answers *and takes writes* (a full disk or a
        read-only file leaves reads working); the error is logged with an id, and
        only the id is answered: a driver's message names hosts and ports."""

        def check() -> None:
            with server.ctx.sessions() as session:
                ping(session, write=True)

        try:
            await asyncio.to_thread(check)
        except StoreUnavailable:
            error_id = uuid.uuid4().hex[:12]
            log.exception("health check failed (error %s)", error_id)
            body = {"ok": False, "database": "unavailable", "error_id": error_id}
            return web.json_response(body, status=503)
        return web.json_response({"ok": True, "database": "ok", "slack": server.slack is not None})

    async def metrics(request: web.Request) -> web.Response:
        counters = {"sender_rounds": server.runner.rounds, **server.metrics}
        try:
            numbers = await asyncio.to_thread(gauges, server.ctx)
        except Exception:
            log.exception("metrics: the database gauges could not be read")
            numbers = {}
        body = render_metrics(counters, numbers)
        return web.Response(text=body, content_type="text/plain", charset="utf-8")

    async def on_startup(app: web.Application) -> None:
        server.batches.bind(asyncio.get_running_loop())
        if server.start_sender:
            server.runner.start()
            server.jobs.start()

    async def on_cleanup(app: web.Application) -> None:
        if server.home is not None:
            await server.home.close()
        server.jobs.shutdown()
        handler = app.get(SOCKET_MODE)
        if handler is not None:
            await handler.close_async()
        await asyncio.to_thread(server.runner.stop)

    add_feedback_routes(app, server.ctx, server.metrics, server.certificates)
    if playground is not None:
        playground.add_routes(app)
    if not socket_mode:
        app.router.add_post("/slack/events", slack_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def serve(root: Root, socket_mode: bool = False) -> None:
    """Run until interrupted: the HTTP app on PORT, the scheduler and the sender (in its
    own process), and Slack (HTTP or socket)."""
    check_slack_settings(root, socket_mode)
    settings = root.settings
    playground: Playground | None = None
    if wanted(settings) and not socket_mode:
        server, playground = playground_server(root)
        log.info(
            "Slack is not connected: the local playground is at http://localhost:%d/playground "
            "(this machine only); connecting Slack turns it off",
            settings.port,
        )
    else:
        server = build_server(root, sender_process=True)
        if server.slack is None:
            log.warning(NOT_CONNECTED)
    app = build_web_app(server, socket_mode, playground)
    if socket_mode:
        app.on_startup.append(socket_mode_starter(server))
    log.info("starting on %s:%d", settings.host, settings.port)
    web.run_app(app, host=settings.host, port=settings.port, print=None, **RUNNER_OPTIONS)


def socket_mode_starter(server: Server) -> Any:
    async def start(app: web.Application) -> None:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        token = server.root.settings.slack_app_token
        if server.slack is None or token is None:
            log.warning("Socket Mode needs SLACK_BOT_TOKEN and SLACK_APP_TOKEN; %s", NOT_CONNECTED)
            return
        handler = AsyncSocketModeHandler(server.slack, token.get_secret_value())
        await handler.connect_async()  # type: ignore[no-untyped-call]  # Bolt leaves it bare
        app[SOCKET_MODE] = handler

    return start
