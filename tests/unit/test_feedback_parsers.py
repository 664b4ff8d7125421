"""Feedback parsers: every provider's real-shaped payloads, signatures and bounce formats.

The signatures are made here with keys generated for the test (an RSA certificate
standing in for Amazon SNS's, a P-256 key for SendGrid's), following each provider's
documentation independently of the code under test, so a parser that agreed only
with itself would fail.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.logs import Event
from bot.feedback import dsn, generic, mailgun, postmark, sendgrid, ses
from bot.feedback.events import (
    REASONS,
    FeedbackEvent,
    FeedbackKind,
    MalformedPayload,
    SignatureInvalid,
    derive_event_id,
    log_id_from_message_id,
    normalize_message_id,
    parse_log_id,
    reason_for,
)

FIXTURES = Path(__file__).parent / "feedback_fixtures"
SECRET = "generic-feedback-secret"
HARD, SOFT = FeedbackKind.HARD_BOUNCE, FeedbackKind.SOFT_BOUNCE


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> Any:
    return json.loads(fixture_bytes(name))


def check_event(event: FeedbackEvent) -> None:
    """What every event of every parser guarantees."""
    assert event.source_event_id
    assert event.occurred_at is None or event.occurred_at.utcoffset() is not None
    if event.kind.is_bounce:
        assert event.reason in REASONS
    else:
        assert event.reason is None
    if event.kind is not FeedbackKind.CLICK:
        assert event.url is None


# ============================================================== shared helpers


@pytest.mark.parametrize(
    ("mid", "expected"),
    [
        ("<gl.1234.5e0c3f9a7b21d846@news.example.com>", 1234),
        ("gl.7.00ff@example.com", 7),
        ("  <gl.0.ab@x.example>  ", 0),
        ("<GL.42.AB12@news.example.com>", 42),
        ("<gl.9223372036854775807.aa@x>", 2**63 - 1),
        ("<gl.9223372036854775808.aa@x>", None),  # beyond BIGINT
        ("<gl.12.@x>", None),  # no tag
        ("<gl.x.ab@x>", None),
        ("<abc.gl.12.ab@x>", None),  # not at the start
        ("<20261123.4Tq2@mail.example.com>", None),
        ("", None),
        (None, None),
    ],
)
def test_log_id_from_message_id(mid: str | None, expected: int | None) -> None:
    assert log_id_from_message_id(mid) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (12, 12),
        ("12", 12),
        (" 12 ", 12),
        (0, 0),
        (-1, None),
        (True, None),
        (1.0, None),
        ("+12", None),
        ("1e3", None),
        ("", None),
        (None, None),
        (2**63, None),
    ],
)
def test_parse_log_id(value: object, expected: int | None) -> None:
    assert parse_log_id(value) == expected


def test_message_ids_are_normalised_to_angle_brackets() -> None:
    assert normalize_message_id("gl.1.ab@x.example") == "<gl.1.ab@x.example>"
    assert normalize_message_id(" <gl.1.ab@x.example> ") == "<gl.1.ab@x.example>"
    assert normalize_message_id("883953f4-6105-42a2") == "883953f4-6105-42a2"
    assert normalize_message_id("") is None
    assert normalize_message_id("x" * 300 + "@y") is None


@pytest.mark.parametrize(
    ("status", "diagnostic", "reason"),
    [
        ("5.1.1", None, "user unknown"),
        (None, "smtp; 550 5.1.1 <a@b>: Recipient address rejected", "user unknown"),
        ("5.1.2", None, "invalid domain"),
        ("5.4.4", "Host or domain name not found", "invalid domain"),
        ("5.1.10", "RESOLVER.ADR.RecipientNotFound", "user unknown"),
        ("5.1.10", "recipient domain has null MX", "invalid domain"),
        ("5.1.3", None, "invalid address"),
        ("5.2.1", None, "account disabled"),
        ("5.2.2", None, "mailbox full"),
        ("4.2.2", None, "mailbox full"),
        ("5.7.1", "blocked using Spamhaus", "refused"),
        ("5.7.26", None, "refused"),
        ("4.4.1", None, "not connected"),
        ("4.4.7", None, "unreachable"),
        ("5.0.0", "550 mailbox unavailable: no such user", "user unknown"),
        ("5.0.0", "The email account that you tried to reach is disabled", "account disabled"),
        (None, "Sorry, no mailbox here by that name.", "user unknown"),
        (None, "Name service error for name=example.invalid: Host not found", "invalid domain"),
        (None, "connect to mx.example.net:25: Connection refused", "not connected"),
        (None, "over quota", "mailbox full"),
        (None, "550 rejected", "refused"),
        (None, "553 sorry", "user unknown"),
        (None, "552 too much", "mailbox full"),
        (None, "421 busy", "unreachable"),
        (None, "554 go away", "refused"),
        (None, "something odd", "not defined"),
        (None, None, "not defined"),
    ],
)
def test_reason_for(status: str | None, diagnostic: str | None, reason: str) -> None:
    assert reason_for(status, diagnostic) == reason


def test_derived_event_ids_are_stable_and_distinct() -> None:
    a = derive_event_id("postmark", {"x": 1, "y": [1, 2]})
    assert a == derive_event_id("postmark", {"y": [1, 2], "x": 1})  # key order is irrelevant
    assert a != derive_event_id("postmark", {"x": 2, "y": [1, 2]})
    assert a != derive_event_id("sendgrid", {"x": 1, "y": [1, 2]})


def test_feedback_event_guards_its_invariants() -> None:
    with pytest.raises(ValueError, match="timezone"):
        FeedbackEvent(FeedbackKind.OPEN, "x", "1", occurred_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="reason"):
        FeedbackEvent(HARD, "x", "1", reason="because")


def test_kinds_map_to_log_transitions() -> None:
    assert FeedbackKind.DELIVERED.log_event is Event.DELIVERED
    assert HARD.log_event is Event.HARD_BOUNCE
    assert SOFT.log_event is Event.SOFT_BOUNCE
    for kind in (FeedbackKind.COMPLAINT, FeedbackKind.OPEN, FeedbackKind.CLICK):
        assert kind.log_event is None


# ===================================================================== generic


def generic_body(events: list[dict[str, Any]]) -> bytes:
    return json.dumps(events).encode()


def independent_generic_signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_generic_fixture_parses_every_type() -> None:
    body = fixture_bytes("generic_events.json")
    events = generic.verify_and_parse(body, independent_generic_signature(body), SECRET)
    assert [e.kind for e in events] == [
        HARD,
        SOFT,
        FeedbackKind.DELIVERED,
        FeedbackKind.COMPLAINT,
        FeedbackKind.OPEN,
        FeedbackKind.CLICK,
    ]
    for e in events:
        check_event(e)
        assert e.source == "generic"
    hard, soft, delivered, complaint, opened, click = events
    assert (hard.source_event_id, hard.log_id, hard.recipient) == (
        "mta-7f3a-1",
        1234,
        "ann.lee@example.org",
    )
    assert (hard.reason, hard.smtp_status) == ("user unknown", "5.1.1")
    assert hard.occurred_at == datetime(2026, 11, 23, 9, 14, 58, tzinfo=UTC)
    assert (soft.log_id, soft.reason) == (4410, "mailbox full")
    assert soft.message_id == "<gl.4410.7f2b9c0e1d3a4856@news.example.com>"
    assert soft.occurred_at == datetime(2026, 11, 23, 9, 40, 2, tzinfo=UTC)
    assert delivered.message_id == "<gl.1290.e13a57c0b9d2f684@news.example.com>"
    assert delivered.log_id == 1290
    assert complaint.log_id == 7788
    assert opened.user_agent and "Firefox" in opened.user_agent
    assert click.url == "https://shop.example.com/november?utm_source=newsletter"


def test_generic_sign_helper_matches_the_documented_scheme() -> None:
    body = b'[{"x": 1}]'
    assert generic.sign(body, SECRET) == independent_generic_signature(body)


def test_generic_accepts_uppercase_hex_and_prefix() -> None:
    body = fixture_bytes("generic_events.json")
    header = "SHA256=" + independent_generic_signature(body)[7:].upper()
    assert len(generic.verify_and_parse(body, header, SECRET)) == 6


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "sha256=",
        "sha1=0123",
        "0" * 64,
        "sha256=" + "0" * 64,
        "sha256=zz",
        "sha256=é" + "0" * 63,
    ],
)
def test_generic_rejects_missing_or_forged_signatures(header: str | None) -> None:
    body = fixture_bytes("generic_events.json")
    with pytest.raises(SignatureInvalid):
        generic.verify_and_parse(body, header, SECRET)


def test_generic_rejects_a_signature_made_with_another_secret() -> None:
    body = fixture_bytes("generic_events.json")
    with pytest.raises(SignatureInvalid):
        generic.verify_and_parse(body, independent_generic_signature(body, "other"), SECRET)


def test_generic_checks_the_signature_before_reading_the_body() -> None:
    """An unsigned malformed body is a 401, not a 400 that would describe the format."""
    with pytest.raises(SignatureInvalid):
        generic.verify_and_parse(b"not json", "sha256=" + "0" * 64, SECRET)


def test_generic_refuses_an_empty_secret() -> None:
    with pytest.raises(ValueError, match="FEEDBACK_SECRET"):
        generic.verify_and_parse(b"[]", independent_generic_signature(b"[]", ""), "")


@given(st.binary(min_size=1, max_size=200), st.data())
def test_generic_signature_rejects_any_single_byte_alteration(body: bytes, data: Any) -> None:
    header = generic.sign(body, SECRET)
    index = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
    delta = data.draw(st.integers(min_value=1, max_value=255))
    altered = body[:index] + bytes([(body[index] + delta) % 256]) + body[index + 1 :]
    generic.verify(body, header, SECRET)
    with pytest.raises(SignatureInvalid):
        generic.verify(altered, header, SECRET)


@given(st.binary(max_size=100), st.data())
def test_generic_signature_rejects_any_altered_signature_character(body: bytes, data: Any) -> None:
    header = generic.sign(body, SECRET)
    index = data.draw(st.integers(min_value=len("sha256="), max_value=len(header) - 1))
    replacement = data.draw(
        st.sampled_from("0123456789abcdef").filter(lambda c: c != header[index])
    )
    with pytest.raises(SignatureInvalid):
        generic.verify(body, header[:index] + replacement + header[index + 1 :], SECRET)


GOOD = {"id": "e1", "type": "delivered", "log_id": 5, "occurred_at": "2026-11-23T09:00:00Z"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b'{"id": "e1"}', "JSON array"),
        (b"[1]", "event 0: each event must be a JSON object"),
        (generic_body([GOOD, {**GOOD, "id": None}]), "event 1: 'id' is required"),
        (generic_body([{**GOOD, "id": "  "}]), "'id' must not be empty"),
        (generic_body([{**GOOD, "id": 7}]), "'id' must be a string"),
        (generic_body([{**GOOD, "id": "x" * 201}]), "longer than 200"),
        (generic_body([{**GOOD, "type": "bounced"}]), "'type' 'bounced' is not one of"),
        (generic_body([{k: v for k, v in GOOD.items() if k != "type"}]), "'type' is required"),
        (generic_body([{k: v for k, v in GOOD.items() if k != "log_id"}]), "one of 'message_id'"),
        (generic_body([{**GOOD, "log_id": -1}]), "non-negative integer"),
        (generic_body([{**GOOD, "log_id": True}]), "non-negative integer"),
        (generic_body([{**GOOD, "log_id": "5"}]), "non-negative integer"),
        (generic_body([{**GOOD, "log_id": 2**63}]), "non-negative integer"),
        (
            generic_body([{**GOOD, "message_id": "<gl.6.ab@x.example>"}]),
            "does not match 'message_id'",
        ),
        (generic_body([{**GOOD, "message_id": 5}]), "'message_id' must be a string"),
        (generic_body([{**GOOD, "occurred_at": "2026-11-23T09:00:00"}]), "with a timezone"),
        (generic_body([{**GOOD, "occurred_at": "yesterday"}]), "with a timezone"),
        (generic_body([{**GOOD, "occurred_at": 1795338963}]), "'occurred_at' must be a string"),
        (generic_body([{**GOOD, "recipient": "not an address"}]), "'recipient'"),
        (generic_body([{**GOOD, "type": "hard_bounce", "reason": "gone"}]), "'reason' 'gone'"),
        (generic_body([{**GOOD, "reason": "user unknown"}]), "only for hard_bounce"),
        (generic_body([{**GOOD, "smtp_status": "550"}]), "enhanced status"),
        (generic_body([{**GOOD, "url": "https://x.example"}]), "only for click"),
        (generic_body([{**GOOD, "colour": "red"}]), "unknown field(s) 'colour'"),
        (generic_body([GOOD] * (generic.MAX_EVENTS + 1)), "at most 10000 events"),
    ],
)
def test_generic_malformed_bodies_say_why(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedPayload) as caught:
        generic.verify_and_parse(body, independent_generic_signature(body), SECRET)
    assert reason in caught.value.reason


def test_generic_empty_batch_and_duplicate_ids() -> None:
    assert generic.parse(b"[]") == []
    events = generic.parse(generic_body([GOOD, {**GOOD, "type": "open"}, {**GOOD, "id": "e2"}]))
    assert [(e.source_event_id, e.kind) for e in events] == [
        ("e1", FeedbackKind.DELIVERED),
        ("e2", FeedbackKind.DELIVERED),
    ]


def test_generic_bounce_reason_is_derived_when_absent() -> None:
    body = generic_body(
        [{**GOOD, "type": "soft_bounce", "diagnostic": "452 4.2.2 Mailbox full", "log_id": 9}]
    )
    (event,) = generic.parse(body)
    assert (event.reason, event.smtp_status, event.log_id) == ("mailbox full", "4.2.2", 9)


# ======================================================================== SES

TOPIC = "arn:aws:sns:eu-west-1:123456789012:greenlight-ses-feedback"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd.pem"


def make_certificate(
    key: rsa.RSAPrivateKey, *, not_after: datetime = datetime(2030, 1, 1, tzinfo=UTC)
) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(datetime(2024, 1, 1, tzinfo=UTC))
        .not_valid_after(not_after)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def sns_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def sns_cert(sns_key: rsa.RSAPrivateKey) -> bytes:
    return make_certificate(sns_key)


class CertFetcher:
    """Serves the test certificate and records which URLs were asked for."""

    def __init__(self, pem: bytes) -> None:
        self.pem = pem
        self.urls: list[str] = []

    def __call__(self, url: str) -> bytes:
        self.urls.append(url)
        return self.pem


def aws_string_to_sign(message: dict[str, Any]) -> bytes:
    """Per AWS's "Verifying the signatures of Amazon SNS messages", written out again."""
    if message["Type"] == "Notification":
        keys = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    else:
        keys = ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    return "".join(f"{k}\n{message[k]}\n" for k in keys if k in message).encode()


