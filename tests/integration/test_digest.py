"""The hourly KPI digest against a real database and a local mock of Slack's Web API.

Deliveries are seeded as the sender leaves them (an execution with its validity
period and its live counters), so each test states the exact figures it expects;
`test_digest_after_a_real_send` goes through import, preparation, confirm and relay.
Time is the injected clock; the pacing between posts is an injected sleep.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import threading
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import T0
from mock_slack import Failure, MockSlack
from pydantic import SecretStr
from scenario import CLI, as_user, due_now
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bot.bootstrap import Root, bootstrap
from bot.context import Context
from bot.domain.roles import Role
from bot.engine.transports.maildir import MaildirTransport
from bot.feedback.events import FeedbackEvent, FeedbackKind
from bot.notify.slack import SlackNotifications
from bot.notify.slack_client import make_client
from bot.services.deliveries.lifecycle import confirm_send
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.digest import DigestReport, run_digest
from bot.services.imports.deliveries import import_deliveries
from bot.services.imports.profiles import import_profiles
from bot.services.notifications import Unconnected
from bot.services.outcomes.ingest import ingest
from bot.store.models import (
    Audience,
    Delivery,
    Digest,
    DigestPart,
    DigestSnapshot,
    Execution,
    KpiCounter,
    SendingLog,
)

CHANNEL = "C0KPI"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def digest_services(ctx: Context, mock_slack: MockSlack) -> Context:
    return ctx.with_settings(
        slack_bot_token=SecretStr("xoxb-test"),
        slack_api_url=f"{mock_slack.url}/api/",
        kpi_channel=CHANNEL,
    )


class Pacing:
    """The injected sleep: records the pauses between posts instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def digest(ctx: Context, pacing: Pacing | None = None) -> DigestReport:
    async def go() -> DigestReport:
        return await run_digest(
            ctx, SlackNotifications(make_client(ctx.settings)), sleep=pacing or Pacing()
        )

    return asyncio.run(go())


def add_delivery(
    s: Session,
    ref: str,
    *,
    name: str | None = None,
    started_ago: timedelta = timedelta(hours=1),
    validity: timedelta = timedelta(days=3, hours=12),
    to_deliver: int = 1000,
    pending: int = 0,
    sent: int = 0,
    failed: int = 0,
    opens: int = 0,
    clicks: int = 0,
    key: str = "main",
) -> int:
    audience = s.scalar(select(Audience).where(Audience.name == "everyone"))
    if audience is None:
        audience = Audience(name="everyone", version=1, created_at=T0, updated_at=T0)
        s.add(audience)
        s.flush()
    delivery = s.scalar(select(Delivery).where(Delivery.ref == ref))
    started = T0 - started_ago
    if delivery is None:
        delivery = Delivery(
            ref=ref,
            name=name or ref.replace("-", " ").capitalize(),
            audience_id=audience.id,
            sender="news@shop.example",
            subject="Hi",
            text="Hello",
            validity_seconds=int(validity.total_seconds()),
            definition_hash="h",
            state="in-progress",
            started_at=started,
            created_at=T0,
            updated_at=T0,
        )
        s.add(delivery)
        s.flush()
    execution = Execution(
        delivery_id=delivery.id,
        key=key,
        state="in-progress",
        started_at=started,
        validity_ends_at=started + validity,
        created_at=T0,
    )
    s.add(execution)
    s.flush()
    s.add(
        KpiCounter(
            execution_id=execution.id,
            to_deliver=to_deliver,
            pending=pending,
            sent=sent,
            failed=failed,
            unique_opens=opens,
            unique_clicks=clicks,
            updated_at=T0,
        )
    )
    return execution.id


def set_counters(ctx: Context, execution_id: int, **values: int) -> None:
    with ctx.sessions.begin() as s:
        s.execute(
            update(KpiCounter).where(KpiCounter.execution_id == execution_id).values(**values)
        )


def texts(call_body: dict[str, Any]) -> list[str]:
    blocks = call_body["blocks"]
    if isinstance(blocks, str):
        import json

        blocks = json.loads(blocks)
    out = []
    for block in blocks:
        if "text" in block:
            out.append(block["text"]["text"])
        for element in block.get("elements", []):
            out.append(element["text"])
    return out


