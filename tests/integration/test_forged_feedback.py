"""Feedback an outsider could forge, and feedback that arrives too early or too late.

Every request goes to the real HTTP app, signed the way its source signs it; messages
are sent by the real engine into a Maildir, so the Message-IDs are the engine's own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import mailbox
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from harness import LiveApp
from pydantic import SecretStr
from scenario import as_user, due_now, prepare_one, sendgrid_public_key, settings_for
from sqlalchemy import select

from bot.clock import FixedClock
from bot.config import Settings
from bot.context import Context
from bot.domain.roles import Role
from bot.engine.message import message_tag
from bot.engine.tokens import TokenSigner
from bot.engine.transports import MaildirTransport
from bot.feedback import generic
from bot.services.deliveries.lifecycle import confirm_send
from bot.services.outcomes.mailbox import read_feedback_mailbox
from bot.store.models import Profile, SendingLog

SECRET = "test-feedback-secret"
MAILGUN_KEY = "test-mailgun-signing-key"
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
EMAILS = ["a@x.example", "b@x.example", "c@x.example", "d@x.example"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(
        tmp_path,
        sendgrid_public_key=sendgrid_public_key(SENDGRID_KEY),
        mailgun_signing_key=MAILGUN_KEY,
        retry_interval_minutes=30,
    )


def send_all(ctx: Context, tmp_path: Path) -> None:
    due_now(ctx, lambda: MaildirTransport(tmp_path / "outbox", fsync=False))


@pytest.fixture
def prepared(ctx: Context, tmp_path: Path) -> dict[str, SendingLog]:
    """Confirmed, not yet sent: every log is Queued."""
    prepare_one(ctx, tmp_path, EMAILS, "promo", efs=True)
    confirm_send(ctx, as_user("U0A", [Role.START_DELIVERIES]), "promo")
    return logs_of(ctx)


@pytest.fixture
def logs(ctx: Context, tmp_path: Path, prepared: dict[str, SendingLog]) -> dict[str, SendingLog]:
    send_all(ctx, tmp_path)
    return logs_of(ctx)


@pytest.fixture
def app(ctx: Context) -> Iterator[LiveApp]:
    live = LiveApp(ctx, start_sender=False).start()
    yield live
    live.stop()


def logs_of(ctx: Context) -> dict[str, SendingLog]:
    with ctx.sessions() as s:
        return {lg.email: lg for lg in s.scalars(select(SendingLog))}


def status_of(ctx: Context, email: str) -> str:
    return str(logs_of(ctx)[email].status)


def post(
    app: LiveApp, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    conn.request(
        "POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})}
    )
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data)


def epoch(ctx: Context, offset: timedelta = timedelta()) -> str:
    return str(int((ctx.clock.now() + offset).timestamp()))


# ---------------------------------------------------------------- Mailgun


def mailgun_body(event_data: dict[str, Any], token: str, timestamp: str) -> bytes:
    signature = hmac.new(MAILGUN_KEY.encode(), (timestamp + token).encode(), hashlib.sha256)
    block = {"timestamp": timestamp, "token": token, "signature": signature.hexdigest()}
    return json.dumps({"signature": block, "event-data": event_data}).encode()


def mailgun_failed(log: SendingLog, event_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "timestamp": 1795424500.5,
        "event": "failed",
        "severity": "permanent",
        "recipient": log.email,
        "delivery-status": {"code": 550, "enhanced-code": "5.1.1", "message": "No such user"},
        "user-variables": {"greenlight_log": str(log.id)},
    }


def mailgun_delivered(log: SendingLog, event_id: str) -> dict[str, Any]:
    return {
        "id": event_id,
        "timestamp": 1795424500.5,
        "event": "delivered",
        "recipient": log.email,
        "user-variables": {"greenlight_log": str(log.id)},
    }


def test_mailgun_refuses_old_and_future_signatures(
    app: LiveApp, ctx: Context, logs: dict[str, SendingLog]
) -> None:
    year_old = mailgun_body(
        mailgun_failed(logs["a@x.example"], "m1"),
        uuid.uuid4().hex,
        epoch(ctx, -timedelta(days=365)),
    )
    assert post(app, "/feedback/mailgun", year_old)[0] == 401
    future = mailgun_body(
        mailgun_failed(logs["a@x.example"], "m2"),
        uuid.uuid4().hex,
        epoch(ctx, timedelta(minutes=6)),
    )
    assert post(app, "/feedback/mailgun", future)[0] == 401
    assert status_of(ctx, "a@x.example") == "pending"
    with ctx.sessions() as s:
        assert s.scalar(select(Profile.email_status).where(Profile.email == "a@x.example")) == (
            "valid"
        )
    inside = mailgun_body(
        mailgun_failed(logs["a@x.example"], "m3"),
        uuid.uuid4().hex,
        epoch(ctx, -timedelta(minutes=4)),
    )
    assert post(app, "/feedback/mailgun", inside)[0] == 200
    assert status_of(ctx, "a@x.example") == "failed"


def test_a_mailgun_token_carries_one_request_only(
    app: LiveApp, ctx: Context, logs: dict[str, SendingLog]
) -> None:
    token, now = uuid.uuid4().hex, epoch(ctx)
    genuine = mailgun_body(mailgun_delivered(logs["a@x.example"], "m1"), token, now)
    assert post(app, "/feedback/mailgun", genuine)[0] == 200
    # The captured signature block, carrying a forged bounce of another profile.
    forged = mailgun_body(mailgun_failed(logs["b@x.example"], "forged"), token, now)
    assert post(app, "/feedback/mailgun", forged)[0] == 401
    assert status_of(ctx, "b@x.example") == "pending"
    assert post(app, "/feedback/mailgun", genuine)[0] == 401, "the same request replayed"


# --------------------------------------------------------------- SendGrid


def sendgrid_post(app: LiveApp, events: list[dict[str, Any]], timestamp: str) -> int:
    body = json.dumps(events).encode()
    signature = SENDGRID_KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }
    return post(app, "/feedback/sendgrid", body, headers)[0]


def test_sendgrid_refuses_a_correctly_signed_request_200_days_old(
    app: LiveApp, ctx: Context, logs: dict[str, SendingLog]
) -> None:
    bounce = {
        "email": "a@x.example",
        "timestamp": 1795424464,
        "event": "bounce",
        "type": "bounce",
        "status": "5.1.1",
        "sg_event_id": "sg-old",
        "greenlight_log": str(logs["a@x.example"].id),
    }
    assert sendgrid_post(app, [bounce], epoch(ctx, -timedelta(days=200))) == 401
    assert status_of(ctx, "a@x.example") == "pending"
    assert sendgrid_post(app, [bounce], epoch(ctx)) == 200
    assert status_of(ctx, "a@x.example") == "failed"


# ------------------------------------------------------ bounce messages


def bounce(message_id: str, recipient: str, extra_headers: str = "") -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example\r\nTo: bounces@shop.example\r\nSubject: Undelivered\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"{f'Message-ID: {message_id}' if message_id else 'Subject: Hi'}\r\n{extra_headers}"
        "Subject: Hi\r\n\r\n--B--\r\n"
    ).encode()


def post_dsn(app: LiveApp, raw: bytes) -> dict[str, Any]:
    status, report = post(
        app, "/feedback/dsn", raw, {"X-Greenlight-Signature": generic.sign(raw, SECRET)}
    )
    assert status == 200, report
    return report


def test_a_bounce_matches_only_through_the_signed_message_id_and_its_recipient(
    app: LiveApp, ctx: Context, logs: dict[str, SendingLog]
) -> None:
    a, b = logs["a@x.example"], logs["b@x.example"]
    assert a.message_id and b.message_id
    forged_tag = a.message_id.replace(a.message_id.split(".")[2].split("@")[0], "0" * 16)
    attempts = {
        "a bare log header": bounce("", a.email, f"X-Greenlight-Log: {a.id}\r\n"),
        "the right prefix, a wrong tag": bounce(forged_tag, a.email),
        "someone else's recipient": bounce(a.message_id, "c@x.example"),
        "a header that disagrees": bounce(a.message_id, a.email, f"X-Greenlight-Log: {b.id}\r\n"),
    }
    for what, raw in attempts.items():
        assert post_dsn(app, raw)["unmatched"] == 1, what
    assert status_of(ctx, "a@x.example") == "pending"
    assert status_of(ctx, "b@x.example") == "pending"

    genuine = post_dsn(app, bounce(a.message_id, a.email, f"X-Greenlight-Log: {a.id}\r\n"))
    assert genuine["applied"] == 1
    assert status_of(ctx, "a@x.example") == "failed"


def test_the_bounce_mailbox_does_not_trust_a_log_header(
    ctx: Context, tmp_path: Path, logs: dict[str, SendingLog]
) -> None:
    box = mailbox.Maildir(tmp_path / "bounces", create=True)
    a = logs["a@x.example"]
    box.add(bounce("", a.email, f"X-Greenlight-Log: {a.id}\r\n"))
    mailbox_ctx = ctx.with_settings(
        feedback_mailbox_url=SecretStr(f"maildir://{tmp_path / 'bounces'}")
    )
    report = read_feedback_mailbox(mailbox_ctx)
    assert (report.events, report.applied, report.unmatched) == (1, 0, 1)
    assert status_of(ctx, "a@x.example") == "pending"


# ------------------------------------------------ early and late reports


def test_a_report_before_the_relay_is_recorded_is_retried_then_applied(
    app: LiveApp, ctx: Context, tmp_path: Path, prepared: dict[str, SendingLog]
) -> None:
    a = prepared["a@x.example"]
    early = mailgun_body(mailgun_delivered(a, "early"), uuid.uuid4().hex, epoch(ctx))
    status, report = post(app, "/feedback/mailgun", early)
    assert status == 503 and report["held"] == 1, "the provider is asked to retry"
    assert status_of(ctx, "a@x.example") == "queued"

    send_all(ctx, tmp_path)
    status, report = post(app, "/feedback/mailgun", early)  # the provider's retry
    assert (status, report["applied"]) == (200, 1)
    assert status_of(ctx, "a@x.example") == "sent"


def test_an_early_bounce_in_the_mailbox_waits_there_for_its_log(
    ctx: Context, tmp_path: Path, prepared: dict[str, SendingLog]
) -> None:
    a = prepared["a@x.example"]
    # The Message-ID the engine is about to give log a (its tag is keyed; nobody else
    # can make it): read back from the message once sent, then replayed as if early.
    box = mailbox.Maildir(tmp_path / "bounces", create=True)
    mailbox_ctx = ctx.with_settings(
        feedback_mailbox_url=SecretStr(f"maildir://{tmp_path / 'bounces'}")
    )
    tag = message_tag(TokenSigner("test-tracking-secret"), "promo", a.id)
    box.add(bounce(f"<gl.{a.id}.{tag}@shop.example>", a.email))
    report = read_feedback_mailbox(mailbox_ctx)
    assert (report.events, report.applied) == (1, 0)
    assert len(box) == 1, "left in the mailbox for the next round"

    send_all(ctx, tmp_path)
    report = read_feedback_mailbox(mailbox_ctx)
    assert report.applied == 1 and len(box) == 0
    assert status_of(ctx, "a@x.example") == "failed"


def test_a_soft_bounce_reported_by_webhook_is_retried(
    app: LiveApp, ctx: Context, tmp_path: Path, logs: dict[str, SendingLog]
) -> None:
    a = logs["a@x.example"]
    soft = [
        {
            "id": "s1",
            "type": "soft_bounce",
            "log_id": a.id,
            "occurred_at": "2026-11-23T09:01:00+00:00",
        }
    ]
    body = json.dumps(soft).encode()
    status, _ = post(
        app, "/feedback/generic", body, {"X-Greenlight-Signature": generic.sign(body, SECRET)}
    )
    assert status == 200
    retried = logs_of(ctx)["a@x.example"]
    assert retried.status == "failed" and retried.failure_type == "soft"
    assert retried.next_retry_at == ctx.clock.now() + timedelta(minutes=30)

    outbox = mailbox.Maildir(tmp_path / "outbox", create=False)
    before = sum(1 for m in outbox if m["To"] == a.email)
    assert isinstance(ctx.clock, FixedClock)
    ctx.clock.advance(timedelta(minutes=31))
    send_all(ctx, tmp_path)
    assert sum(1 for m in outbox if m["To"] == a.email) == before + 1
    assert logs_of(ctx)["a@x.example"].retry_count == 1