def sign_sns(message: dict[str, Any], key: rsa.RSAPrivateKey, version: str = "2") -> dict:
    signed = {**message, "SignatureVersion": version, "SigningCertURL": CERT_URL}
    algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(aws_string_to_sign(signed), padding.PKCS1v15(), algorithm)
    signed["Signature"] = base64.b64encode(signature).decode()
    return signed


def sns_notification(ses_payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC,
        "Message": json.dumps(ses_payload),
        "Timestamp": "2026-11-23T09:14:59.012Z",
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
        **extra,
    }


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("subject", [None, "Amazon SES Email Event Notification"])
def test_sns_notification_signatures_verify(
    sns_key: rsa.RSAPrivateKey, sns_cert: bytes, version: str, subject: str | None
) -> None:
    extra = {"Subject": subject} if subject else {}
    message = sign_sns(
        sns_notification(fixture_json("ses_delivery.json"), **extra), sns_key, version
    )
    fetch = CertFetcher(sns_cert)
    ses.verify_sns(message, fetch, allowed_topics={TOPIC}, now=datetime(2026, 11, 23, tzinfo=UTC))
    assert fetch.urls == [CERT_URL]


@pytest.mark.parametrize("version", ["1", "2"])
def test_sns_subscription_confirmation_verifies_and_asks_to_subscribe(
    sns_key: rsa.RSAPrivateKey, sns_cert: bytes, version: str
) -> None:
    message = sign_sns(fixture_json("sns_subscription_confirmation.json"), sns_key, version)
    result = ses.verify_and_parse(json.dumps(message).encode(), CertFetcher(sns_cert))
    assert result.kind == "subscribe"
    assert result.topic_arn == TOPIC
    assert result.subscribe_url == message["SubscribeURL"]
    assert result.events == ()


