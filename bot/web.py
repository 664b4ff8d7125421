"""The HTTP app (aiohttp): Slack's endpoint, health and metrics.

`serve` and `socket` both run it; in Socket Mode Slack's events arrive over the
WebSocket instead, and the other endpoints stay here. With no Slack credentials the
app still runs (and the sender with it); `/slack/events` then says how to connect.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from sqlalchemy import text

from bot.bootstrap import Root
from bot.context import Context
from bot.engine.process_runner import SendProcess
from bot.engine.runner import SendRunner
from bot.handlers import Deps, register_all
from bot.jobs import Jobs
from bot.notifier import DeploymentNotifier
from bot.slack_api import UsergroupDirectory, make_client

log = logging.getLogger(__name__)
RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")
SOCKET_MODE: web.AppKey[Any] = web.AppKey("socket_mode")

NOT_CONNECTED = (
    "Slack is not connected: create the app from manifest.yml, then set SLACK_BOT_TOKEN "
    "and SLACK_SIGNING_SECRET (HTTP mode) or SLACK_APP_TOKEN (Socket Mode) in .env; "
    "README.md, section 'Connecting Slack', shows each step."
)


@dataclass
class Runtime:
    """Everything `serve` and `socket` run, built once from the Context."""

    ctx: Context
    slack: AsyncApp | None
    notifier: DeploymentNotifier
    runner: SendRunner | SendProcess
    jobs: Jobs
    start_sender: bool = True
    metrics: dict[str, int] = field(default_factory=dict)


def build_slack_app(ctx: Context, deps: Deps, client: Any) -> AsyncApp | None:
    settings = ctx.settings
    if settings.slack_bot_token is None:
        return None
    secret = settings.slack_signing_secret
    app = AsyncApp(
        client=client,
        signing_secret=secret.get_secret_value() if secret else None,
        request_verification_enabled=secret is not None,
        process_before_response=False,
        name="greenlight",
    )
    register_all(app, deps)
    return app


def build_runtime(
    ctx: Context,
    *,
    start_sender: bool = True,
    tick: float = 15.0,
    sender_process: bool = False,
) -> Runtime:
    """`sender_process`: relay from a child process (`serve`, `socket`), not a thread.

    Tests keep the thread, whose sender sees their injected clock.
    """
    client = make_client(ctx.settings)
    notifier = DeploymentNotifier(ctx, client)
    # The scheduler ticks the runner; the runner itself only waits for kicks.
    runner: SendRunner | SendProcess
    if sender_process:
        runner = SendProcess(ctx.settings, on_batch=notifier.from_thread, tick_seconds=None)
    else:
        connected = client if ctx.settings.slack_bot_token is not None else None
        runner = SendRunner(ctx, on_batch=notifier.from_thread, tick_seconds=None, slack=connected)
    jobs = Jobs(runner, tick_seconds=tick)
    deps = Deps(
        ctx=ctx,
        kick=runner.kick,
        refresh=notifier.refresh,
        groups=UsergroupDirectory(client),
    )
    slack = build_slack_app(ctx, deps, client)
    return Runtime(ctx, slack, notifier, runner, jobs, start_sender=start_sender)


def build_web_app(runtime: Runtime) -> web.Application:
    app = web.Application()
    app[RUNTIME] = runtime

    async def slack_events(request: web.Request) -> web.Response:
        runtime.metrics["slack_requests"] = runtime.metrics.get("slack_requests", 0) + 1
        if runtime.slack is None:
            return web.json_response({"ok": False, "error": NOT_CONNECTED}, status=503)
        bolt_request = await to_bolt_request(request)
        return await to_aiohttp_response(await runtime.slack.async_dispatch(bolt_request))

    async def healthz(request: web.Request) -> web.Response:
        def ping() -> None:
            with runtime.ctx.sessions() as session:
                session.execute(text("SELECT 1"))

        try:
            await asyncio.to_thread(ping)
        except Exception as exc:
            return web.json_response({"ok": False, "database": str(exc)}, status=503)
        return web.json_response({"ok": True, "database": "ok", "slack": runtime.slack is not None})

    async def metrics(request: web.Request) -> web.Response:
        counters = {
            "slack_requests": runtime.metrics.get("slack_requests", 0),
            "sender_rounds": runtime.runner.rounds,
            "feedback_events": runtime.metrics.get("feedback_events", 0),
            "feedback_unmatched": runtime.metrics.get("feedback_unmatched", 0),
            "feedback_refused": runtime.metrics.get("feedback_refused", 0),
            "tracking_forged": runtime.metrics.get("tracking_forged", 0),
        }
        lines = []
        for name, value in counters.items():
            lines += [f"# TYPE greenlight_{name}_total counter", f"greenlight_{name}_total {value}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def on_startup(app: web.Application) -> None:
        runtime.notifier.bind(asyncio.get_running_loop())
        if runtime.start_sender:
            runtime.runner.start()
            runtime.jobs.start()

    async def on_cleanup(app: web.Application) -> None:
        runtime.jobs.shutdown()
        handler = app.get(SOCKET_MODE)
        if handler is not None:
            await handler.close_async()
        await asyncio.to_thread(runtime.runner.stop)

    from bot.web_feedback import add_feedback_routes

    add_feedback_routes(app, runtime.ctx, runtime.metrics)
    app.router.add_post("/slack/events", slack_events)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


def serve(root: Root, socket_mode: bool = False) -> None:
    """Run until interrupted: the HTTP app on PORT, the scheduler and the sender (in its
    own process), and Slack (HTTP or socket)."""
    runtime = build_runtime(root.context, sender_process=True)
    settings = root.settings
    if runtime.slack is None:
        log.warning(NOT_CONNECTED)
    elif not socket_mode and settings.slack_signing_secret is None:
        log.warning("SLACK_SIGNING_SECRET is not set: Slack requests cannot be verified")
    app = build_web_app(runtime)
    if socket_mode:
        app.on_startup.append(_socket_mode_starter(runtime))
    log.info("listening on port %d", settings.port)
    web.run_app(app, port=settings.port, print=None)


def _socket_mode_starter(runtime: Runtime) -> Any:
    async def start(app: web.Application) -> None:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        token = runtime.ctx.settings.slack_app_token
        if runtime.slack is None or token is None:
            log.warning("Socket Mode needs SLACK_BOT_TOKEN and SLACK_APP_TOKEN; %s", NOT_CONNECTED)
            return
        handler = AsyncSocketModeHandler(runtime.slack, token.get_secret_value())
        await handler.connect_async()
        app[SOCKET_MODE] = handler

    return start
