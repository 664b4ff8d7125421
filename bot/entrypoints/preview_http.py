"""`GET /p/{token}`: the card's **Preview** page, what will leave before it is confirmed.

The token (`TokenSigner.preview_token`) names the delivery and the instant it stops
working; it is checked before anything is read, so a forged, altered or guessed one is
404 and touches no table, and an expired one is 410. It needs no login: it is handed
only to whoever was shown the card.

The page shows the subject and the text part rendered for a profile of the audience
(its first, or `?profile=EMAIL`), and the HTML part in an `<iframe sandbox>` whose
source is a second route, `/p/{token}/html`. That route serves only the message's
HTML, which marketing people wrote and profile data filled in, under the web version's
no-script policy (`web_version_http.PAGE_HEADERS`); the empty `sandbox` attribute also
gives the frame an opaque origin with no scripts, forms or popups. The page itself runs
no script either: another profile is chosen with a plain GET form, and the page can
only frame itself and post its form to itself. The audience's addresses are never
listed (the link may be forwarded): the form asks for one.

Links in the previewed message are shown as written: nothing on these pages is signed
into a tracking link, so a click here counts nowhere.
"""

from __future__ import annotations

import asyncio
import logging
from html import escape
from urllib.parse import quote

from aiohttp import web

from bot.context import Context
from bot.domain.errors import NotFound
from bot.engine.rendering import RenderError, TemplateSyntaxProblem
from bot.engine.tokens import PreviewGrant, TokenSigner
from bot.entrypoints.web_version_http import PAGE_HEADERS as MESSAGE_HEADERS
from bot.services.deliveries.preview import LinkExpired, Preview, linked_preview
from bot.store.db import StoreUnavailable

log = logging.getLogger(__name__)

MAX_PROFILE_LENGTH = 320  # an address is at most 254 characters; longer is no profile
NOT_VALID = "This link is not valid."

PAGE_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; frame-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-store",
}

_STYLE = (
    "body{font:15px/1.5 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem}"
    "pre{white-space:pre-wrap;background:#f6f6f6;padding:1rem;border-radius:4px}"
    "iframe{width:100%;height:70vh;border:1px solid #ccc;border-radius:4px}"
    ".problem{color:#a00}"
)


class _Refused(Exception):
    """A request the pages answer with a plain text and a status."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _profile(request: web.Request) -> str | None:
    value = request.query.get("profile", "").strip()
    if len(value) > MAX_PROFILE_LENGTH:
        raise _Refused(400, "This address is too long to be a profile's.")
    return value or None


def _page(token: str, asked: str | None, shown: Preview | None, problem: str | None) -> str:
    """The Preview page: the form, then the subject, text and framed HTML of `shown`."""
    title = f"Preview of {shown.ref}" if shown else "Preview"
    parts = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<form method="get" action="/p/{escape(token)}">',
        '<label>Profile of the audience: <input type="email" name="profile" '
        f'maxlength="{MAX_PROFILE_LENGTH}" value="{escape(asked or "")}" '
        'placeholder="the first profile"></label> <button type="submit">Show</button></form>',
    ]
    if problem is not None:
        parts.append(f'<p class="problem">{escape(problem)}</p>')
    if shown is not None:
        frame = f"/p/{token}/html?profile={quote(shown.email)}"
        parts += [
            f"<p>As <strong>{escape(shown.email)}</strong> will receive it. Links are shown "
            "as written; the sent message tracks them.</p>",
            f"<h2>Subject</h2><p>{escape(shown.subject)}</p>",
            "<h2>Text part</h2>",
            f"<pre>{escape(shown.text)}</pre>" if shown.text else "<p>No text part.</p>",
            "<h2>HTML part</h2>",
            f'<iframe sandbox src="{escape(frame)}" title="The HTML part"></iframe>'
            if shown.html is not None
            else "<p>No HTML part.</p>",
        ]
        if shown.warnings:
            items = "".join(f"<li>{escape(w)}</li>" for w in shown.warnings)
            parts.append(f"<h2>Warnings</h2><ul>{items}</ul>")
    parts.append("</body></html>")
    return "".join(parts)


def add_preview_routes(app: web.Application, ctx: Context, signer: TokenSigner) -> None:
    def grant_of(request: web.Request) -> PreviewGrant:
        grant = signer.read_preview(request.match_info["token"])
        if grant is None:
            raise _Refused(404, NOT_VALID)
        return grant

    async def render(grant: PreviewGrant, email: str | None) -> Preview:
        """The delivery for `email`; NotFound passes through (the page says it)."""
        try:
            shown = await asyncio.to_thread(linked_preview, ctx, grant, email)
        except LinkExpired as exc:
            raise _Refused(410, str(exc)) from None
        except StoreUnavailable:
            log.exception("the preview of delivery %d could not be read", grant.delivery_id)
            raise _Refused(503, "Try again in a moment.") from None
        except (RenderError, TemplateSyntaxProblem) as exc:
            log.warning("the preview of delivery %d does not render: %s", grant.delivery_id, exc)
            raise _Refused(500, "This message cannot be shown.") from None
        if shown is None:
            raise _Refused(404, NOT_VALID)
        return shown

    def not_in_audience(email: str | None) -> str:
        if email is None:
            return "The audience has no profile to preview the message for."
        return f"No profile {email} in this delivery's audience: try another address."

    async def page(request: web.Request) -> web.Response:
        token = request.match_info["token"]
        try:
            grant, email = grant_of(request), _profile(request)
            try:
                shown: Preview | None = await render(grant, email)
                problem = None
                status = 200
            except NotFound:
                shown, problem, status = None, not_in_audience(email), 404
        except _Refused as refused:
            return web.Response(status=refused.status, text=refused.text)
        return web.Response(
            status=status,
            text=_page(token, email, shown, problem),
            content_type="text/html",
            charset="utf-8",
            headers=PAGE_HEADERS,
        )

    async def html(request: web.Request) -> web.Response:
        try:
            grant, email = grant_of(request), _profile(request)
            try:
                shown = await render(grant, email)
            except NotFound:
                raise _Refused(404, not_in_audience(email)) from None
        except _Refused as refused:
            return web.Response(status=refused.status, text=refused.text)
        if shown.html is None:
            return web.Response(status=404, text="This delivery has no HTML part.")
        return web.Response(
            text=shown.html, content_type="text/html", charset="utf-8", headers=MESSAGE_HEADERS
        )

    app.router.add_get("/p/{token}", page)
    app.router.add_get("/p/{token}/html", html)