def blocks_of(call_body: dict[str, Any]) -> list[dict[str, Any]]:
    import json

    blocks = call_body["blocks"]
    return json.loads(blocks) if isinstance(blocks, str) else blocks


def row_of(mock: MockSlack, ref: str) -> str:
    rows = [t for c in mock.api_calls("chat.postMessage") for t in texts(c.body) if f"`{ref}`" in t]
    assert len(rows) == 1, f"{ref} appears {len(rows)} times"
    return rows[0]


# --- content ---------------------------------------------------------------------------


def test_digest_shows_the_kpis_of_every_execution_in_validity(
    digest_services: Context, mock_slack: MockSlack
) -> None:
    ctx = digest_services
    with ctx.sessions.begin() as s:
        # 1,000 relayed: 950 Sent, 50 Failed; 190 openers, 38 clickers.
        add_delivery(
            s, "spring-sale", name="Spring sale", sent=950, failed=50, opens=190, clicks=38
        )
        # EFS, still relaying: 300 relayed of which 100 Pending, 180 Sent, 20 Failed.
        add_delivery(s, "efs-news", to_deliver=500, pending=100, sent=180, failed=20, opens=9)
        # Nothing relayed yet: every rate is "—".
        add_delivery(s, "just-started", to_deliver=40)
        # Over: its validity period ended a minute ago.
        add_delivery(
            s, "old", started_ago=timedelta(days=1), validity=timedelta(hours=23, minutes=59)
        )
        # Prepared but never started.
        s.add(
            Execution(
                delivery_id=s.scalar(select(Delivery.id).where(Delivery.ref == "old")),
                key="2026-11-24",
                state="ready",
                created_at=T0,
            )
        )
    report = digest(ctx)
    assert report.status == "posted" and report.deliveries == 3
    assert report.messages == 1 and report.chart
    [post] = mock_slack.api_calls("chat.postMessage")
    assert post.body["channel"] == CHANNEL
    lines = texts(post.body)
    assert lines[0] == "KPI digest — 09:00 UTC"
    assert "3 deliveries and executions in their validity period" in lines[1]
    assert "first digest" in lines[1]
    spring = row_of(mock_slack, "spring-sale")
    assert spring.startswith(
        "*Spring sale* · `spring-sale` · validity ends 20:00 UTC on Thu 26 Nov 2026\n"
    )
    for expected in (
        "To deliver *1,000*",
        "Sent *1,000*",
        "Delivered *95 %*",
        "Bounces + errors *5 %*",
        "Open rate *20 %*",
        "Click-through *4 %*",
    ):
        assert expected in spring
    efs = row_of(mock_slack, "efs-news")
    for expected in (
        "To deliver *500*",
        "Sent *300*",
        "Delivered *60 %*",  # 180 / 300: Pending is relayed, not delivered
        "Bounces + errors *6.67 %*",
        "Open rate *5 %*",  # 9 / 180 logs in status Sent
        "Click-through *0 %*",
    ):
        assert expected in efs
    started = row_of(mock_slack, "just-started")
    assert "Sent *0*" in started and "Delivered *—*" in started and "Open rate *—*" in started
    assert "`old`" not in "\n".join(lines)
    # Largest first.
    order = [i for i, t in enumerate(lines) if "`" in t]
    assert [lines[i].split("`")[1] for i in order] == ["spring-sale", "efs-news", "just-started"]
    with ctx.sessions() as s:
        d = s.scalars(select(Digest)).one()
        assert (d.state, d.slot_at, d.channel) == ("posted", T0, CHANNEL)
        assert s.query(DigestSnapshot).count() == 3


