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
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

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
    read = _RECORD_TYPES.get(record_type)
    reading = read(record) if read is not None else None
    if reading is None:
        return []
    metadata = record.get("Metadata")
    log_hint = metadata.get(LOG_METADATA) if isinstance(metadata, dict) else None
    given_id = record.get("ID")
    return [
        make_event(
            reading.kind,
            SOURCE,
            # Bounce IDs are unique per bounce; other records carry none, so they hash.
            source_event_id=event_id(
                SOURCE, f"{record_type}:{given_id}" if given_id is not None else None, record
            ),
            occurred_at=parse_iso(reading.when),
            recipient=record.get("Email") or record.get("Recipient"),
            message_id=record.get("MessageID"),
            log_hint=log_hint,
            **reading.extra,
        )
    ]


class _Reading(NamedTuple):
    """What one record type says: its kind, when, and the fields only it has."""

    kind: FeedbackKind
    when: object
    extra: dict[str, Any]


def _delivery(record: Mapping[str, Any]) -> _Reading:
    return _Reading(
        FeedbackKind.DELIVERED, record.get("DeliveredAt"), {"diagnostic": record.get("Details")}
    )


def _bounce(record: Mapping[str, Any]) -> _Reading | None:
    return _bounce_of_type(record, record.get("Type"))


def _spam_complaint(record: Mapping[str, Any]) -> _Reading | None:
    # Spam complaints come as their own record type as well as a Bounce Type.
    return _bounce_of_type(record, "SpamComplaint")


def _bounce_of_type(record: Mapping[str, Any], type_: object) -> _Reading | None:
    if not isinstance(type_, str):
        raise MalformedPayload("the Postmark Bounce lacks its 'Type'")
    if type_ in IGNORED_BOUNCE_TYPES:
        return None
    kind, default_reason = BOUNCE_TYPES.get(type_, (_SOFT, None))
    extra: dict[str, Any] = {}
    if kind.is_bounce:
        details = record.get("Details")
        details = details if isinstance(details, str) else None
        extra["diagnostic"] = details
        extra["reason"] = _bounce_reason(type_, default_reason, details)
    return _Reading(kind, record.get("BouncedAt"), extra)


def _bounce_reason(type_: str, default_reason: str | None, details: str | None) -> str:
    """The reason the details give, else the type's; the type's first where it is the point."""
    derived = reason_for(None, details)
    if type_ in _FIXED_REASON or derived == NOT_DEFINED:
        return default_reason or derived
    return derived


def _open(record: Mapping[str, Any]) -> _Reading:
    return _Reading(
        FeedbackKind.OPEN, record.get("ReceivedAt"), {"user_agent": record.get("UserAgent")}
    )


def _click(record: Mapping[str, Any]) -> _Reading:
    extra = {"user_agent": record.get("UserAgent"), "url": record.get("OriginalLink")}
    return _Reading(FeedbackKind.CLICK, record.get("ReceivedAt"), extra)


# Other record types (SubscriptionChange, ...) are acknowledged and give no event.
_RECORD_TYPES: dict[str, Callable[[Mapping[str, Any]], _Reading | None]] = {
    "Delivery": _delivery,
    "Bounce": _bounce,
    "SpamComplaint": _spam_complaint,
    "Open": _open,
    "Click": _click,
}