def test_sns_unsubscribe_confirmation(sns_key: rsa.RSAPrivateKey, sns_cert: bytes) -> None:
    message = fixture_json("sns_subscription_confirmation.json")
    message["Type"] = "UnsubscribeConfirmation"
    result = ses.verify_and_parse(
        json.dumps(sign_sns(message, sns_key)).encode(), CertFetcher(sns_cert)
    )
    assert (result.kind, result.events) == ("unsubscribe", ())


@pytest.mark.parametrize(
    "field", ["Message", "MessageId", "Timestamp", "TopicArn", "Subject", "Type"]
)
def test_sns_altered_message_is_rejected(
    sns_key: rsa.RSAPrivateKey, sns_cert: bytes, field: str
) -> None:
    message = sign_sns(
        sns_notification(fixture_json("ses_bounce_permanent.json"), Subject="s"), sns_key
    )
    message[field] = "Notification " if field == "Type" else message[field] + " "
    with pytest.raises((SignatureInvalid, MalformedPayload)):
        ses.verify_sns(message, CertFetcher(sns_cert))


def test_sns_subscription_url_is_covered_by_the_signature(
    sns_key: rsa.RSAPrivateKey, sns_cert: bytes
) -> None:
    message = sign_sns(fixture_json("sns_subscription_confirmation.json"), sns_key)
    message["SubscribeURL"] = message["SubscribeURL"].replace("Token=", "Token=0")
    with pytest.raises(SignatureInvalid):
        ses.verify_sns(message, CertFetcher(sns_cert))


def test_sns_added_subject_is_rejected(sns_key: rsa.RSAPrivateKey, sns_cert: bytes) -> None:
    message = sign_sns(sns_notification(fixture_json("ses_delivery.json")), sns_key)
    message["Subject"] = "injected"
    with pytest.raises(SignatureInvalid):
        ses.verify_sns(message, CertFetcher(sns_cert))


def test_sns_signed_by_another_key_is_rejected(sns_key: rsa.RSAPrivateKey) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    message = sign_sns(sns_notification(fixture_json("ses_delivery.json")), other)
    with pytest.raises(SignatureInvalid):
        ses.verify_sns(message, CertFetcher(make_certificate(sns_key)))


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/cert.pem",
        "http://sns.eu-west-1.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.eu-west-1.amazonaws.com.evil.example/x.pem",
        "https://sns.eu-west-1.amazonaws.com@evil.example/x.pem",
        "https://evil.example\\@sns.eu-west-1.amazonaws.com/x.pem",
        "https://user@sns.eu-west-1.amazonaws.com/x.pem",
        "https://sns.eu-west-1.amazonaws.com:8443/x.pem",
        "https://sns.eu-west-1.amazonaws.com/x.txt",
        "https://sns.eu-west-1.amazonaws.com/x.pem?.txt=1",
        "https://evilsns.eu-west-1.amazonaws.com/x.pem",
        "https://sqs.eu-west-1.amazonaws.com/x.pem",
        "https://sns.eu_west.amazonaws.com/x.pem",
        "https://sns.s3.amazonaws.com/x.pem",  # S3 bucket "sns"
        "https://sns.s3-eu-west-1.amazonaws.com/x.pem",  # legacy S3 region host
        "https://sns.s3-website-us-east-1.amazonaws.com/x.pem",
        "https://sns.amazonaws.com/x.pem",
        "https://sns.eu-west-1.amazonaws.com /x.pem",
        "//sns.eu-west-1.amazonaws.com/x.pem",
        "",
        None,
    ],
)
def test_sns_certificate_url_must_be_amazons(
    sns_key: rsa.RSAPrivateKey, sns_cert: bytes, url: str | None
) -> None:
    message = sign_sns(sns_notification(fixture_json("ses_delivery.json")), sns_key)
    message["SigningCertURL"] = url
    fetch = CertFetcher(sns_cert)
    with pytest.raises(SignatureInvalid):
        ses.verify_sns(message, fetch)
    assert fetch.urls == []  # nothing was fetched from a URL that is not Amazon's


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
        "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.ap-southeast-2.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://SNS.eu-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
    ],
)
def test_sns_certificate_urls_of_every_region_are_accepted(url: str) -> None:
    assert ses.is_sns_url(url, pem=True)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"SignatureVersion": "3"}, SignatureInvalid),
        ({"SignatureVersion": 2}, SignatureInvalid),
        ({"Signature": ""}, SignatureInvalid),
        ({"Signature": "not base64!"}, SignatureInvalid),
        ({"Signature": base64.b64encode(b"short").decode()}, SignatureInvalid),
        ({"TopicArn": "arn:aws:sns:eu-west-1:999999999999:someone-else"}, SignatureInvalid),
        ({"Type": "Weird"}, MalformedPayload),
        ({"MessageId": None}, MalformedPayload),
        ({"Message": 5}, MalformedPayload),
    ],
)
def test_sns_bad_envelopes_are_refused(
    sns_key: rsa.RSAPrivateKey, sns_cert: bytes, change: dict[str, Any], error: type
) -> None:
    message = sign_sns(sns_notification(fixture_json("ses_delivery.json")), sns_key)
    message.update(change)
    with pytest.raises(error):
        ses.verify_sns(message, CertFetcher(sns_cert), allowed_topics={TOPIC})


def test_sns_certificate_must_be_valid_now(sns_key: rsa.RSAPrivateKey) -> None:
    expired = make_certificate(sns_key, not_after=datetime(2025, 1, 1, tzinfo=UTC))
    message = sign_sns(sns_notification(fixture_json("ses_delivery.json")), sns_key)
    ses.verify_sns(message, CertFetcher(expired))  # without `now`, validity is not checked
    with pytest.raises(SignatureInvalid, match="not valid now"):
        ses.verify_sns(message, CertFetcher(expired), now=datetime(2026, 11, 23, tzinfo=UTC))


