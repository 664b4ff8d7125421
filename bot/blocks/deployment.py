"""The **Deployment** message (SPEC sections 6 and 9): progress while relaying, the KPIs,
and the buttons that steer the send.

The message is posted when sending starts and updated in place, so the same builder
draws every stage: the buttons follow the state (Pause while in progress, Resume
while paused, none of them once the send is over) and a rate the logs cannot divide
yet shows as "—" rather than a misleading 0 %.

Input: a `DeploymentView` (the delivery's detail, its progress, the moment).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from bot.blocks import ids
from bot.blocks.kit import (
    MAX_CONFIRM_TEXT,
    Block,
    Message,
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
    plural,
    section,
    slack_date,
    truncate,
)
from bot.domain.executions import ExecutionState
from bot.domain.kpi import Kpis, format_pct
from bot.domain.lifecycle import DeliveryState
from bot.domain.schedule import ScheduleKind
from bot.domain.times import zone
from bot.services.deliveries.views import (
    DeliveryDetail,
    DeploymentView,
    ExecutionView,
    Figures,
    SendingProgress,
    WaveView,
)

BAR_WIDTH = 20
BAR_FULL = "█"
BAR_EMPTY = "░"

RELAYING_STATES = frozenset({DeliveryState.IN_PROGRESS, DeliveryState.PAUSED})
# States from which the lifecycle allows Stop (bot.domain.lifecycle.TRANSITIONS).
STOPPABLE_STATES = frozenset(
    {DeliveryState.START_PENDING, DeliveryState.IN_PROGRESS, DeliveryState.PAUSED}
)
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


def progress_line(progress: SendingProgress) -> str:
    """ "`██░░…` 1,234 / 12,408 (10 %) · 350 msg/s" (the rate reads "paused" when paused)."""
    cells, pct = progress_fraction(progress.relayed, progress.to_deliver)
    bar = BAR_FULL * cells + BAR_EMPTY * (BAR_WIDTH - cells)
    paused = progress.state is DeliveryState.PAUSED
    speed = "paused" if paused else rate_text(progress.rate_per_s)
    return f"`{bar}` {progress.relayed:,} / {progress.to_deliver:,} ({pct} %) · {speed}"


def is_relaying(state: DeliveryState, progress: SendingProgress | None) -> bool:
    """Messages are still waiting to leave: the progress bar is worth showing."""
    if progress is None or state not in RELAYING_STATES:
        return False
    return progress.queued > 0


def shown_execution(detail: DeliveryDetail, follows: str | None = None) -> ExecutionView | None:
    """The execution whose KPIs a recurring delivery's message shows: `follows` (an older
    occurrence's own message), else the latest; None for a one-off delivery."""
    if not (detail.recurrence and detail.executions):
        return None
    if follows is not None:
        for e in detail.executions:
            if e.key == follows:
                return e
    never = datetime.min.replace(tzinfo=UTC)

    def order(e: ExecutionView) -> tuple[datetime, str]:
        return (e.occurrence_at or e.started_at or never, e.key)

    return max(detail.executions, key=order)


def kpi_source(detail: DeliveryDetail, follows: str | None = None) -> tuple[str, Figures]:
    """Which figures the KPI block shows, and its title.

    A one-off delivery has one set of KPIs. A recurring one has one per execution
    (SPEC section 4): the message shows the latest execution's, or those of the older
    occurrence it was posted for (`follows`).
    """
    shown = shown_execution(detail, follows)
    if shown is None or detail.recurrence is None:
        return "*KPIs*", detail.figures
    when = local_time(shown.occurrence_at, detail.recurrence.timezone)
    title = "*Latest execution*" if follows is None else "*Execution*"
    return f"{title} — {when} ({escape(shown.state.value)})", shown.figures


def kpi_pairs(k: Kpis) -> list[tuple[str, str]]:
    """The six KPIs of SPEC section 6, as label/value fields."""
    return [
        ("To deliver", count(k.to_deliver)),
        ("Sent", count(k.sent)),
        ("Delivered", format_pct(k.delivered_pct)),
        ("Bounces + errors", format_pct(k.bounces_errors_pct)),
        ("Open rate", format_pct(k.open_rate)),
        ("Click-through rate", format_pct(k.click_through_rate)),
    ]


def remaining(detail: DeliveryDetail, progress: SendingProgress | None) -> int:
    """Recipients a stop would leave unsent: queued logs, or everyone before the start."""
    left = progress.queued if progress is not None else detail.figures.counters.queued
    if detail.state is DeliveryState.START_PENDING:
        left = max(left, detail.figures.kpis.to_deliver)
    return left


def stop_text(name: str, left: int) -> str:
    """ "Stop sending *Spring sale*? The 11,174 recipients not yet sent will never be sent."."""
    who = "recipient" if left == 1 else "recipients"
    template = f"Stop sending *{{}}*? The {left:,} {who} not yet sent will never be sent."
    return fit(template, name, MAX_CONFIRM_TEXT)


def steering_buttons(
    detail: DeliveryDetail, progress: SendingProgress | None, follows: str | None = None
) -> list[dict[str, object]]:
    """Compute stats always; Pause or Resume by state; Stop send until the send is over.

    Compute stats of a recurring delivery names the execution its message shows, so a
    click on an older occurrence's message updates that message, not only the latest.
    """
    value = ids.button_value(detail.ref)
    shown = shown_execution(detail, follows)
    stats = ids.button_value(detail.ref, execution=shown.key) if shown else value
    elements = [button("Compute stats", ids.COMPUTE_STATS, stats)]
    if detail.state is DeliveryState.IN_PROGRESS:
        elements.append(button("Pause", ids.PAUSE, value))
    elif detail.state is DeliveryState.PAUSED:
        elements.append(button("Resume", ids.RESUME, value, style="primary"))
    if detail.state in STOPPABLE_STATES:
        dialog = confirm_dialog(
            "Stop send", stop_text(detail.name, remaining(detail, progress)), style="danger"
        )
        elements.append(button("Stop send", ids.STOP, value, style="danger", confirm=dialog))
    return elements


