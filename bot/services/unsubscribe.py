"""One-click unsubscribe: the address goes on the denylist, so no delivery targets it again."""

from __future__ import annotations

from sqlalchemy import select

from bot.context import Context
from bot.domain.quarantine import EmailStatus
from bot.services import audit
from bot.store.models import Profile, SendingLog


def unsubscribe(ctx: Context, sending_log_id: int) -> bool:
    """Denylist the profile the message went to; False when it was already denylisted."""
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        profile = s.scalar(
            select(Profile)
            .join(SendingLog, SendingLog.profile_id == Profile.id)
            .where(SendingLog.id == sending_log_id)
        )
        if profile is None or profile.email_status == EmailStatus.DENYLISTED.value:
            return False
        profile.email_status = EmailStatus.DENYLISTED.value
        profile.updated_at = now
        audit.record(
            s,
            ctx.clock,
            actor="recipient",
            action="profile.unsubscribe",
            subject_kind="profile",
            subject_ref=profile.email,
            detail={"sending_log_id": sending_log_id},
        )
    return True