def test_sns_garbage_certificate_is_rejected(sns_key: rsa.RSAPrivateKey) -> None:
    message = sign_sns(sns_notification(fixture_json("ses_delivery.json")), sns_key)
    with pytest.raises(SignatureInvalid):
        ses.verify_sns(message, CertFetcher(b"-----BEGIN CERTIFICATE-----\nnope\n"))


def test_sns_certificate_fetch_errors_propagate(sns_key: rsa.RSAPrivateKey) -> None:
    """A network failure is not a forgery: the caller answers 5xx and SNS retries."""
    message = sign_sns(sns_notification(fixture_json("ses_delivery.json")), sns_key)

    def failing(url: str) -> bytes:
        raise ConnectionError("timeout")

    with pytest.raises(ConnectionError):
        ses.verify_sns(message, failing)


@pytest.mark.parametrize("body", [b"not json", b"[]", b"\xff"])
def test_sns_malformed_bodies(body: bytes, sns_cert: bytes) -> None:
    with pytest.raises(MalformedPayload):
        ses.verify_and_parse(body, CertFetcher(sns_cert))


def parse_ses(payload: dict[str, Any], **extra: Any) -> ses.SnsResult:
    return ses.parse_sns(sns_notification(payload, **extra))


def test_ses_permanent_bounce_is_hard_and_matched_by_header() -> None:
    result = parse_ses(fixture_json("ses_bounce_permanent.json"))
    assert result.kind == "notification"
    (event,) = result.events
    check_event(event)
    assert event.kind is HARD
    assert event.source == "ses"
    assert event.recipient == "ann.lee@example.org"
    assert event.log_id == 1234
    assert event.message_id == "<gl.1234.5e0c3f9a7b21d846@news.example.com>"
    assert (event.reason, event.smtp_status) == ("user unknown", "5.1.1")
    assert event.diagnostic and event.diagnostic.startswith("smtp; 550 5.1.1")
    assert event.occurred_at == datetime(2026, 11, 23, 9, 14, 58, 512000, tzinfo=UTC)
    assert event.source_event_id.startswith("0102018c9f2a1b3c")


def test_ses_header_log_id_wins_over_the_message_id() -> None:
    """SES may rewrite Message-ID; X-Greenlight-Log in the original headers still matches."""
    payload = fixture_json("ses_bounce_permanent.json")
    for header in payload["mail"]["headers"]:
        if header["name"] == "Message-ID":
            header["value"] = "<0102018c9f2a0e4f@eu-west-1.amazonses.com>"
    payload["mail"]["commonHeaders"]["messageId"] = "<0102018c9f2a0e4f@eu-west-1.amazonses.com>"
    (event,) = parse_ses(payload).events
    assert event.log_id == 1234


@pytest.mark.parametrize(
    ("bounce_type", "subtype", "kind", "reason"),
    [
        ("Transient", "MailboxFull", SOFT, "mailbox full"),
        ("Transient", "General", SOFT, "mailbox full"),  # from status 4.2.2
        ("Undetermined", "Undetermined", SOFT, "mailbox full"),
        ("Permanent", "Suppressed", HARD, "quarantined address"),
        ("Permanent", "OnAccountSuppressionList", HARD, "quarantined address"),
        ("Permanent", "NoEmail", HARD, "user unknown"),
        ("Transient", "ContentRejected", SOFT, "refused"),
    ],
)
def test_ses_bounce_types(bounce_type: str, subtype: str, kind: FeedbackKind, reason: str) -> None:
    payload = fixture_json("ses_bounce_transient.json")
    payload["bounce"].update(bounceType=bounce_type, bounceSubType=subtype)
    (event,) = parse_ses(payload).events
    check_event(event)
    assert (event.kind, event.reason) == (kind, reason)
    # No headers included: matched through commonHeaders.messageId.
    assert event.message_id == "<gl.4410.7f2b9c0e1d3a4856@news.example.com>"
    assert event.log_id == 4410


def test_ses_bounce_with_several_recipients_gives_one_event_each() -> None:
    payload = fixture_json("ses_bounce_permanent.json")
    second = {**payload["bounce"]["bouncedRecipients"][0], "emailAddress": "zed@example.org"}
    payload["bounce"]["bouncedRecipients"].append(second)
    events = parse_ses(payload).events
    assert [e.recipient for e in events] == ["ann.lee@example.org", "zed@example.org"]
    assert len({e.source_event_id for e in events}) == 2


def test_ses_complaint_and_delivery() -> None:
    (complaint,) = parse_ses(fixture_json("ses_complaint.json")).events
    check_event(complaint)
    assert (complaint.kind, complaint.recipient, complaint.log_id) == (
        FeedbackKind.COMPLAINT,
        "frank@example-isp.net",
        7788,
    )
    assert complaint.user_agent == "ExampleISP-FBL/2.1"
    (delivered,) = parse_ses(fixture_json("ses_delivery.json")).events
    check_event(delivered)
    assert (delivered.kind, delivered.recipient, delivered.log_id) == (
        FeedbackKind.DELIVERED,
        "gus@example.com",
        1290,
    )
    assert delivered.occurred_at == datetime(2026, 11, 23, 9, 16, 3, 204000, tzinfo=UTC)


def test_ses_redelivered_notification_has_the_same_event_ids() -> None:
    for name in ("ses_bounce_permanent.json", "ses_complaint.json", "ses_delivery.json"):
        first = parse_ses(fixture_json(name)).events
        again = parse_ses(fixture_json(name)).events
        assert [e.source_event_id for e in first] == [e.source_event_id for e in again]


def test_ses_event_publishing_format() -> None:
    payload = fixture_json("ses_bounce_permanent.json")
    payload["eventType"] = payload.pop("notificationType")
    (event,) = parse_ses(payload).events
    assert event.kind is HARD

    delay = fixture_json("ses_delivery.json")
    delay.pop("delivery")
    delay["eventType"] = delay.pop("notificationType")
    delay["eventType"] = "DeliveryDelay"
    delay["deliveryDelay"] = {
        "timestamp": "2026-11-23T10:16:03.000Z",
        "delayType": "TransientCommunicationFailure",
        "expirationTime": "2026-11-24T09:16:03.000Z",
        "delayedRecipients": [
            {
                "emailAddress": "gus@example.com",
                "status": "4.4.1",
                "diagnosticCode": "smtp; 421 4.4.1 Unable to connect",
            }
        ],
    }
    (event,) = parse_ses(delay).events
    assert (event.kind, event.reason, event.log_id) == (SOFT, "not connected", 1290)

    click = fixture_json("ses_delivery.json")
    click.pop("delivery")
    click.pop("notificationType")
    click["eventType"] = "Click"
    click["click"] = {
        "timestamp": "2026-11-23T09:34:01.000Z",
        "ipAddress": "203.0.113.1",
        "userAgent": "Mozilla/5.0",
        "link": "https://shop.example.com/november",
    }
    (event,) = parse_ses(click).events
    assert (event.kind, event.url, event.user_agent) == (
        FeedbackKind.CLICK,
        "https://shop.example.com/november",
        "Mozilla/5.0",
    )