def test_changes_since_the_previous_digest(digest_services: Context, mock_slack: MockSlack) -> None:
    ctx = digest_services
    with ctx.sessions.begin() as s:
        spring = add_delivery(s, "spring-sale", sent=950, failed=50, opens=190, clicks=38)
        add_delivery(s, "steady", sent=100)
    assert digest(ctx).status == "posted"
    # An hour later: 500 more relayed, opens and clicks up, a late hard bounce.
    set_counters(ctx, spring, sent=1410, failed=90, unique_opens=423, unique_clicks=141)
    with ctx.sessions.begin() as s:
        add_delivery(s, "newcomer", sent=10, started_ago=timedelta(minutes=30))
    ctx.clock.advance(timedelta(hours=1, minutes=2))  # type: ignore[attr-defined]
    report = digest(ctx)
    assert report.status == "posted" and report.slot == T0 + timedelta(hours=1)
    second = mock_slack.api_calls("chat.postMessage")[1]
    assert "changes since the digest of 09:00 UTC" in texts(second.body)[1]
    row = next(t for t in texts(second.body) if "`spring-sale`" in t)
    # 1,500 relayed: 94 % delivered (−1 pt), 6 % failed (+1 pt); 30 % opens (+10 pt),
    # 10 % clicks (+6 pt).
    assert "Sent *1,500* (+500)" in row
    assert "Delivered *94 %* (−1 pt)" in row
    assert "Bounces + errors *6 %* (+1 pt)" in row
    assert "Open rate *30 %* (+10 pt)" in row
    assert "Click-through *10 %* (+6 pt)" in row
    steady = next(t for t in texts(second.body) if "`steady`" in t)
    assert "Sent *100* (±0)" in steady and "Delivered *100 %* (±0 pt)" in steady
    newcomer = next(t for t in texts(second.body) if "`newcomer`" in t)
    assert "_new_" in newcomer and "(+" not in newcomer


def test_chart_is_a_png_uploaded_through_the_files_api(
    digest_services: Context, mock_slack: MockSlack
) -> None:
    ctx = digest_services
    with ctx.sessions.begin() as s:
        for i in range(7):
            add_delivery(s, f"d{i}", sent=100 * (i + 1), opens=10 * i)
    assert digest(ctx).status == "posted"
    ctx.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    assert digest(ctx).chart
    names = [c.method for c in mock_slack.calls]
    assert names.count("files.getUploadURLExternal") == 2
    assert names.count("files.completeUploadExternal") == 2
    # Messages first, then the chart, for each digest.
    assert names.index("chat.postMessage") < names.index("files.getUploadURLExternal")
    assert len(mock_slack.uploads) == 2
    png = list(mock_slack.uploads.values())[-1]
    assert png[:8] == PNG_SIGNATURE
    assert len(png) > 20_000
    width, height = struct.unpack(">II", png[16:24])  # IHDR
    assert (width, height) == (1000, 600)
    shared = mock_slack.shared[-1]
    assert shared["channel"] == CHANNEL
    assert shared["name"] == "kpi-digest-20261123T1000Z.png"
    assert "KPIs over time of the 5 largest of 7" in shared["initial_comment"]
    with ctx.sessions() as s:
        chart = s.scalars(
            select(DigestPart).where(DigestPart.kind == "chart").order_by(DigestPart.id.desc())
        ).first()
        assert chart is not None and chart.slack_ref == shared["id"]
        # The largest five, each with the point of both digests.
        assert [line["label"] for line in chart.payload["series"]] == [
            "D6",
            "D5",
            "D4",
            "D3",
            "D2",
        ]
        assert all(len(line["points"]) == 2 for line in chart.payload["series"])


def test_a_large_digest_is_split_into_messages_within_slacks_limits(
    digest_services: Context, mock_slack: MockSlack
) -> None:
    ctx = digest_services
    with ctx.sessions.begin() as s:
        for i in range(120):
            add_delivery(s, f"delivery-{i:03d}", name="A long name " * 20, sent=1000 + i)
    pacing = Pacing()
    report = digest(ctx, pacing)
    assert (report.messages, report.chart, report.deliveries) == (3, True, 120)
    posts = mock_slack.api_calls("chat.postMessage")
    assert len(posts) == 3
    for number, post in enumerate(posts, start=1):
        blocks = blocks_of(post.body)
        assert len(blocks) <= 50
        assert sum(1 for b in blocks if b["type"] == "section") == [45, 45, 30][number - 1]
        assert all(len(t) <= 3000 for t in texts(post.body))
        assert f"part {number} of 3" in post.body["text"]
    for i in range(120):
        row_of(mock_slack, f"delivery-{i:03d}")  # each exactly once
    # Four parts (three messages, the chart): three pauses of a second between them.
    assert pacing.waits == [1.0, 1.0, 1.0]


