"""What a person asks to see of deliveries, as typed views, and the use cases that read them.

The CLI prints these views as text or as stable JSON (`to_json`, whose shapes README
documents: fields are only ever added), the Slack builders draw them, and the
Deployment message follows them. Every read a person asks for is a use case that
checks the asker's permission; the `read_*` functions are the same reads for
Greenlight's own use (the Deployment message, the approval requests), with no one to
check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from bot.context import Context, Session
from bot.domain.errors import DomainError, NotFound
from bot.domain.exclusions import ExclusionReason
from bot.domain.executions import MAIN_KEY, ExecutionState
from bot.domain.failures import FailureReason
from bot.domain.kpi import Counters, Kpis, kpis
from bot.domain.lifecycle import DeliveryState
from bot.domain.logs import FailureType, LogStatus
from bot.domain.preparation import PreparationError, PreparationWarning
from bot.domain.readiness import is_pickable, not_ready_reason
from bot.domain.roles import Actor, Permission
from bot.domain.schedule import Aggregation, ScheduleKind, format_duration
from bot.domain.waves import Wave
from bot.services.deliveries.preview import preview_link, render_for
from bot.store import counters, deliveries, executions, logs, preparation, profiles, reports
from bot.store.models import Delivery, Execution

SCHEMA_VERSION = 1
RATE_WINDOW = timedelta(seconds=15)  # short: a range of the relayed index, not a scan
HISTORY_LIMIT = 50


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at else None


# --- the views ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """When a delivery leaves: on confirm, at a contact date, or on its recurrence."""

    mode: ScheduleKind
    at: datetime | None = None
    timezone: str | None = None
    # recipient-local: the wall clock each recipient gets it at ("2026-12-05T09:00");
    # `at` is then that moment in `timezone`, the zone of profiles without one.
    local: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "at": _iso(self.at),
            "timezone": self.timezone,
            "local": self.local,
        }


@dataclass(frozen=True)
class WaveView:
    """One wave of a recipient-local send: when, where, how many, how many still wait
    and how many never will be sent (the send was stopped first)."""

    at: datetime
    zones: tuple[str, ...]
    recipients: int
    waiting: int
    cancelled: int = 0

    @property
    def sent(self) -> int:
        return max(self.recipients - self.waiting - self.cancelled, 0)

    @property
    def wave(self) -> Wave:
        return Wave(self.at, self.zones, self.recipients)

    def to_json(self) -> dict[str, Any]:
        return {
            "at": _iso(self.at),
            "zones": list(self.zones),
            "recipients": self.recipients,
            "waiting": self.waiting,
            "cancelled": self.cancelled,
        }


@dataclass(frozen=True)
class Recurrence:
    cron: str
    timezone: str
    aggregation: Aggregation
    request_confirmation: bool
    approvals_required: int
    approval_expiry: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "cron": self.cron,
            "timezone": self.timezone,
            "aggregation": self.aggregation.value,
            "request_confirmation": self.request_confirmation,
            "approvals_required": self.approvals_required,
            "approval_expiry": self.approval_expiry,
        }


@dataclass(frozen=True)
class PreparationView:
    prepared_at: datetime | None
    current: bool
    targeted: int
    excluded: int
    to_deliver: int
    exclusions: Mapping[ExclusionReason, int]
    errors: Sequence[PreparationError]
    warnings: Sequence[PreparationWarning]

    @property
    def prepared(self) -> bool:
        return self.prepared_at is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "prepared_at": _iso(self.prepared_at),
            "current": self.current,
            "targeted": self.targeted,
            "excluded": self.excluded,
            "to_deliver": self.to_deliver,
            "exclusions": {reason.value: n for reason, n in self.exclusions.items()},
            "errors": [e.to_json() for e in self.errors],
            "warnings": [w.to_json() for w in self.warnings],
        }


@dataclass(frozen=True)
class Figures:
    """The KPIs of one execution (or several together), with the log counts behind them."""

    counters: Counters = field(default_factory=Counters)

    @property
    def kpis(self) -> Kpis:
        return kpis(self.counters)

    def to_json(self) -> dict[str, Any]:
        c = self.counters
        return {
            "kpis": self.kpis.as_dict(),
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


@dataclass(frozen=True)
class ExecutionView:
    """One run of a recurring delivery (an occurrence, or an aggregation period)."""

    key: str
    state: ExecutionState
    occurrence_at: datetime | None
    started_at: datetime | None
    validity_ends_at: datetime | None
    exclusions: Mapping[ExclusionReason, int]
    figures: Figures
    failure_reason: str | None = None  # why sending failed (state failed)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "state": self.state.value,
            "failure_reason": self.failure_reason,
            "occurrence_at": _iso(self.occurrence_at),
            "started_at": _iso(self.started_at),
            "validity_ends_at": _iso(self.validity_ends_at),
            "exclusions": {reason.value: n for reason, n in self.exclusions.items()},
            **self.figures.to_json(),
        }


@dataclass(frozen=True)
class DeliveryDetail:
    """Everything `deliveries show` prints: state, definition, preparation and KPIs.

    `figures` are those of `execution`, the execution a person is following: the only
    one of a one-off delivery, the occurrence that started sending last of a recurring
    one (None before the first); `executions` lists a recurring delivery's runs.
    """

    ref: str
    name: str
    state: DeliveryState
    audience: str
    sender: str
    reply_to: str | None
    subject: str
    schedule: Schedule
    recurrence: Recurrence | None
    validity: str
    efs: bool
    slack_channel: str | None
    preparation: PreparationView
    figures: Figures
    execution: ExecutionView | None
    confirmed_by: str | None
    confirmed_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    executions: Sequence[ExecutionView]
    # A recipient-local send's waves as prepared, with what each still has queued.
    waves: Sequence[WaveView] = ()

    @property
    def next_wave(self) -> WaveView | None:
        """The earliest wave with recipients still waiting (None: none, or no waves)."""
        return next((w for w in self.waves if w.waiting > 0), None)

    @property
    def timezone(self) -> str | None:
        """The zone the delivery's times are read in."""
        return self.recurrence.timezone if self.recurrence else self.schedule.timezone

    def to_json(self) -> dict[str, Any]:
        current = self.execution
        return {
            "schema": SCHEMA_VERSION,
            "ref": self.ref,
            "name": self.name,
            "state": self.state.value,
            "audience": self.audience,
            "from": self.sender,
            "reply_to": self.reply_to,
            "subject": self.subject,
            "schedule": self.schedule.to_json(),
            "recurrence": self.recurrence.to_json() if self.recurrence else None,
            "validity": self.validity,
            "efs": self.efs,
            "slack_channel": self.slack_channel,
            "preparation": self.preparation.to_json(),
            **self.figures.to_json(),
            "execution": (
                {
                    "key": current.key,
                    "state": current.state.value,
                    "occurrence_at": _iso(current.occurrence_at),
                    "failure_reason": current.failure_reason,
                }
                if current is not None
                else None
            ),
            "confirmed_by": self.confirmed_by,
            "confirmed_at": _iso(self.confirmed_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "executions": [e.to_json() for e in self.executions],
            "waves": [w.to_json() for w in self.waves],
        }


@dataclass(frozen=True)
class DeliverySummary:
    """One line of `deliveries list` and `/campaign list`."""

    ref: str
    name: str
    state: DeliveryState
    audience: str
    schedule: Schedule
    to_deliver: int
    sent: int
    prepared: bool  # prepared for its current content, schedule and audience

    @property
    def pickable(self) -> bool:
        return is_pickable(self.state, self.prepared)

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "name": self.name,
            "state": self.state.value,
            "audience": self.audience,
            "schedule": self.schedule.to_json(),
            "to_deliver": self.to_deliver,
            "sent": self.sent,
            "prepared": self.prepared,
        }