@pytest.mark.parametrize(
    "message",
    [
        "Successfully validated SNS topic for Amazon SES event publishing.",
        json.dumps({"notificationType": "AmazonSnsSubscriptionSucceeded", "message": "ok"}),
        json.dumps({"eventType": "Send", "mail": {}, "send": {}}),
    ],
)
def test_ses_notices_without_feedback_give_no_events(message: str) -> None:
    result = ses.parse_sns({**sns_notification({}), "Message": message})
    assert (result.kind, result.events) == ("notification", ())


@pytest.mark.parametrize(
    "payload",
    [
        {"notificationType": "Bounce", "mail": {}},
        {"notificationType": "Bounce", "mail": {}, "bounce": {"bounceType": "Permanent"}},
        {"notificationType": "Bounce", "bounce": {"bouncedRecipients": []}},
        {"notificationType": "Complaint", "mail": {}, "complaint": {"complainedRecipients": [1]}},
        {"notificationType": "Delivery", "mail": {}, "delivery": {}},
        [1, 2],
    ],
)
def test_ses_malformed_notifications(payload: Any) -> None:
    with pytest.raises(MalformedPayload):
        ses.parse_sns({**sns_notification({}), "Message": json.dumps(payload)})


def test_ses_message_that_is_not_json_is_malformed() -> None:
    with pytest.raises(MalformedPayload):
        ses.parse_sns({**sns_notification({}), "Message": "hello"})


def test_sns_subscribe_url_must_be_amazons() -> None:
    message = fixture_json("sns_subscription_confirmation.json")
    message["SubscribeURL"] = "https://169.254.169.254/latest/meta-data/"
    with pytest.raises(MalformedPayload):
        ses.parse_sns(message)


# =================================================================== SendGrid


@pytest.fixture(scope="module")
def sendgrid_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_b64(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def sendgrid_sign(key: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    signature = key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(signature).decode()


SG_TIMESTAMP = "1795340100"


def test_sendgrid_batch_with_every_event(sendgrid_key: ec.EllipticCurvePrivateKey) -> None:
    body = fixture_bytes("sendgrid_events.json")
    events = sendgrid.verify_and_parse(
        body,
        sendgrid_sign(sendgrid_key, SG_TIMESTAMP, body),
        SG_TIMESTAMP,
        public_b64(sendgrid_key),
    )
    for e in events:
        check_event(e)
        assert e.source == "sendgrid"
    by_id = {e.source_event_id: e for e in events}
    assert "rbtnWrG1DVDGGGFHFyun0A" not in by_id  # processed: acknowledged, not applied
    assert "zz8Ssz9ngaaMoM0QyD-g8g" not in by_id  # unsubscribe
    assert len(events) == 8

    delivered = by_id["rWVYmVk90MjZJ9iohOBa3w"]
    assert (delivered.kind, delivered.log_id, delivered.recipient) == (
        FeedbackKind.DELIVERED,
        1290,
        "gus@example.com",
    )
    assert delivered.message_id == "<gl.1290.e13a57c0b9d2f684@news.example.com>"
    assert delivered.occurred_at == datetime.fromtimestamp(1795338963, UTC)

    bounce = by_id["6g4ZI7SA-xmRDv57GoPIPw"]
    assert (bounce.kind, bounce.reason, bounce.smtp_status, bounce.log_id) == (
        HARD,
        "user unknown",
        "5.1.1",
        1234,
    )
    blocked = by_id["Bgc0Vn3YTCxx5c0hdiLZQw"]
    assert (blocked.kind, blocked.reason) == (SOFT, "refused")
    dropped = by_id["zmzJhfJgAfUSOW80yEbPyw"]
    assert (dropped.kind, dropped.reason, dropped.diagnostic) == (
        HARD,
        "quarantined address",
        "Bounced Address",
    )
    deferred = by_id["t7LEShmowp86DTdUW8M-GQ"]
    assert (deferred.kind, deferred.smtp_status, deferred.log_id) == (SOFT, "4.7.0", 5120)
    opened = by_id["FOTFFO0ecsBE-zxFXfs6WA"]
    assert (opened.kind, opened.log_id, opened.message_id) == (
        FeedbackKind.OPEN,
        1290,
        "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",  # sg_message_id: no smtp-id
    )
    assert opened.user_agent and opened.user_agent.startswith("Mozilla/5.0")
    click = by_id["kCAi1KttyQdEKHhdC-nuEA"]
    assert (click.kind, click.url) == (
        FeedbackKind.CLICK,
        "https://shop.example.com/november?utm_source=newsletter",
    )
    complaint = by_id["37nvH5QBz858KGVYCM5uGA"]
    assert (complaint.kind, complaint.log_id) == (FeedbackKind.COMPLAINT, 7788)


@pytest.mark.parametrize(
    ("bounce_type", "kind", "reason"),
    [("bounce", HARD, "refused"), ("blocked", SOFT, "refused"), ("expired", SOFT, "unreachable")],
)
def test_sendgrid_bounce_types(bounce_type: str, kind: FeedbackKind, reason: str) -> None:
    event = {
        "email": "a@example.com",
        "timestamp": 1795338898,
        "event": "bounce",
        "type": bounce_type,
        "status": "5.7.1",
        "reason": "550 5.7.1 rejected by policy",
        "sg_event_id": "x1",
    }
    (parsed,) = sendgrid.parse(json.dumps([event]).encode())
    assert (parsed.kind, parsed.reason) == (kind, reason)
    assert parsed.log_id is None


@pytest.mark.parametrize(
    ("why", "reason"),
    [
        ("Bounced Address", "quarantined address"),
        ("Spam Reporting Address", "denylisted address"),
        ("Unsubscribed Address", "denylisted address"),
        ("Invalid", "invalid address"),
        ("Invalid SMTPAPI header", "refused"),
    ],
)
def test_sendgrid_dropped_reasons(why: str, reason: str) -> None:
    event = {"email": "a@example.com", "timestamp": 1, "event": "dropped", "reason": why}
    (parsed,) = sendgrid.parse(json.dumps([event]).encode())
    assert (parsed.kind, parsed.reason) == (HARD, reason)
    assert parsed.source_event_id.startswith("derived:")  # no sg_event_id given


def test_sendgrid_bounce_classification_is_the_fallback_reason() -> None:
    event = {
        "email": "a@example.com",
        "timestamp": 1,
        "event": "bounce",
        "type": "bounce",
        "reason": "unexpected answer",
        "bounce_classification": "Invalid Address",
    }
    (parsed,) = sendgrid.parse(json.dumps([event]).encode())
    assert parsed.reason == "user unknown"


def test_sendgrid_accepts_a_pem_key(sendgrid_key: ec.EllipticCurvePrivateKey) -> None:
    pem = (
        sendgrid_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    body = b"[]"
    sendgrid.verify(body, sendgrid_sign(sendgrid_key, SG_TIMESTAMP, body), SG_TIMESTAMP, pem)


def test_sendgrid_rejects_forged_altered_and_missing_signatures(
    sendgrid_key: ec.EllipticCurvePrivateKey,
) -> None:
    body = fixture_bytes("sendgrid_events.json")
    key = public_b64(sendgrid_key)
    good = sendgrid_sign(sendgrid_key, SG_TIMESTAMP, body)
    other = ec.generate_private_key(ec.SECP256R1())
    cases = [
        (body, sendgrid_sign(other, SG_TIMESTAMP, body), SG_TIMESTAMP),  # forged
        (body.replace(b"5.1.1", b"4.1.1"), good, SG_TIMESTAMP),  # altered body
        (body, good, "1795340101"),  # altered timestamp
        (body, None, SG_TIMESTAMP),
        (body, good, None),
        (body, "", SG_TIMESTAMP),
        (body, "not base64!", SG_TIMESTAMP),
        (body, base64.b64encode(b"\x30\x00").decode(), SG_TIMESTAMP),
    ]
    for case_body, signature, timestamp in cases:
        with pytest.raises(SignatureInvalid):
            sendgrid.verify_and_parse(case_body, signature, timestamp, key)


def test_sendgrid_timestamp_age(sendgrid_key: ec.EllipticCurvePrivateKey) -> None:
    body = b"[]"
    key = public_b64(sendgrid_key)
    signature = sendgrid_sign(sendgrid_key, SG_TIMESTAMP, body)
    signed_at = datetime.fromtimestamp(int(SG_TIMESTAMP), UTC)
    sendgrid.verify(body, signature, SG_TIMESTAMP, key, now=signed_at + timedelta(minutes=9))
    with pytest.raises(SignatureInvalid, match="too old"):
        sendgrid.verify(body, signature, SG_TIMESTAMP, key, now=signed_at + timedelta(hours=1))


@pytest.mark.parametrize("key", ["", "not base64!", base64.b64encode(b"junk").decode()])
def test_sendgrid_unusable_key_is_a_configuration_error(key: str) -> None:
    with pytest.raises(ValueError, match="SendGrid verification key"):
        sendgrid.verify(b"[]", "c2ln", SG_TIMESTAMP, key)


def test_sendgrid_rsa_key_is_refused() -> None:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    der = rsa_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ValueError, match="elliptic"):
        sendgrid.load_public_key(base64.b64encode(der).decode())


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{}", "JSON array"),
        (b"[1]", "event 0"),
        (b'[{"email": "a@b.c"}]', "'event' must be a string"),
        (b"nope", "not valid JSON"),
    ],
)
def test_sendgrid_malformed(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedPayload) as caught:
        sendgrid.parse(body)
    assert reason in caught.value.reason