def test_nothing_active_posts_nothing(digest_services: Context, mock_slack: MockSlack) -> None:
    ctx = digest_services
    with ctx.sessions.begin() as s:
        add_delivery(s, "over", started_ago=timedelta(days=4))
    assert digest(ctx).status == "empty"
    assert digest(ctx).status == "not-due"
    assert mock_slack.calls == []
    with ctx.sessions() as s:
        assert s.scalars(select(Digest.state)).all() == ["empty"]


def test_off_without_channel_or_slack(
    digest_services: Context, mock_slack: MockSlack, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = digest_services
    with ctx.sessions.begin() as s:
        add_delivery(s, "spring-sale", sent=10)
    ctx = ctx.with_settings(kpi_channel=None)
    from bot.services import digest as module

    module._said.clear()
    with caplog.at_level(logging.INFO, logger="bot.services.digest"):
        first = digest(ctx)
        digest(ctx)
    assert first.status == "off" and "KPI_CHANNEL" in (first.error or "")
    assert [r.getMessage() for r in caplog.records] == [
        "KPI digest off: KPI_CHANNEL is not set; set it to a channel id (C…) to get the digest"
    ]
    caplog.clear()
    ctx = ctx.with_settings(kpi_channel=CHANNEL)
    with caplog.at_level(logging.WARNING, logger="bot.services.digest"):
        no_slack = asyncio.run(run_digest(ctx, Unconnected()))
        asyncio.run(run_digest(ctx, Unconnected()))
    assert no_slack.status == "off"
    assert [r.getMessage() for r in caplog.records] == [
        "KPI digest off: Slack is not connected (SLACK_BOT_TOKEN is not set)"
    ]
    assert mock_slack.calls == []
    with ctx.sessions() as s:
        assert s.scalars(select(Digest)).all() == []


# --- never twice, never lost -----------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        Failure(status=500, error="internal_error"),
        Failure(error="channel_not_found"),
        Failure(drop=True),
    ],
    ids=["http-500", "slack-error", "network"],
)
def test_slack_failure_is_retried_without_posting_a_part_twice(
    digest_services: Context, mock_slack: MockSlack, failure: Failure
) -> None:
    ctx = digest_services
    with ctx.sessions.begin() as s:
        for i in range(100):  # three messages (45, 45, 10) and the chart
            add_delivery(s, f"d{i:02d}", sent=100 + i)
    armed: list[bool] = []

    async def first_attempt() -> DigestReport:
        async def sleep(_: float) -> None:
            # Between part 1 and part 2: the next post fails.
            if not armed:
                armed.append(True)
                mock_slack.fail_next["chat.postMessage"] = [failure]

        return await run_digest(ctx, SlackNotifications(make_client(ctx.settings)), sleep=sleep)

    first_report = asyncio.run(first_attempt())
    assert mock_slack.failed == ["chat.postMessage"]
    assert first_report.status == "failed" and first_report.messages == 1
    assert first_report.error
    with ctx.sessions() as s:
        d = s.scalars(select(Digest)).one()
        assert (d.state, d.claim_token, d.attempts) == ("pending", None, 1)
        assert d.last_error
    # The next tick, 15 seconds later, posts the rest: parts 2 and 3 and the chart.
    ctx.clock.advance(timedelta(seconds=15))  # type: ignore[attr-defined]
    second = digest(ctx)
    assert (second.status, second.messages, second.chart) == ("posted", 2, True)
    posts = mock_slack.api_calls("chat.postMessage")
    assert [p.body["text"].rsplit("(", 1)[1] for p in posts] == [
        "part 1 of 3)",
        "part 2 of 3)",
        "part 3 of 3)",
    ]
    for i in range(100):
        row_of(mock_slack, f"d{i:02d}")
    assert len(mock_slack.uploads) == 1
    # And nothing more at the following ticks.
    ctx.clock.advance(timedelta(seconds=15))  # type: ignore[attr-defined]
    assert digest(ctx).status == "not-due"
    assert len(mock_slack.api_calls("chat.postMessage")) == 3


