"""Mailgun webhooks: one signed event per request.

Mailgun POSTs ``{"signature": {...}, "event-data": {...}}``. The signature travels in
the body: ``signature.signature`` is the hex HMAC-SHA256, keyed with the domain's
HTTP webhook signing key, of ``signature.timestamp`` followed by ``signature.token``.
Note what that signs: the timestamp and token, not the event, so a captured
signature block could carry any event. As Mailgun recommends, the endpoint refuses
timestamps outside a window (pass ``now``; 5 minutes by default) and accepts each
token once (`verify_and_read` returns it; `bot.services.replay` remembers it).

Matching. ``event-data.message.headers.message-id`` is the message's Message-ID
(Mailgun gives it without angle brackets; we add them). The sender may also put the
log id in a custom variable, ``X-Mailgun-Variables: {"greenlight_log": "1234"}``,
which Mailgun returns in ``user-variables``.

Mapping:

===========================  =========================================================
Mailgun event                 event
===========================  =========================================================
delivered                     delivered
failed, severity permanent    hard_bounce
failed, severity temporary    soft_bounce
opened                        open
clicked                       click (``url``)
complained                    complaint
accepted, rejected,           nothing (acknowledged)
unsubscribed, stored, ...
===========================  =========================================================

A failure's reason: ``reason`` suppress-bounce → quarantined address,
suppress-complaint / suppress-unsubscribe → denylisted address, old → unreachable
(retries ran out); otherwise from ``delivery-status`` (enhanced code, message,
description, code).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from bot.feedback.events import (
    FeedbackEvent,
    FeedbackKind,
    MalformedPayload,
    SignatureInvalid,
    event_id,
    from_epoch,
    header_value,
    load_json,
    make_event,
)

SOURCE = "mailgun"
LOG_VARIABLE = "greenlight_log"
DEFAULT_MAX_AGE = timedelta(minutes=5)

_FAILED_REASONS = {
    "suppress-bounce": "quarantined address",
    "suppress-complaint": "denylisted address",
    "suppress-unsubscribe": "denylisted address",
    "old": "unreachable",
}


def sign(timestamp: str, token: str, signing_key: str) -> str:
    """The hex signature Mailgun puts on ``timestamp`` and ``token``."""
    return hmac.new(
        signing_key.encode("utf-8"), (timestamp + token).encode("utf-8"), hashlib.sha256
    ).hexdigest()


def verify(
    document: Mapping[str, Any],
    signing_key: str,
    *,
    now: datetime | None = None,
    max_age: timedelta = DEFAULT_MAX_AGE,
) -> None:
    """Raise `SignatureInvalid` unless ``document["signature"]`` is genuine (and fresh)."""
    if not signing_key:
        raise ValueError("the Mailgun webhook signing key is empty")
    block = document.get("signature")
    if not isinstance(block, dict):
        raise SignatureInvalid("missing Mailgun signature")
    timestamp, token, given = _signature_fields(block)
    expected = sign(timestamp, token, signing_key)
    if not given.isascii() or not hmac.compare_digest(given.lower(), expected):
        raise SignatureInvalid("the Mailgun signature does not match")
    if now is not None and not _fresh(timestamp, now, max_age):
        raise SignatureInvalid("the Mailgun timestamp is too old or in the future")


def _signature_fields(block: Mapping[str, Any]) -> tuple[str, str, str]:
    """The timestamp, token and signature, all non-empty strings.

    The timestamp is signed as text, but may come as a JSON number.
    """
    timestamp, token, given = (block.get(k) for k in ("timestamp", "token", "signature"))
    if isinstance(timestamp, int) and not isinstance(timestamp, bool):
        timestamp = str(timestamp)
    if not (
        isinstance(timestamp, str)
        and isinstance(token, str)
        and isinstance(given, str)
        and timestamp
        and token
        and given
    ):
        raise SignatureInvalid("the Mailgun signature lacks timestamp, token or signature")
    return timestamp, token, given


def _fresh(timestamp: str, now: datetime, max_age: timedelta) -> bool:
    signed_at = from_epoch(timestamp)
    return signed_at is not None and abs(now - signed_at) <= max_age


class Signed(NamedTuple):
    """A verified webhook's events and its token (to be accepted once)."""

    events: list[FeedbackEvent]
    token: str


