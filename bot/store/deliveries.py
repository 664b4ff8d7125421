"""Deliveries: finding them, and changing their state the one way there is.

Every change of a delivery's state is a compare-and-set, `UPDATE … WHERE state IN
(<expected>)`: of two people clicking at once, a click and Slack's retry of it, or two
processes, exactly one changes the state, and the other learns what it became. On
SQLite the UPDATE takes the write lock, on PostgreSQL the row lock, so what the same
transaction writes next cannot be raced either.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from bot.domain.errors import NotFound
from bot.domain.executions import MAIN_KEY, ExecutionState
from bot.domain.lifecycle import DeliveryState
from bot.domain.readiness import DeliveryFacts, Preparation
from bot.domain.schedule import ScheduleMode
from bot.domain.waves import Wave
from bot.store.db import affected
from bot.store.models import Audience, Delivery, Execution


def get(session: Session, ref: str) -> Delivery:
    delivery = session.scalar(select(Delivery).where(Delivery.ref == ref))
    if delivery is None:
        raise NotFound(
            f"no delivery with ref {ref!r}; `python -m bot deliveries list` shows the refs"
        )
    return delivery


def by_id(session: Session, delivery_id: int) -> Delivery | None:
    """The delivery with this id, or None (a link may outlive its delivery)."""
    return session.get(Delivery, delivery_id)


def reload(session: Session, delivery_id: int) -> Delivery:
    """The row as the database has it now (after a compare-and-set of this transaction)."""
    delivery = session.get(Delivery, delivery_id, populate_existing=True)
    if delivery is None:
        raise NotFound(f"no delivery {delivery_id}")
    return delivery


def every(session: Session) -> Sequence[Delivery]:
    return session.scalars(select(Delivery).order_by(Delivery.ref)).all()


def by_refs(session: Session, refs: Collection[str]) -> dict[str, Delivery]:
    return {d.ref: d for d in session.scalars(select(Delivery).where(Delivery.ref.in_(refs)))}


def ref_of_execution(session: Session, execution_id: int) -> str | None:
    return session.scalar(
        select(Delivery.ref)
        .join(Execution, Execution.delivery_id == Delivery.id)
        .where(Execution.id == execution_id)
    )


def preparation(d: Delivery) -> Preparation:
    return Preparation(
        prepared_at=d.prepared_at,
        prepared_hash=d.prepared_hash,
        definition_hash=d.definition_hash,
        prepared_audience_version=d.prepared_audience_version,
        audience_version=d.audience.version,
    )


def facts(d: Delivery) -> DeliveryFacts:
    return DeliveryFacts(
        ref=d.ref,
        state=d.state,
        preparation=preparation(d),
        has_preparation_errors=bool(d.preparation_errors),
        recurring=d.recurrence_cron is not None,
        request_confirmation=d.request_confirmation,
        slack_channel=d.slack_channel,
        to_deliver=d.to_deliver,
        waves=tuple(Wave.from_json(w) for w in d.waves or ()),
    )


def move(
    session: Session,
    delivery_id: int,
    expected: DeliveryState | Collection[DeliveryState],
    to: DeliveryState,
    **values: Any,
) -> bool:
    """Set the state to `to` (and `values`) if it is `expected`; False when it was not.

    A one-off delivery's execution mirrors its state, in the same write.
    """
    states = [expected] if isinstance(expected, DeliveryState) else list(expected)
    done = affected(
        session.execute(
            update(Delivery)
            .where(Delivery.id == delivery_id, Delivery.state.in_(states))
            .values(state=to, **values)
            .execution_options(synchronize_session=False)
        )
    )
    if done:
        one_off = select(Delivery.id).where(
            Delivery.id == delivery_id, Delivery.recurrence_cron.is_(None)
        )
        session.execute(
            update(Execution)
            .where(Execution.delivery_id.in_(one_off.scalar_subquery()), Execution.key == MAIN_KEY)
            .values(state=ExecutionState(to.value))
            .execution_options(synchronize_session=False)
        )
    return bool(done)


def state_of(session: Session, delivery_id: int) -> DeliveryState | None:
    return session.scalar(select(Delivery.state).where(Delivery.id == delivery_id))


def waiting_to_start(session: Session, now: datetime) -> list[str]:
    """Confirmed deliveries whose time has come (or passed while down): an `at` one's
    contact date, a recipient-local one's first wave."""
    local = Delivery.schedule_mode == ScheduleMode.RECIPIENT_LOCAL
    return list(
        session.scalars(
            select(Delivery.ref).where(
                Delivery.state == DeliveryState.START_PENDING,
                or_(
                    and_(~local, Delivery.scheduled_at <= now),
                    and_(local, Delivery.first_wave_at <= now),
                ),
            )
        )
    )


def ready_of_audience(session: Session, audience_id: int) -> list[Delivery]:
    return list(
        session.scalars(
            select(Delivery)
            .where(Delivery.audience_id == audience_id, Delivery.state == DeliveryState.READY)
            .order_by(Delivery.ref)
        )
    )


