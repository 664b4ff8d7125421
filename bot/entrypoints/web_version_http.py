"""`GET /v/{token}`: the web version of one recipient's message (`{{ view_online_url }}`).

The token is checked before anything is read: a forged, altered or guessed one is 404
and touches no table. The page is the message's own HTML, which marketing people wrote
and profile data filled in, so it is served under a Content-Security-Policy that runs
no script at all (no `script-src`, no frames, no forms, no connections: only images
and inline styles), never sniffed as another type, never cached by a shared cache, and
with no Referer, so the token does not travel to the hosts of its images.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from bot.context import Context
from bot.engine.rendering import RenderError, TemplateSyntaxProblem
from bot.engine.tokens import TokenSigner
from bot.services.deliveries.web_version import web_version
from bot.store.db import StoreUnavailable

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src http: https: data:; style-src 'unsafe-inline'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-store",
}


def add_web_version_route(app: web.Application, ctx: Context, signer: TokenSigner) -> None:
    async def view_online(request: web.Request) -> web.Response:
        log_id = signer.read_view(request.match_info["token"])
        if log_id is None:
            return web.Response(status=404, text="This link is not valid.")
        try:
            page = await asyncio.to_thread(web_version, ctx, log_id)
        except StoreUnavailable:
            log.exception("the web version of log %d could not be read", log_id)
            return web.Response(status=503, text="Try again in a moment.")
        except (RenderError, TemplateSyntaxProblem) as exc:
            log.warning("the web version of log %d does not render: %s", log_id, exc)
            return web.Response(status=500, text="This message cannot be shown.")
        if page is None:
            return web.Response(status=404, text="This link is not valid.")
        return web.Response(
            text=page, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS
        )

    app.router.add_get("/v/{token}", view_online)
