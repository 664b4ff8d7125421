"""Scheduled work with an injected clock: `at` starts, soft-bounce retries, validity end."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from scenario import CLI, as_user, detail_json, due_now
from smtp_relay import Relay
from sqlalchemy import select

from bot.context import Context
from bot.domain.roles import Role
from bot.engine.transports.smtp import SmtpTransport
from bot.jobs.due_work import DueReport
from bot.services.deliveries.lifecycle import confirm_send
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.imports.deliveries import import_deliveries
from bot.services.imports.profiles import import_profiles
from bot.store.models import SendingLog

DELIVERY = """
- ref: promo
  name: Promo
  audience: buyers
  from: news@shop.example
  subject: "Hello {{ first_name }}"
  text: "Hi"
  efs: EFS
  validity: 1d
SCHEDULE
"""


def load(ctx: Context, tmp_path: Path, emails: list[str], efs=False, schedule=""):  # type: ignore[no-untyped-def]
    csv = tmp_path / "p.csv"
    csv.write_text("email,first_name\n" + "".join(f"{e},N\n" for e in emails))
    import_profiles(ctx, CLI, csv, "buyers")
    yml = tmp_path / "d.yml"
    yml.write_text(DELIVERY.replace("EFS", str(efs).lower()).replace("SCHEDULE", schedule))
    import_deliveries(ctx, CLI, yml)
    prepare_delivery(ctx, CLI, "promo")
    confirm_send(ctx, as_user("U0ALICE", [Role.START_DELIVERIES]), "promo")


def due(ctx: Context, relay: Relay, after: timedelta = timedelta(0)) -> DueReport:
    ctx.clock.advance(after)  # type: ignore[attr-defined]
    return due_now(ctx, lambda: SmtpTransport("127.0.0.1", relay.port, pool_size=2, timeout=10.0))


def logs(ctx: Context) -> dict[str, tuple[str, str | None, int]]:
    with ctx.sessions() as s:
        return {
            lg.email: (lg.status, lg.failure_type, lg.retry_count)
            for lg in s.scalars(select(SendingLog))
        }


def test_soft_bounce_retried_every_interval_then_failed_when_retries_run_out(
    ctx: Context, relay: Relay, tmp_path: Path
) -> None:
    ctx = ctx.with_settings(max_retries=2)
    load(ctx, tmp_path, ["soft1@x.example", "softonce1@x.example", "ok@x.example"])
    first = due(ctx, relay)
    assert first.sent == {"promo": "finished"}
    assert logs(ctx)["soft1@x.example"] == ("sent", "soft", 0)
    assert detail_json(ctx, "promo")["kpis"]["delivered_pct"] == 100.0

    assert due(ctx, relay, timedelta(minutes=30)).retried == 0, "not due yet"
    assert due(ctx, relay, timedelta(minutes=30)).retried == 2
    assert logs(ctx)["softonce1@x.example"] == ("sent", None, 1), "retry succeeded"
    assert logs(ctx)["soft1@x.example"] == ("sent", "soft", 1)

    assert due(ctx, relay, timedelta(hours=1)).retried == 1
    assert logs(ctx)["soft1@x.example"] == ("failed", "soft", 2), "retries ran out"
    k = detail_json(ctx, "promo")["kpis"]
    assert (k["delivered_pct"], k["bounces_errors_pct"]) == (66.67, 33.33)
    assert due(ctx, relay, timedelta(hours=1)).retried == 0
    received = relay.recorder.by_rcpt()
    assert len(received["ok@x.example"]) == 1 and len(received["softonce1@x.example"]) == 1


def test_validity_end_resolves_what_is_still_open(
    ctx: Context, relay: Relay, tmp_path: Path
) -> None:
    load(ctx, tmp_path, ["a@x.example", "soft1@x.example"], efs=True)
    due(ctx, relay)
    assert logs(ctx)["a@x.example"] == ("pending", None, 0)
    report = due(ctx, relay, timedelta(days=1))
    assert report.expired_logs == 2
    assert {e: v[0] for e, v in logs(ctx).items()} == {
        "a@x.example": "failed",
        "soft1@x.example": "failed",
    }
    k = detail_json(ctx, "promo")["kpis"]
    assert (k["sent"], k["delivered_pct"], k["bounces_errors_pct"]) == (2, 0.0, 100.0)
    assert due(ctx, relay, timedelta(days=1)).expired_logs == 0


def test_at_delivery_waits_for_its_date_and_starts_once_even_if_the_moment_was_missed(
    ctx: Context, relay: Relay, tmp_path: Path
) -> None:
    schedule = (
        "  schedule:\n    mode: at\n    at: 2026-11-23T12:00:00\n    timezone: Europe/Paris\n"
    )
    load(ctx, tmp_path, ["a@x.example", "b@x.example"], schedule=schedule)
    assert detail_json(ctx, "promo")["state"] == "start-pending"
    assert due(ctx, relay, timedelta(hours=1)).started == []  # 10:00 UTC = 11:00 Paris
    report = due(ctx, relay, timedelta(hours=5))  # down at 12:00 Paris; catch up once
    assert report.started == ["promo"] and report.sent == {"promo": "finished"}
    assert due(ctx, relay, timedelta(hours=1)).started == []
    received = relay.recorder.by_rcpt()
    assert sorted(received) == ["a@x.example", "b@x.example"]
    assert all(len(v) == 1 for v in received.values())