def who(actor: str) -> str:
    """A Slack user id as a mention; "cli" or "system" as written."""
    return f"<@{actor}>" if USER_ID.match(actor) else escape(actor)


def status_line(detail: DeliveryDetail, now: datetime | None) -> str:
    """ "State: *in-progress* · confirmed … by @x · started … · updated …".

    Dates are `<!date>` tokens: each reader sees them in their own time zone.
    """
    parts = [f"State: *{escape(detail.state.value)}*"]
    if detail.confirmed_at is not None:
        by = detail.confirmed_by
        parts.append(
            f"confirmed {slack_date(detail.confirmed_at)}" + (f" by {who(by)}" if by else "")
        )
    schedule = detail.schedule
    if detail.state is DeliveryState.START_PENDING and schedule.mode is ScheduleKind.AT:
        parts.append(f"starts at {local_time(schedule.at, schedule.timezone)}")
    first = detail.waves[0] if detail.waves else None
    if detail.state is DeliveryState.START_PENDING and first is not None:
        parts.append(f"first wave {slack_date(first.at)}")
    for label, at in (("started", detail.started_at), ("ended", detail.finished_at)):
        if at is not None:
            parts.append(f"{label} {slack_date(at)}")
    if now is not None:
        parts.append(f"updated {slack_date(now)}")
    return " · ".join(parts)


WAVES_SHOWN = 8  # wave lines in the message; the rest are counted in one line


def waves_text(detail: DeliveryDetail, now: datetime | None = None) -> str | None:
    """A recipient-local send's waves: a summary, then one line per wave.

    "*Waves* — 2 of 5 sent · next wave <!date…> (09:00 America/New_York)", then
    "✓ 09:00 Asia/Tokyo · <!date…> · 1,200 sent" or "◷ … · 3,400 waiting". The zones
    come from the profiles, so they are escaped like any text from outside.
    """
    waves = detail.waves
    if not waves:
        return None
    done = sum(1 for w in waves if w.waiting == 0 and w.sent > 0)
    head = f"*Waves* — {done} of {len(waves)} sent"
    upcoming = detail.next_wave
    cancelled = sum(w.cancelled for w in waves)
    if upcoming is not None and detail.state is not DeliveryState.STOPPED:
        head += f" · next wave {slack_date(upcoming.at)} ({escape(_wall(upcoming))})"
    elif cancelled:
        head += f" · {plural(cancelled, 'recipient')} not sent"
    lines = [head]
    for w in waves[:WAVES_SHOWN]:
        if w.waiting and detail.state is DeliveryState.PAUSED and now and w.at <= now:
            mark, what = "⏸", f"{w.waiting:,} waiting (paused)"
        elif w.waiting:
            mark, what = "◷", f"{w.waiting:,} waiting"
        elif w.cancelled and not w.sent:
            mark, what = "✕", f"{w.cancelled:,} not sent (stopped)"
        else:
            mark, what = "✓", f"{w.sent:,} sent"
            if w.cancelled:
                what += f", {w.cancelled:,} not sent"
        lines.append(f"{mark} {escape(_wall(w))} · {slack_date(w.at)} · {what}")
    if len(waves) > WAVES_SHOWN:
        rest = waves[WAVES_SHOWN:]
        waiting = sum(w.waiting for w in rest)
        lines.append(f"… and {plural(len(rest), 'more wave')} ({waiting:,} recipients waiting)")
    return "\n".join(lines)


def _wall(w: WaveView) -> str:
    """ "09:00 Europe/Paris, Europe/Berlin": the wave's wall clock in its main zone."""
    local = w.at.astimezone(zone(w.zones[0] if w.zones else None))
    return f"{local:%H:%M} {w.wave.zones_text()}"


def failure_line(detail: DeliveryDetail) -> str | None:
    """ "*Sending failed:* <why>" for an execution whose messages could not be built."""
    current = detail.execution
    if current is None or current.state is not ExecutionState.FAILED:
        return None
    why = current.failure_reason or "no reason was recorded"
    return f"*Sending failed:* {truncate(escape(why), 2500)}\nFix the delivery and send it again."


def deployment_message(view: DeploymentView) -> Message:
    """`{"text", "blocks"}` for chat.postMessage / chat.update / a slash command reply."""
    detail, progress = view.detail, view.progress
    blocks: list[Block] = [header(f"Deployment — {detail.name}")]
    if is_relaying(detail.state, progress):
        assert progress is not None
        blocks.append(section(progress_line(progress), block_id=ids.DEPLOYMENT_PROGRESS_BLOCK))
    waves = waves_text(detail, view.now)
    if waves:
        blocks.append(section(truncate(waves, 2900), block_id=ids.DEPLOYMENT_WAVES_BLOCK))
    failure = failure_line(detail)
    if failure:
        blocks.append(section(failure))
    title, source = kpi_source(detail, view.follows)
    k = source.kpis
    blocks += field_sections(kpi_pairs(k), block_id=ids.DEPLOYMENT_KPIS_BLOCK, text=title)
    buttons = steering_buttons(detail, progress, view.follows)
    blocks.append(actions(buttons, ids.DEPLOYMENT_ACTIONS_BLOCK))
    blocks.append(context(status_line(detail, view.now)))
    summary = f"Deployment — {escape(detail.name)}: {detail.state.value}, sent {count(k.sent)} of "
    summary += plural(k.to_deliver, "recipient")
    return {"text": fallback(summary), "blocks": blocks}
