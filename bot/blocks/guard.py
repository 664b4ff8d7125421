"""The send guard's alert (`services.messages.guard_alerts`): why a send was paused.

It names the rate that crossed the threshold, the threshold itself, and where the
failures come from (the top reasons and recipient domains), so that the person who
reads it can tell a stale list from a relay problem before choosing. Its buttons are
the Deployment message's own (`ids.RESUME`, `ids.STOP`, the same values), so the
listeners that already check the clicker's role handle them, and a click on an alert
whose delivery has moved on is refused there with what the delivery became.

Input: a `GuardAlertView`. Every piece of data is escaped.
"""

from __future__ import annotations

from bot.blocks import ids
from bot.blocks.deployment import STOPPABLE_STATES, stop_text
from bot.blocks.kit import (
    Message,
    actions,
    button,
    confirm_dialog,
    context,
    count,
    escape,
    fallback,
    field_sections,
    header,
    section,
    slack_date,
    truncate,
)
from bot.domain.kpi import format_pct
from bot.domain.lifecycle import DeliveryState
from bot.services.deliveries.guard_views import GuardAlertView


def causes(pairs: tuple[tuple[str, int], ...]) -> str:
    """ "user unknown (31) · invalid domain (4)", escaped; "—" when none."""
    if not pairs:
        return "—"
    return truncate(" · ".join(f"{escape(name)} ({n:,})" for name, n in pairs), 1900)


def reading_line(view: GuardAlertView) -> str:
    """ "*10 %* of the last 200 relayed were refused or hard-bounced (20): over 5 %…"."""
    p = view.policy
    return (
        f"*{format_pct(view.rate * 100)}* of the last {view.counted:,} relayed were refused "
        f"or hard-bounced ({view.failed:,}): over the threshold of "
        f"{format_pct(p.rate * 100)} (of the last {p.window:,}, once {p.minimum:,} were relayed)."
    )


def guard_alert_message(view: GuardAlertView) -> Message:
    """`{"text", "blocks"}` for chat.postMessage in the delivery's channel."""
    value = ids.button_value(view.ref)
    elements = []
    if view.state is DeliveryState.PAUSED:
        elements.append(button("Resume", ids.RESUME, value, style="primary"))
    if view.state in STOPPABLE_STATES:
        dialog = confirm_dialog("Stop send", stop_text(view.name, view.queued), style="danger")
        elements.append(button("Stop send", ids.STOP, value, style="danger", confirm=dialog))
    blocks = [
        header(f"Send paused by the guard — {view.name}"),
        section(reading_line(view)),
        *field_sections(
            [("Top reasons", causes(view.reasons)), ("Top domains", causes(view.domains))]
        ),
    ]
    if elements:
        blocks.append(actions(elements, ids.GUARD_ACTIONS_BLOCK))
    blocks.append(
        context(
            f"Paused {slack_date(view.tripped_at)} after the batch in flight; "
            f"{count(view.queued)} still queued. "
            "*Resume* sends the rest: only answers after it count towards the next pause."
        )
    )
    summary = (
        f"Send of {escape(view.name)} paused: {format_pct(view.rate * 100)} of the last "
        f"{view.counted:,} relayed were refused or hard-bounced"
    )
    return {"text": fallback(summary), "blocks": blocks}