@dataclass(frozen=True)
class SendingProgress:
    """Relayed / to deliver and the current rate, of the execution being sent."""

    ref: str
    state: DeliveryState
    relayed: int
    to_deliver: int
    queued: int
    rate_per_s: float


@dataclass(frozen=True)
class DeploymentView:
    """What the Deployment message shows: the delivery, its progress, the moment."""

    detail: DeliveryDetail
    progress: SendingProgress | None
    now: datetime | None = None
    # The execution an older occurrence's message shows (its own Deployment message,
    # kept when the next occurrence got one); None: the execution the delivery follows.
    follows: str | None = None

    @property
    def shown_key(self) -> str:
        """What a reader of the message would miss if it changed: the delivery's state and
        that of the execution it follows. The due work posts again when it differs."""
        return shown_key(self.detail.state, self.detail.execution)


@dataclass(frozen=True)
class Card:
    """The `/confirm-send` card: the delivery, and why it cannot be confirmed (if so)."""

    detail: DeliveryDetail
    not_ready: str | None
    # The subject as one recipient gets it (and whose), beside the template the card
    # also shows; None when the audience is empty or the template does not render.
    sample_subject: str | None = None
    sample_for: str | None = None
    # The start of the text part is the card's business; the whole of it, with the HTML,
    # is on the **Preview** page (`preview_url`, None without TRACKING_SECRET).
    sample_text: str | None = None
    preview_url: str | None = None


@dataclass(frozen=True)
class HistoryEntry:
    """One message a profile received: `/campaign history`."""

    date: datetime
    email: str
    ref: str
    name: str
    execution: str
    status: LogStatus
    failure_type: FailureType | None
    failure_reason: FailureReason | None
    opens: int
    clicks: int


