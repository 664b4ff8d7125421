"""Preparation (SPEC sections 1 and 3): target, exclusions, and a render check.

Preparing a delivery computes who it goes to (its audience minus the exclusions),
writes one exclusion log per excluded profile and one queued sending log per
recipient, and renders every message once so that a template that breaks for some
profile is found *before* anyone confirms the send. No message leaves here, and the
rendered text is not kept: the sender renders again at relay time.

It runs in two phases so that 100,000 profiles take seconds, not minutes:

1. read and check: stream the members' columns (no ORM objects), apply the
   exclusions in their fixed order, render each remaining message;
2. write: in one transaction, claim the delivery (its state and definition must be
   what phase 1 saw), replace the previous logs with bulk inserts, and record the
   counts, errors, warnings and the new state.

A re-preparation replaces everything a previous one wrote, so running it twice
never leaves duplicate logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeAlias

from bot.context import Context, Session
from bot.domain.addresses import address_is_valid
from bot.domain.errors import DomainError
from bot.domain.exclusions import ExclusionReason
from bot.domain.executions import ExecutionState
from bot.domain.lifecycle import Action, DeliveryState, transition
from bot.domain.preparation import (
    FEW_RETRIES,
    MAX_STORED_ERRORS,
    NO_UNSUBSCRIBE_LINK,
    SAMPLE_EMAILS,
    UNSUBSCRIBE_VARIABLE,
    PreparationError,
    PreparationWarning,
    has_unsubscribe_link,
    no_unsubscribe_link_error,
    stored_errors,
)
from bot.domain.quarantine import EmailStatus
from bot.domain.roles import Actor, Permission
from bot.domain.schedule import ScheduleMode
from bot.domain.waves import LocalMoment, Wave, WavePlanner, retries_short, validity_problem
from bot.engine.rendering import (
    PLACEHOLDER_LINKS,
    MessageTemplates,
    RenderError,
    RenderLimitExceeded,
    TemplateSyntaxProblem,
    profile_context,
)
from bot.store import audit, counters, deliveries, executions, preparation
from bot.store.models import Delivery
from bot.store.preparation import Member

Progress: TypeAlias = Callable[[int, int | None], None]  # (gone through, total when known)
PROGRESS_EVERY = 1_000


class PreparationConflict(DomainError):
    """The delivery changed while it was being prepared; nothing was written."""


@dataclass(frozen=True)
class PreparationResult:
    """What a preparation found; the same figures are stored on the delivery.

    `errors` holds at most MAX_STORED_ERRORS critical errors (the email is None for
    a syntax error, which concerns every profile); `errors_total` counts them all.
    `warnings` are aggregated by missing variable.
    """

    ref: str
    state: DeliveryState
    targeted: int
    excluded: int
    to_deliver: int
    exclusions: dict[ExclusionReason, int]
    errors: list[PreparationError]
    errors_total: int
    warnings: list[PreparationWarning]
    duration_s: float

    @property
    def ready(self) -> bool:
        return self.state is DeliveryState.READY

    def to_json(self) -> dict[str, Any]:
        """What `deliveries prepare --json` prints (README, "JSON output")."""
        return {
            "ref": self.ref,
            "state": self.state.value,
            "targeted": self.targeted,
            "excluded": self.excluded,
            "to_deliver": self.to_deliver,
            "exclusions": {reason.value: n for reason, n in self.exclusions.items()},
            "errors": [e.to_json() for e in self.errors],
            "errors_total": self.errors_total,
            "warnings": [w.to_json() for w in self.warnings],
            "duration_s": self.duration_s,
        }


# --- phase 1: target, exclude, render --------------------------------------------


@dataclass
class _Plan:
    """What phase 1 decided; phase 2 writes it."""

    targeted: int = 0
    exclusions: list[tuple[int, str, ExclusionReason]] = field(default_factory=list)
    recipients: list[tuple[int, str]] = field(default_factory=list)
    errors: list[PreparationError] = field(default_factory=list)
    errors_total: int = 0
    missing: dict[str, list[Any]] = field(default_factory=dict)  # name -> [count, emails]
    # A recipient-local send: each recipient's wave, in the order of `recipients`.
    send_at: list[datetime] | None = None
    waves: list[Wave] = field(default_factory=list)
    no_unsubscribe: list[Any] = field(default_factory=lambda: [0, []])  # [count, emails]
    few_retries: str | None = None  # the last wave's retries may not all fit (domain.waves)

    def add_error(self, error: PreparationError) -> None:
        self.errors_total += 1
        if len(self.errors) < MAX_STORED_ERRORS:
            self.errors.append(error)

    def warnings(self) -> list[PreparationWarning]:
        ordered = sorted(self.missing.items(), key=lambda kv: (-kv[1][0], kv[0]))
        found = [
            PreparationWarning(name=name, count=count, emails=tuple(emails))
            for name, (count, emails) in ordered
        ]
        count, emails = self.no_unsubscribe
        if count:
            found.append(
                PreparationWarning(UNSUBSCRIBE_VARIABLE, count, tuple(emails), NO_UNSUBSCRIBE_LINK)
            )
        if self.few_retries and self.waves:
            last = self.waves[-1].recipients
            found.append(PreparationWarning("validity", last, (), FEW_RETRIES, self.few_retries))
        return found

    def note_no_unsubscribe(self, email: str) -> None:
        self.no_unsubscribe[0] += 1
        if len(self.no_unsubscribe[1]) < SAMPLE_EMAILS:
            self.no_unsubscribe[1].append(email)

    def exclusion_counts(self) -> dict[ExclusionReason, int]:
        counts = dict.fromkeys(ExclusionReason, 0)
        for _, _, reason in self.exclusions:
            counts[reason] += 1
        return counts

    def note_missing(self, names: Iterable[str], email: str) -> None:
        for name in names:
            entry = self.missing.get(name)
            if entry is None:
                self.missing[name] = [1, [email]]
            else:
                entry[0] += 1
                if len(entry[1]) < SAMPLE_EMAILS:
                    entry[1].append(email)


def member_context(member: Member, about: dict[str, str]) -> dict[str, Any]:
    """What the templates see for one member of the audience (`about`: ref and name)."""
    return profile_context(
        email=member.email,
        first_name=member.first_name,
        last_name=member.last_name,
        timezone=member.timezone,
        attributes=member.attributes,
        delivery=about,
    )


def _templates(delivery: Delivery, plan: _Plan) -> MessageTemplates | None:
    try:
        return MessageTemplates(delivery.subject, delivery.html, delivery.text)
    except TemplateSyntaxProblem as exc:
        for problem in exc.problems:
            plan.add_error(
                PreparationError(None, problem["part"], problem["line"], problem["reason"])
            )
        return None


def _exclusion(member: Member, seen: set[str]) -> ExclusionReason | None:
    """The first exclusion reason that applies, in their fixed order (invalid, duplicate,
    denylisted, quarantined); the address key is noted as seen once it is valid."""
    if not address_is_valid(member.email):
        return ExclusionReason.INVALID_ADDRESS
    if member.email_key in seen:
        return ExclusionReason.DUPLICATE_ADDRESS
    seen.add(member.email_key)
    if member.email_status == EmailStatus.DENYLISTED:
        return ExclusionReason.DENYLISTED
    if member.email_status == EmailStatus.QUARANTINE:
        return ExclusionReason.QUARANTINED
    return None


def _plan(
    session: Session,
    delivery: Delivery,
    progress: Progress | None = None,
    require_unsubscribe_link: bool = False,
    retries: tuple[timedelta, int] = (timedelta(hours=1), 0),
) -> _Plan:
    """Target, exclude and render, one pass over the audience (the preparation's hot loop).

    Each rendered message is checked for its unsubscribe link: the messages without
    one make a warning, or, with `require_unsubscribe_link`, an error.
    """
    plan = _Plan()
    unsubscribe_url = PLACEHOLDER_LINKS[UNSUBSCRIBE_VARIABLE]
    if progress is not None:
        progress(0, preparation.member_count(session, delivery.audience_id))
    templates = _templates(delivery, plan)
    about = {"ref": delivery.ref, "name": delivery.name}
    seen: set[str] = set()
    planner = _wave_planner(delivery)
    if planner is not None:
        plan.send_at = []
    for member in preparation.members(session, delivery.audience_id):
        plan.targeted += 1
        if progress is not None and plan.targeted % PROGRESS_EVERY == 0:
            progress(plan.targeted, None)
        reason = _exclusion(member, seen)
        if reason is not None:
            plan.exclusions.append((member.id, member.email, reason))
            continue
        plan.recipients.append((member.id, member.email))
        if planner is not None and plan.send_at is not None:
            plan.send_at.append(planner.instant(member.timezone))
        if templates is None:
            continue
        context = member_context(member, about)
        try:
            message = templates.render(context)
        except RenderLimitExceeded as exc:
            # The template, not this profile: every other profile would cost as much.
            plan.add_error(PreparationError(member.email, exc.part, exc.line, exc.reason))
            templates = None
            continue
        except RenderError as exc:
            plan.add_error(PreparationError(member.email, exc.part, exc.line, exc.reason))
            continue
        if message.warnings:
            plan.note_missing(message.warnings, member.email)
        if not has_unsubscribe_link(message.html, message.text, unsubscribe_url):
            plan.note_no_unsubscribe(member.email)
    if require_unsubscribe_link and plan.no_unsubscribe[0]:
        count, emails = plan.no_unsubscribe
        everyone = count == len(plan.recipients)
        part = "html" if delivery.html is not None else "text"
        plan.add_error(no_unsubscribe_link_error(None if everyone else emails[0], part))
        plan.no_unsubscribe = [0, []]  # said once, as the error
    if planner is not None:
        plan.waves = planner.waves()
        validity = timedelta(seconds=delivery.validity_seconds)
        problem = validity_problem(plan.waves, validity)
        if problem:
            plan.add_error(PreparationError(None, "schedule", None, problem))
        plan.few_retries = retries_short(plan.waves, validity, *retries)
    return plan


def _wave_planner(delivery: Delivery) -> WavePlanner | None:
    """A recipient-local delivery's planner of waves (bot.domain.waves); None otherwise."""
    if delivery.schedule_mode is not ScheduleMode.RECIPIENT_LOCAL or not delivery.schedule_local:
        return None
    moment = LocalMoment.parse(delivery.schedule_local)
    return WavePlanner(moment, delivery.schedule_timezone or "UTC")


# --- phase 2: write ----------------------------------------------------------------


def _claim(
    session: Session,
    delivery_id: int,
    seen_hash: str,
    seen_version: int,
    new_state: DeliveryState,
) -> Delivery:
    """Move the delivery to its new state only if it is as phase 1 saw it.

    The guarded UPDATE is the first write of the transaction: a concurrent confirm,
    edit or preparation cannot slip in between the check and the writes.
    """
    claimed = preparation.claim(session, delivery_id, seen_hash, new_state)
    delivery = deliveries.reload(session, delivery_id)
    if not claimed:
        transition(delivery.state, Action.PREPARE)
        raise PreparationConflict(
            f"delivery {delivery.ref!r} was changed while it was being prepared; prepare it again"
        )
    if deliveries.audience_version(session, delivery.audience_id) != seen_version:
        raise PreparationConflict(
            f"the audience of {delivery.ref!r} changed while it was being prepared; "
            "prepare it again"
        )
    return delivery


def _write(
    session: Session,
    ctx: Context,
    delivery_id: int,
    seen_hash: str,
    seen_version: int,
    plan: _Plan,
) -> Delivery:
    """Replace the execution's logs and record the outcome on the delivery."""
    new_state = new_state_of(plan)
    now = ctx.clock.now()
    delivery = _claim(session, delivery_id, seen_hash, seen_version, new_state)
    execution = executions.main_execution(session, delivery, now)
    preparation.clear(session, execution.id)
    preparation.insert_logs(
        session, now, execution.id, plan.exclusions, plan.recipients, plan.send_at
    )
    to_deliver = len(plan.recipients)
    counters.reset(session, execution.id, to_deliver, now)
    executions.move(session, execution.id, list(ExecutionState), ExecutionState(new_state.value))
    delivery.targeted = plan.targeted
    delivery.excluded = len(plan.exclusions)
    delivery.to_deliver = to_deliver
    delivery.prepared_at = now
    delivery.prepared_hash = seen_hash
    delivery.prepared_audience_version = seen_version
    delivery.preparation_errors = [
        e.to_json() for e in stored_errors(plan.errors, plan.errors_total)
    ]
    delivery.preparation_warnings = [w.to_json() for w in plan.warnings()]
    delivery.waves = [w.to_json() for w in plan.waves] if plan.send_at is not None else None
    delivery.first_wave_at = plan.waves[0].at if plan.waves else None
    return delivery


def prepare_delivery(
    ctx: Context, actor: Actor, ref: str, progress: Progress | None = None
) -> PreparationResult:
    """Prepare delivery `ref`: exclusion and queued sending logs, counts, render check.

    `progress(done, total)` is told the audience's size first (`done` 0), then every
    `PROGRESS_EVERY` profiles how many were gone through (`total` None): the command
    line draws its bar from it.

    Raises NotFound for an unknown ref, IllegalTransition when the delivery's state
    does not allow preparing, PreparationConflict when it changed meanwhile.
    The delivery ends `ready`, or `editing` when some message failed to render.
    """
    actor.require(Permission.PREPARE)
    started = time.perf_counter()
    with ctx.sessions() as session:
        delivery = deliveries.get(session, ref)
        transition(delivery.state, Action.PREPARE)
        delivery_id = delivery.id
        seen_hash = delivery.definition_hash
        seen_version = delivery.audience.version
        settings = ctx.settings
        retries = (timedelta(minutes=settings.retry_interval_minutes), settings.max_retries)
        plan = _plan(session, delivery, progress, settings.require_unsubscribe_link, retries)
    with ctx.sessions.begin() as session:
        delivery = _write(session, ctx, delivery_id, seen_hash, seen_version, plan)
        result = PreparationResult(
            ref=ref,
            state=new_state_of(plan),
            targeted=plan.targeted,
            excluded=delivery.excluded,
            to_deliver=delivery.to_deliver,
            exclusions=plan.exclusion_counts(),
            errors=list(plan.errors),
            errors_total=plan.errors_total,
            warnings=plan.warnings(),
            duration_s=round(time.perf_counter() - started, 3),
        )
        audit.record(
            session,
            ctx.clock.now(),
            actor=actor.id,
            action="prepare",
            subject_kind="delivery",
            subject_ref=ref,
            detail={
                "state": result.state.value,
                "targeted": result.targeted,
                "excluded": result.excluded,
                "to_deliver": result.to_deliver,
                "exclusions": {reason.value: n for reason, n in result.exclusions.items()},
                "errors": result.errors_total,
                "warnings": len(result.warnings),
            },
        )
    return result


def new_state_of(plan: _Plan) -> DeliveryState:
    return DeliveryState.EDITING if plan.errors_total else DeliveryState.READY


# --- executions of a recurring delivery ------------------------------------------------


@dataclass(frozen=True)
class ExecutionPreparation:
    """What preparing (or topping up) one execution of a recurring delivery wrote."""

    execution_id: int
    key: str
    added: int  # recipients queued by this preparation
    excluded: int  # exclusion logs written by this preparation
    to_deliver: int  # the execution's total after it
    exclusions: dict[ExclusionReason, int]  # the execution's exclusions by reason, after it
    errors: list[PreparationError]
    errors_total: int

    @property
    def failed(self) -> bool:
        return self.errors_total > 0


def prepare_execution(ctx: Context, execution_id: int) -> ExecutionPreparation:
    """Prepare one execution of a recurring delivery, at its occurrence time.

    The audience is read as it is now, so each occurrence targets today's members.
    An execution that already has logs (a later occurrence of an aggregation period)
    is topped up: only profiles it has no log for, and no address it already holds,
    are added, so nobody gets two messages of one period and a newcomer does not
    wait for the next one. A render error adds nothing and is returned: the caller
    fails the execution rather than send a message that breaks for someone.
    """
    with ctx.sessions() as session:
        execution = executions.get(session, execution_id)
        plan = _plan(
            session,
            execution.delivery,
            require_unsubscribe_link=ctx.settings.require_unsubscribe_link,
        )
        known, known_keys = preparation.known(session, execution_id)
        key = execution.key
    now = ctx.clock.now()
    if plan.errors_total:
        return ExecutionPreparation(
            execution_id, key, 0, 0, 0, {}, list(plan.errors), plan.errors_total
        )
    exclusions = [x for x in plan.exclusions if x[0] not in known]
    recipients = []
    for pid, email in plan.recipients:
        if pid in known:
            continue
        if email.lower() in known_keys:
            exclusions.append((pid, email, ExclusionReason.DUPLICATE_ADDRESS))
            continue
        recipients.append((pid, email))
    with ctx.sessions.begin() as session:
        executions.ensure_counter(session, execution_id, now)
        preparation.insert_logs(session, now, execution_id, exclusions, recipients)
        to_deliver = counters.add_queued(session, execution_id, len(recipients), now)
        counts = preparation.exclusion_counts(session, execution_id)
    return ExecutionPreparation(
        execution_id, key, len(recipients), len(exclusions), to_deliver, counts, [], 0
    )
