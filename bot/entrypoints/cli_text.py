"""Plain-text views for the terminal, from the same typed views as `--json`."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from bot.domain.kpi import DASH, Kpis, format_pct
from bot.domain.schedule import ScheduleKind
from bot.domain.times import utc_minute
from bot.domain.waves import describe_local, span_text
from bot.services.deliveries.views import DeliveryDetail, Recurrence, Schedule


def _schedule_text(schedule: Schedule, recurrence: Recurrence | None) -> str:
    if recurrence:
        text = f"recurring, cron {recurrence.cron} ({recurrence.timezone})"
        text += f", aggregation {recurrence.aggregation.value}"
        if recurrence.request_confirmation:
            text += f", needs {recurrence.approvals_required} approval(s) per occurrence"
            if recurrence.approval_expiry:
                text += f" within {recurrence.approval_expiry}"
        return text
    if schedule.mode is ScheduleKind.AT:
        if schedule.at is None:
            return f"at {DASH}"
        if not schedule.timezone:
            return f"at {schedule.at.isoformat()}"
        local = schedule.at.astimezone(ZoneInfo(schedule.timezone))  # the zone it names
        return f"at {local.isoformat()} ({schedule.timezone})"
    if schedule.mode is ScheduleKind.RECIPIENT_LOCAL:
        return f"at {describe_local(schedule.local, schedule.timezone)}"
    return "as soon as confirmed"


def _wave_lines(d: DeliveryDetail) -> list[str]:
    """One line per wave of a recipient-local send, in UTC (the terminal has no zone)."""
    if not d.waves:
        return []
    lines = ["", f"Waves: {span_text([w.wave for w in d.waves])}"]
    for w in d.waves:
        state = f"{w.waiting} waiting" if w.waiting else f"{w.sent} sent"
        if w.cancelled:
            state += f", {w.cancelled} not sent"
        lines.append(f"  {utc_minute(w.at)}  {w.recipients:>7}  {state:<24} {w.wave.zones_text()}")
    return lines


def kpi_lines(k: Kpis) -> list[str]:
    return [
        f"  To deliver          {k.to_deliver}",
        f"  Sent                {k.sent}",
        f"  Delivered           {format_pct(k.delivered_pct)}",
        f"  Bounces + errors    {format_pct(k.bounces_errors_pct)}",
        f"  Open rate           {format_pct(k.open_rate)}",
        f"  Click-through rate  {format_pct(k.click_through_rate)}",
    ]


def _preparation_lines(d: DeliveryDetail) -> list[str]:
    prep = d.preparation
    if prep.prepared_at is None:
        return ["Preparation: not prepared yet (`python -m bot deliveries prepare REF`)"]
    stale = "" if prep.current else " — out of date: prepare again before confirming"
    lines = [
        f"Preparation: {prep.prepared_at.isoformat()}{stale}",
        f"  targeted {prep.targeted}, excluded {prep.excluded}, to deliver {prep.to_deliver}",
    ]
    lines += [f"    {reason.value}: {count}" for reason, count in prep.exclusions.items()]
    lines += [f"  error: {e.describe()}" for e in prep.errors]
    lines += [f"  warning: {w.describe()}" for w in prep.warnings]
    return lines


def delivery_text(d: DeliveryDetail) -> str:
    lines = [
        f"{d.name} ({d.ref})",
        f"  state       {d.state.value}",
        f"  audience    {d.audience}",
        f"  from        {d.sender}",
        f"  subject     {d.subject}",
        f"  schedule    {_schedule_text(d.schedule, d.recurrence)}",
        f"  validity    {d.validity}",
        f"  EFS         {'on' if d.efs else 'off'}",
        f"  channel     {d.slack_channel or DASH}",
        "",
        *_preparation_lines(d),
        *_wave_lines(d),
    ]
    title = "Deployment:"
    if d.recurrence:
        current = d.execution
        title = (
            f"Deployment (execution {current.key}):"
            if current
            else "Deployment: no occurrence sent yet"
        )
    lines += ["", title, *kpi_lines(d.figures.kpis)]
    for e in d.executions:
        lines += ["", f"Execution {e.key} ({e.state.value}):", *kpi_lines(e.figures.kpis)]
    return "\n".join(lines)
