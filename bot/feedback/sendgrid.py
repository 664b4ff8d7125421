"""SendGrid's Event Webhook: batches of delivery and engagement events, ECDSA-signed.

Authenticity (`verify`). With the Signed Event Webhook enabled, SendGrid signs each
request with its P-256 key:

* ``X-Twilio-Email-Event-Webhook-Timestamp``: the timestamp it signed;
* ``X-Twilio-Email-Event-Webhook-Signature``: base64 of the DER ECDSA signature
  (SHA-256) over ``timestamp`` followed by the raw body bytes.

The verification key is shown in SendGrid's settings as base64 of the DER
SubjectPublicKeyInfo; pass it as it is shown. ``now`` with ``max_age`` optionally
refuses old timestamps (replays); duplicates are also dropped by ``sg_event_id``.

Matching. ``smtp-id`` is the message's Message-ID, but SendGrid puts it only on
delivery events (not on opens and clicks). So the sender should add the log id as a
custom argument named ``greenlight_log``, which SendGrid copies into every event as a
top-level field: over SMTP with the header
``X-SMTPAPI: {"unique_args": {"greenlight_log": "1234"}}``, through the v3 API with
``"custom_args": {"greenlight_log": "1234"}``.

Mapping:

=========================  ============================================================
SendGrid event              event
=========================  ============================================================
delivered                   delivered
bounce, type "bounce"       hard_bounce (the receiving server refused the address)
bounce, type "blocked"      soft_bounce (refused for reputation or content, not for
                            the address; SendGrid does not suppress it)
bounce, type "expired"      soft_bounce, reason unreachable (retries ran out)
dropped                     hard_bounce: SendGrid did not send, reason from its reason
                            (Bounced Address → quarantined address; Spam Reporting
                            Address, Unsubscribed Address → denylisted address;
                            Invalid → invalid address; others → refused)
deferred                    soft_bounce (the receiving server asked to retry)
open                        open
click                       click (``url``)
spamreport                  complaint
processed, unsubscribe,     nothing (acknowledged)
group_(un|re)subscribe
=========================  ============================================================

A bounce's reason comes from ``status`` and ``reason`` (the server's answer), then
from ``bounce_classification`` (Invalid Address → user unknown, Mailbox Unavailable
→ account disabled, Content / Reputation / Frequency or Volume → refused,
Technical → unreachable).
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bot.feedback.events import (
    NOT_DEFINED,
    FeedbackEvent,
    FeedbackKind,
    MalformedPayload,
    SignatureInvalid,
    event_id,
    from_epoch,
    load_json,
    make_event,
    reason_for,
)

SOURCE = "sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
LOG_ARGUMENT = "greenlight_log"
MAX_EVENTS = 10_000

_DROPPED_REASONS = {
    "bounced address": "quarantined address",
    "spam reporting address": "denylisted address",
    "unsubscribed address": "denylisted address",
    "invalid": "invalid address",
}
_CLASSIFICATION_REASONS = {
    "invalid address": "user unknown",
    "mailbox unavailable": "account disabled",
    "content": "refused",
    "reputation": "refused",
    "frequency or volume": "refused",
    "technical": "unreachable",
}


def load_public_key(key: str) -> ec.EllipticCurvePublicKey:
    """The verification key from its base64 DER (or PEM) form; ValueError if unusable."""
    text = key.strip()
    try:
        if text.startswith("-----BEGIN"):
            public = serialization.load_pem_public_key(text.encode("ascii"))
        else:
            public = serialization.load_der_public_key(b64decode(text, validate=True))
    except (ValueError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise ValueError(f"the SendGrid verification key is not a public key: {exc}") from None
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise ValueError("the SendGrid verification key is not an elliptic-curve key")
    return public


def verify(
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    public_key: str | ec.EllipticCurvePublicKey,
    *,
    now: datetime | None = None,
    max_age: timedelta = timedelta(minutes=10),
) -> None:
    """Raise `SignatureInvalid` unless SendGrid's key signed ``timestamp + body``."""
    key = load_public_key(public_key) if isinstance(public_key, str) else public_key
    if not signature:
        raise SignatureInvalid(f"missing {SIGNATURE_HEADER} header")
    if not timestamp:
        raise SignatureInvalid(f"missing {TIMESTAMP_HEADER} header")
    try:
        der = b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid("the SendGrid signature is not base64") from None
    try:
        key.verify(der, timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise SignatureInvalid("the SendGrid signature does not match the body") from None
    if now is not None:
        signed_at = from_epoch(timestamp.strip())
        if signed_at is None or abs(now - signed_at) > max_age:
            raise SignatureInvalid("the SendGrid timestamp is too old or in the future")


def verify_and_parse(
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    public_key: str | ec.EllipticCurvePublicKey,
    *,
    now: datetime | None = None,
    max_age: timedelta = timedelta(minutes=10),
) -> list[FeedbackEvent]:
    """Check the signature first (nothing is read from an unsigned body), then parse."""
    verify(body, signature, timestamp, public_key, now=now, max_age=max_age)
    return parse(body)


def parse(body: bytes) -> list[FeedbackEvent]:
    """The events of an already verified batch; unknown event names are skipped."""
    document = load_json(body)
    if not isinstance(document, list):
        raise MalformedPayload("the body must be a JSON array of SendGrid events")
    if len(document) > MAX_EVENTS:
        raise MalformedPayload(f"at most {MAX_EVENTS} events per request (got {len(document)})")
    events = []
    for index, item in enumerate(document):
        if not isinstance(item, dict):
            raise MalformedPayload(f"event {index}: each event must be a JSON object")
        name = item.get("event")
        if not isinstance(name, str):
            raise MalformedPayload(f"event {index}: 'event' must be a string")
        event = _event(name, item)
        if event is not None:
            events.append(event)
    return events


def _bounce_reason(item: Mapping[str, Any]) -> str:
    reason = reason_for(_str(item.get("status")), _str(item.get("reason")))
    if reason != NOT_DEFINED:
        return reason
    classification = _str(item.get("bounce_classification")) or ""
    return _CLASSIFICATION_REASONS.get(classification.lower(), NOT_DEFINED)


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _event(name: str, item: dict[str, Any]) -> FeedbackEvent | None:
    extra: dict[str, Any] = {}
    if name == "delivered":
        kind = FeedbackKind.DELIVERED
        extra["diagnostic"] = item.get("response")
    elif name == "bounce":
        bounce_type = (_str(item.get("type")) or "bounce").lower()
        kind = FeedbackKind.HARD_BOUNCE if bounce_type == "bounce" else FeedbackKind.SOFT_BOUNCE
        extra["reason"] = "unreachable" if bounce_type == "expired" else _bounce_reason(item)
        extra["diagnostic"] = item.get("reason")
        extra["smtp_status"] = item.get("status")
    elif name == "dropped":
        kind = FeedbackKind.HARD_BOUNCE
        why = _str(item.get("reason")) or ""
        extra["reason"] = _DROPPED_REASONS.get(why.strip().lower(), "refused")
        extra["diagnostic"] = why
        extra["smtp_status"] = item.get("status")
    elif name == "deferred":
        kind = FeedbackKind.SOFT_BOUNCE
        extra["diagnostic"] = item.get("response") or item.get("reason")
        extra["smtp_status"] = item.get("status")
    elif name == "open":
        kind = FeedbackKind.OPEN
        extra["user_agent"] = item.get("useragent")
    elif name == "click":
        kind = FeedbackKind.CLICK
        extra["url"] = item.get("url")
        extra["user_agent"] = item.get("useragent")
    elif name == "spamreport":
        kind = FeedbackKind.COMPLAINT
    else:
        # processed, the unsubscribe events, and any event type SendGrid adds later:
        # acknowledged, not applied.
        return None
    return make_event(
        kind,
        SOURCE,
        source_event_id=event_id(SOURCE, item.get("sg_event_id"), item),
        occurred_at=from_epoch(item.get("timestamp")),
        recipient=item.get("email"),
        message_id=item.get("smtp-id") or item.get("sg_message_id"),
        log_hint=item.get(LOG_ARGUMENT),
        **extra,
    )
