"""The feedback endpoints of the real HTTP app: webhooks, bounce messages, tracking."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import LiveApp
from scenario import as_user, detail_json, due_now, prepare_one
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from bot.context import Context
from bot.domain.roles import Role
from bot.engine.message import MessageSkeleton
from bot.engine.tokens import TokenSigner
from bot.engine.transports import MaildirTransport
from bot.feedback import generic
from bot.services.deliveries.lifecycle import confirm_send
from bot.store.models import FeedbackReceipt, Profile, SendingLog, TrackingLog

SECRET = "test-feedback-secret"  # tests/conftest.py's FEEDBACK_SECRET

LINK_HTML = '<a href="https://shop.example/x">x</a>'


@pytest.fixture
def logs(ctx: Context, tmp_path: Path) -> dict[str, SendingLog]:
    emails = ["a@x.example", "b@x.example", "c@x.example"]
    prepare_one(ctx, tmp_path, emails, "promo", html=LINK_HTML, efs=True)
    confirm_send(ctx, as_user("U0A", [Role.START_DELIVERIES]), "promo")
    due_now(ctx, lambda: MaildirTransport(tmp_path / "outbox"))
    with ctx.sessions() as s:
        return {lg.email: lg for lg in s.scalars(select(SendingLog))}


@pytest.fixture
def app(ctx: Context) -> Iterator[LiveApp]:
    live = LiveApp(ctx, start_sender=False).start()
    yield live
    live.stop()


def request(app: LiveApp, method: str, path: str, body: bytes = b"", headers=None):  # type: ignore[no-untyped-def]
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), data


def post_generic(app: LiveApp, events: list[dict], secret: str = SECRET):  # type: ignore[no-untyped-def]
    body = json.dumps(events).encode()
    headers = {
        "X-Greenlight-Signature": generic.sign(body, secret),
        "Content-Type": "application/json",
    }
    return request(app, "POST", "/feedback/generic", body, headers)


def status_of(ctx: Context, email: str) -> str:
    with ctx.sessions() as s:
        return s.scalar(select(SendingLog.status).where(SendingLog.email == email))


def event(log: SendingLog, kind: str, n: str) -> dict:  # type: ignore[type-arg]
    return {"id": n, "type": kind, "log_id": log.id, "occurred_at": "2026-11-23T09:05:00+00:00"}


def test_generic_webhook_signed_forged_malformed_and_unknown(
    app: LiveApp, ctx: Context, logs: dict[str, SendingLog]
) -> None:
    status, _, body = post_generic(app, [event(logs["a@x.example"], "delivered", "e1")])
    assert status == 200 and json.loads(body)["applied"] == 1
    assert status_of(ctx, "a@x.example") == "sent"

    assert post_generic(app, [event(logs["b@x.example"], "hard_bounce", "e2")], "forged")[0] == 401
    assert status_of(ctx, "b@x.example") == "pending", "a forged request changes nothing"

    garbage = b'[{"id": "x", "type": "teleported"}]'
    status, _, body = request(
        app,
        "POST",
        "/feedback/generic",
        garbage,
        {"X-Greenlight-Signature": generic.sign(garbage, SECRET)},
    )
    assert status == 400 and "teleported" in json.loads(body)["error"]

    unknown = {
        "id": "e9",
        "type": "delivered",
        "message_id": "<nobody@x.example>",
        "occurred_at": "2026-11-23T09:05:00+00:00",
    }
    status, _, body = post_generic(app, [unknown])
    assert status == 200 and json.loads(body)["unmatched"] == 1
    assert request(app, "POST", "/feedback/carrier-pigeon", b"{}")[0] == 404
    assert request(app, "POST", "/feedback/sendgrid", b"[]")[0] == 503, "no key configured"
    metrics = request(app, "GET", "/metrics")[2].decode()
    assert 'greenlight_feedback_events_total{result="unmatched",source="generic"} 1' in metrics


def test_a_bounce_message_fails_the_log_it_names(
    app: LiveApp, ctx: Context, logs: dict[str, SendingLog]
) -> None:
    target = logs["c@x.example"]
    dsn = (
        "From: MAILER-DAEMON@mx.example\r\nTo: news@shop.example\r\nSubject: Undelivered\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example\r\n\r\n"
        "Final-Recipient: rfc822; c@x.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {target.message_id}\r\nSubject: Hi\r\n\r\n--B--\r\n"
    ).encode()
    headers = {"X-Greenlight-Signature": generic.sign(dsn, SECRET)}
    status, _, body = request(app, "POST", "/feedback/dsn", dsn, headers)
    assert status == 200 and json.loads(body)["applied"] == 1
    assert status_of(ctx, "c@x.example") == "failed"
    assert request(app, "POST", "/feedback/dsn", dsn)[0] == 401, "unsigned bounce refused"


def test_open_pixel_and_click_redirect_record_genuine_hits_only(
    app: LiveApp, ctx: Context, logs: dict[str, SendingLog]
) -> None:
    signer = TokenSigner(ctx.settings.tracking_secret.get_secret_value())
    log = logs["a@x.example"]
    status, headers, body = request(app, "GET", f"/t/o/{signer.open_token(log.id)}")
    assert status == 200 and headers["Content-Type"] == "image/gif" and body.startswith(b"GIF")
    status, _, body = request(app, "GET", "/t/o/forged-token")
    assert status == 200 and body.startswith(b"GIF"), "a forged pixel still answers a GIF"

    token = signer.click_token(log.id, "https://shop.example/x")
    status, headers, _ = request(app, "GET", f"/t/c/{token}", headers={"User-Agent": "Bot/1"})
    assert status == 302 and headers["Location"] == "https://shop.example/x"
    altered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    assert request(app, "GET", f"/t/c/{altered}")[0] == 404
    with ctx.sessions() as s:
        hits = s.execute(select(TrackingLog.kind, TrackingLog.url, TrackingLog.user_agent)).all()
    assert sorted(hits, key=str) == sorted(
        [("open", None, None), ("click", "https://shop.example/x", "Bot/1")], key=str
    )


def test_one_click_unsubscribe_denylists(
    app: LiveApp, ctx: Context, logs: dict[str, SendingLog]
) -> None:
    skeleton = MessageSkeleton.for_delivery(
        type("D", (), {"sender": "news@shop.example", "reply_to": None, "ref": "promo"})(),
        ctx.settings,
    )
    path = skeleton.unsubscribe_url(logs["b@x.example"].id).split("3000", 1)[1]
    assert request(app, "GET", path)[0] == 200
    assert request(app, "POST", path, b"List-Unsubscribe=One-Click")[0] == 200
    with ctx.sessions() as s:
        status = s.scalar(select(Profile.email_status).where(Profile.email == "b@x.example"))
        assert status == "denylisted"
    assert request(app, "POST", "/u/not-a-token")[0] == 404


def test_a_storage_failure_answers_503_so_the_provider_retries(
    app: LiveApp, ctx: Context, logs: dict[str, SendingLog], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure comes after the receipt and the log change were written in the
    transaction: both must roll back, so the provider's retry applies the event."""
    import bot.services.outcomes.ingest as ingest_module

    real = ingest_module.apply_log_events

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        real(*args, **kwargs)
        raise OperationalError("UPDATE", {}, Exception("disk I/O error"))

    monkeypatch.setattr(ingest_module, "apply_log_events", broken)
    assert post_generic(app, [event(logs["a@x.example"], "delivered", "e1")])[0] == 503
    with ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(TrackingLog)) == 0
        assert s.scalar(select(func.count()).select_from(FeedbackReceipt)) == 0
    assert detail_json(ctx, "promo")["logs"]["pending"] == 3


def test_metrics_pass_promtool_with_help_and_the_gauges_a_person_graphs(
    app: LiveApp, logs: dict[str, SendingLog], tmp_path: Path
) -> None:
    """`promtool check metrics` found no HELP for any metric before; now every family has
    HELP and TYPE, and the queue, the executions sending and the relay rate are there."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: prometheus; .ci/run installs it)")
    assert post_generic(app, [event(logs["a@x.example"], "delivered", "m1")])[0] == 200
    forged = {"X-Greenlight-Signature": "sha256=00"}
    assert request(app, "POST", "/feedback/generic", b"[]", forged)[0] == 401
    metrics = request(app, "GET", "/metrics")[2].decode()
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=metrics, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout + checked.stderr
    assert 'greenlight_feedback_events_total{result="applied",source="generic"} 1' in metrics
    assert 'greenlight_feedback_refused_total{source="generic"} 1' in metrics
    for gauge in ("queued_recipients", "executions_in_progress", "relay_rate"):
        assert f"# TYPE greenlight_{gauge} gauge" in metrics
        assert f"# HELP greenlight_{gauge} " in metrics
    assert "greenlight_executions_in_progress 0" in metrics  # prepared, never confirmed
