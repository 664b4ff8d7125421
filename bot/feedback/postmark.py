"""Postmark webhooks: one JSON record per request, behind HTTP basic auth.

Postmark does not sign its webhooks; the webhook URL carries credentials instead
(``https://user:password@greenlight.example.com/feedback/postmark``), which Postmark
sends as ``Authorization: Basic ...``. `check_basic_auth` compares both parts in
constant time.

Matching. ``MessageID`` is Postmark's own id (a UUID), not the RFC Message-ID, so
the sender should add the log id as metadata: over SMTP the header
``X-PM-Metadata-greenlight_log: 1234``, through the API ``"Metadata":
{"greenlight_log": "1234"}``; Postmark returns it in every record's ``Metadata``.

Mapping of ``RecordType``:

==============  ===============================================================
RecordType       event
==============  ===============================================================
Delivery         delivered
Bounce           by ``Type``, below
SpamComplaint    complaint
Open             open
Click            click (``OriginalLink``)
others           nothing (acknowledged), e.g. SubscriptionChange
==============  ===============================================================

Bounce ``Type`` (Postmark's bounce type list), with the reason used when the bounce
``Details`` do not give a more precise one:

=====================  ===========  ===============================================
Type                   event        reason / why
=====================  ===========  ===============================================
HardBounce             hard_bounce  from Details, else user unknown
BadEmailAddress        hard_bounce  invalid address
ManuallyDeactivated    hard_bounce  quarantined address (Postmark will not send)
SoftBounce             soft_bounce  from Details (mailbox full, disabled, ...)
Transient              soft_bounce  from Details, else unreachable
DnsError               soft_bounce  unreachable (a temporary DNS failure)
Blocked                soft_bounce  refused: an ISP block is about the sender's
                                    reputation or content, not the address
DMARCPolicy            soft_bounce  refused: the sender's DMARC policy, not the
                                    address
SpamNotification       soft_bounce  refused: filtered as spam by a server, which
                                    is not the recipient complaining
VirusNotification      soft_bounce  refused
SMTPApiError           soft_bounce  from Details
Unknown                soft_bounce  from Details
SpamComplaint          complaint
AutoResponder,         nothing      not a delivery failure (auto-replies,
AddressChange,                      challenge-response, subscription requests,
ChallengeVerification,              relay tests)
Subscribe,
Unsubscribe,
Unconfirmed,
OpenRelayTest,
InboundError,
TemplateRenderingFailed
=====================  ===========  ===============================================

An unlisted ``Type`` is a soft bounce: it is safer to retry than to quarantine.
"""

from __future__ import annotations

import binascii
import hmac
from base64 import b64decode
from typing import Any

from bot.feedback.events import (
    NOT_DEFINED,
    FeedbackEvent,
    FeedbackKind,
    MalformedPayload,
    SignatureInvalid,
    event_id,
    load_json,
    make_event,
    parse_iso,
    reason_for,
)

SOURCE = "postmark"
LOG_METADATA = "greenlight_log"

_HARD = FeedbackKind.HARD_BOUNCE
_SOFT = FeedbackKind.SOFT_BOUNCE
# Type -> (kind, reason when the details give none; None means "derive only")
BOUNCE_TYPES: dict[str, tuple[FeedbackKind, str | None]] = {
    "HardBounce": (_HARD, "user unknown"),
    "BadEmailAddress": (_HARD, "invalid address"),
    "ManuallyDeactivated": (_HARD, "quarantined address"),
    "SoftBounce": (_SOFT, None),
    "Transient": (_SOFT, "unreachable"),
    "DnsError": (_SOFT, "unreachable"),
    "Blocked": (_SOFT, "refused"),
    "DMARCPolicy": (_SOFT, "refused"),
    "SpamNotification": (_SOFT, "refused"),
    "VirusNotification": (_SOFT, "refused"),
    "SMTPApiError": (_SOFT, None),
    "Unknown": (_SOFT, None),
    "SpamComplaint": (FeedbackKind.COMPLAINT, None),
}
IGNORED_BOUNCE_TYPES = frozenset(
    {
        "AutoResponder",
        "AddressChange",
        "ChallengeVerification",
        "Subscribe",
        "Unsubscribe",
        "Unconfirmed",
        "OpenRelayTest",
        "InboundError",
        "TemplateRenderingFailed",
    }
)
# Types whose fixed reason is the point, whatever the details say.
_FIXED_REASON = frozenset(
    {"BadEmailAddress", "ManuallyDeactivated", "Blocked", "DMARCPolicy", "SpamNotification"}
)


