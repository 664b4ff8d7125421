"""The **Deployment** message (SPEC sections 6 and 9): progress while relaying, the KPIs,
and the buttons that steer the send.

The message is posted when sending starts and updated in place, so the same builder
draws every stage: the buttons follow the state (Pause while in progress, Resume
while paused, none of them once the send is over) and a rate the logs cannot divide
yet shows as "—" rather than a misleading 0 %.

Inputs: `reporting.delivery_detail(...)` and `reporting.sending_progress(...)` dicts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bot.blocks import ids
from bot.blocks.kit import (
    MAX_CONFIRM_TEXT,
    Block,
    actions,
    button,
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
    plural,
    section,
    slack_date,
)
from bot.domain.kpi import DASH, format_pct

BAR_WIDTH = 20
BAR_FULL = "█"
BAR_EMPTY = "░"

RELAYING_STATES = frozenset({"in-progress", "paused"})
# States from which the lifecycle allows Stop (bot.domain.lifecycle.TRANSITIONS).
STOPPABLE_STATES = frozenset({"start-pending", "in-progress", "paused"})
USER_ID = re.compile(r"^[UW][A-Z0-9]+$")


def progress_fraction(relayed: int, total: int) -> tuple[int, int]:
    """(filled cells of the bar, whole percent), never "full" before the last message.

    Rounded to the nearest, so 1,234 of 12,408 reads 10 %; but 99.6 % reads 99 %
    while a message is still waiting, and nothing reads 0 % once one has left.
    """
    if total <= 0:
        return 0, 0
    share = min(max(relayed, 0) / total, 1.0)
    cells = round(share * BAR_WIDTH)
    pct = round(share * 100)
    if relayed < total:
        cells, pct = min(cells, BAR_WIDTH - 1), min(pct, 99)
    if relayed > 0:
        cells, pct = max(cells, 1), max(pct, 1)
    return cells, pct


def rate_text(rate: float | None) -> str:
    """350 → "350 msg/s", 12.5 → "12.5 msg/s"."""
    value = float(rate or 0)
    number = f"{int(value):,}" if value == int(value) else f"{value:,.1f}"
    return f"{number} msg/s"


def progress_line(progress: Mapping[str, Any]) -> str:
    """ "`██░░…` 1,234 / 12,408 (10 %) · 350 msg/s" (the rate reads "paused" when paused)."""
    relayed = int(progress.get("relayed") or 0)
    total = int(progress.get("to_deliver") or 0)
    cells, pct = progress_fraction(relayed, total)
    bar = BAR_FULL * cells + BAR_EMPTY * (BAR_WIDTH - cells)
    speed = "paused" if progress.get("state") == "paused" else rate_text(progress.get("rate_per_s"))
    return f"`{bar}` {relayed:,} / {total:,} ({pct} %) · {speed}"


def is_relaying(state: str, progress: Mapping[str, Any] | None) -> bool:
    """Messages are still waiting to leave: the progress bar is worth showing."""
    if progress is None or state not in RELAYING_STATES:
        return False
    return int(progress.get("queued") or 0) > 0


def kpi_source(detail: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """Which figures the KPI block shows, and its title.

    A one-off delivery has one set of KPIs. A recurring one has one per execution
    (SPEC section 4): the message shows the latest execution's.
    """
    executions = list(detail.get("executions") or [])
    if detail.get("recurrence") and executions:
        never = datetime.min.replace(tzinfo=UTC)
        latest = max(
            executions,
            key=lambda e: (
                parse_time(e.get("occurrence_at") or e.get("started_at")) or never,
                str(e.get("key")),
            ),
        )
        tz = (detail.get("recurrence") or {}).get("timezone")
        when = local_time(latest.get("occurrence_at"), tz)
        return f"*Latest execution* — {when} ({escape(latest.get('state') or DASH)})", latest
    return "*KPIs*", detail


def kpi_pairs(block: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The six KPIs of SPEC section 6, as label/value fields."""
    k = block.get("kpis") or {}
    return [
        ("To deliver", count(k.get("to_deliver"))),
        ("Sent", count(k.get("sent"))),
        ("Delivered", format_pct(k.get("delivered_pct"))),
        ("Bounces + errors", format_pct(k.get("bounces_errors_pct"))),
        ("Open rate", format_pct(k.get("open_rate"))),
        ("Click-through rate", format_pct(k.get("click_through_rate"))),
    ]