# --- reads ---------------------------------------------------------------------------------


def _schedule(d: Delivery) -> Schedule:
    if d.recurrence_cron:
        return Schedule(ScheduleKind.RECURRING, None, d.recurrence_timezone)
    return Schedule(
        ScheduleKind(d.schedule_mode.value), d.scheduled_at, d.schedule_timezone, d.schedule_local
    )


def _waves(session: Session, d: Delivery, main: Execution | None) -> list[WaveView]:
    if not d.waves:
        return []
    counts = logs.by_wave(session, main.id) if main is not None else {}
    return [
        WaveView(w.at, w.zones, w.recipients, *counts.get(w.at, (0, 0)))
        for w in (Wave.from_json(data) for data in d.waves)
    ]


def _recurrence(d: Delivery) -> Recurrence | None:
    if not d.recurrence_cron:
        return None
    expiry = d.approval_expiry_seconds
    return Recurrence(
        cron=d.recurrence_cron,
        timezone=d.recurrence_timezone or "UTC",
        aggregation=d.aggregation,
        request_confirmation=d.request_confirmation,
        approvals_required=d.approvals_required,
        approval_expiry=format_duration(timedelta(seconds=expiry)) if expiry else None,
    )


def _execution_view(session: Session, e: Execution) -> ExecutionView:
    return ExecutionView(
        key=e.key,
        state=e.state,
        occurrence_at=e.occurrence_at,
        started_at=e.started_at,
        validity_ends_at=e.validity_ends_at,
        exclusions=preparation.exclusion_counts(session, e.id),
        figures=Figures(counters.live_counters(session, e.id)),
        failure_reason=e.failure_reason,
    )


def shown_key(state: DeliveryState, execution: ExecutionView | Execution | None) -> str:
    if execution is None:
        return state.value
    return f"{state.value}|{execution.key}:{execution.state.value}"


def current_execution(d: Delivery, runs: Sequence[Execution]) -> Execution | None:
    """The execution a person is following: the only one of a one-off delivery; for a
    recurring one the occurrence that started sending last (None before the first)."""
    if not d.recurrence_cron:
        return next((e for e in runs if e.key == MAIN_KEY), None)
    started = [e for e in runs if e.key != MAIN_KEY and e.started_at is not None]
    return max(started, key=lambda e: (e.started_at, e.id)) if started else None


def read_detail(session: Session, ref: str) -> DeliveryDetail:
    d = deliveries.get(session, ref)
    runs = executions.of_delivery(session, d.id)
    main = next((e for e in runs if e.key == MAIN_KEY), None)
    current = current_execution(d, runs)
    prep = deliveries.preparation(d)
    return DeliveryDetail(
        ref=d.ref,
        name=d.name,
        state=d.state,
        audience=d.audience.name,
        sender=d.sender,
        reply_to=d.reply_to,
        subject=d.subject,
        schedule=_schedule(d),
        recurrence=_recurrence(d),
        validity=format_duration(timedelta(seconds=d.validity_seconds)),
        efs=d.efs,
        slack_channel=d.slack_channel,
        preparation=PreparationView(
            prepared_at=d.prepared_at,
            current=prep.current,
            targeted=d.targeted,
            excluded=d.excluded,
            to_deliver=d.to_deliver,
            exclusions=preparation.exclusion_counts(session, main.id) if main else {},
            errors=[PreparationError.from_json(e) for e in d.preparation_errors or []],
            warnings=[PreparationWarning.from_json(w) for w in d.preparation_warnings or []],
        ),
        figures=Figures(counters.live_counters(session, current.id) if current else Counters()),
        execution=_execution_view(session, current) if current else None,
        confirmed_by=d.confirmed_by,
        confirmed_at=d.confirmed_at,
        started_at=d.started_at,
        finished_at=d.finished_at,
        executions=[_execution_view(session, e) for e in runs if e.key != MAIN_KEY],
        waves=_waves(session, d, main),
    )


def read_progress(session: Session, ref: str, now: datetime) -> SendingProgress:
    """The figures of the send in progress, readable from any process at any time.

    For a recurring delivery, those of the occurrence being sent. The rate counts the
    messages relayed in the last 15 seconds, from the logs, so the Deployment message
    shows it whichever process is sending.
    """
    d = deliveries.get(session, ref)
    runs = executions.of_delivery(session, d.id)
    if d.recurrence_cron:
        current = current_execution(d, runs)
        runs = [current] if current is not None else []
    total = sum((counters.live_counters(session, e.id) for e in runs), Counters())
    recent = logs.relayed_since(session, [e.id for e in runs], now - RATE_WINDOW)
    return SendingProgress(
        ref=d.ref,
        state=d.state,
        relayed=total.relayed,
        to_deliver=total.to_deliver,
        queued=total.queued,
        rate_per_s=round(recent / RATE_WINDOW.total_seconds(), 1),
    )