def verify_and_read(
    body: bytes,
    signing_key: str,
    *,
    now: datetime | None = None,
    max_age: timedelta = DEFAULT_MAX_AGE,
) -> Signed:
    """Read the body, check its signature, then read its event (none if ignored)."""
    document = load_json(body)
    if not isinstance(document, dict):
        raise MalformedPayload("the body must be a Mailgun webhook JSON object")
    verify(document, signing_key, now=now, max_age=max_age)
    return Signed(parse(document), _signature_fields(document["signature"])[1])


def verify_and_parse(
    body: bytes,
    signing_key: str,
    *,
    now: datetime | None = None,
    max_age: timedelta = DEFAULT_MAX_AGE,
) -> list[FeedbackEvent]:
    """`verify_and_read` without the token."""
    return verify_and_read(body, signing_key, now=now, max_age=max_age).events


def _obj(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse(document: Mapping[str, Any]) -> list[FeedbackEvent]:
    """The event of an already verified webhook document."""
    data = document.get("event-data")
    if not isinstance(data, dict):
        raise MalformedPayload("the Mailgun webhook lacks its 'event-data' object")
    name = data.get("event")
    if not isinstance(name, str):
        raise MalformedPayload("Mailgun 'event-data.event' must be a string")
    read = _EVENTS.get(name)
    if read is None:
        return []
    kind, extra = read(data)
    headers = _obj(data.get("message")).get("headers")
    variables = _obj(data.get("user-variables"))
    return [
        make_event(
            kind,
            SOURCE,
            source_event_id=event_id(SOURCE, data.get("id"), data),
            occurred_at=from_epoch(data.get("timestamp")),
            recipient=data.get("recipient"),
            message_id=header_value(headers, "message-id"),
            log_hint=variables.get(LOG_VARIABLE),
            **extra,
        )
    ]


class _Reading(NamedTuple):
    """What one Mailgun event says: its kind and the fields only it has."""

    kind: FeedbackKind
    extra: dict[str, Any]


def _failed(data: Mapping[str, Any]) -> _Reading:
    severity = data.get("severity")
    if severity not in ("permanent", "temporary"):
        raise MalformedPayload(f"Mailgun 'severity' {severity!r} is not permanent/temporary")
    kind = FeedbackKind.HARD_BOUNCE if severity == "permanent" else FeedbackKind.SOFT_BOUNCE
    status = _obj(data.get("delivery-status"))
    why = data.get("reason")
    extra = {
        "diagnostic": _failure_diagnostic(status),
        "smtp_status": status.get("enhanced-code"),
        "reason": _FAILED_REASONS.get(why) if isinstance(why, str) else None,
    }
    return _Reading(kind, extra)


def _failure_diagnostic(status: Mapping[str, Any]) -> str:
    """One line as the server said it, so the reason can come from its reply code too."""
    code = status.get("code")
    parts = [
        str(code) if isinstance(code, int) and not isinstance(code, bool) else None,
        status.get("message"),
        status.get("description"),
    ]
    return " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())


def _delivered(data: Mapping[str, Any]) -> _Reading:
    message = _obj(data.get("delivery-status")).get("message")
    return _Reading(
        FeedbackKind.DELIVERED, {"diagnostic": message if isinstance(message, str) else None}
    )


def _opened(data: Mapping[str, Any]) -> _Reading:
    return _Reading(FeedbackKind.OPEN, {"user_agent": _user_agent(data)})


def _clicked(data: Mapping[str, Any]) -> _Reading:
    return _Reading(FeedbackKind.CLICK, {"user_agent": _user_agent(data), "url": data.get("url")})


def _complained(data: Mapping[str, Any]) -> _Reading:
    return _Reading(FeedbackKind.COMPLAINT, {})


def _user_agent(data: Mapping[str, Any]) -> object:
    return _obj(data.get("client-info")).get("user-agent")


# Mailgun events not listed here are acknowledged and give no event.
_EVENTS: dict[str, Callable[[Mapping[str, Any]], _Reading]] = {
    "failed": _failed,
    "delivered": _delivered,
    "opened": _opened,
    "clicked": _clicked,
    "complained": _complained,
}