# ==================================================================== Mailgun

MG_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"


def mailgun_signed(name: str, *, timestamp: str = "1795338963", key: str = MG_KEY) -> dict:
    document = fixture_json(name)
    token = document["signature"]["token"]
    document["signature"] = {
        "timestamp": timestamp,
        "token": token,
        "signature": hmac.new(key.encode(), (timestamp + token).encode(), "sha256").hexdigest(),
    }
    return document


def mailgun_parse(document: dict, **kw: Any) -> list[FeedbackEvent]:
    return mailgun.verify_and_parse(json.dumps(document).encode(), MG_KEY, **kw)


@pytest.mark.parametrize(
    ("name", "kind", "log_id"),
    [
        ("mailgun_delivered.json", FeedbackKind.DELIVERED, 1290),
        ("mailgun_failed_permanent.json", HARD, 1234),
        ("mailgun_failed_temporary.json", SOFT, 4410),  # no user variables: from Message-ID
        ("mailgun_opened.json", FeedbackKind.OPEN, 1290),
        ("mailgun_clicked.json", FeedbackKind.CLICK, 1290),
        ("mailgun_complained.json", FeedbackKind.COMPLAINT, 7788),
    ],
)
def test_mailgun_events(name: str, kind: FeedbackKind, log_id: int) -> None:
    document = mailgun_signed(name)
    (event,) = mailgun_parse(document)
    check_event(event)
    assert (event.kind, event.log_id, event.source) == (kind, log_id, "mailgun")
    assert event.source_event_id == document["event-data"]["id"]
    assert event.recipient == document["event-data"]["recipient"]
    assert (
        event.message_id == "<" + document["event-data"]["message"]["headers"]["message-id"] + ">"
    )
    assert event.occurred_at == datetime.fromtimestamp(document["event-data"]["timestamp"], UTC)


def test_mailgun_failure_details() -> None:
    (hard,) = mailgun_parse(mailgun_signed("mailgun_failed_permanent.json"))
    assert (hard.reason, hard.smtp_status) == ("user unknown", "5.1.1")
    assert hard.diagnostic and hard.diagnostic.startswith("550 5.1.1 The email account")
    (soft,) = mailgun_parse(mailgun_signed("mailgun_failed_temporary.json"))
    assert (soft.reason, soft.smtp_status) == ("mailbox full", "4.2.2")
    (click,) = mailgun_parse(mailgun_signed("mailgun_clicked.json"))
    assert click.url == "https://shop.example.com/november?utm_source=newsletter"
    assert click.user_agent and "Firefox" in click.user_agent


@pytest.mark.parametrize(
    ("why", "reason"),
    [
        ("suppress-bounce", "quarantined address"),
        ("suppress-complaint", "denylisted address"),
        ("suppress-unsubscribe", "denylisted address"),
        ("old", "unreachable"),
    ],
)
def test_mailgun_suppression_reasons(why: str, reason: str) -> None:
    document = mailgun_signed("mailgun_failed_permanent.json")
    document["event-data"]["reason"] = why
    (event,) = mailgun_parse(document)
    assert event.reason == reason


def test_mailgun_ignored_events() -> None:
    document = mailgun_signed("mailgun_delivered.json")
    document["event-data"]["event"] = "accepted"
    assert mailgun_parse(document) == []


def test_mailgun_rejects_forged_altered_and_missing_signatures() -> None:
    forged = mailgun_signed("mailgun_delivered.json", key="another-key")
    altered_token = mailgun_signed("mailgun_delivered.json")
    altered_token["signature"]["token"] += "0"
    altered_time = mailgun_signed("mailgun_delivered.json")
    altered_time["signature"]["timestamp"] = "1795338964"
    missing = mailgun_signed("mailgun_delivered.json")
    del missing["signature"]
    partial = mailgun_signed("mailgun_delivered.json")
    del partial["signature"]["token"]
    non_ascii = mailgun_signed("mailgun_delivered.json")
    non_ascii["signature"]["signature"] = "é" * 64
    for document in (forged, altered_token, altered_time, missing, partial, non_ascii):
        with pytest.raises(SignatureInvalid):
            mailgun_parse(document)


def test_mailgun_timestamp_freshness() -> None:
    document = mailgun_signed("mailgun_delivered.json", timestamp="1795338963")
    signed_at = datetime.fromtimestamp(1795338963, UTC)
    assert mailgun_parse(document, now=signed_at + timedelta(minutes=4))
    with pytest.raises(SignatureInvalid, match="too old"):
        mailgun_parse(document, now=signed_at + timedelta(minutes=6))
    with pytest.raises(SignatureInvalid, match="too old"):
        mailgun_parse(document, now=signed_at - timedelta(minutes=6))
    assert mailgun_parse(document)  # without `now` the age is not checked


def test_mailgun_empty_key_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="signing key"):
        mailgun.verify_and_parse(json.dumps(mailgun_signed("mailgun_delivered.json")).encode(), "")


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda d: d.pop("event-data"), "'event-data'"),
        (lambda d: d["event-data"].update(event=5), "must be a string"),
        (lambda d: d["event-data"].update(event="failed", severity="fatal"), "'severity'"),
    ],
)
def test_mailgun_malformed(mutate: Callable[[dict], object], reason: str) -> None:
    document = mailgun_signed("mailgun_delivered.json")
    mutate(document)
    with pytest.raises(MalformedPayload) as caught:
        mailgun_parse(document)
    assert reason in caught.value.reason


def test_mailgun_body_must_be_an_object() -> None:
    for body in (b"[]", b"nope"):
        with pytest.raises(MalformedPayload):
            mailgun.verify_and_parse(body, MG_KEY)


