"""The approval request of a recurring delivery's occurrence (SPEC section 4, issue 6).

Posted in the delivery's channel when an occurrence waits for confirmation, and
updated in place as people decide: the buttons disappear once the decision is made
(or the request expired), and the message keeps who decided and when, so the
channel is the record a team reads back.

Input shapes (plain dicts, so the service that stores approvals owns its model):

* `delivery`: `reporting.delivery_detail` (uses `ref`, `name`, `recurrence.timezone`,
  falling back to `schedule.timezone`).
* `occurrence`: `{"key": str (the execution key, carried by the buttons),
  "occurrence_at": ISO 8601 | datetime, "to_deliver": int, "exclusions": {reason: n},
  "excluded": int (optional; defaults to the sum of exclusions), "timezone": str
  (optional; defaults to the delivery's)}`. An execution dict of `delivery_detail`
  fits too: `to_deliver` is then read from its `kpis`.
* `approvals`: the distinct approvals so far, oldest first:
  `[{"user": "U123", "at": ISO 8601 | datetime}]`.
* `decided`: None while open, else `{"decision": "approved" | "skipped" | "expired",
  "by": [user ids] (approved: every approver; skipped: who skipped; expired: []),
  "at": ISO 8601 | datetime, "reason": str (optional, for expired)}`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from bot.blocks import ids
from bot.blocks.card import exclusions_text
from bot.blocks.kit import (
    MAX_CONFIRM_TEXT,
    Block,
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
    parse_time,
    people,
    plural,
    section,
)

DECISIONS = ("approved", "skipped", "expired")
EXPIRED_REASON = "not decided before the next occurrence"


def _timezone(delivery: Mapping[str, Any], occurrence: Mapping[str, Any]) -> str | None:
    return (
        occurrence.get("timezone")
        or (delivery.get("recurrence") or {}).get("timezone")
        or (delivery.get("schedule") or {}).get("timezone")
    )


def _to_deliver(occurrence: Mapping[str, Any]) -> int:
    value = occurrence.get("to_deliver")
    if value is None:
        value = (occurrence.get("kpis") or {}).get("to_deliver")
    return int(value or 0)


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
    decided: Mapping[str, Any],
    tz: str | None,
    occurrence_at: datetime | None,
    approvers: Sequence[str] = (),
) -> str:
    """ "Approved by <@U1> and <@U2> at 09:02 Europe/Paris", "Skipped by …", "Expired: …".

    The time is in the occurrence's zone, with the date only when it is not the
    occurrence's day. `approvers` stands in when an approval names nobody.
    """
    decision = decided.get("decision")
    if decision not in DECISIONS:
        raise ValueError(f"unknown decision {decision!r}; expected one of {', '.join(DECISIONS)}")
    by = [str(u) for u in decided.get("by") or []]
    if decision == "approved" and not by:
        by = list(approvers)
    who = f" by {people(by)}" if by else ""
    at = clock_time(decided.get("at"), tz, occurrence_at)
    if decision == "approved":
        return f":white_check_mark: Approved{who} at {at}. Sending."
    if decision == "skipped":
        return f":fast_forward: Skipped{who} at {at}. This occurrence is not sent."
    reason = escape(decided.get("reason") or EXPIRED_REASON)
    return f":hourglass: Expired: {reason}. This occurrence is not sent."


def approval_request(
    delivery: Mapping[str, Any],
    occurrence: Mapping[str, Any],
    approvals: Sequence[Mapping[str, Any]],
    required: int,
    decided: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """`{"text", "blocks"}` of the request, open (buttons) or decided (a line, no buttons)."""
    name = str(delivery["name"])
    ref = str(delivery["ref"])
    tz = _timezone(delivery, occurrence)
    at = parse_time(occurrence.get("occurrence_at"))
    when = local_time(at, tz)
    n = _to_deliver(occurrence)
    exclusions = dict(occurrence.get("exclusions") or {})
    excluded = occurrence.get("excluded")
    if excluded is None:
        excluded = sum(exclusions.values())
    required = max(int(required), 1)
    approvers = [str(a["user"]) for a in approvals]

    blocks: list[Block] = [header(f"Approval — {name}")]
    blocks += field_sections(
        [
            ("Delivery", f"{escape(name)} (`{escape(ref)}`)"),
            ("Occurrence", when),
            ("To deliver", count(n)),
            ("Exclusions", exclusions_text(int(excluded), exclusions)),
        ]
    )
    if decided is None:
        if required > 1:
            progress = f"{len(approvers)} of {required} approvals"
            progress += f": {people(approvers)}" if approvers else " yet"
            blocks.append(context(progress))
        value = ids.button_value(ref, **{ids.OCCURRENCE_KEY: str(occurrence["key"])})
        approve = button(
            "Confirm send",
            ids.APPROVE_OCCURRENCE,
            value,
            style="primary",
            confirm=confirm_dialog(
                "Confirm send", approve_text(name, n, when, len(approvers), required)
            ),
        )
        skip = button(
            "Skip this occurrence",
            ids.SKIP_OCCURRENCE,
            value,
            confirm=confirm_dialog("Skip this occurrence", skip_text(name, when), style="danger"),
        )
        blocks.append(actions([approve, skip], ids.APPROVAL_ACTIONS_BLOCK))
        text = f"Approval needed: {name}, {plural(n, 'recipient')}, occurrence of {when}"
    else:
        line = decision_line(decided, tz, at, approvers)
        blocks.append(section(line, block_id=ids.APPROVAL_DECISION_BLOCK))
        text = f"{name}, occurrence of {when}: {decided['decision']}"
    return {"text": fallback(text), "blocks": blocks}
