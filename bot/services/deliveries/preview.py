"""What one recipient will receive: the delivery rendered for a profile of its audience.

The same templates, sandbox and bounds as the preparation and the sender
(`engine.rendering`); the links are shown as written (the sender signs them into
tracking links when it builds the message).

The card's **Preview** link opens the same rendering as a page (`GET /p/{token}`,
`entrypoints.preview_http`) for people who have no login on Greenlight: the token is
signed with TRACKING_SECRET and names the delivery and an expiry instant
(PREVIEW_LINK_TTL_SECONDS after the card was shown), so the link is the permission,
handed only to whoever may see the card, and it stops working by itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.context import Context, Session
from bot.domain.errors import DomainError, NotFound
from bot.domain.roles import Actor, Permission
from bot.engine.rendering import MessageTemplates
from bot.engine.tokens import PreviewGrant, TokenSigner
from bot.services.deliveries.prepare import member_context
from bot.store import deliveries, preparation
from bot.store.models import Delivery


@dataclass(frozen=True)
class Preview:
    ref: str
    email: str
    subject: str
    text: str | None
    html: str | None
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "profile": self.email,
            "subject": self.subject,
            "text": self.text,
            "html": self.html,
            "warnings": list(self.warnings),
        }


class LinkExpired(DomainError):
    """A **Preview** link past its expiry: the card shows a fresh one."""


def preview_link(ctx: Context, delivery_id: int) -> str | None:
    """The **Preview** page of a delivery, open for PREVIEW_LINK_TTL_SECONDS from now;
    None without TRACKING_SECRET (the card then shows no link rather than failing)."""
    try:
        signer = TokenSigner.from_settings(ctx.settings)
    except ValueError:
        return None
    expires = int(ctx.clock.now().timestamp()) + ctx.settings.preview_link_ttl_seconds
    base = ctx.settings.public_base_url.rstrip("/")
    return f"{base}/p/{signer.preview_token(delivery_id, expires)}"


def linked_preview(ctx: Context, grant: PreviewGrant, email: str | None) -> Preview | None:
    """What a genuine **Preview** link shows: the delivery for `email`'s profile of its
    audience (its first without one); None when the delivery no longer exists.

    No actor: the signed, expiring link stands for the person who was shown the card.
    Raises `LinkExpired` past the link's expiry (checked before anything is read), and
    `NotFound` when the audience has no such profile.
    """
    if ctx.clock.now().timestamp() >= grant.expires:
        raise LinkExpired("This preview link has expired; open the card again for a new one.")
    with ctx.sessions() as s:
        d = deliveries.by_id(s, grant.delivery_id)
        if d is None:
            return None
        return render_for(s, d, email)


def preview(ctx: Context, actor: Actor, ref: str, email: str | None = None) -> Preview:
    """`ref` rendered for the audience's profile `email` (its first profile if None)."""
    actor.require(Permission.VIEW_DELIVERIES)
    with ctx.sessions() as s:
        return render_for(s, deliveries.get(s, ref), email)


def render_for(session: Session, d: Delivery, email: str | None = None) -> Preview:
    """The message of delivery `d` for its audience's profile `email` (or its first)."""
    member = preparation.sample_member(session, d.audience_id, email)
    if member is None:
        where = f"no profile {email!r} in" if email else "no profile in"
        raise NotFound(f"{where} the audience of {d.ref!r}; import profiles first")
    templates = MessageTemplates(d.subject, d.html, d.text)
    message = templates.render(member_context(member, {"ref": d.ref, "name": d.name}))
    return Preview(
        d.ref, member.email, message.subject, message.text, message.html, message.warnings
    )