def remaining(detail: Mapping[str, Any], progress: Mapping[str, Any] | None) -> int:
    """Recipients a stop would leave unsent: queued logs, or everyone before the start."""
    if progress is not None:
        left = int(progress.get("queued") or 0)
    else:
        left = int((detail.get("logs") or {}).get("queued") or 0)
    if detail.get("state") == "start-pending":
        to_deliver = (detail.get("kpis") or {}).get("to_deliver")
        if to_deliver is None:
            to_deliver = (detail.get("preparation") or {}).get("to_deliver")
        left = max(left, int(to_deliver or 0))
    return left


def stop_text(name: str, left: int) -> str:
    """ "Stop sending *Spring sale*? The 11,174 recipients not yet sent will never be sent."."""
    who = "recipient" if left == 1 else "recipients"
    template = f"Stop sending *{{}}*? The {left:,} {who} not yet sent will never be sent."
    return fit(template, name, MAX_CONFIRM_TEXT)


def steering_buttons(
    detail: Mapping[str, Any], progress: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """Compute stats always; Pause or Resume by state; Stop send until the send is over."""
    state = str(detail.get("state"))
    value = ids.button_value(detail["ref"])
    elements = [button("Compute stats", ids.COMPUTE_STATS, value)]
    if state == "in-progress":
        elements.append(button("Pause", ids.PAUSE, value))
    elif state == "paused":
        elements.append(button("Resume", ids.RESUME, value, style="primary"))
    if state in STOPPABLE_STATES:
        dialog = confirm_dialog(
            "Stop send",
            stop_text(str(detail["name"]), remaining(detail, progress)),
            style="danger",
        )
        elements.append(button("Stop send", ids.STOP, value, style="danger", confirm=dialog))
    return elements


def who(actor: str) -> str:
    """A Slack user id as a mention; "cli" or "system" as written."""
    return f"<@{actor}>" if USER_ID.match(actor) else escape(actor)


def status_line(detail: Mapping[str, Any], now: datetime | None) -> str:
    """ "State: *in-progress* · confirmed … by @x · started … · updated …".

    Dates are `<!date>` tokens: each reader sees them in their own time zone.
    """
    parts = [f"State: *{escape(detail.get('state') or DASH)}*"]
    confirmed = parse_time(detail.get("confirmed_at"))
    if confirmed is not None:
        by = detail.get("confirmed_by")
        parts.append(f"confirmed {slack_date(confirmed)}" + (f" by {who(by)}" if by else ""))
    schedule = detail.get("schedule") or {}
    if detail.get("state") == "start-pending" and schedule.get("mode") == "at":
        parts.append(f"starts at {local_time(schedule.get('at'), schedule.get('timezone'))}")
    for label, key in (("started", "started_at"), ("ended", "finished_at")):
        at = parse_time(detail.get(key))
        if at is not None:
            parts.append(f"{label} {slack_date(at)}")
    if now is not None:
        parts.append(f"updated {slack_date(now)}")
    return " · ".join(parts)


def deployment_message(
    detail: Mapping[str, Any],
    progress: Mapping[str, Any] | None,
    *,
    now: datetime | None = None,
) -> dict[str, Any]:
    """`{"text", "blocks"}` for chat.postMessage / chat.update / a slash command reply.

    `progress` is `reporting.sending_progress` (None when not read); `now`, when given
    (the services' clock), is shown as the time of this update.
    """
    name = str(detail["name"])
    state = str(detail.get("state"))
    blocks: list[Block] = [header(f"Deployment — {name}")]
    if is_relaying(state, progress):
        assert progress is not None
        blocks.append(section(progress_line(progress), block_id=ids.DEPLOYMENT_PROGRESS_BLOCK))
    title, source = kpi_source(detail)
    blocks += field_sections(kpi_pairs(source), block_id=ids.DEPLOYMENT_KPIS_BLOCK, text=title)
    blocks.append(actions(steering_buttons(detail, progress), ids.DEPLOYMENT_ACTIONS_BLOCK))
    blocks.append(context(status_line(detail, now)))
    k = source.get("kpis") or {}
    summary = f"Deployment — {name}: {state}, sent {count(k.get('sent'))} of "
    summary += f"{plural(int(k.get('to_deliver') or 0), 'recipient')}"
    return {"text": fallback(summary), "blocks": blocks}