def test_failed_chart_upload_is_retried_and_messages_are_not_reposted(
    digest_services: Context, mock_slack: MockSlack, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = digest_services
    with ctx.sessions.begin() as s:
        add_delivery(s, "spring-sale", sent=100)
    mock_slack.fail_next["files.completeUploadExternal"] = [Failure(error="not_in_channel")]
    with caplog.at_level(logging.WARNING, logger="bot.services.digest"):
        first = digest(ctx)
    assert (first.status, first.messages, first.chart) == ("failed", 1, False)
    assert "invite the app to KPI_CHANNEL" in caplog.text
    second = digest(ctx)
    assert (second.status, second.messages, second.chart) == ("posted", 0, True)
    assert len(mock_slack.api_calls("chat.postMessage")) == 1
    assert len(mock_slack.shared) == 1


def test_missed_slots_are_posted_once_the_latest(
    digest_services: Context, mock_slack: MockSlack
) -> None:
    ctx = digest_services
    with ctx.sessions.begin() as s:
        add_delivery(s, "spring-sale", sent=100, started_ago=timedelta(minutes=5))
    assert digest(ctx).slot == T0
    # 10:00 fails and is left pending; then the process is down until 12:40.
    ctx.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    mock_slack.fail_next["chat.postMessage"] = [Failure(error="internal_error")]
    assert digest(ctx).status == "failed"
    ctx.clock.advance(timedelta(hours=2, minutes=40))  # type: ignore[attr-defined]
    report = digest(ctx)
    assert report.status == "posted" and report.slot == T0 + timedelta(hours=3)
    assert digest(ctx).status == "not-due"
    with ctx.sessions() as s:
        states = s.execute(select(Digest.slot_at, Digest.state).order_by(Digest.slot_at)).all()
    assert [(at.hour, state) for at, state in states] == [
        (9, "posted"),
        (10, "superseded"),
        (12, "posted"),
    ]
    posts = mock_slack.api_calls("chat.postMessage")
    assert len(posts) == 2
    # The change is against what readers last saw: the 09:00 digest.
    assert "changes since the digest of 09:00 UTC" in texts(posts[1].body)[1]


def test_a_claim_left_by_a_dead_process_is_taken_over_after_the_lease(
    digest_services: Context, mock_slack: MockSlack
) -> None:
    ctx = digest_services
    with ctx.sessions.begin() as s:
        add_delivery(s, "spring-sale", sent=100)
        s.add(
            Digest(
                slot_at=T0,
                channel=CHANNEL,
                state="posting",
                claim_token="dead",
                claimed_at=T0,
                attempts=1,
                created_at=T0,
            )
        )
    ctx.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]
    assert digest(ctx).status == "busy"
    assert mock_slack.calls == []
    ctx.clock.advance(timedelta(minutes=6))  # type: ignore[attr-defined]
    assert digest(ctx).status == "posted"
    assert len(mock_slack.api_calls("chat.postMessage")) == 1


