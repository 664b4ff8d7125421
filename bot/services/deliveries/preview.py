"""What one recipient will receive: the delivery rendered for a profile of its audience.

The same templates, sandbox and bounds as the preparation and the sender
(`engine.rendering`); the links are shown as written (the sender signs them into
tracking links when it builds the message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.context import Context
from bot.domain.errors import NotFound
from bot.domain.roles import Actor, Permission
from bot.engine.rendering import MessageTemplates
from bot.services.deliveries.prepare import member_context
from bot.store import deliveries, preparation


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
        d = deliveries.get(s, ref)
        member = preparation.sample_member(s, d.audience_id, email)
        if member is None:
            where = f"no profile {email!r} in" if email else "no profile in"
            raise NotFound(f"{where} the audience of {ref!r}; import profiles first")
        templates = MessageTemplates(d.subject, d.html, d.text)
        about = {"ref": d.ref, "name": d.name}
    message = templates.render(member_context(member, about))
    return Preview(ref, member.email, message.subject, message.text, message.html, message.warnings)
