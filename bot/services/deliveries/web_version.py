"""The web version of one recipient's message: what `{{ view_online_url }}` opens.

The link carries a signed token (`TokenSigner.view_token`, TRACKING_SECRET) naming the
sending log, so a guessed or altered link shows nothing. The page is the message's
HTML as the sender builds it for that log: the delivery's templates rendered for that
log's profile in the same sandbox and under the same bounds (`engine.rendering`), with
the same signed links, click tracking and open pixel (`MessageSkeleton.rewrite_html`).
A delivery without an HTML part shows its text part, escaped.
"""

from __future__ import annotations

from html import escape

from bot.context import Context
from bot.engine.message import MessageSkeleton
from bot.engine.rendering import MessageTemplates, profile_context
from bot.store import logs


def web_version(ctx: Context, log_id: int) -> str | None:
    """The HTML page of sending log `log_id`'s message; None when there is no such log.

    Raises `RenderError` or `TemplateSyntaxProblem` when the delivery's templates no
    longer render for that profile (edited since, or over a bound with its data).
    """
    with ctx.sessions() as s:
        source = logs.message_source(s, log_id)
    if source is None:
        return None
    skeleton = MessageSkeleton.for_delivery(source, ctx.settings, ctx.clock)
    templates = MessageTemplates(source.subject, source.html, source.text)
    rendered = templates.render(
        profile_context(
            email=source.email,
            first_name=source.first_name,
            last_name=source.last_name,
            timezone=source.timezone,
            attributes=source.attributes,
            delivery={"ref": source.ref, "name": source.name},
            links=skeleton.links(log_id),
        )
    )
    if rendered.html is not None:
        return skeleton.rewrite_html(log_id, rendered.html)
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>{escape(rendered.subject)}</title></head>"
        f'<body><pre style="white-space: pre-wrap">{escape(rendered.text or "")}</pre>'
        "</body></html>"
    )