def check_basic_auth(header: str | None, user: str, password: str) -> None:
    """Raise `SignatureInvalid` unless ``header`` is ``Basic`` with exactly these credentials.

    Both the user and the password are compared in constant time, and both always,
    so the time taken says nothing about which one was wrong.
    """
    if not user or not password:
        raise ValueError("the Postmark webhook user and password must both be set")
    if not header:
        raise SignatureInvalid("missing Authorization header")
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise SignatureInvalid("Authorization is not HTTP basic")
    try:
        decoded = b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid("basic credentials are not base64") from None
    given_user, sep, given_password = decoded.partition(b":")
    user_ok = hmac.compare_digest(given_user, user.encode("utf-8"))
    password_ok = hmac.compare_digest(given_password, password.encode("utf-8"))
    if not (sep and user_ok & password_ok):
        raise SignatureInvalid("wrong basic credentials")


def verify_and_parse(
    body: bytes, authorization: str | None, user: str, password: str
) -> list[FeedbackEvent]:
    """Check the credentials first (nothing is read from an unauthorised body), then parse."""
    check_basic_auth(authorization, user, password)
    return parse(body)


def parse(body: bytes) -> list[FeedbackEvent]:
    """The event in one Postmark webhook record (none for ignored records)."""
    record = load_json(body)
    if not isinstance(record, dict):
        raise MalformedPayload("the body must be a Postmark webhook JSON object")
    record_type = record.get("RecordType")
    if not isinstance(record_type, str):
        raise MalformedPayload("the Postmark record lacks its 'RecordType'")
    extra: dict[str, Any] = {}
    if record_type == "Delivery":
        kind = FeedbackKind.DELIVERED
        extra["diagnostic"] = record.get("Details")
        when = record.get("DeliveredAt")
    elif record_type in ("Bounce", "SpamComplaint"):
        type_ = "SpamComplaint" if record_type == "SpamComplaint" else record.get("Type")
        if not isinstance(type_, str):
            raise MalformedPayload("the Postmark Bounce lacks its 'Type'")
        if type_ in IGNORED_BOUNCE_TYPES:
            return []
        kind, default_reason = BOUNCE_TYPES.get(type_, (_SOFT, None))
        details = record.get("Details")
        details = details if isinstance(details, str) else None
        if kind.is_bounce:
            extra["diagnostic"] = details
            derived = reason_for(None, details)
            if type_ in _FIXED_REASON or derived == NOT_DEFINED:
                extra["reason"] = default_reason or derived
            else:
                extra["reason"] = derived
        when = record.get("BouncedAt")
    elif record_type in ("Open", "Click"):
        kind = FeedbackKind.OPEN if record_type == "Open" else FeedbackKind.CLICK
        extra["user_agent"] = record.get("UserAgent")
        if kind is FeedbackKind.CLICK:
            extra["url"] = record.get("OriginalLink")
        when = record.get("ReceivedAt")
    else:
        return []
    metadata = record.get("Metadata")
    log_hint = metadata.get(LOG_METADATA) if isinstance(metadata, dict) else None
    given_id = record.get("ID")
    return [
        make_event(
            kind,
            SOURCE,
            # Bounce IDs are unique per bounce; other records carry none, so they hash.
            source_event_id=event_id(
                SOURCE, f"{record_type}:{given_id}" if given_id is not None else None, record
            ),
            occurred_at=parse_iso(when),
            recipient=record.get("Email") or record.get("Recipient"),
            message_id=record.get("MessageID"),
            log_hint=log_hint,
            **extra,
        )
    ]
