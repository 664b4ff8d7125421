"""Amazon SES notifications delivered by Amazon SNS over HTTPS.

SES publishes Bounce, Complaint and Delivery notifications (or, with a configuration
set, the same events as "event publishing") to an SNS topic; SNS POSTs each one to
``/feedback/ses`` inside a signed JSON envelope. Raw message delivery must be off:
without the envelope there is no signature to check.

Authenticity (`verify_sns`). SNS signs every message with an RSA key whose
certificate it serves from ``SigningCertURL``. We:

1. accept the certificate only from ``https://sns.<region>.amazonaws.com[.cn]/...pem``
   (no user info, no other port, a region-shaped label: see `SNS_HOST`), and only for
   a subscribed topic, before anything is fetched: anyone can put any URL in the body,
   and the certificate must be Amazon's for the signature to mean anything; the
   certificate's subject must be ``sns.amazonaws.com``;
2. rebuild the string SNS signed: for ``Notification`` the fields Message, MessageId,
   Subject (only if present), Timestamp, TopicArn, Type; for
   ``SubscriptionConfirmation`` and ``UnsubscribeConfirmation`` the fields Message,
   MessageId, SubscribeURL, Timestamp, Token, TopicArn, Type; each as
   ``name\\nvalue\\n``;
3. verify ``Signature`` (base64) over it with RSA PKCS#1 v1.5 and SHA1
   (``SignatureVersion`` 1) or SHA256 (``SignatureVersion`` 2).

Any valid AWS account can make SNS send a correctly signed message to our URL, so
the caller should also pass ``allowed_topics`` (the ARNs it subscribed) and must not
confirm subscriptions to other topics.

Fetching the certificate is the caller's (``fetch_cert``; `bot.feedback.certificates`
caches by URL); an error it raises propagates, so a network failure can be answered
503 and SNS retries.

Mapping (`parse_sns`):

==============================  ==============================================
SES notification                 events
==============================  ==============================================
Bounce, bounceType Permanent     hard_bounce per ``bounce.bouncedRecipients``
Bounce, Transient/Undetermined   soft_bounce per ``bounce.bouncedRecipients``
Complaint                        complaint per ``complaint.complainedRecipients``
Delivery                         delivered per ``delivery.recipients``
DeliveryDelay (event publishing) soft_bounce per ``deliveryDelay.delayedRecipients``
Open, Click (event publishing)   open / click per ``mail.destination``
anything else (Send, Reject,     nothing (acknowledged)
Rendering Failure, subscription
notices)
==============================  ==============================================

A bounce's reason comes from the recipient's ``status`` and ``diagnosticCode``, except
for subtypes that say more: NoEmail → user unknown, MailboxFull → mailbox full,
Suppressed / OnAccountSuppressionList → quarantined address (SES refused to send to
an address on its suppression list), MessageTooLarge / ContentRejected /
AttachmentRejected → refused.

The message is matched by ``X-Greenlight-Log`` and ``Message-ID`` in ``mail.headers``
(enable "include original headers" on the identity), else by
``mail.commonHeaders.messageId``, else SES's own ``mail.messageId``. The event id is
the bounce/complaint ``feedbackId`` (or the SNS MessageId) plus the recipient, so a
notification SNS delivers twice is applied once.
"""

from __future__ import annotations

import binascii
import json
import re
from base64 import b64decode
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from bot.feedback.events import (
    FeedbackEvent,
    FeedbackKind,
    MalformedPayload,
    SignatureInvalid,
    event_id,
    header_value,
    load_json,
    make_event,
    parse_iso,
)

SOURCE = "ses"
SES_TEST_MESSAGE = "Successfully validated SNS topic for Amazon SES event publishing"
# sns.<region>.amazonaws.com[.cn], the region as AWS names them (us-east-1,
# us-gov-west-1, cn-north-1, eu-central-2). AWS's published validators accept any
# label of letters, digits and dashes there, which also lets in legacy S3 website and
# bucket hosts (sns.s3-eu-west-1.amazonaws.com serves whatever the bucket named
# "sns" holds); a region always starts with two letters and a dash.
SNS_HOST = re.compile(r"^sns\.[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}\.amazonaws\.com(\.cn)?\Z")
# The subject Amazon's SNS signing certificates are issued to.
SNS_CERT_SUBJECT = "sns.amazonaws.com"

_NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
_TYPES = {
    "Notification": _NOTIFICATION_FIELDS,
    "SubscriptionConfirmation": _CONFIRMATION_FIELDS,
    "UnsubscribeConfirmation": _CONFIRMATION_FIELDS,
}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {
    "1": hashes.SHA1,
    "2": hashes.SHA256,
}


def is_sns_url(url: object, *, pem: bool = False) -> bool:
    """Whether ``url`` is an https URL on an Amazon SNS host (and a bare .pem if asked).

    The whole authority must be the host: user info (``user@``) and ports are
    refused, since URL parsers disagree about them and one disagreement is enough
    to send the fetch elsewhere.
    """
    if not isinstance(url, str) or not url.isascii() or any(c.isspace() for c in url):
        return False
    if "\\" in url:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    host = parts.hostname or ""
    if parts.scheme != "https" or parts.netloc.lower() != host:
        return False
    if not SNS_HOST.match(host.lower()):
        return False
    if pem:  # Amazon's certificate URLs are plain paths: nothing after the .pem
        return parts.path.endswith(".pem") and not parts.query and not parts.fragment
    return True


def string_to_sign(message: Mapping[str, Any]) -> bytes:
    """The bytes SNS signed for this message (see the module docstring)."""
    type_ = message.get("Type")
    names = _TYPES.get(type_) if isinstance(type_, str) else None
    if names is None:
        raise MalformedPayload(f"unknown SNS message Type {type_!r}")
    lines = []
    for name in names:
        value = message.get(name)
        if value is None:
            if name == "Subject":  # signed only when present
                continue
            raise MalformedPayload(f"SNS {type_} lacks {name}")
        if not isinstance(value, str):
            raise MalformedPayload(f"SNS field {name} must be a string")
        lines.append(f"{name}\n{value}\n")
    return "".join(lines).encode("utf-8")