# --- recurrences ---------------------------------------------------------------------


def active_recurrences(session: Session) -> list[tuple[int, str, str, datetime]]:
    """(id, cron, time zone, cursor) of every recurring delivery whose recurrence runs."""
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.recurrence_cron,
            Delivery.recurrence_timezone,
            Delivery.recurrence_cursor,
        ).where(
            Delivery.recurrence_cron.is_not(None),
            Delivery.state == DeliveryState.IN_PROGRESS,
            Delivery.recurrence_cursor.is_not(None),
        )
    ).all()
    return [(i, cron or "", tz or "UTC", cursor) for i, cron, tz, cursor in rows if cursor]


def take_occurrence(
    session: Session, delivery_id: int, cursor: datetime, occurrence: datetime
) -> bool:
    """Move the cursor from `cursor` to `occurrence`: of two processes, one takes it."""
    return bool(
        affected(
            session.execute(
                update(Delivery)
                .where(
                    Delivery.id == delivery_id,
                    Delivery.state == DeliveryState.IN_PROGRESS,
                    Delivery.recurrence_cursor == cursor,
                )
                .values(recurrence_cursor=occurrence)
                .execution_options(synchronize_session=False)
            )
        )
    )


# --- the Deployment message ----------------------------------------------------------


def deployment_location(session: Session, ref: str) -> tuple[DeliveryState, str | None, str | None]:
    """The delivery's state, the channel its Deployment message is (or goes) in, its ts."""
    d = get(session, ref)
    return d.state, d.deployment_channel or d.slack_channel, d.deployment_ts


FIRST_POST_CLAIM = timedelta(minutes=1)  # a process that dies while posting lets go


def claim_first_post(session: Session, ref: str, now: datetime) -> bool:
    """Take the posting of `ref`'s first Deployment message; False when it is posted
    already, or another process is posting it."""
    result = session.execute(
        update(Delivery)
        .where(
            Delivery.ref == ref,
            Delivery.deployment_ts.is_(None),
            or_(
                Delivery.deployment_claimed_until.is_(None),
                Delivery.deployment_claimed_until < now,
            ),
        )
        .values(deployment_claimed_until=now + FIRST_POST_CLAIM)
        .execution_options(synchronize_session=False)
    )
    return affected(result) == 1


def release_first_post(session: Session, ref: str) -> None:
    """Posting failed: the next follower or reconcile tries again."""
    session.execute(
        update(Delivery).where(Delivery.ref == ref).values(deployment_claimed_until=None)
    )


def remember_deployment(
    session: Session, ref: str, channel: str, ts: str, shown: str | None = None
) -> None:
    session.execute(
        update(Delivery)
        .where(Delivery.ref == ref)
        .values(
            deployment_channel=channel,
            deployment_ts=ts,
            deployment_shown=shown,
            deployment_claimed_until=None,
        )
    )


def mark_shown(session: Session, ref: str, shown: str) -> None:
    session.execute(update(Delivery).where(Delivery.ref == ref).values(deployment_shown=shown))


def with_deployment_since(session: Session, since: datetime) -> Sequence[Delivery]:
    """Deliveries whose Deployment message may still have to change: started, with a
    channel, and not finished before `since`."""
    return session.scalars(
        select(Delivery)
        .where(
            Delivery.started_at.is_not(None),
            or_(Delivery.deployment_channel.is_not(None), Delivery.slack_channel.is_not(None)),
            or_(Delivery.finished_at.is_(None), Delivery.finished_at >= since),
        )
        .order_by(Delivery.id)
    ).all()


def forget_deployment(session: Session, delivery_id: int) -> None:
    """A new execution gets a new Deployment message; the last one keeps its figures."""
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id)
        .values(deployment_ts=None, deployment_channel=None, deployment_shown=None)
        .execution_options(synchronize_session=False)
    )


def audience_version(session: Session, audience_id: int) -> int | None:
    return session.scalar(select(Audience.version).where(Audience.id == audience_id))


# --- definitions (the deliveries import) -------------------------------------------------


def create(
    session: Session, columns: dict[str, Any], audience_id: int, definition_hash: str, now: datetime
) -> Delivery:
    delivery = Delivery(
        **columns,
        audience_id=audience_id,
        state=DeliveryState.EDITING,
        definition_hash=definition_hash,
        preparation_errors=[],
        preparation_warnings=[],
        created_at=now,
        updated_at=now,
    )
    session.add(delivery)
    return delivery


def redefine(
    session: Session,
    delivery: Delivery,
    columns: dict[str, Any],
    audience_id: int | None,
    definition_hash: str | None,
    now: datetime,
) -> None:
    """New content for a delivery (its state moved first, by `move`), or a rename."""
    values: dict[str, Any] = {**columns, "updated_at": now}
    if audience_id is not None:
        values["audience_id"] = audience_id
    if definition_hash is not None:
        values["definition_hash"] = definition_hash
    session.execute(
        update(Delivery)
        .where(Delivery.id == delivery.id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.expire(delivery)
