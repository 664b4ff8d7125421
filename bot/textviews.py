"""Plain-text views for the terminal, built from the same dicts as `--json`."""

from __future__ import annotations

from typing import Any

from bot.domain.kpi import DASH, format_pct


def error_text(err: dict[str, Any]) -> str:
    """A critical preparation error as a sentence: who, where, why."""
    if err.get("omitted"):
        return str(err["reason"])
    where = f"{err['part']} line {err['line']}" if err.get("line") else str(err.get("part") or "")
    who = f"{err['email']}: " if err.get("email") else ""
    return f"{who}{where}: {err['reason']}" if where else f"{who}{err['reason']}"


def warning_text(w: dict[str, Any]) -> str:
    emails = ", ".join(w.get("emails", []))
    more = f" (e.g. {emails})" if emails else ""
    return (
        f"{w.get('kind', 'warning')} {w.get('name', '')!r} for {w.get('count', 0)} profile(s){more}"
    )


def _schedule_text(schedule: dict[str, Any], recurrence: dict[str, Any] | None) -> str:
    if recurrence:
        text = f"recurring, cron {recurrence['cron']} ({recurrence['timezone']})"
        text += f", aggregation {recurrence['aggregation']}"
        if recurrence["request_confirmation"]:
            text += f", needs {recurrence['approvals_required']} approval(s) per occurrence"
            if recurrence.get("approval_expiry"):
                text += f" within {recurrence['approval_expiry']}"
        return text
    if schedule["mode"] == "at":
        return f"at {schedule['at']} ({schedule['timezone']})"
    return "as soon as confirmed"


def kpi_lines(block: dict[str, Any]) -> list[str]:
    k = block["kpis"]
    return [
        f"  To deliver          {k['to_deliver']}",
        f"  Sent                {k['sent']}",
        f"  Delivered           {format_pct(k['delivered_pct'])}",
        f"  Bounces + errors    {format_pct(k['bounces_errors_pct'])}",
        f"  Open rate           {format_pct(k['open_rate'])}",
        f"  Click-through rate  {format_pct(k['click_through_rate'])}",
    ]


def delivery_text(d: dict[str, Any]) -> str:
    prep = d["preparation"]
    lines = [
        f"{d['name']} ({d['ref']})",
        f"  state       {d['state']}",
        f"  audience    {d['audience']}",
        f"  from        {d['from']}",
        f"  subject     {d['subject']}",
        f"  schedule    {_schedule_text(d['schedule'], d['recurrence'])}",
        f"  validity    {d['validity']}",
        f"  EFS         {'on' if d['efs'] else 'off'}",
        f"  channel     {d['slack_channel'] or DASH}",
        "",
    ]
    if prep["prepared_at"] is None:
        lines.append("Preparation: not prepared yet (`python -m bot deliveries prepare REF`)")
    else:
        stale = "" if prep["current"] else " — out of date: prepare again before confirming"
        lines.append(f"Preparation: {prep['prepared_at']}{stale}")
        lines.append(
            f"  targeted {prep['targeted']}, excluded {prep['excluded']}, "
            f"to deliver {prep['to_deliver']}"
        )
        for reason, count in prep["exclusions"].items():
            lines.append(f"    {reason}: {count}")
        for err in prep["errors"]:
            lines.append(f"  error: {error_text(err)}")
        for warning in prep["warnings"]:
            lines.append(f"  warning: {warning_text(warning)}")
    current = d.get("execution")
    title = "Deployment:"
    if d["recurrence"]:
        title = (
            f"Deployment (execution {current['key']}):"
            if current
            else "Deployment: no occurrence sent yet"
        )
    lines += ["", title, *kpi_lines(d)]
    for e in d["executions"]:
        lines += ["", f"Execution {e['key']} ({e['state']}):", *kpi_lines(e)]
    return "\n".join(lines)