def verify_sns(
    message: Mapping[str, Any],
    fetch_cert: Callable[[str], bytes],
    *,
    allowed_topics: Collection[str] | None = None,
    now: datetime | None = None,
) -> None:
    """Raise `SignatureInvalid` unless Amazon SNS signed this message.

    ``fetch_cert(url)`` returns the PEM certificate at an already checked URL.
    ``allowed_topics``, when given, limits the TopicArns accepted; ``now``, when
    given, also requires the certificate to be within its validity period.
    """
    if not isinstance(message, Mapping):
        raise MalformedPayload("the SNS message must be a JSON object")
    signed = string_to_sign(message)
    version = message.get("SignatureVersion")
    algorithm = _HASHES.get(version) if isinstance(version, str) else None
    if algorithm is None:
        raise SignatureInvalid(f"unsupported SNS SignatureVersion {version!r}")
    signature_text = message.get("Signature")
    if not isinstance(signature_text, str) or not signature_text:
        raise SignatureInvalid("missing SNS Signature")
    try:
        signature = b64decode(signature_text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid("SNS Signature is not base64") from None
    cert_url = message.get("SigningCertURL")
    if not is_sns_url(cert_url, pem=True):
        raise SignatureInvalid(f"SigningCertURL {cert_url!r} is not an Amazon SNS certificate")
    if allowed_topics is not None and message.get("TopicArn") not in allowed_topics:
        raise SignatureInvalid(f"TopicArn {message.get('TopicArn')!r} is not subscribed")
    pem = fetch_cert(str(cert_url))
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise SignatureInvalid("the SNS signing certificate is not a PEM certificate") from None
    if now is not None and not (cert.not_valid_before_utc <= now <= cert.not_valid_after_utc):
        raise SignatureInvalid("the SNS signing certificate is not valid now")
    if not _issued_to_sns(cert, urlsplit(str(cert_url)).hostname or ""):
        raise SignatureInvalid("the SNS signing certificate is not issued to Amazon SNS")
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureInvalid("the SNS signing certificate's key is not RSA")
    try:
        key.verify(signature, signed, padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise SignatureInvalid("SNS signature does not match the message") from None


def _issued_to_sns(cert: x509.Certificate, host: str) -> bool:
    """The certificate's subject is SNS's (or, in the China regions, the host that served it)."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return any(str(n.value).lower() in (SNS_CERT_SUBJECT, host.lower()) for n in names)


@dataclass(frozen=True)
class SnsResult:
    """What a verified SNS message asks of us.

    ``kind`` "subscribe": GET ``subscribe_url`` to confirm (if ``topic_arn`` is one we
    want); "unsubscribe": nothing to do; "notification": apply ``events``.
    """

    kind: Literal["subscribe", "unsubscribe", "notification"]
    topic_arn: str | None = None
    subscribe_url: str | None = None
    events: tuple[FeedbackEvent, ...] = field(default=())


def load_sns(body: bytes) -> dict[str, Any]:
    """The SNS envelope in a request body."""
    document = load_json(body)
    if not isinstance(document, dict):
        raise MalformedPayload("the SNS message must be a JSON object")
    return document


def verify_and_parse(
    body: bytes,
    fetch_cert: Callable[[str], bytes],
    *,
    allowed_topics: Collection[str] | None = None,
    now: datetime | None = None,
) -> SnsResult:
    """Read, verify, then parse a request body (nothing is parsed before it verifies)."""
    message = load_sns(body)
    verify_sns(message, fetch_cert, allowed_topics=allowed_topics, now=now)
    return parse_sns(message)


def parse_sns(message: Mapping[str, Any]) -> SnsResult:
    """What a *verified* SNS message says (see the mapping in the module docstring)."""
    type_ = message.get("Type")
    topic = message.get("TopicArn") if isinstance(message.get("TopicArn"), str) else None
    if type_ == "SubscriptionConfirmation":
        url = message.get("SubscribeURL")
        if not is_sns_url(url):
            raise MalformedPayload("SubscribeURL is not an Amazon SNS https URL")
        return SnsResult("subscribe", topic, str(url))
    if type_ == "UnsubscribeConfirmation":
        return SnsResult("unsubscribe", topic)
    if type_ != "Notification":
        raise MalformedPayload(f"unknown SNS message Type {type_!r}")
    text = message.get("Message")
    if not isinstance(text, str):
        raise MalformedPayload("SNS Notification lacks its Message")
    if text.startswith(SES_TEST_MESSAGE):
        # SES sends this plain-text message when a topic is first attached to it.
        return SnsResult("notification", topic)
    try:
        notification = json.loads(text)
    except ValueError:
        raise MalformedPayload("the SNS Message is not an SES JSON notification") from None
    if not isinstance(notification, dict):
        raise MalformedPayload("the SES notification must be a JSON object")
    events = _ses_events(notification, message)
    return SnsResult("notification", topic, events=tuple(events))


# ------------------------------------------------------------------ SES content

_SUBTYPE_REASONS = {
    "NoEmail": "user unknown",
    "MailboxFull": "mailbox full",
    "Suppressed": "quarantined address",
    "OnAccountSuppressionList": "quarantined address",
    "MessageTooLarge": "refused",
    "ContentRejected": "refused",
    "AttachmentRejected": "refused",
}


def _object(parent: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = parent.get(key)
    if not isinstance(value, dict):
        raise MalformedPayload(f"the SES notification lacks its {key!r} object")
    return value


def _list(parent: Mapping[str, Any], key: str) -> list[Any]:
    value = parent.get(key)
    if not isinstance(value, list):
        raise MalformedPayload(f"the SES notification lacks its {key!r} list")
    return value


def _ses_events(notification: dict[str, Any], sns: Mapping[str, Any]) -> list[FeedbackEvent]:
    type_ = notification.get("notificationType") or notification.get("eventType")
    if not isinstance(type_, str) or type_ not in _NOTIFICATION_TYPES:
        return []
    return _NOTIFICATION_TYPES[type_](notification, _Message.of(type_, notification, sns))


@dataclass(frozen=True)
class _Message:
    """The message a notification is about, which each of its recipients' events names."""

    notification_type: str
    mail: dict[str, Any]
    sns: Mapping[str, Any]
    sns_id: str | None
    message_id: object
    log_hint: str | None

    @classmethod
    def of(cls, type_: str, notification: dict[str, Any], sns: Mapping[str, Any]) -> _Message:
        mail = _object(notification, "mail")
        sns_id = sns.get("MessageId") if isinstance(sns.get("MessageId"), str) else None
        headers = mail.get("headers")
        common = mail.get("commonHeaders")
        message_id = (
            header_value(headers, "Message-ID")
            or (common.get("messageId") if isinstance(common, dict) else None)
            or mail.get("messageId")
        )
        log_hint = header_value(headers, "X-Greenlight-Log")
        return cls(type_, mail, sns, sns_id, message_id, log_hint)

    def event(
        self, kind: FeedbackKind, base: object, recipient: object, occurred: object, **extra: Any
    ) -> FeedbackEvent:
        """One recipient's event, its id ``base`` (the feedback or SNS id) and the recipient.

        SNS may deliver a notification twice; both give the same ids.
        """
        key = f"{base}:{recipient}" if isinstance(base, str) and base else None
        payload = {
            "type": self.notification_type,
            "mail": self.mail.get("messageId"),
            "recipient": recipient,
        }
        return make_event(
            kind,
            SOURCE,
            source_event_id=event_id(SOURCE, key, {**payload, **extra}),
            occurred_at=parse_iso(occurred) or parse_iso(self.sns.get("Timestamp")),
            recipient=recipient,
            message_id=self.message_id,
            log_hint=self.log_hint,
            **extra,
        )


def _recipients(parent: Mapping[str, Any], key: str, what: str) -> Iterator[dict[str, Any]]:
    for recipient in _list(parent, key):
        if not isinstance(recipient, dict):
            raise MalformedPayload(f"each {what} recipient must be an object")
        yield recipient


def _bounces(notification: dict[str, Any], message: _Message) -> list[FeedbackEvent]:
    bounce = _object(notification, "bounce")
    permanent = bounce.get("bounceType") == "Permanent"
    kind = FeedbackKind.HARD_BOUNCE if permanent else FeedbackKind.SOFT_BOUNCE
    subtype = bounce.get("bounceSubType")
    reason = _SUBTYPE_REASONS.get(subtype) if isinstance(subtype, str) else None
    base = bounce.get("feedbackId") or message.sns_id
    return [
        message.event(
            kind,
            base,
            r.get("emailAddress"),
            bounce.get("timestamp"),
            reason=reason,
            smtp_status=r.get("status"),
            diagnostic=r.get("diagnosticCode"),
        )
        for r in _recipients(bounce, "bouncedRecipients", "bounced")
    ]


def _complaints(notification: dict[str, Any], message: _Message) -> list[FeedbackEvent]:
    complaint = _object(notification, "complaint")
    base = complaint.get("feedbackId") or message.sns_id
    return [
        message.event(
            FeedbackKind.COMPLAINT,
            base,
            r.get("emailAddress"),
            complaint.get("timestamp"),
            user_agent=complaint.get("userAgent"),
        )
        for r in _recipients(complaint, "complainedRecipients", "complained")
    ]


def _deliveries(notification: dict[str, Any], message: _Message) -> list[FeedbackEvent]:
    delivery = _object(notification, "delivery")
    return [
        message.event(
            FeedbackKind.DELIVERED,
            message.sns_id,
            address,
            delivery.get("timestamp"),
            diagnostic=delivery.get("smtpResponse"),
        )
        for address in _list(delivery, "recipients")
    ]


def _delays(notification: dict[str, Any], message: _Message) -> list[FeedbackEvent]:
    delay = _object(notification, "deliveryDelay")
    return [
        message.event(
            FeedbackKind.SOFT_BOUNCE,
            message.sns_id,
            r.get("emailAddress"),
            delay.get("timestamp"),
            smtp_status=r.get("status"),
            diagnostic=r.get("diagnosticCode"),
        )
        for r in _recipients(delay, "delayedRecipients", "delayed")
    ]


def _opens_or_clicks(notification: dict[str, Any], message: _Message) -> list[FeedbackEvent]:
    """SES does not say which recipient opened or clicked, so one event per destination."""
    detail = _object(notification, message.notification_type.lower())
    kind = FeedbackKind.OPEN if message.notification_type == "Open" else FeedbackKind.CLICK
    return [
        message.event(
            kind,
            message.sns_id,
            address,
            detail.get("timestamp"),
            url=detail.get("link"),
            user_agent=detail.get("userAgent"),
        )
        for address in message.mail.get("destination") or []
    ]


# Other notification types are acknowledged and give no event.
_NOTIFICATION_TYPES: dict[str, Callable[[dict[str, Any], _Message], list[FeedbackEvent]]] = {
    "Bounce": _bounces,
    "Complaint": _complaints,
    "Delivery": _deliveries,
    "DeliveryDelay": _delays,
    "Open": _opens_or_clicks,
    "Click": _opens_or_clicks,
}
