"""The approval request of a recurring delivery's occurrence (SPEC section 4, issue 6).

Posted in the delivery's channel when an occurrence waits for confirmation, and
updated in place as people decide: the buttons disappear once the decision is made
(or the request expired), and the message keeps who decided and when, so the
channel is the record a team reads back.

Input: an `ApprovalRequestView` (`bot.services.recurring.views`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from bot.blocks import ids
from bot.blocks.card import exclusions_text
from bot.blocks.kit import (
    MAX_CONFIRM_TEXT,
    Block,
    Message,
    actions,
    button,
    clock_time,
    confirm_dialog,
    context,
    count,
    escape,
    fallback,
    field_sections,
    fit,
    header,
    local_time,
    mention,
    message,
    people,
    plural,
    section,
)
from bot.domain.approval import EXPIRED_REASON, RequestState, Result
from bot.services.recurring.approvals import Decision
from bot.services.recurring.views import ApprovalRequestView, Decided


def approve_text(name: str, to_deliver: int, when: str, approvals: int, required: int) -> str:
    """The OK dialog of **Confirm send**: what this click does, with a quorum or without."""
    who = plural(to_deliver, "recipient")
    if required - approvals <= 1:
        template = f"Send *{{}}* to {who} now (occurrence of {when})."
    else:
        template = (
            f"Approve sending *{{}}* to {who} (occurrence of {when}). "
            f"It is sent once {required} people have approved; {approvals} have so far."
        )
    return fit(template, name, MAX_CONFIRM_TEXT)


def skip_text(name: str, when: str) -> str:
    return fit(
        f"Skip the occurrence of *{{}}* at {when}? It will never be sent.",
        name,
        MAX_CONFIRM_TEXT,
    )


def decision_line(
    decided: Decided,
    tz: str | None,
    occurrence_at: datetime | None,
    approvers: Sequence[str] = (),
) -> str:
    """ "Approved by <@U1> and <@U2> at 09:02 Europe/Paris", "Skipped by …", "Expired: …".

    The time is in the occurrence's zone, with the date only when it is not the
    occurrence's day. `approvers` stands in when an approval names nobody.
    """
    if decided.decision is RequestState.OPEN:
        raise ValueError("an open request has no decision line")
    by = [str(u) for u in decided.by]
    if decided.decision is RequestState.APPROVED and not by:
        by = list(approvers)
    who = f" by {people(by)}" if by else ""
    at = clock_time(decided.at, tz, occurrence_at)
    if decided.decision is RequestState.APPROVED:
        return f":white_check_mark: Approved{who} at {at}. Sending."
    if decided.decision is RequestState.SKIPPED:
        return f":fast_forward: Skipped{who} at {at}. This occurrence is not sent."
    reason = escape(decided.reason or EXPIRED_REASON)
    return f":hourglass: Expired: {reason}. This occurrence is not sent."


def approval_buttons(
    view: ApprovalRequestView, block_id: str = ids.APPROVAL_ACTIONS_BLOCK
) -> Block:
    """The request's **Confirm send** and **Skip this occurrence**, in an actions block.

    The Home tab shows several requests in one view, where block ids must differ: it
    passes one per request. The action ids stay the channel message's, so the same
    listeners decide.
    """
    return _buttons(view, local_time(view.occurrence_at, view.timezone), block_id)


def _buttons(
    view: ApprovalRequestView, when: str, block_id: str = ids.APPROVAL_ACTIONS_BLOCK
) -> Block:
    value = ids.button_value(view.ref, **{ids.OCCURRENCE_KEY: view.key})
    required = max(view.required, 1)
    approve = button(
        "Confirm send",
        ids.APPROVE_OCCURRENCE,
        value,
        style="primary",
        confirm=confirm_dialog(
            "Confirm send",
            approve_text(view.name, view.to_deliver, when, len(view.approvals), required),
        ),
    )
    skip = button(
        "Skip this occurrence",
        ids.SKIP_OCCURRENCE,
        value,
        confirm=confirm_dialog("Skip this occurrence", skip_text(view.name, when), style="danger"),
    )
    return actions([approve, skip], block_id)


def approval_request(view: ApprovalRequestView) -> Message:
    """`{"text", "blocks"}` of the request, open (buttons) or decided (a line, no buttons)."""
    when = local_time(view.occurrence_at, view.timezone)
    required = max(view.required, 1)
    blocks: list[Block] = [header(f"Approval — {view.name}")]
    blocks += field_sections(
        [
            ("Delivery", f"{escape(view.name)} (`{escape(view.ref)}`)"),
            ("Occurrence", when),
            ("To deliver", count(view.to_deliver)),
            ("Exclusions", exclusions_text(view.excluded, view.exclusions)),
        ]
    )
    if view.decided is None:
        if required > 1:
            progress = f"{len(view.approvals)} of {required} approvals"
            progress += f": {people(view.approvers)}" if view.approvals else " yet"
            blocks.append(context(progress))
        blocks.append(_buttons(view, when))
        text = (
            f"Approval needed: {escape(view.name)}, {plural(view.to_deliver, 'recipient')}, "
            f"occurrence of {when}"
        )
    else:
        line = decision_line(view.decided, view.timezone, view.occurrence_at, view.approvers)
        blocks.append(section(line, block_id=ids.APPROVAL_DECISION_BLOCK))
        text = f"{escape(view.name)}, occurrence of {when}: {view.decided.decision.value}"
    return {"text": fallback(text), "blocks": blocks}


def _people(users: list[str]) -> str:
    return ", ".join(mention(u) for u in users) or "nobody"


def decision_text(decision: Decision) -> str:
    """What the clicker is told, privately: what their click did, or what was decided."""
    what = f"*{escape(decision.ref)}* (occurrence {escape(decision.key)})"
    if decision.outcome is Result.APPROVED:
        return f"You approved {what}: it is being sent now."
    if decision.outcome is Result.SKIPPED:
        return f"You skipped {what}: it will not be sent."
    if decision.outcome is Result.RECORDED:
        return (
            f"Your approval of {what} is recorded: {decision.approvals} of "
            f"{decision.required}. It is sent once {decision.required} people have approved."
        )
    if decision.outcome is Result.ALREADY_VOTED:
        return (
            f"You already approved {what}; {decision.approvals} of {decision.required} "
            "approvals so far. Another person must approve it."
        )
    when = decision.at.strftime("%Y-%m-%d %H:%M UTC") if decision.at else "earlier"
    if decision.state is RequestState.EXPIRED:
        return f"{what} expired at {when} without a decision: it was not sent."
    return (
        f"{what} was already {decision.state.value} by {_people(decision.by)} at {when}. "
        "Nothing more was done."
    )


def decision_message(decision: Decision) -> Message:
    """What the clicker is told, privately, of what their click did."""
    return message(decision_text(decision))
