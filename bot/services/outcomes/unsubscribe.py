"""One-click unsubscribe: the address goes on the denylist, so no delivery targets it again."""

from __future__ import annotations

from bot.context import Context
from bot.domain.quarantine import EmailStatus
from bot.store import audit, profiles


def unsubscribe(ctx: Context, sending_log_id: int) -> bool:
    """Denylist the profile the message went to; False when it was already denylisted."""
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        profile = profiles.of_sending_log(s, sending_log_id)
        if profile is None or profile.email_status is EmailStatus.DENYLISTED:
            return False
        profiles.denylist(s, profile.id, now)
        audit.record(
            s,
            now,
            actor="recipient",
            action="profile.unsubscribe",
            subject_kind="profile",
            subject_ref=profile.email,
            detail={"sending_log_id": sending_log_id},
        )
    return True
