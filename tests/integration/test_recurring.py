"""Recurring deliveries without approval, walked with an injected clock to a real relay.

Each occurrence is checked in the database (executions, logs, cursor, audit) and at
the SMTP relay (who got what, how many times).
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from scenario import CLI, as_user, detail_json, due_now
from smtp_relay import Relay
from sqlalchemy import func, select

from bot.bootstrap import Root, bootstrap
from bot.clock import FixedClock
from bot.context import Context
from bot.domain.errors import DomainError
from bot.domain.roles import Role
from bot.jobs.due_work import DueReport
from bot.services.deliveries.lifecycle import (
    confirm_send,
    pause_delivery,
    resume_delivery,
    stop_delivery,
)
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.imports.deliveries import import_deliveries
from bot.services.imports.profiles import import_profiles
from bot.store.models import AuditEntry, Delivery, Execution, SendingLog

EMAILS = ["ann@x.example", "bob@x.example", "cy@x.example"]
START = [Role.START_DELIVERIES]

DELIVERY = """
- ref: daily
  name: Daily news
  audience: readers
  from: news@shop.example
  subject: "News for {{ first_name }}"
  text: "Hello"
  validity: 1d
  recurrence:
    cron: "CRON"
    timezone: ZONE
    aggregation: AGGREGATION
    request_confirmation: false