# =================================================================== Postmark

PM_USER, PM_PASSWORD = "postmark", "s3cret:with:colons"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_postmark_basic_auth() -> None:
    postmark.check_basic_auth(basic(PM_USER, PM_PASSWORD), PM_USER, PM_PASSWORD)
    postmark.check_basic_auth("basic  " + basic(PM_USER, PM_PASSWORD)[6:], PM_USER, PM_PASSWORD)
    for header in (
        None,
        "",
        basic(PM_USER, "wrong"),
        basic("someone", PM_PASSWORD),
        basic(PM_USER, PM_PASSWORD + "x"),
        basic(PM_USER, ""),
        "Bearer " + base64.b64encode(b"postmark:x").decode(),
        "Basic",
        "Basic not-base64!",
        "Basic " + base64.b64encode(b"no-colon").decode(),
    ):
        with pytest.raises(SignatureInvalid):
            postmark.check_basic_auth(header, PM_USER, PM_PASSWORD)


def test_postmark_empty_credentials_are_a_configuration_error() -> None:
    with pytest.raises(ValueError):
        postmark.check_basic_auth(basic("", ""), "", "")


def test_postmark_credentials_are_checked_before_the_body() -> None:
    with pytest.raises(SignatureInvalid):
        postmark.verify_and_parse(b"nope", basic(PM_USER, "x"), PM_USER, PM_PASSWORD)


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("postmark_delivery.json", FeedbackKind.DELIVERED),
        ("postmark_bounce.json", HARD),
        ("postmark_spam_complaint.json", FeedbackKind.COMPLAINT),
        ("postmark_open.json", FeedbackKind.OPEN),
        ("postmark_click.json", FeedbackKind.CLICK),
    ],
)
def test_postmark_records(name: str, kind: FeedbackKind) -> None:
    record = fixture_json(name)
    (event,) = postmark.verify_and_parse(
        fixture_bytes(name), basic(PM_USER, PM_PASSWORD), PM_USER, PM_PASSWORD
    )
    check_event(event)
    assert (event.kind, event.source, event.message_id) == (kind, "postmark", record["MessageID"])
    assert event.log_id == int(record["Metadata"]["greenlight_log"])
    assert event.recipient == (record.get("Email") or record.get("Recipient"))
    assert event.occurred_at is not None


def test_postmark_details() -> None:
    (bounce,) = postmark.parse(fixture_bytes("postmark_bounce.json"))
    assert (bounce.reason, bounce.smtp_status) == ("user unknown", "5.1.1")
    assert bounce.source_event_id == "Bounce:4323372036854775807"
    assert bounce.occurred_at == datetime(2026, 11, 23, 9, 14, 58, 512000, tzinfo=UTC)
    (click,) = postmark.parse(fixture_bytes("postmark_click.json"))
    assert click.url == "https://shop.example.com/november?utm_source=newsletter"
    assert click.user_agent and "Chrome" in click.user_agent
    (delivery,) = postmark.parse(fixture_bytes("postmark_delivery.json"))
    again = postmark.parse(fixture_bytes("postmark_delivery.json"))[0]
    assert delivery.source_event_id == again.source_event_id  # a retried POST is a duplicate
    assert delivery.source_event_id.startswith("derived:")


@pytest.mark.parametrize(
    ("type_", "details", "kind", "reason"),
    [
        ("HardBounce", "smtp;550 5.1.1 unknown", HARD, "user unknown"),
        ("HardBounce", "", HARD, "user unknown"),
        ("HardBounce", "smtp;550 5.7.1 blocked by policy", HARD, "refused"),
        ("BadEmailAddress", "", HARD, "invalid address"),
        ("ManuallyDeactivated", "", HARD, "quarantined address"),
        ("SoftBounce", "smtp;452 4.2.2 mailbox full", SOFT, "mailbox full"),
        ("SoftBounce", "", SOFT, "not defined"),
        ("Transient", "", SOFT, "unreachable"),
        ("DnsError", "", SOFT, "unreachable"),
        ("Blocked", "smtp;550 5.1.1 unknown", SOFT, "refused"),
        ("DMARCPolicy", "", SOFT, "refused"),
        ("SpamNotification", "", SOFT, "refused"),
        ("VirusNotification", "", SOFT, "refused"),
        ("Unknown", "", SOFT, "not defined"),
        ("SomethingNew", "", SOFT, "not defined"),
        ("SpamComplaint", "", FeedbackKind.COMPLAINT, None),
    ],
)
def test_postmark_bounce_types(
    type_: str, details: str, kind: FeedbackKind, reason: str | None
) -> None:
    record = {**fixture_json("postmark_bounce.json"), "Type": type_, "Details": details}
    (event,) = postmark.parse(json.dumps(record).encode())
    assert (event.kind, event.reason) == (kind, reason)


@pytest.mark.parametrize(
    "type_",
    sorted(postmark.IGNORED_BOUNCE_TYPES),
)
def test_postmark_bounce_types_that_are_not_failures(type_: str) -> None:
    record = {**fixture_json("postmark_bounce.json"), "Type": type_}
    assert postmark.parse(json.dumps(record).encode()) == []


def test_postmark_other_record_types_are_ignored() -> None:
    assert postmark.parse(b'{"RecordType": "SubscriptionChange", "Recipient": "a@b.c"}') == []


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[]", "JSON object"),
        (b"{}", "'RecordType'"),
        (b'{"RecordType": "Bounce"}', "'Type'"),
        (b"nope", "not valid JSON"),
    ],
)
def test_postmark_malformed(body: bytes, reason: str) -> None:
    with pytest.raises(MalformedPayload) as caught:
        postmark.parse(body)
    assert reason in caught.value.reason


# ============================================================ bounce messages


@pytest.mark.parametrize(
    ("name", "kind", "recipient", "log_id", "status", "reason"),
    [
        ("postfix_dsn.eml", HARD, "ann.lee@example.org", 1234, "5.1.1", "user unknown"),
        ("exchange_dsn.eml", HARD, "carol@contoso.com", 3307, "5.1.10", "user unknown"),
        ("gmail_dsn.eml", SOFT, "dave@example.co.uk", 4410, "4.2.2", "mailbox full"),
        ("delayed_dsn.eml", SOFT, "erin@example.net", 5120, "4.4.1", "not connected"),
        ("exim_bounce.eml", HARD, "bob@example.net", 2041, "5.2.1", "account disabled"),
        ("qmail_bounce.eml", HARD, "ivy@example.biz", 8123, "5.1.1", "user unknown"),
        (
            "postfix_delivered_dsn.eml",
            FeedbackKind.DELIVERED,
            "gus@example.com",
            1290,
            "2.0.0",
            None,
        ),
        ("arf_complaint.eml", FeedbackKind.COMPLAINT, "frank@example-isp.net", 7788, None, None),
    ],
)
def test_bounce_messages(
    name: str,
    kind: FeedbackKind,
    recipient: str,
    log_id: int,
    status: str | None,
    reason: str | None,
) -> None:
    (event,) = dsn.parse_bounce_message(fixture_bytes(name))
    check_event(event)
    assert (event.kind, event.recipient, event.log_id, event.smtp_status, event.reason) == (
        kind,
        recipient,
        log_id,
        status,
        reason,
    )
    assert event.source == "dsn"
    assert event.message_id and event.message_id.startswith(f"<gl.{log_id}.")
    assert event.occurred_at is not None