def read_deployment(ctx: Context, ref: str, execution_key: str | None = None) -> DeploymentView:
    """The Deployment message of `ref`; of its execution `execution_key` when that is an
    older occurrence's message, which shows that execution's figures and no progress."""
    now = ctx.clock.now()
    with ctx.sessions() as s:
        detail = read_detail(s, ref)
        current = detail.execution.key if detail.execution else None
        older = next(
            (e for e in detail.executions if e.key == execution_key and e.key != current), None
        )
        if older is None:
            return DeploymentView(detail, read_progress(s, ref, now), now)
        anchored = replace(detail, execution=older, figures=older.figures)
        return DeploymentView(anchored, None, now, follows=older.key)


def channels(ctx: Context) -> list[str]:
    """The Slack channels deliveries post their Deployment messages in, each once."""
    with ctx.sessions() as s:
        found = (d.slack_channel for d in deliveries.every(s))
        return sorted({c for c in found if c})


def read_summaries(session: Session) -> list[DeliverySummary]:
    out = []
    for d in deliveries.every(session):
        runs = executions.of_delivery(session, d.id)
        total = sum((counters.live_counters(session, e.id) for e in runs), Counters())
        out.append(
            DeliverySummary(
                ref=d.ref,
                name=d.name,
                state=d.state,
                audience=d.audience.name,
                schedule=_schedule(d),
                to_deliver=d.to_deliver,
                sent=kpis(total).sent,
                prepared=deliveries.preparation(d).current,
            )
        )
    return out


# --- use cases -----------------------------------------------------------------------------


def list_deliveries(ctx: Context, actor: Actor) -> list[DeliverySummary]:
    actor.require(Permission.VIEW_DELIVERIES)
    with ctx.sessions() as s:
        return read_summaries(s)


def delivery_detail(ctx: Context, actor: Actor, ref: str) -> DeliveryDetail:
    actor.require(Permission.VIEW_DELIVERIES)
    with ctx.sessions() as s:
        return read_detail(s, ref)


def deployment(ctx: Context, actor: Actor, ref: str) -> DeploymentView:
    """`/campaign status`: the Deployment message of a delivery, for the asker alone."""
    actor.require(Permission.VIEW_DELIVERIES)
    return read_deployment(ctx, ref)


def ready_to_confirm(ctx: Context, actor: Actor) -> list[DeliverySummary]:
    """The picker of `/confirm-send`: deliveries ready and prepared for what they are."""
    actor.require(Permission.CONFIRM_SEND)
    with ctx.sessions() as s:
        return [row for row in read_summaries(s) if row.pickable]


def card(ctx: Context, actor: Actor, ref: str) -> Card:
    """The card of `/confirm-send REF` (and of the picker's choice)."""
    actor.require(Permission.CONFIRM_SEND)
    with ctx.sessions() as s:
        d = deliveries.get(s, ref)
        shown = Card(read_detail(s, ref), not_ready_reason(deliveries.facts(d), ctx.clock.now()))
        try:
            sample = render_for(s, d)
        except DomainError:  # nobody to render for, or a template the preparation refuses
            return shown
    return replace(
        shown,
        sample_subject=sample.subject,
        sample_for=sample.email,
        sample_text=sample.text,
        preview_url=preview_link(ctx, d.id),
    )


def compute_stats(ctx: Context, actor: Actor, ref: str) -> DeliveryDetail:
    """**Compute stats**: recount every execution of `ref` from its logs; the fresh detail."""
    actor.require(Permission.COMPUTE_STATS)
    with ctx.sessions.begin() as s:
        d = deliveries.get(s, ref)
        for e in executions.of_delivery(s, d.id):
            counters.compute_stats(s, e.id, ctx.clock.now())
    with ctx.sessions() as s:
        return read_detail(s, ref)


def marketing_history(
    ctx: Context, actor: Actor, email: str, limit: int = HISTORY_LIMIT
) -> list[HistoryEntry]:
    """A profile's messages, newest first: date, delivery, status, failure, opens, clicks."""
    actor.require(Permission.VIEW_DELIVERIES)
    with ctx.sessions() as s:
        ids = profiles.ids_by_address(s, email)
        if not ids:
            raise NotFound(f"no profile with the address {email!r}")
        rows = reports.history(s, ids, limit)
    return [
        HistoryEntry(
            date=r.relayed_at or r.created_at,
            email=r.email,
            ref=r.ref,
            name=r.name,
            execution=r.execution,
            status=r.status,
            failure_type=r.failure_type,
            failure_reason=r.failure_reason,
            opens=r.opens,
            clicks=r.clicks,
        )
        for r in rows
    ]
