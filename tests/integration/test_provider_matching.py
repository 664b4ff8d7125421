"""Provider events find their sending log through the headers the engine set.

SendGrid, Mailgun and Postmark do not echo our Message-ID in their open and click
events (and Postmark never does), so each message also carries the log id in the
provider's own custom-variable header. These tests send real messages through the
engine, read the files it wrote, make each provider's payload the way that provider
echoes those headers (its documented rules, applied here independently), sign it as
the provider would, post it to the real HTTP app, and check that the right log — and
only it — moved.
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
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from harness import LiveApp
from scenario import as_user, due_now, prepare_one, sendgrid_public_key, settings_for
from sqlalchemy import select

from bot.config import Settings
from bot.context import Context
from bot.domain.roles import Role
from bot.engine.transports import MaildirTransport
from bot.services.deliveries.lifecycle import confirm_send
from bot.store.models import SendingLog, TrackingLog

EMAILS = ["a@x.example", "b@x.example", "c@x.example", "d@x.example"]
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
MAILGUN_KEY = "test-mailgun-signing-key"
POSTMARK = ("postmark-hook", "test-postmark-password")

LINK_HTML = '<a href="https://shop.example/x">x</a>'


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(
        tmp_path,
        sendgrid_public_key=sendgrid_public_key(SENDGRID_KEY),
        mailgun_signing_key=MAILGUN_KEY,
        postmark_webhook_user=POSTMARK[0],
        postmark_webhook_password=POSTMARK[1],
    )


@pytest.fixture
def sent(ctx: Context, tmp_path: Path) -> dict[str, tuple[SendingLog, Message]]:
    """Each recipient's sending log and the message the engine wrote for it."""
    prepare_one(ctx, tmp_path, EMAILS, "promo", html=LINK_HTML, efs=True)
    confirm_send(ctx, as_user("U0A", [Role.START_DELIVERIES]), "promo")
    due_now(ctx, lambda: MaildirTransport(tmp_path / "outbox", fsync=False))
    messages = {m["To"]: m for m in mailbox.Maildir(tmp_path / "outbox", create=False)}
    with ctx.sessions() as s:
        return {lg.email: (lg, messages[lg.email]) for lg in s.scalars(select(SendingLog))}


@pytest.fixture
def app(ctx: Context) -> Iterator[LiveApp]:
    live = LiveApp(ctx, start_sender=False).start()
    yield live
    live.stop()


