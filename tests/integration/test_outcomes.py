"""Every row of both tables of SPEC section 6, and the quarantine rules, through the store.

Each test relays four messages, applies the row's feedback to the first one, and checks
the log status, the direction each KPI moved, and that the live counters equal a
recount of the logs, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from bot.context import Context
from bot.domain.kpi import kpis
from bot.domain.logs import Event
from bot.store.counters import live_counters, recount
from bot.store.models import (
    Audience,
    Delivery,
    Execution,
    KpiCounter,
    Profile,
    SendingLog,
)
from bot.store.outcomes import LogEvent, apply_log_events, record_complaint

N = 4


def _setup(ctx: Context, efs: bool) -> tuple[int, list[int], list[int]]:
    """A delivery of N queued logs; returns (execution id, log ids, profile ids)."""
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        aud = Audience(name="a", created_at=now, updated_at=now)
        s.add(aud)
        s.flush()
        d = Delivery(
            ref="d",
            name="D",
            audience_id=aud.id,
            sender="news@shop.example",
            subject="Hi",
            text="Hello",
            validity_seconds=3600,
            efs=efs,
            definition_hash="h",
            state="in-progress",
            created_at=now,
            updated_at=now,
        )
        s.add(d)
        s.flush()
        e = Execution(delivery_id=d.id, key="main", state="in-progress", created_at=now)
        s.add(e)
        s.flush()
        s.add(KpiCounter(execution_id=e.id, to_deliver=N, queued=N, updated_at=now))
        profiles = [
            Profile(
                email=f"p{i}@x.example", email_key=f"p{i}@x.example", created_at=now, updated_at=now
            )
            for i in range(N)
        ]
        s.add_all(profiles)
        s.flush()
        logs = [
            SendingLog(
                execution_id=e.id, profile_id=p.id, email=p.email, created_at=now, updated_at=now
            )
            for p in profiles
        ]
        s.add_all(logs)
        s.flush()
        return e.id, [lg.id for lg in logs], [p.id for p in profiles]


def _apply(ctx: Context, *events: LogEvent) -> None:
    with ctx.sessions.begin() as s:
        apply_log_events(s, ctx.clock.now(), list(events))


def _kpis(ctx: Context, execution_id: int):
    with ctx.sessions() as s:
        live = live_counters(s, execution_id)
        assert live == recount(s, execution_id), "counters drifted from the logs"
        return kpis(live)


def _status(ctx: Context, log_id: int) -> str:
    with ctx.sessions() as s:
        return s.scalar(select(SendingLog.status).where(SendingLog.id == log_id))


def _relay_all(ctx: Context, log_ids: list[int]) -> None:
    _apply(ctx, *(LogEvent(i, Event.RELAYED) for i in log_ids))


def _direction(before: float | None, after: float | None) -> str:
    if before == after:
        return "same"
    return "up" if (after or 0) > (before or 0) else "down"


# (mode efs?, row name, events before the row's event, the row's events, status,
#  Delivered direction, Bounces + errors direction)
ROWS = [
    (False, "relayed", [], [], "sent", None, None),
    (False, "hard bounce reported", [], [Event.HARD_BOUNCE], "failed", "down", "up"),
    (False, "soft bounce reported", [], [Event.SOFT_BOUNCE], "sent", "same", "same"),
    (
        False,
        "soft-bounce retry succeeds",
        [Event.SOFT_BOUNCE],
        [Event.RELAYED],
        "sent",
        "same",
        "same",
    ),
    (
        False,
        "soft-bounce retry fails",
        [Event.SOFT_BOUNCE],
        [Event.RETRY_FAILED],
        "failed",
        "down",
        "up",
    ),
    (False, "validity ends", [Event.SOFT_BOUNCE], [Event.EXPIRED], "failed", "down", "up"),
    (True, "relayed", [], [], "pending", None, None),
    (True, "delivery reported", [], [Event.DELIVERED], "sent", "up", "same"),
    (True, "hard bounce reported", [], [Event.HARD_BOUNCE], "failed", "same", "up"),
    (True, "soft bounce reported", [], [Event.SOFT_BOUNCE], "failed", "same", "up"),
    (
        True,
        "soft-bounce retry succeeds",
        [Event.SOFT_BOUNCE, Event.RELAYED],
        [Event.DELIVERED],
        "sent",
        "up",
        "down",
    ),
    (
        True,
        "soft-bounce retry fails",
        [Event.SOFT_BOUNCE, Event.RELAYED],
        [Event.RETRY_FAILED],
        "failed",
        "same",
        "same",
    ),
]


@pytest.mark.parametrize(
    ("efs", "row", "setup", "events", "status", "delivered", "bounces"),
    ROWS,
    ids=[f"{'efs' if r[0] else 'standard'}: {r[1]}" for r in ROWS],
)
def test_spec_section_6_row(
    ctx: Context,
    efs: bool,
    row: str,
    setup: list[Event],
    events: list[Event],
    status: str,
    delivered: str | None,
    bounces: str | None,
) -> None:
    execution_id, log_ids, _ = _setup(ctx, efs)
    _relay_all(ctx, log_ids)
    first = log_ids[0]
    _apply(ctx, *(LogEvent(first, e, reason="mailbox full") for e in setup))
    before = _kpis(ctx, execution_id)
    _apply(ctx, *(LogEvent(first, e, reason="user unknown") for e in events))
    after = _kpis(ctx, execution_id)

    assert _status(ctx, first) == status
    assert after.sent == N
    if delivered is None:  # the relay row: where the KPIs start
        assert after.delivered_pct == (0.0 if efs else 100.0)
        assert after.bounces_errors_pct == 0.0
    else:
        assert _direction(before.delivered_pct, after.delivered_pct) == delivered
        assert _direction(before.bounces_errors_pct, after.bounces_errors_pct) == bounces


@pytest.mark.parametrize("efs", [False, True], ids=["standard", "efs"])
def test_repeated_and_late_feedback_changes_nothing_it_should_not(ctx: Context, efs: bool) -> None:
    execution_id, log_ids, _ = _setup(ctx, efs)
    _relay_all(ctx, log_ids)
    _apply(ctx, LogEvent(log_ids[0], Event.HARD_BOUNCE))
    settled = _kpis(ctx, execution_id)
    _apply(
        ctx,
        LogEvent(log_ids[0], Event.HARD_BOUNCE),
        LogEvent(log_ids[0], Event.DELIVERED),
        LogEvent(log_ids[0], Event.RELAYED),
    )
    assert _status(ctx, log_ids[0]) == "failed"
    assert _kpis(ctx, execution_id) == settled


def test_kpis_before_any_relay_are_dashes_not_errors(ctx: Context) -> None:
    execution_id, _, _ = _setup(ctx, efs=False)
    k = _kpis(ctx, execution_id)
    assert (k.sent, k.delivered_pct, k.bounces_errors_pct, k.open_rate) == (0, None, None, None)


def _health(ctx: Context, profile_id: int) -> tuple[str, int]:
    with ctx.sessions() as s:
        p = s.get(Profile, profile_id)
        return p.email_status, p.error_count


def test_hard_bounce_quarantines_at_once(ctx: Context) -> None:
    _, log_ids, profile_ids = _setup(ctx, efs=False)
    _relay_all(ctx, log_ids)
    _apply(ctx, LogEvent(log_ids[0], Event.HARD_BOUNCE, reason="user unknown"))
    assert _health(ctx, profile_ids[0])[0] == "quarantine"
    assert _health(ctx, profile_ids[1]) == ("valid", 0)


def test_fifth_counted_soft_error_quarantines_and_spacing_applies(ctx: Context) -> None:
    _, log_ids, profile_ids = _setup(ctx, efs=True)
    _relay_all(ctx, log_ids)
    log, profile = log_ids[0], profile_ids[0]
    for day in range(4):
        _apply(ctx, LogEvent(log, Event.SOFT_BOUNCE, reason="mailbox full"))
        # A second report the same day is not counted.
        ctx.clock.advance(timedelta(hours=2))
        _apply(ctx, LogEvent(log, Event.SOFT_BOUNCE, reason="mailbox full"))
        assert _health(ctx, profile) == ("erroneous", day + 1)
        ctx.clock.advance(timedelta(days=1))
    _apply(ctx, LogEvent(log, Event.SOFT_BOUNCE, reason="mailbox full"))
    assert _health(ctx, profile) == ("quarantine", 5)


def test_delivery_resets_the_error_counter(ctx: Context) -> None:
    _, log_ids, profile_ids = _setup(ctx, efs=True)
    _relay_all(ctx, log_ids)
    _apply(ctx, LogEvent(log_ids[0], Event.SOFT_BOUNCE, reason="mailbox full"))
    assert _health(ctx, profile_ids[0]) == ("erroneous", 1)
    _apply(ctx, LogEvent(log_ids[0], Event.DELIVERED))
    assert _health(ctx, profile_ids[0]) == ("valid", 0)


def test_counter_resets_after_ten_quiet_days(ctx: Context) -> None:
    _, log_ids, profile_ids = _setup(ctx, efs=True)
    _relay_all(ctx, log_ids)
    for _ in range(4):
        _apply(ctx, LogEvent(log_ids[0], Event.SOFT_BOUNCE, reason="mailbox full"))
        ctx.clock.advance(timedelta(days=2))
    assert _health(ctx, profile_ids[0]) == ("erroneous", 4)
    ctx.clock.advance(timedelta(days=11))
    _apply(ctx, LogEvent(log_ids[0], Event.SOFT_BOUNCE, reason="mailbox full"))
    assert _health(ctx, profile_ids[0]) == ("erroneous", 1)


def test_complaint_denylists(ctx: Context) -> None:
    _, _, profile_ids = _setup(ctx, efs=False)
    with ctx.sessions.begin() as s:
        record_complaint(s, ctx.clock.now(), profile_ids[2])
    assert _health(ctx, profile_ids[2])[0] == "denylisted"
