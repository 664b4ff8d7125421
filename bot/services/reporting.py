"""What a person asks to see of deliveries: the list, and one delivery in full.

Both return plain dicts with a stable shape: the CLI prints them as JSON (`--json`)
or as text, and the Slack card reads the same fields. README documents the shape.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bot.context import Context
from bot.domain.kpi import Counters, kpis
from bot.domain.schedule import format_duration
from bot.services.errors import NotFound
from bot.services.stats import executions_of, live_counters
from bot.store.models import Delivery, ExclusionLog, Execution, SendingLog

SCHEMA_VERSION = 1


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


def get_delivery(session: Session, ref: str) -> Delivery:
    delivery = session.scalar(select(Delivery).where(Delivery.ref == ref))
    if delivery is None:
        raise NotFound(
            f"no delivery with ref {ref!r}; `python -m bot deliveries list` shows the refs"
        )
    return delivery


def is_preparation_current(d: Delivery) -> bool:
    """A preparation counts only for the content, schedule and audience it was made for."""
    return (
        d.prepared_at is not None
        and d.prepared_hash == d.definition_hash
        and d.prepared_audience_version == d.audience.version
    )


def _schedule(d: Delivery) -> dict[str, Any]:
    if d.recurrence_cron:
        return {"mode": "recurring", "at": None, "timezone": d.recurrence_timezone}
    return {"mode": d.schedule_mode, "at": _iso(d.scheduled_at), "timezone": d.schedule_timezone}


def _recurrence(d: Delivery) -> dict[str, Any] | None:
    if not d.recurrence_cron:
        return None
    return {
        "cron": d.recurrence_cron,
        "timezone": d.recurrence_timezone,
        "aggregation": d.aggregation,
        "request_confirmation": d.request_confirmation,
        "approvals_required": d.approvals_required,
        "approval_expiry": (
            format_duration(timedelta(seconds=d.approval_expiry_seconds))
            if d.approval_expiry_seconds
            else None
        ),
    }


def _counters_block(c: Counters) -> dict[str, Any]:
    return {
        "kpis": kpis(c).as_dict(),
        "logs": {
            "queued": c.queued,
            "pending": c.pending,
            "sent": c.sent,
            "failed": c.failed,
            "ignored": c.ignored,
        },
        "unique_opens": c.unique_opens,
        "unique_clicks": c.unique_clicks,
    }


def _exclusions(session: Session, execution_id: int) -> dict[str, int]:
    rows = session.execute(
        select(ExclusionLog.reason, func.count())
        .where(ExclusionLog.execution_id == execution_id)
        .group_by(ExclusionLog.reason)
        .order_by(ExclusionLog.reason)
    ).all()
    return {reason: count for reason, count in rows}


def _execution(session: Session, e: Execution) -> dict[str, Any]:
    return {
        "key": e.key,
        "state": e.state,
        "occurrence_at": _iso(e.occurrence_at),
        "started_at": _iso(e.started_at),
        "validity_ends_at": _iso(e.validity_ends_at),
        "exclusions": _exclusions(session, e.id),
        **_counters_block(live_counters(session, e.id)),
    }


def summary(d: Delivery, counters: Counters) -> dict[str, Any]:
    k = kpis(counters)
    return {
        "ref": d.ref,
        "name": d.name,
        "state": d.state,
        "audience": d.audience.name,
        "schedule": _schedule(d),
        "to_deliver": d.to_deliver,
        "sent": k.sent,
        "prepared": is_preparation_current(d),
    }


def list_deliveries(ctx: Context) -> list[dict[str, Any]]:
    with ctx.sessions() as s:
        out = []
        for d in s.scalars(select(Delivery).order_by(Delivery.ref)):
            total = sum((live_counters(s, e.id) for e in executions_of(s, d.id)), Counters())
            out.append(summary(d, total))
        return out


def current_execution(d: Delivery, executions: list[Execution]) -> Execution | None:
    """The execution a person is following: the only one of a one-off delivery; for a
    recurring one the occurrence that started sending last (None before the first)."""
    if not d.recurrence_cron:
        return next((e for e in executions if e.key == "main"), None)
    started = [e for e in executions if e.key != "main" and e.started_at is not None]
    return max(started, key=lambda e: (e.started_at, e.id)) if started else None


def delivery_detail(ctx: Context, ref: str) -> dict[str, Any]:
    """Everything `deliveries show` prints: state, definition, preparation and KPIs.

    The top-level KPIs are those of the current execution (`current_execution`), named
    under `execution`; `executions` lists every occurrence of a recurring delivery.
    """
    with ctx.sessions() as s:
        d = get_delivery(s, ref)
        executions = executions_of(s, d.id)
        main = next((e for e in executions if e.key == "main"), None)
        current = current_execution(d, executions)
        counters = live_counters(s, current.id) if current else Counters()
        return {
            "schema": SCHEMA_VERSION,
            "ref": d.ref,
            "name": d.name,
            "state": d.state,
            "audience": d.audience.name,
            "from": d.sender,
            "reply_to": d.reply_to,
            "subject": d.subject,
            "schedule": _schedule(d),
            "recurrence": _recurrence(d),
            "validity": format_duration(timedelta(seconds=d.validity_seconds)),
            "efs": d.efs,
            "slack_channel": d.slack_channel,
            "preparation": {
                "prepared_at": _iso(d.prepared_at),
                "current": is_preparation_current(d),
                "targeted": d.targeted,
                "excluded": d.excluded,
                "to_deliver": d.to_deliver,
                "exclusions": _exclusions(s, main.id) if main else {},
                "errors": d.preparation_errors or [],
                "warnings": d.preparation_warnings or [],
            },
            **_counters_block(counters),
            "execution": (
                {
                    "key": current.key,
                    "state": current.state,
                    "occurrence_at": _iso(current.occurrence_at),
                }
                if current is not None
                else None
            ),
            "confirmed_by": d.confirmed_by,
            "confirmed_at": _iso(d.confirmed_at),
            "started_at": _iso(d.started_at),
            "finished_at": _iso(d.finished_at),
            "executions": [_execution(s, e) for e in executions if e.key != "main"],
        }


RATE_WINDOW = timedelta(seconds=15)  # short: a range of the relayed index, not a scan


def sending_progress(ctx: Context, ref: str) -> dict[str, Any]:
    """Relayed / to deliver and the current rate, readable from any process at any time.

    For a recurring delivery, the figures of the occurrence being sent.

    The rate counts the messages relayed in the last 15 seconds, from the logs, so the
    Deployment message shows it whichever process is sending.
    """
    now = ctx.clock.now()
    with ctx.sessions() as s:
        d = get_delivery(s, ref)
        executions = executions_of(s, d.id)
        if d.recurrence_cron:
            current = current_execution(d, executions)
            executions = [current] if current is not None else []
        total = sum((live_counters(s, e.id) for e in executions), Counters())
        recent = s.scalar(
            select(func.count())
            .select_from(SendingLog)
            .where(
                SendingLog.execution_id.in_([e.id for e in executions]),
                SendingLog.relayed_at > now - RATE_WINDOW,
            )
        )
    return {
        "ref": d.ref,
        "state": d.state,
        "relayed": total.relayed,
        "to_deliver": total.to_deliver,
        "queued": total.queued,
        "rate_per_s": round((recent or 0) / RATE_WINDOW.total_seconds(), 1),
    }


def compute_delivery_stats(ctx: Context, ref: str) -> dict[str, Any]:
    """Recount every execution of `ref` from its logs; return the fresh detail."""
    from bot.services.stats import compute_stats

    with ctx.sessions.begin() as s:
        d = get_delivery(s, ref)
        for e in executions_of(s, d.id):
            compute_stats(s, e.id, ctx.clock.now())
    return delivery_detail(ctx, ref)


def marketing_history(ctx: Context, email: str, limit: int = 50) -> list[dict[str, Any]]:
    """A profile's messages, newest first: date, delivery, status, failure, opens, clicks."""
    from bot.store.models import Profile, TrackingLog

    key = email.strip().lower()
    with ctx.sessions() as s:
        profile_ids = list(s.scalars(select(Profile.id).where(Profile.email_key == key)))
        if not profile_ids:
            raise NotFound(f"no profile with the address {email!r}")
        opens = (
            select(func.count())
            .where(TrackingLog.sending_log_id == SendingLog.id, TrackingLog.kind == "open")
            .scalar_subquery()
        )
        clicks = (
            select(func.count())
            .where(TrackingLog.sending_log_id == SendingLog.id, TrackingLog.kind == "click")
            .scalar_subquery()
        )
        rows = s.execute(
            select(
                SendingLog.email,
                SendingLog.status,
                SendingLog.failure_type,
                SendingLog.failure_reason,
                SendingLog.relayed_at,
                SendingLog.created_at,
                Delivery.ref,
                Delivery.name,
                Execution.key,
                opens,
                clicks,
            )
            .join(Execution, Execution.id == SendingLog.execution_id)
            .join(Delivery, Delivery.id == Execution.delivery_id)
            .where(SendingLog.profile_id.in_(profile_ids))
            .order_by(SendingLog.created_at.desc(), SendingLog.id.desc())
            .limit(limit)
        ).all()
    return [
        {
            "date": _iso(r.relayed_at or r.created_at),
            "email": r.email,
            "ref": r.ref,
            "name": r.name,
            "execution": r.key,
            "status": r.status,
            "failure_type": r.failure_type,
            "failure_reason": r.failure_reason,
            "opens": r[9],
            "clicks": r[10],
        }
        for r in rows
    ]