def post(app: LiveApp, path: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    conn.request("POST", path, body=body, headers={**headers, "Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    assert resp.status == 200, data
    return json.loads(data)


def state(ctx: Context) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """(status by recipient, [(recipient, kind)] of tracking hits)."""
    with ctx.sessions() as s:
        statuses = dict(s.execute(select(SendingLog.email, SendingLog.status)).all())
        hits = s.execute(
            select(SendingLog.email, TrackingLog.kind).join(
                SendingLog, SendingLog.id == TrackingLog.sending_log_id
            )
        ).all()
    return statuses, sorted((email, kind) for email, kind in hits)


# What each provider echoes of a message (from its documentation), nothing more.


def sendgrid_echo(message: Message) -> dict[str, Any]:
    """SendGrid copies each X-SMTPAPI unique argument into the event as a top-level key."""
    return dict(json.loads(message["X-SMTPAPI"])["unique_args"])


def mailgun_echo(message: Message) -> dict[str, Any]:
    """Mailgun returns X-Mailgun-Variables as the event's `user-variables`."""
    return {"user-variables": json.loads(message["X-Mailgun-Variables"])}


def postmark_echo(message: Message) -> dict[str, Any]:
    """Postmark returns each X-PM-Metadata-{key} header as Metadata[key]."""
    prefix = "x-pm-metadata-"
    metadata = {
        name[len(prefix) :]: value
        for name, value in message.items()
        if name.lower().startswith(prefix)
    }
    return {"Metadata": metadata}


def test_sendgrid_events_without_smtp_id_match_by_unique_argument(
    app: LiveApp, ctx: Context, sent: dict[str, tuple[SendingLog, Message]]
) -> None:
    _, message_a = sent["a@x.example"]
    _, message_b = sent["b@x.example"]
    own_id = "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"  # SendGrid's, not ours
    events = [
        {"email": "a@x.example", "timestamp": 1795424463, "event": "delivered",
         "sg_event_id": "sg-1", "sg_message_id": own_id, **sendgrid_echo(message_a)},
        {"email": "a@x.example", "timestamp": 1795424499, "event": "open",
         "sg_event_id": "sg-2", "sg_message_id": own_id, "useragent": "Mozilla/5.0",
         **sendgrid_echo(message_a)},
        {"email": "b@x.example", "timestamp": 1795424464, "event": "bounce", "type": "bounce",
         "status": "5.1.1", "reason": "550 5.1.1 User unknown", "sg_event_id": "sg-3",
         "sg_message_id": own_id, **sendgrid_echo(message_b)},
    ]  # fmt: skip
    body = json.dumps(events).encode()
    timestamp = "1795424499"
    signature = SENDGRID_KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    headers = {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }
    report = post(app, "/feedback/sendgrid", body, headers)
    assert (report["applied"], report["unmatched"]) == (3, 0)
    statuses, hits = state(ctx)
    assert statuses == {
        "a@x.example": "sent",
        "b@x.example": "failed",
        "c@x.example": "pending",
        "d@x.example": "pending",
    }
    assert hits == [("a@x.example", "open")]


def mailgun_document(event_data: dict[str, Any], token: str) -> bytes:
    timestamp = "1795424463"
    signature = hmac.new(MAILGUN_KEY.encode(), (timestamp + token).encode(), hashlib.sha256)
    return json.dumps(
        {
            "signature": {
                "timestamp": timestamp,
                "token": token,
                "signature": signature.hexdigest(),
            },
            "event-data": event_data,
        }
    ).encode()


def test_mailgun_events_match_by_user_variables(
    app: LiveApp, ctx: Context, sent: dict[str, tuple[SendingLog, Message]]
) -> None:
    _, message_b = sent["b@x.example"]
    _, message_c = sent["c@x.example"]
    # Mailgun's own id, as its clicked and opened events for an API send carry it.
    own = {"message": {"headers": {"message-id": "20261123093320.1.F00@mg.shop.example"}}}
    clicked = {
        "id": "mg-1", "timestamp": 1795424500.1, "event": "clicked",
        "recipient": "b@x.example", "url": "https://shop.example/x",
        "client-info": {"user-agent": "Mozilla/5.0"}, **own, **mailgun_echo(message_b),
    }  # fmt: skip
    failed = {
        "id": "mg-2", "timestamp": 1795424501.2, "event": "failed", "severity": "permanent",
        "recipient": "c@x.example", "reason": "bounce",
        "delivery-status": {"code": 550, "enhanced-code": "5.1.1", "message": "No such user"},
        **own, **mailgun_echo(message_c),
    }  # fmt: skip
    for data in (clicked, failed):
        report = post(app, "/feedback/mailgun", mailgun_document(data, uuid.uuid4().hex), {})
        assert (report["applied"], report["unmatched"]) == (1, 0)
    statuses, hits = state(ctx)
    assert statuses["c@x.example"] == "failed"
    assert statuses["b@x.example"] == "pending", "a click does not change the log status"
    assert hits == [("b@x.example", "click")]


def test_postmark_records_match_by_metadata(
    app: LiveApp, ctx: Context, sent: dict[str, tuple[SendingLog, Message]]
) -> None:
    _, message_d = sent["d@x.example"]
    _, message_a = sent["a@x.example"]
    auth = base64.b64encode(f"{POSTMARK[0]}:{POSTMARK[1]}".encode()).decode()
    headers = {"Authorization": f"Basic {auth}"}
    records = [
        {"RecordType": "Delivery", "MessageID": str(uuid.uuid4()), "Recipient": "d@x.example",
         "DeliveredAt": "2026-11-23T09:05:00Z", "Details": "250 OK", **postmark_echo(message_d)},
        {"RecordType": "Open", "MessageID": str(uuid.uuid4()), "Recipient": "d@x.example",
         "ReceivedAt": "2026-11-23T09:33:20Z", "UserAgent": "Mozilla/5.0",
         **postmark_echo(message_d)},
        {"RecordType": "Bounce", "ID": 4323372036, "Type": "HardBounce",
         "MessageID": str(uuid.uuid4()), "Email": "a@x.example",
         "BouncedAt": "2026-11-23T09:06:00Z", "Details": "550 5.1.1 user unknown",
         **postmark_echo(message_a)},
    ]  # fmt: skip
    for record in records:
        report = post(app, "/feedback/postmark", json.dumps(record).encode(), headers)
        assert (report["applied"], report["unmatched"]) == (1, 0)
    statuses, hits = state(ctx)
    assert (statuses["d@x.example"], statuses["a@x.example"]) == ("sent", "failed")
    assert statuses["b@x.example"] == statuses["c@x.example"] == "pending"
    assert hits == [("d@x.example", "open")]


def test_without_the_carrier_such_events_would_not_match(
    app: LiveApp, ctx: Context, sent: dict[str, tuple[SendingLog, Message]]
) -> None:
    """The headers are what makes the match: the same open without them is unmatched."""
    auth = base64.b64encode(f"{POSTMARK[0]}:{POSTMARK[1]}".encode()).decode()
    record = {
        "RecordType": "Open",
        "MessageID": str(uuid.uuid4()),
        "Recipient": "d@x.example",
        "ReceivedAt": "2026-11-23T09:33:20Z",
    }
    report = post(
        app, "/feedback/postmark", json.dumps(record).encode(), {"Authorization": f"Basic {auth}"}
    )
    assert (report["applied"], report["unmatched"]) == (0, 1)
    assert state(ctx)[1] == []