"""


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def profiles(ctx: Context, tmp_path: Path, emails: list[str]) -> None:
    csv = tmp_path / "p.csv"
    csv.write_text("email,first_name\n" + "".join(f"{e},N\n" for e in emails))
    import_profiles(ctx, CLI, csv, "readers")


def setup(
    ctx: Context,
    relay: Relay,
    tmp_path: Path,
    cron: str = "0 10 * * *",
    zone: str = "Europe/Paris",
    aggregation: str = "none",
) -> Context:
    ctx = ctx.with_settings(mail_url=f"smtp://127.0.0.1:{relay.port}", smtp_pool_size=1)
    profiles(ctx, tmp_path, EMAILS)
    yml = tmp_path / "d.yml"
    yml.write_text(
        DELIVERY.replace("CRON", cron).replace("ZONE", zone).replace("AGGREGATION", aggregation)
    )
    import_deliveries(ctx, CLI, yml)
    prepare_delivery(ctx, CLI, "daily")
    moved = confirm_send(ctx, as_user("U0ALICE", START), "daily")
    assert moved.after.value == "in-progress"
    return ctx


def due(ctx: Context, at: datetime) -> DueReport:
    ctx.clock.set(at)  # type: ignore[attr-defined]
    return due_now(ctx)


def executions(ctx: Context) -> list[tuple[str, str, int]]:
    """(key, state, sending logs) of every occurrence, oldest first."""
    with ctx.sessions() as s:
        rows = s.execute(
            select(Execution.key, Execution.state, func.count(SendingLog.id))
            .outerjoin(SendingLog, SendingLog.execution_id == Execution.id)
            .where(Execution.key != "main")
            .group_by(Execution.id, Execution.key, Execution.state)
            .order_by(Execution.id)
        ).all()
    return [(k, st, n) for k, st, n in rows]


def received(relay: Relay) -> dict[str, int]:
    return {rcpt: len(msgs) for rcpt, msgs in relay.recorder.by_rcpt().items()}


def test_each_occurrence_is_its_own_execution_sent_once(
    ctx: Context, relay: Relay, tmp_path: Path
) -> None:
    ctx = setup(ctx, relay, tmp_path)  # every day at 10:00 Paris = 09:00 UTC in winter
    # Confirmed at 09:00 UTC: today's 10:00 Paris is not after the confirm, so not due.
    assert due(ctx, utc(2026, 11, 23, 9, 0)).occurrences == []
    assert due(ctx, utc(2026, 11, 24, 8, 59)).occurrences == []
    assert relay.recorder.received == []

    report = due(ctx, utc(2026, 11, 24, 9, 0))
    [run] = report.occurrences
    assert (run.key, run.outcome, run.to_deliver) == ("2026-11-24T09:00:00+00:00", "sending", 3)
    assert report.sent == {"daily@2026-11-24T09:00:00+00:00": "finished"}
    assert received(relay) == dict.fromkeys(EMAILS, 1)

    # The same instant again, and a tick later: nothing more.
    assert due(ctx, utc(2026, 11, 24, 9, 0)).occurrences == []
    assert due(ctx, utc(2026, 11, 24, 9, 0, 15)).occurrences == []
    assert received(relay) == dict.fromkeys(EMAILS, 1)

    due(ctx, utc(2026, 11, 25, 9, 0))
    assert received(relay) == dict.fromkeys(EMAILS, 2)
    assert executions(ctx) == [
        ("2026-11-24T09:00:00+00:00", "finished", 3),
        ("2026-11-25T09:00:00+00:00", "finished", 3),
    ]
    detail = detail_json(ctx, "daily")
    assert detail["state"] == "in-progress", "a recurring delivery goes on"
    assert detail["execution"]["key"] == "2026-11-25T09:00:00+00:00"
    assert detail["kpis"]["sent"] == 3, "the KPIs are the current execution's, not a sum"
    assert [e["kpis"]["sent"] for e in detail["executions"]] == [3, 3]


def test_a_missed_occurrence_runs_once_after_downtime(
    ctx: Context, relay: Relay, tmp_path: Path
) -> None:
    ctx = setup(ctx, relay, tmp_path)
    # Down from Monday to Friday noon: four occurrences missed, only the latest runs.
    report = due(ctx, utc(2026, 11, 27, 12, 0))
    assert [r.key for r in report.occurrences] == ["2026-11-27T09:00:00+00:00"]
    assert received(relay) == dict.fromkeys(EMAILS, 1)
    assert due(ctx, utc(2026, 11, 27, 12, 1)).occurrences == []
    assert received(relay) == dict.fromkeys(EMAILS, 1)
    with ctx.sessions() as s:
        runs = s.scalars(select(AuditEntry).where(AuditEntry.action == "occurrence.run")).all()
    assert [r.detail["occurrence"] for r in runs] == ["2026-11-27T09:00:00+00:00"]


def test_aggregation_by_day_shares_one_execution_and_adds_only_newcomers(
    ctx: Context, relay: Relay, tmp_path: Path
) -> None:
    ctx = setup(ctx, relay, tmp_path, cron="0 9,15 * * *", zone="UTC", aggregation="day")
    due(ctx, utc(2026, 11, 24, 9, 0))
    assert received(relay) == dict.fromkeys(EMAILS, 1)
    # A newcomer joins the audience, and someone already sent to is imported again.
    profiles(ctx, tmp_path, ["dee@x.example", "ANN@x.example"])
    report = due(ctx, utc(2026, 11, 24, 15, 0))
    [run] = report.occurrences
    assert (run.key, run.added, run.to_deliver) == ("2026-11-24", 1, 4)
    assert received(relay) == {**dict.fromkeys(EMAILS, 1), "dee@x.example": 1}
    assert executions(ctx) == [("2026-11-24", "finished", 4)]

    # The next day is a new period: a new execution, everyone once more.
    due(ctx, utc(2026, 11, 25, 9, 0))
    assert executions(ctx)[-1] == ("2026-11-25", "finished", 4)
    assert received(relay) == {**dict.fromkeys(EMAILS, 2), "dee@x.example": 2}


def test_daylight_saving_change_keeps_the_local_time(
    ctx: Context, relay: Relay, tmp_path: Path
) -> None:
    ctx.clock.set(utc(2027, 3, 26, 12))  # type: ignore[attr-defined]
    ctx = setup(ctx, relay, tmp_path, cron="0 9 * * *")  # 09:00 in Paris
    assert [r.key for r in due(ctx, utc(2027, 3, 27, 8, 0)).occurrences] == [
        "2027-03-27T08:00:00+00:00"
    ]
    # Clocks go forward on 28 March: 09:00 in Paris is now 07:00 UTC.
    assert due(ctx, utc(2027, 3, 28, 6, 59)).occurrences == []
    assert [r.key for r in due(ctx, utc(2027, 3, 28, 7, 0)).occurrences] == [
        "2027-03-28T07:00:00+00:00"
    ]
    assert due(ctx, utc(2027, 3, 28, 8, 0)).occurrences == []
    assert received(relay) == dict.fromkeys(EMAILS, 2)


def test_two_instances_over_one_database_run_each_occurrence_once(
    root: Root, ctx: Context, relay: Relay, tmp_path: Path
) -> None:
    """Two processes tick at the same instant, day after day: each occurrence runs once."""
    ctx = setup(ctx, relay, tmp_path)
    other_clock = FixedClock(utc(2026, 11, 24, 9, 0))
    other = bootstrap(
        ctx.settings,
        other_clock,
        migrate=False,
        engine=root.engine if root.engine.dialect.name == "postgresql" else None,
    )
    days = 4
    for day in range(days):
        at = utc(2026, 11, 24, 9, 0) + timedelta(days=day)
        ctx.clock.set(at)  # type: ignore[attr-defined]
        other_clock.set(at)
        reports: list[DueReport] = []
        barrier = threading.Barrier(2)

        def run(
            svc: Context, reports: list[DueReport] = reports, barrier: threading.Barrier = barrier
        ) -> None:
            barrier.wait()
            reports.append(due_now(svc))

        threads = [threading.Thread(target=run, args=(svc,)) for svc in (ctx, other.context)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(reports) == 2
        assert sum(len(r.occurrences) for r in reports) == 1, f"day {day}"
    assert received(relay) == dict.fromkeys(EMAILS, days)
    assert [(k[:10], st, n) for k, st, n in executions(ctx)] == [
        (f"2026-11-{24 + d}", "finished", 3) for d in range(days)
    ]


def test_pause_skips_occurrences_and_stop_ends_the_recurrence(
    ctx: Context, relay: Relay, tmp_path: Path
) -> None:
    ctx = setup(ctx, relay, tmp_path)
    ctx.clock.set(utc(2026, 11, 23, 12))  # type: ignore[attr-defined]
    pause_delivery(ctx, as_user("U0ALICE", START), "daily")
    assert due(ctx, utc(2026, 11, 24, 9, 0)).occurrences == []
    ctx.clock.set(utc(2026, 11, 24, 12))  # type: ignore[attr-defined]
    resume_delivery(ctx, as_user("U0ALICE", START), "daily")
    # The occurrence that fell during the pause is not caught up on resume.
    assert due(ctx, utc(2026, 11, 24, 12, 1)).occurrences == []
    assert relay.recorder.received == []
    assert len(due(ctx, utc(2026, 11, 25, 9, 0)).occurrences) == 1
    assert received(relay) == dict.fromkeys(EMAILS, 1)

    stop_delivery(ctx, as_user("U0ALICE", START), "daily")
    assert due(ctx, utc(2026, 11, 26, 9, 0)).occurrences == []
    assert received(relay) == dict.fromkeys(EMAILS, 1)
    assert detail_json(ctx, "daily")["state"] == "stopped"


def _needing_approval(tmp_path: Path, approvals: str, channel: str | None = None) -> Path:
    """The daily delivery at 10:00 UTC, each occurrence waiting for approval."""
    yml = tmp_path / "d.yml"
    text = (
        DELIVERY.replace("CRON", "0 10 * * *")
        .replace("ZONE", "UTC")
        .replace("AGGREGATION", "none")
        .replace("    request_confirmation: false\n", approvals)
    )
    yml.write_text(text + (f"  slack_channel: {channel}\n" if channel else ""))
    return yml


def test_approval_needs_a_channel_to_post_in(ctx: Context, tmp_path: Path) -> None:
    profiles(ctx, tmp_path, EMAILS)
    import_deliveries(ctx, CLI, _needing_approval(tmp_path, ""))
    prepare_delivery(ctx, CLI, "daily")
    with pytest.raises(DomainError, match="no slack_channel to post the requests in"):
        confirm_send(ctx, as_user("U0ALICE", START), "daily")
    assert detail_json(ctx, "daily")["state"] == "ready"


def test_jobs_run_due_at_an_instant_runs_that_instants_occurrence(
    root: Root, ctx: Context, relay: Relay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.entrypoints.cli import main

    ctx = setup(ctx, relay, tmp_path)
    root = replace(root, context=ctx)
    assert main(["jobs", "run-due", "--at", "2026-11-24T09:59:00+01:00"], root=root) == 0
    assert "occurrence" not in capsys.readouterr().out
    assert main(["jobs", "run-due", "--at", "2026-11-24T10:00:00+01:00"], root=root) == 0
    out = capsys.readouterr().out
    assert "occurrence daily@2026-11-24T09:00:00+00:00: sending (3 added, 3 to deliver)" in out
    assert "sent daily@2026-11-24T09:00:00+00:00: now finished" in out
    assert main(["jobs", "run-due", "--at", "2026-11-24T10:00:00+01:00", "--json"], root=root) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["occurrences"], again["sent"]) == ([], {})
    assert received(relay) == dict.fromkeys(EMAILS, 1)


def test_an_occurrence_whose_process_died_while_preparing_is_taken_over(
    ctx: Context, relay: Relay, tmp_path: Path
) -> None:
    from bot.domain.executions import PREPARE_LEASE
    from bot.services.recurring.occurrences import _claim

    ctx = setup(ctx, relay, tmp_path)
    at = utc(2026, 11, 24, 9, 0)
    ctx.clock.set(at)  # type: ignore[attr-defined]
    with ctx.sessions() as s:
        delivery_id, cursor = s.execute(
            select(Delivery.id, Delivery.recurrence_cursor).where(Delivery.ref == "daily")
        ).one()
    assert _claim(ctx, delivery_id, cursor, at) is not None  # ...and the process dies
    assert executions(ctx) == [("2026-11-24T09:00:00+00:00", "preparing", 0)]

    assert due(ctx, at + PREPARE_LEASE - timedelta(seconds=1)).occurrences == []
    assert relay.recorder.received == [], "the lease of a process that may be alive holds"
    [run] = due(ctx, at + PREPARE_LEASE).occurrences
    assert (run.key, run.outcome) == ("2026-11-24T09:00:00+00:00", "sending")
    assert received(relay) == dict.fromkeys(EMAILS, 1)
    assert due(ctx, at + 2 * PREPARE_LEASE).occurrences == []
    assert executions(ctx) == [("2026-11-24T09:00:00+00:00", "finished", 3)]


def test_approvals_from_the_command_line_count_people_and_start_the_occurrence(
    root: Root, ctx: Context, relay: Relay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`approvals list|approve|skip`: what the buttons do, for people without Slack."""
    from bot.entrypoints.cli import main

    ctx = ctx.with_settings(mail_url=f"smtp://127.0.0.1:{relay.port}", smtp_pool_size=1)
    profiles(ctx, tmp_path, EMAILS)
    approvals = "    approvals_required: 2\n"
    import_deliveries(ctx, CLI, _needing_approval(tmp_path, approvals, "C0MARKETING"))
    prepare_delivery(ctx, CLI, "daily")
    confirm_send(ctx, as_user("U0ALICE", START), "daily")
    root = replace(root, context=ctx)
    due(ctx, utc(2026, 11, 24, 10, 0))

    def cli(*argv: str) -> tuple[int, str]:
        code = main(list(argv), root=root)
        return code, capsys.readouterr().out

    code, out = cli("approvals", "list", "--json")
    waiting = json.loads(out)
    assert code == 0 and [(w["ref"], w["approvals"], w["required"]) for w in waiting] == [
        ("daily", 0, 2)
    ]
    occurrence = f"daily@{waiting[0]['key']}"
    assert cli("approvals", "approve", occurrence, "--as", "U0NOBODY")[0] == 1, "no role"
    for user in ("U0ALICE", "U0BOB"):
        assert cli("roles", "grant", user, "start-deliveries")[0] == 0
    code, out = cli("approvals", "approve", occurrence, "--as", "U0ALICE", "--json")
    assert code == 0 and json.loads(out)["approvals"] == 1 and json.loads(out)["state"] == "open"
    assert (
        json.loads(cli("approvals", "approve", occurrence, "--as", "U0ALICE", "--json")[1])[
            "approvals"
        ]
        == 1
    ), "the same person twice is one approval"
    code, out = cli("approvals", "approve", occurrence, "--as", "U0BOB")
    assert code == 0 and "approved" in out
    assert cli("approvals", "list")[1].strip() == "no approval request is waiting"
    assert cli("approvals", "skip", "daily")[0] == 1, "REF@KEY is asked for"
    due(ctx, utc(2026, 11, 24, 10, 1))
    assert received(relay) == dict.fromkeys(EMAILS, 1)