def test_bounce_diagnostics_are_unfolded_and_untyped() -> None:
    (postfix,) = dsn.parse_bounce_message(fixture_bytes("postfix_dsn.eml"))
    assert postfix.diagnostic == (
        "550 5.1.1 <ann.lee@example.org>: Recipient address rejected: "
        "User unknown in virtual mailbox table"
    )
    (delayed,) = dsn.parse_bounce_message(fixture_bytes("delayed_dsn.eml"))
    assert delayed.diagnostic == "connect to mx.example.net[203.0.113.9]:25: Connection timed out"
    (exim,) = dsn.parse_bounce_message(fixture_bytes("exim_bounce.eml"))
    assert (
        exim.diagnostic == "550 5.2.1 <bob@example.net>: mailbox disabled, not accepting messages"
    )
    (gmail,) = dsn.parse_bounce_message(fixture_bytes("gmail_dsn.eml"))
    assert gmail.occurred_at == datetime(2026, 11, 23, 9, 40, 2, tzinfo=UTC)


@pytest.mark.parametrize("name", ["not_a_bounce.eml", "auto_reply.eml"])
def test_messages_that_are_not_bounces_give_nothing(name: str) -> None:
    assert dsn.parse_bounce_message(fixture_bytes(name)) == []


@pytest.mark.parametrize(
    "raw", [b"", b"\r\n", b"Subject: hi\r\n\r\nhello\r\n", b"\x00\xff garbage"]
)
def test_odd_input_is_not_a_bounce(raw: bytes) -> None:
    assert dsn.parse_bounce_message(raw) == []


def test_the_same_bounce_read_twice_has_the_same_event_id() -> None:
    for name in ("postfix_dsn.eml", "exim_bounce.eml", "arf_complaint.eml"):
        first = dsn.parse_bounce_message(fixture_bytes(name))
        again = dsn.parse_bounce_message(fixture_bytes(name))
        assert [e.source_event_id for e in first] == [e.source_event_id for e in again]


def replace_status_block(raw: bytes, block: str) -> bytes:
    text = raw.decode()
    start = text.index("Final-Recipient: rfc822; ann.lee@example.org")
    end = text.index("\n--4Tq2Xk0Zx9z9sWl", start)
    return (text[:start] + block + "\n" + text[end:]).encode()


def test_dsn_with_several_recipients_and_actions() -> None:
    blocks = "\n".join(
        [
            "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\n",
            "Final-Recipient: rfc822; b@example.org\nAction: failed\nStatus: 4.4.7\n",
            "Final-Recipient: rfc822; c@example.org\nAction: delayed\nStatus: 4.7.0\n",
            "Final-Recipient: rfc822; d@example.org\nAction: relayed\nStatus: 2.0.0\n",
            "Final-Recipient: rfc822; e@example.org\nAction: expanded (to list)\nStatus: 2.0.0\n",
            "Final-Recipient: rfc822; f@example.org\nAction: error\nStatus: 5.0.0\n",
            "Final-Recipient: rfc822; g@example.org\nAction: failed\n",
            "Final-Recipient: rfc822; h@example.org\nAction: whatever\nStatus: 2.0.0\n",
            "Final-Recipient: rfc822; i@example.org\n"
            "Original-Recipient: rfc822; alias@example.org\nAction: failed\nStatus: 5.2.2\n",
        ]
    )
    events = dsn.parse_bounce_message(
        replace_status_block(fixture_bytes("postfix_dsn.eml"), blocks)
    )
    assert [(e.recipient, e.kind) for e in events] == [
        ("a@example.org", HARD),
        ("b@example.org", SOFT),
        ("c@example.org", SOFT),
        ("d@example.org", FeedbackKind.DELIVERED),
        ("e@example.org", FeedbackKind.DELIVERED),
        ("f@example.org", HARD),
        ("g@example.org", HARD),
        ("alias@example.org", HARD),  # the address we sent to, before forwarding
    ]
    assert all(e.log_id == 1234 for e in events)
    assert len({e.source_event_id for e in events}) == len(events)


def test_dsn_with_an_encoded_delivery_status_part() -> None:
    """Some Exchange servers send the delivery-status part in base64."""
    text = fixture_bytes("exchange_dsn.eml").decode()
    marker = "Content-Type: message/delivery-status\n\n"
    start = text.index(marker) + len(marker)
    end = text.index("\n--5f1a0c7e", start)
    encoded = base64.encodebytes(text[start:end].replace("\n", "\r\n").encode()).decode()
    raw = (
        text[: start - 1].replace(
            "Content-Type: message/delivery-status\n",
            "Content-Type: message/delivery-status\nContent-Transfer-Encoding: base64\n",
        )
        + "\n"
        + encoded
        + text[end:]
    ).encode()
    (event,) = dsn.parse_bounce_message(raw)
    assert (event.kind, event.recipient, event.smtp_status) == (HARD, "carol@contoso.com", "5.1.10")


def test_dsn_in_the_internationalised_format() -> None:
    """RFC 6533's message/global-delivery-status holds the same fields."""
    raw = fixture_bytes("postfix_dsn.eml").replace(
        b"Content-Type: message/delivery-status", b"Content-Type: message/global-delivery-status"
    )
    (event,) = dsn.parse_bounce_message(raw)
    assert (event.kind, event.recipient, event.log_id) == (HARD, "ann.lee@example.org", 1234)
    assert event.diagnostic and event.diagnostic.endswith("virtual mailbox table")  # the DSN's


def test_dsn_without_the_greenlight_header_matches_by_message_id() -> None:
    raw = fixture_bytes("postfix_dsn.eml").replace(b"X-Greenlight-Log: 1234\n", b"")
    (event,) = dsn.parse_bounce_message(raw)
    assert event.log_id == 1234


def test_dsn_for_a_message_greenlight_did_not_send_is_unmatched() -> None:
    raw = (
        fixture_bytes("postfix_dsn.eml")
        .replace(b"X-Greenlight-Log: 1234\n", b"")
        .replace(b"<gl.1234.5e0c3f9a7b21d846@news.example.com>", b"<abc@elsewhere.example>")
    )
    (event,) = dsn.parse_bounce_message(raw)
    assert (event.kind, event.log_id, event.message_id) == (HARD, None, "<abc@elsewhere.example>")


def test_abuse_report_of_another_feedback_type_is_ignored() -> None:
    raw = fixture_bytes("arf_complaint.eml").replace(
        b"Feedback-Type: abuse", b"Feedback-Type: not-spam"
    )
    assert dsn.parse_bounce_message(raw) == []


def test_abuse_report_without_original_rcpt_uses_the_returned_to() -> None:
    raw = fixture_bytes("arf_complaint.eml").replace(
        b"Original-Rcpt-To: <frank@example-isp.net>\n", b""
    )
    (event,) = dsn.parse_bounce_message(raw)
    assert event.recipient == "frank@example-isp.net"


def test_flufl_failures_do_not_escape(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(msg: object) -> tuple[frozenset[bytes], frozenset[bytes]]:
        raise RuntimeError("detector bug")

    monkeypatch.setattr(dsn, "all_failures", broken)
    assert dsn.parse_bounce_message(fixture_bytes("exim_bounce.eml")) == []


def test_fixtures_are_untouched_by_parsing() -> None:
    """Parsers never mutate their input (the web layer may log the body afterwards)."""
    document = mailgun_signed("mailgun_failed_permanent.json")
    before = copy.deepcopy(document)
    mailgun.parse(document)
    assert document == before
