"""Feedback ingestion: matching, duplicates, complaints, tracking and the hourly rates."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from scenario import CLI, as_user, detail_json, due_now
from sqlalchemy import func, select

from bot.context import Context
from bot.domain.roles import Role
from bot.engine.transports import MaildirTransport
from bot.feedback.events import FeedbackEvent, FeedbackKind
from bot.jobs.due_work import refresh_indicators
from bot.services.deliveries.lifecycle import confirm_send
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.deliveries.views import compute_stats
from bot.services.imports.deliveries import import_deliveries
from bot.services.imports.profiles import import_profiles
from bot.services.outcomes.ingest import ingest
from bot.store.models import Profile, SendingLog, TrackingLog

EMAILS = ["a@x.example", "b@x.example", "c@x.example", "d@x.example"]


def sent(ctx: Context, tmp_path: Path, efs: bool) -> dict[str, SendingLog]:
    csv = tmp_path / "p.csv"
    csv.write_text("email\n" + "\n".join(EMAILS) + "\n")
    import_profiles(ctx, CLI, csv, "all")
    yml = tmp_path / "d.yml"
    yml.write_text(
        "- ref: promo\n  name: Promo\n  audience: all\n  from: news@shop.example\n"
        f"  subject: Hi\n  text: Hello\n  efs: {str(efs).lower()}\n"
    )
    import_deliveries(ctx, CLI, yml)
    prepare_delivery(ctx, CLI, "promo")
    confirm_send(ctx, as_user("U0A", [Role.START_DELIVERIES]), "promo")
    due_now(ctx, lambda: MaildirTransport(tmp_path / "outbox"))
    with ctx.sessions() as s:
        return {lg.email: lg for lg in s.scalars(select(SendingLog))}


def ev(kind: FeedbackKind, event_id: str, **kw) -> FeedbackEvent:  # type: ignore[no-untyped-def]
    return FeedbackEvent(kind=kind, source="generic", source_event_id=event_id, **kw)


def test_events_apply_once_match_by_id_or_message_id_and_unknown_ones_are_counted(
    ctx: Context, tmp_path: Path
) -> None:
    logs = sent(ctx, tmp_path, efs=True)
    events = [
        ev(FeedbackKind.DELIVERED, "e1", log_id=logs["a@x.example"].id),
        ev(
            FeedbackKind.HARD_BOUNCE,
            "e2",
            message_id=logs["b@x.example"].message_id,
            reason="user unknown",
            smtp_status="5.1.1",
        ),
        ev(FeedbackKind.DELIVERED, "e1", log_id=logs["a@x.example"].id),  # twice in one batch
        ev(FeedbackKind.DELIVERED, "e3", message_id="<someone-else@x.example>"),
    ]
    report = ingest(ctx, events)
    assert (report.applied, report.duplicates, report.unmatched) == (2, 1, 1)
    again = ingest(ctx, events[:2])
    assert (again.applied, again.duplicates) == (0, 2)
    k = detail_json(ctx, "promo")["kpis"]
    assert (k["sent"], k["delivered_pct"], k["bounces_errors_pct"]) == (4, 25.0, 25.0)
    with ctx.sessions() as s:
        b = s.get(SendingLog, logs["b@x.example"].id)
        assert (b.status, b.failure_reason, b.smtp_status) == ("failed", "user unknown", "5.1.1")
        status = dict(s.execute(select(Profile.email, Profile.email_status)).all())
    assert status["b@x.example"] == "quarantine"


def test_complaint_denylists_and_opens_clicks_feed_the_hourly_rates(
    ctx: Context, tmp_path: Path
) -> None:
    logs = sent(ctx, tmp_path, efs=False)
    ingest(
        ctx,
        [
            ev(FeedbackKind.COMPLAINT, "c1", log_id=logs["d@x.example"].id),
            ev(FeedbackKind.OPEN, "o1", log_id=logs["a@x.example"].id),
            ev(FeedbackKind.OPEN, "o2", log_id=logs["a@x.example"].id),
            ev(FeedbackKind.CLICK, "k1", log_id=logs["b@x.example"].id, url="https://x.example"),
        ],
    )
    with ctx.sessions() as s:
        assert s.scalar(select(Profile.email_status).where(Profile.email == "d@x.example")) == (
            "denylisted"
        )
    assert detail_json(ctx, "promo")["kpis"]["open_rate"] == 0.0, "hourly, not live"
    assert refresh_indicators(ctx) == 0, "refreshed when it was sent, due in an hour"
    ctx.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    assert refresh_indicators(ctx) == 1
    k = detail_json(ctx, "promo")["kpis"]
    assert (k["open_rate"], k["click_through_rate"]) == (50.0, 25.0), "a click is an open"
    assert refresh_indicators(ctx) == 0, "once an hour"
    ctx.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    assert refresh_indicators(ctx) == 1
    assert compute_stats(ctx, CLI, "promo").to_json()["kpis"] == k


def test_the_same_batch_posted_twice_at_once_applies_once(ctx: Context, tmp_path: Path) -> None:
    """A provider retrying while its first request is still running: the unique key decides."""
    logs = sent(ctx, tmp_path, efs=True)
    batch = [ev(FeedbackKind.DELIVERED, f"d-{lg.id}", log_id=lg.id) for lg in logs.values()] + [
        ev(FeedbackKind.OPEN, f"o-{lg.id}", log_id=lg.id) for lg in logs.values()
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        reports = list(pool.map(lambda _: ingest(ctx, batch), range(2)))
    assert sorted(r.applied for r in reports) == [0, len(batch)]
    assert sum(r.duplicates for r in reports) == len(batch)
    k = detail_json(ctx, "promo")["kpis"]
    assert (k["sent"], k["delivered_pct"]) == (4, 100.0)
    with ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(TrackingLog)) == len(logs)


@pytest.mark.parametrize("efs", [False, True], ids=["without EFS", "with EFS"])
def test_delivered_and_a_late_soft_bounce_end_alike_in_either_order(
    ctx: Context, tmp_path: Path, efs: bool
) -> None:
    """Delivered then a late soft bounce (a) ends as the other order (b): no retry, and
    the message does not go out again. Without EFS the late soft bounce used to mark the
    log for a retry."""
    logs = sent(ctx, tmp_path, efs=efs)
    a, b = logs["a@x.example"].id, logs["b@x.example"].id
    soft = {"reason": "mailbox full", "smtp_status": "4.2.2"}
    ingest(ctx, [ev(FeedbackKind.DELIVERED, "d-a", log_id=a)])
    ingest(ctx, [ev(FeedbackKind.SOFT_BOUNCE, "s-b", log_id=b, **soft)])
    ctx.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]
    ingest(ctx, [ev(FeedbackKind.SOFT_BOUNCE, "s-a", log_id=a, **soft)])
    ingest(ctx, [ev(FeedbackKind.DELIVERED, "d-b", log_id=b)])

    def state(log_id: int) -> tuple[object, ...]:
        with ctx.sessions() as s:
            lg = s.get(SendingLog, log_id)
            assert lg is not None
            return (lg.status, lg.failure_type, lg.failure_reason, lg.final, lg.next_retry_at)

    assert state(a) == state(b) == ("sent", None, None, False, None)
    outbox = tmp_path / "outbox" / "new"
    before = len(list(outbox.iterdir()))
    ctx.clock.advance(timedelta(hours=2))  # type: ignore[attr-defined]
    assert due_now(ctx, lambda: MaildirTransport(tmp_path / "outbox")).retried == 0
    assert len(list(outbox.iterdir())) == before
    k = detail_json(ctx, "promo")["kpis"]
    assert (k["sent"], k["bounces_errors_pct"]) == (4, 0.0)
