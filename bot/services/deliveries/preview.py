"""What one recipient will receive: the delivery rendered for a profile of its audience.

The same templates, sandbox and bounds as the preparation and the sender
(`engine.rendering`); the links are shown as written (the sender signs them into
tracking links when it builds the message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.context import Context, Session
from bot.domain.errors import NotFound
from bot.domain.roles import Actor, Permission
from bot.engine.rendering import MessageTemplates
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
