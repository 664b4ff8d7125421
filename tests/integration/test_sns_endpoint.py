"""SES notifications through SNS, at the real HTTP app, with certificates fetched over HTTP.

A local HTTP server plays Amazon's certificate host: the app's certificate store
fetches from it (the URL's host is mapped to the loopback port; everything else —
the checks, the cache, the error answers — is the app's own).
"""

from __future__ import annotations

import base64
import http.client
import http.server
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from harness import LiveApp
from scenario import as_user, due_now, prepare_one, settings_for
from sqlalchemy import select

from bot.config import Settings
from bot.context import Context
from bot.domain.roles import Role
from bot.engine.transports import MaildirTransport
from bot.feedback.certificates import SnsCertificates, fetch_over_https
from bot.services.deliveries.lifecycle import confirm_send
from bot.store.models import SendingLog

TOPIC = "arn:aws:sns:eu-west-1:123456789012:greenlight-ses"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def certificate(subject: str) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(KEY.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2024, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2030, 1, 1, tzinfo=UTC))
        .sign(KEY, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


class CertificateHost:
    """Serves one PEM at any path; counts requests; can be taken down."""

    def __init__(self, pem: bytes) -> None:
        self.pem = pem
        self.requests = 0
        host = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                host.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(host.pem)))
                self.end_headers()
                self.wfile.write(host.pem)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.up = True

    def fetch(self, url: str) -> bytes:
        """The app's fetch, sent to this host (or to a closed port when it is down)."""
        port = self.port if self.up else 9  # discard: nothing listens there
        return fetch_over_https(f"http://127.0.0.1:{port}{urlsplit(url).path}")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return settings_for(tmp_path, ses_topic_arns=TOPIC)


@pytest.fixture
def logs(ctx: Context, tmp_path: Path) -> dict[str, SendingLog]:
    prepare_one(ctx, tmp_path, ["a@x.example", "b@x.example"], "promo", efs=True)
    confirm_send(ctx, as_user("U0A", [Role.START_DELIVERIES]), "promo")
    due_now(ctx, lambda: MaildirTransport(tmp_path / "outbox", fsync=False))
    with ctx.sessions() as s:
        return {lg.email: lg for lg in s.scalars(select(SendingLog))}


@pytest.fixture
def host() -> Iterator[CertificateHost]:
    served = CertificateHost(certificate("sns.amazonaws.com"))
    yield served
    served.close()


@pytest.fixture
def app(ctx: Context, host: CertificateHost) -> Iterator[LiveApp]:
    live = LiveApp(ctx, start_sender=False)
    live.server.certificates = SnsCertificates(fetch=host.fetch)
    live.start()
    yield live
    live.stop()


def delivered(log: SendingLog, n: int, **changes: Any) -> bytes:
    ses = {
        "notificationType": "Delivery",
        "mail": {
            "messageId": f"ses-{n}",
            "destination": [log.email],
            "headers": [{"name": "Message-ID", "value": log.message_id}],
        },
        "delivery": {"recipients": [log.email], "smtpResponse": "250 2.0.0 OK"},
    }
    message = {
        "Type": "Notification",
        "MessageId": f"sns-{n}",
        "TopicArn": TOPIC,
        "Message": json.dumps(ses),
        "Timestamp": "2026-11-23T09:00:05.000Z",
        "SignatureVersion": "2",
        "SigningCertURL": CERT_URL,
        **changes,
    }
    signed = "".join(
        f"{k}\n{message[k]}\n"
        for k in ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
        if k in message
    )
    signature = KEY.sign(signed.encode(), padding.PKCS1v15(), hashes.SHA256())
    return json.dumps({**message, "Signature": base64.b64encode(signature).decode()}).encode()


def post(app: LiveApp, body: bytes) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    conn.request("POST", "/feedback/ses", body=body, headers={"Content-Type": "text/plain"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status


def status_of(ctx: Context, email: str) -> str:
    with ctx.sessions() as s:
        return str(s.scalar(select(SendingLog.status).where(SendingLog.email == email)))


def test_cheap_checks_come_before_any_fetch(
    app: LiveApp, host: CertificateHost, logs: dict[str, SendingLog]
) -> None:
    a = logs["a@x.example"]
    assert post(app, delivered(a, 1, TopicArn="arn:aws:sns:eu-west-1:999:other")) == 401
    bucket = "https://sns.s3-eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem"
    assert post(app, delivered(a, 2, SigningCertURL=bucket)) == 401
    assert post(app, delivered(a, 3, SigningCertURL="https://sns.s3.amazonaws.com/x.pem")) == 401
    assert host.requests == 0


def test_a_certificate_is_fetched_once_and_its_subject_checked(
    app: LiveApp, ctx: Context, host: CertificateHost, logs: dict[str, SendingLog]
) -> None:
    assert post(app, delivered(logs["a@x.example"], 1)) == 200
    assert post(app, delivered(logs["b@x.example"], 2)) == 200
    assert (status_of(ctx, "a@x.example"), status_of(ctx, "b@x.example")) == ("sent", "sent")
    assert host.requests == 1, "cached"


def test_a_certificate_issued_to_someone_else_is_refused(
    ctx: Context, host: CertificateHost, logs: dict[str, SendingLog]
) -> None:
    host.pem = certificate("attacker.example")
    live = LiveApp(ctx, start_sender=False)
    live.server.certificates = SnsCertificates(fetch=host.fetch)
    live.start()
    try:
        assert post(live, delivered(logs["a@x.example"], 1)) == 401
    finally:
        live.stop()
    assert status_of(ctx, "a@x.example") == "pending"


def test_a_fetch_failure_answers_503_and_the_retry_is_applied(
    app: LiveApp, ctx: Context, host: CertificateHost, logs: dict[str, SendingLog]
) -> None:
    host.up = False
    body = delivered(logs["a@x.example"], 1)
    assert post(app, body) == 503
    assert status_of(ctx, "a@x.example") == "pending"
    host.up = True
    assert post(app, body) == 200, "SNS's retry"
    assert status_of(ctx, "a@x.example") == "sent"