def race(*instances: Context) -> list[DigestReport]:
    """Run the digest step in every instance at once, each in its own thread and loop."""
    barrier = threading.Barrier(len(instances))
    reports: list[DigestReport] = []

    def instance(svc: Context) -> None:
        async def go() -> DigestReport:
            barrier.wait()
            return await run_digest(
                svc, SlackNotifications(make_client(svc.settings)), sleep=Pacing()
            )

        reports.append(asyncio.run(go()))

    threads = [threading.Thread(target=instance, args=(svc,)) for svc in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return reports


def test_two_instances_over_one_database_post_each_digest_once(
    root: Root, digest_services: Context, mock_slack: MockSlack, backend: str, tmp_path: Path
) -> None:
    first = digest_services
    if backend == "postgresql":
        from bot.store.db import make_engine

        engine = make_engine(root.engine.url.render_as_string(hide_password=False))
        other = bootstrap(first.settings, first.clock, migrate=False, engine=engine)
    else:
        other = bootstrap(first.settings, first.clock, migrate=False)
    second = other.context
    with first.sessions.begin() as s:
        for i in range(50):  # two messages and the chart per digest
            add_delivery(s, f"d{i:02d}", sent=100 + i)
    try:
        for _ in range(3):
            reports = race(first, second)
            assert sorted(r.status for r in reports) in (
                ["busy", "posted"],
                ["not-due", "posted"],
            ), reports
            first.clock.advance(timedelta(hours=1))  # type: ignore[attr-defined]
    finally:
        other.close()
    posts = mock_slack.api_calls("chat.postMessage")
    assert len(posts) == 3 * 2
    assert len(mock_slack.shared) == 3
    with first.sessions() as s:
        assert s.scalars(select(Digest.state)).all() == ["posted"] * 3


def test_run_due_posts_the_digest_after_the_indicator_refresh(
    digest_services: Context, mock_slack: MockSlack, tmp_path: Path, monkeypatch: Any
) -> None:
    """Through the real pipeline: import, prepare, confirm, relay, then the digest."""
    due = _sent_promo(digest_services, tmp_path, monkeypatch)
    report = due()
    assert report.sent == {"promo": "finished"}
    assert report.digest is not None and report.digest.status == "posted"
    row = row_of(mock_slack, "promo")
    assert "To deliver *6*" in row and "Sent *6*" in row and "Delivered *100 %*" in row
    assert due().digest.status == "not-due"
    assert len(mock_slack.api_calls("chat.postMessage")) == 1


def test_jobs_run_due_reports_the_digest(
    root: Root,
    digest_services: Context,
    mock_slack: MockSlack,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: Any,
) -> None:
    import json

    from bot.entrypoints.cli import main
    from bot.services import digest as module

    root = replace(root, context=digest_services)
    monkeypatch.setattr(module, "PART_INTERVAL", 0.0)
    with digest_services.sessions.begin() as s:
        add_delivery(s, "spring-sale", sent=100)
    assert main(["jobs", "run-due", "--at", "2026-11-23T10:05:00+00:00"], root) == 0
    out = capsys.readouterr().out
    assert "KPI digest: posted for 2026-11-23T10:00:00+00:00: 1 delivery, 1 message, chart" in out
    assert main(["jobs", "run-due", "--at", "2026-11-23T10:05:00+00:00", "--json"], root) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["digest"]["status"] == "not-due"
    assert report["digest"]["slot"] == "2026-11-23T10:00:00+00:00"
    assert len(mock_slack.api_calls("chat.postMessage")) == 1


def test_snapshots_and_parts_older_than_the_longest_validity_are_deleted(
    digest_services: Context, mock_slack: MockSlack
) -> None:
    ctx = digest_services
    with ctx.sessions.begin() as s:
        add_delivery(s, "spring-sale", sent=100, started_ago=timedelta(minutes=5))
    assert digest(ctx).status == "posted"
    ctx.clock.advance(timedelta(days=4, hours=13))  # type: ignore[attr-defined]
    with ctx.sessions.begin() as s:
        add_delivery(s, "autumn", sent=50, started_ago=-timedelta(days=4, hours=11))
    assert digest(ctx).status == "posted"
    with ctx.sessions() as s:
        first, second = s.scalars(select(Digest).order_by(Digest.slot_at)).all()
        assert first.state == second.state == "posted"
        assert s.scalars(select(DigestSnapshot.digest_id)).all() == [second.id]
        assert set(s.scalars(select(DigestPart.digest_id))) == {second.id}


def test_cron_and_times_read_in_the_digest_time_zone(
    digest_services: Context, mock_slack: MockSlack
) -> None:
    ctx = digest_services
    ctx = ctx.with_settings(digest_cron="0 9 * * 1-5", digest_timezone="Europe/Paris")
    with ctx.sessions.begin() as s:
        add_delivery(s, "spring-sale", sent=100, started_ago=timedelta(minutes=30))
    # Monday 10:00 in Paris: the slot is 09:00 Paris (08:00 UTC).
    report = digest(ctx)
    assert report.slot == T0 - timedelta(hours=1)
    [post] = mock_slack.api_calls("chat.postMessage")
    assert texts(post.body)[0] == "KPI digest — 09:00 Europe/Paris"
    assert "validity ends 21:30 Europe/Paris on Thu 26 Nov 2026" in row_of(
        mock_slack, "spring-sale"
    )
    # Nothing more until Tuesday 09:00 Paris.
    ctx.clock.advance(timedelta(hours=22, minutes=59))  # type: ignore[attr-defined]
    assert digest(ctx).status == "not-due"
    ctx.clock.advance(timedelta(minutes=1))  # type: ignore[attr-defined]
    assert digest(ctx).slot == T0 + timedelta(hours=23)
    assert len(mock_slack.api_calls("chat.postMessage")) == 2


def _sent_promo(ctx: Context, tmp_path: Path, monkeypatch: Any) -> Any:
    """Six messages relayed through the real pipeline; the due work's runner back."""
    from bot.services import digest as module

    monkeypatch.setattr(module, "PART_INTERVAL", 0.0)
    csv = tmp_path / "p.csv"
    csv.write_text("email\n" + "".join(f"b{i}@x.example\n" for i in range(6)))
    import_profiles(ctx, CLI, csv, "buyers")
    yml = tmp_path / "d.yml"
    yml.write_text(
        "- ref: promo\n  name: Promo\n  audience: buyers\n  from: news@shop.example\n"
        "  subject: Hi\n  text: Hello\n"
    )
    import_deliveries(ctx, CLI, yml)
    prepare_delivery(ctx, CLI, "promo")
    confirm_send(ctx, as_user("U0ALICE", [Role.START_DELIVERIES]), "promo")

    def due() -> Any:
        return due_now(
            ctx, lambda: MaildirTransport(tmp_path / "outbox"), make_client(ctx.settings)
        )

    return due


def _open(ctx: Context, event_id: str) -> None:
    with ctx.sessions() as s:
        log_id = s.scalars(select(SendingLog.id).order_by(SendingLog.id)).first()
    ingest(
        ctx,
        [
            FeedbackEvent(
                kind=FeedbackKind.OPEN, source="generic", source_event_id=event_id, log_id=log_id
            )
        ],
    )


def _latest_row(mock: MockSlack, ref: str) -> str:
    post = mock.api_calls("chat.postMessage")[-1]
    return next(t for t in texts(post.body) if f"`{ref}`" in t)


def test_rates_are_recounted_at_the_hour_boundary_before_its_digest(
    digest_services: Context, mock_slack: MockSlack, tmp_path: Path, monkeypatch: Any
) -> None:
    """Recounted at 09:35, an open at 09:50: the digest of 10:00 counts it (not at 10:35)."""
    ctx = digest_services
    ctx.clock.advance(timedelta(minutes=35))  # type: ignore[attr-defined]
    due = _sent_promo(ctx, tmp_path, monkeypatch)
    first = due()
    assert first.indicators_refreshed == 1 and first.digest.status == "posted"
    assert "Open rate *0 %*" in _latest_row(mock_slack, "promo")
    ctx.clock.advance(timedelta(minutes=15))  # type: ignore[attr-defined]
    _open(ctx, "o-1")
    assert due().indicators_refreshed == 0, "not again inside the hour"
    ctx.clock.advance(timedelta(minutes=10, seconds=5))  # type: ignore[attr-defined]
    report = due()
    assert report.indicators_refreshed == 1
    assert report.digest.status == "posted" and report.digest.slot == T0 + timedelta(hours=1)
    assert "Open rate *16.67 %*" in _latest_row(mock_slack, "promo")
    assert due().indicators_refreshed == 0, "once per boundary"


def test_rates_are_recounted_for_a_digest_slot_off_the_hour(
    digest_services: Context, mock_slack: MockSlack, tmp_path: Path, monkeypatch: Any
) -> None:
    """A digest at half past (Asia/Kolkata) gets rates of its slot, not of the hour before."""
    ctx = digest_services.with_settings(digest_timezone="Asia/Kolkata")
    ctx.clock.advance(timedelta(minutes=5))  # type: ignore[attr-defined]
    due = _sent_promo(ctx, tmp_path, monkeypatch)
    assert due().indicators_refreshed == 1  # 09:05 UTC; the slot of 08:30 UTC posted
    ctx.clock.advance(timedelta(minutes=10))  # type: ignore[attr-defined]
    _open(ctx, "o-1")
    ctx.clock.advance(timedelta(minutes=15, seconds=5))  # type: ignore[attr-defined]
    report = due()  # 09:30:05 UTC: the slot of 15:00 in Kolkata
    assert report.digest.status == "posted" and report.digest.slot == T0 + timedelta(minutes=30)
    assert report.indicators_refreshed == 1
    assert "Open rate *16.67 %*" in _latest_row(mock_slack, "promo")
