"""The send guard's rows: the window of relayed answers, where it starts, the alerts.

The window is read newest first through `ix_sending_logs_execution_answered` (when the
relay last answered each log: `relayed_at` is the first acceptance only), at most
`limit` rows, so reading it after each batch costs one bounded index scan. The
window's start moves by compare-and-set: a guard that read an old window (another
sender's, before a Resume) cannot pause with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from bot.domain.errors import NotFound
from bot.domain.guard import Answer, Reading, domain_of
from bot.domain.lifecycle import DeliveryState
from bot.domain.logs import FailureType
from bot.store.db import affected
from bot.store.models import Delivery, Execution, GuardAlert, SendingLog

REFUSED = (FailureType.HARD, FailureType.SOFT)
POST_CLAIM = timedelta(minutes=1)  # a process that dies while posting an alert


@dataclass(frozen=True)
class Watched:
    """What the guard reads of an execution before its window, in one query."""

    key: str
    state: DeliveryState
    guard: dict[str, Any] | None
    since: datetime | None


def watched(session: Session, execution_id: int) -> Watched:
    """The execution's key and window start, with its delivery's state and guard settings."""
    row = session.execute(
        select(Execution.key, Delivery.state, Delivery.guard, Execution.guard_from)
        .join(Delivery, Delivery.id == Execution.delivery_id)
        .where(Execution.id == execution_id)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no execution {execution_id}")
    return Watched(*row)


def window(session: Session, execution_id: int, since: datetime | None, limit: int) -> list[Answer]:
    """The newest `limit` logs the relay answered after `since`: refused or hard-bounced
    (the relay's 5xx and 4xx, and hard bounces reported since), or not."""
    query = select(SendingLog.failure_type, SendingLog.failure_reason, SendingLog.email).where(
        SendingLog.execution_id == execution_id, SendingLog.answered_at.is_not(None)
    )
    if since is not None:
        query = query.where(SendingLog.answered_at > since)
    rows = session.execute(
        query.order_by(SendingLog.answered_at.desc(), SendingLog.id.desc()).limit(limit)
    )
    return [
        Answer(kind in REFUSED, reason.value if reason else None, domain_of(email))
        for kind, reason, email in rows
    ]


def move_window(session: Session, execution_id: int, seen: datetime | None, now: datetime) -> bool:
    """Start the window at `now`, if it still starts at `seen` (the guard's pause)."""
    same = Execution.guard_from.is_(None) if seen is None else Execution.guard_from == seen
    result = session.execute(
        update(Execution).where(Execution.id == execution_id, same).values(guard_from=now)
    )
    return affected(result) == 1


def restart_windows(session: Session, execution_ids: Sequence[int], now: datetime) -> None:
    """Start these executions' windows at `now` (a Resume: older answers no longer count)."""
    if execution_ids:
        session.execute(
            update(Execution).where(Execution.id.in_(execution_ids)).values(guard_from=now)
        )


def add_alert(
    session: Session,
    execution_id: int,
    now: datetime,
    reading: Reading,
    policy: dict[str, Any],
    channel: str | None,
) -> None:
    session.add(
        GuardAlert(
            execution_id=execution_id,
            tripped_at=now,
            counted=reading.counted,
            failed=reading.failed,
            policy=policy,
            reasons=[list(r) for r in reading.reasons],
            domains=[list(d) for d in reading.domains],
            channel=channel,
        )
    )


def unposted(session: Session, since: datetime, execution_id: int | None = None) -> list[int]:
    """Alerts not yet posted (with a channel to post in), tripped after `since`."""
    query = select(GuardAlert.id).where(
        GuardAlert.ts.is_(None), GuardAlert.channel.is_not(None), GuardAlert.tripped_at > since
    )
    if execution_id is not None:
        query = query.where(GuardAlert.execution_id == execution_id)
    return list(session.scalars(query.order_by(GuardAlert.id)))


def claim_alert(session: Session, alert_id: int, now: datetime) -> GuardAlert | None:
    """Take an alert to post it, unless posted or being posted by another process."""
    return _claim(session, alert_id, now, GuardAlert.ts.is_(None))


def posted(
    session: Session, alert_id: int, channel: str, ts: str, now: datetime, state: str
) -> None:
    session.execute(
        update(GuardAlert)
        .where(GuardAlert.id == alert_id)
        .values(channel=channel, ts=ts, posted_at=now, claimed_until=None, shown_state=state)
    )


def outdated(session: Session, since: datetime, ref: str | None = None) -> list[int]:
    """Posted alerts (tripped after `since`) drawn for another state than their
    delivery's now: their buttons are to be drawn again."""
    query = (
        select(GuardAlert.id)
        .join(Execution, Execution.id == GuardAlert.execution_id)
        .join(Delivery, Delivery.id == Execution.delivery_id)
        .where(
            GuardAlert.ts.is_not(None),
            GuardAlert.tripped_at > since,
            or_(GuardAlert.shown_state.is_(None), GuardAlert.shown_state != Delivery.state),
        )
    )
    if ref is not None:
        query = query.where(Delivery.ref == ref)
    return list(session.scalars(query.order_by(GuardAlert.id)))


def claim_redraw(session: Session, alert_id: int, now: datetime) -> GuardAlert | None:
    """Take a posted alert to draw it again, unless another process is drawing it: a
    stop reaches every follower at once, and each would make the same update."""
    return _claim(session, alert_id, now, GuardAlert.ts.is_not(None))


def _claim(
    session: Session, alert_id: int, now: datetime, posted: ColumnElement[bool]
) -> GuardAlert | None:
    """The alert, claimed for `POST_CLAIM` if it is as `posted` says and nobody holds it."""
    result = session.execute(
        update(GuardAlert)
        .where(
            GuardAlert.id == alert_id,
            posted,
            or_(GuardAlert.claimed_until.is_(None), GuardAlert.claimed_until < now),
        )
        .values(claimed_until=now + POST_CLAIM)
        .execution_options(synchronize_session=False)
    )
    if affected(result) != 1:
        return None
    return session.get(GuardAlert, alert_id, populate_existing=True)


def shown(session: Session, alert_id: int, state: str) -> None:
    """Drawn for `state`; the drawing's claim is given back."""
    session.execute(
        update(GuardAlert)
        .where(GuardAlert.id == alert_id)
        .values(shown_state=state, claimed_until=None)
    )


def release_alert(session: Session, alert_id: int) -> None:
    """Posting (or drawing) failed: the next follower or reconcile tries again."""
    session.execute(update(GuardAlert).where(GuardAlert.id == alert_id).values(claimed_until=None))
