"""The generic feedback webhook: a signed JSON array of events, for any MTA or relay.

Anything that learns what became of a message (an MTA's log reader, a relay this
project has no parser for, a script) can report it here.

Request
-------

``POST /feedback/generic`` with the header::

    X-Greenlight-Signature: sha256=<hex HMAC-SHA256 of the raw request body>

keyed with ``FEEDBACK_SECRET`` (UTF-8), computed over the exact bytes sent. For
example, in a shell::

    sig=$(printf '%s' "$body" | openssl dgst -sha256 -hmac "$FEEDBACK_SECRET" -hex | sed 's/^.* //')
    curl -H "X-Greenlight-Signature: sha256=$sig" -H 'Content-Type: application/json' \\
         --data-binary "$body" https://greenlight.example.com/feedback/generic

A missing or wrong signature is answered 401 and nothing is recorded.

Body: a JSON array (at most 10,000 events) of objects:

=================  ========  ============================================================
field              required  meaning
=================  ========  ============================================================
``id``             yes       your unique id for this event (string, at most 200
                             characters); an id already received is not applied again,
                             so retrying a whole batch is safe
``type``           yes       ``delivered``, ``hard_bounce``, ``soft_bounce``,
                             ``complaint``, ``open`` or ``click``
``message_id``     one of    the Message-ID Greenlight gave the message,
                   these     ``<gl.{log_id}.{tag}@{domain}>`` (angle brackets optional)
``log_id``         two       the sending log id (the ``X-Greenlight-Log`` header), an
                             integer; when both are given they must agree
``occurred_at``    yes       when it happened, ISO 8601 with a timezone,
                             e.g. ``2026-11-23T09:15:00Z``
``recipient``      no        the recipient's address
``reason``         no        for bounces, a reason of SPEC section 7 (``user unknown``,
                             ``invalid domain``, ``unreachable``, ``mailbox full``,
                             ``account disabled``, ``refused``, ``not connected``,
                             ``invalid address``, ...); when absent it is derived from
                             ``smtp_status`` and ``diagnostic``
``smtp_status``    no        the enhanced status code, e.g. ``5.1.1``
``diagnostic``     no        the remote server's answer, e.g. ``550 5.1.1 User unknown``
``url``            no        for clicks, the URL that was clicked
``user_agent``     no        for opens and clicks
=================  ========  ============================================================

Example::

    [{"id": "mta-7f3a-1", "type": "hard_bounce", "log_id": 1234,
      "recipient": "ann@example.com", "occurred_at": "2026-11-23T09:15:00Z",
      "smtp_status": "5.1.1", "diagnostic": "550 5.1.1 <ann@example.com>: User unknown"},
     {"id": "mta-7f3a-2", "type": "delivered",
      "message_id": "<gl.1235.9f2c61d0a4b3e871@news.example.com>",
      "occurred_at": "2026-11-23T09:15:02+01:00"}]

A body that is not such an array (bad JSON, unknown type, no message_id nor log_id,
a timestamp without timezone, ...) is answered 400 with the reason, naming the
event's index, and nothing in it is recorded: a batch is accepted whole or not at all.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bot.feedback.events import (
    MAX_EVENT_ID_LENGTH,
    REASONS,
    FeedbackEvent,
    FeedbackKind,
    MalformedPayload,
    SignatureInvalid,
    load_json,
    log_id_from_message_id,
    make_event,
    normalize_message_id,
    normalize_status,
    parse_iso,
    parse_log_id,
)

SOURCE = "generic"
SIGNATURE_HEADER = "X-Greenlight-Signature"
MAX_EVENTS = 10_000
_PREFIX = "sha256="
_ADDRESS = re.compile(r"[^\s@<>]{1,64}@[^\s@<>.][^\s@<>]{0,252}")
_FIELDS = frozenset(
    {
        "id",
        "type",
        "message_id",
        "log_id",
        "recipient",
        "occurred_at",
        "reason",
        "smtp_status",
        "diagnostic",
        "url",
        "user_agent",
    }
)


def sign(body: bytes, secret: str) -> str:
    """The header value a sender puts on ``body`` (used by tests and the benchmark)."""
    return _PREFIX + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(body: bytes, signature_header: str | None, secret: str) -> None:
    """Raise `SignatureInvalid` unless the header is the body's HMAC under ``secret``."""
    if not secret:
        raise ValueError("the generic webhook secret is empty; set FEEDBACK_SECRET")
    if not signature_header:
        raise SignatureInvalid(f"missing {SIGNATURE_HEADER} header")
    value = signature_header.strip()
    if not value[: len(_PREFIX)].lower() == _PREFIX:
        raise SignatureInvalid(f"{SIGNATURE_HEADER} must be sha256=<hex>")
    given = value[len(_PREFIX) :].strip().lower()
    expected = sign(body, secret)[len(_PREFIX) :]
    # compare_digest needs ASCII str; a non-ASCII header is simply wrong.
    if not given.isascii() or not hmac.compare_digest(given, expected):
        raise SignatureInvalid("signature does not match the body")


def verify_and_parse(body: bytes, signature_header: str | None, secret: str) -> list[FeedbackEvent]:
    """Check the signature first (nothing is read from an unsigned body), then parse."""
    verify(body, signature_header, secret)
    return parse(body)


def parse(body: bytes) -> list[FeedbackEvent]:
    """The events of an already verified body; `MalformedPayload` names the first fault."""
    document = load_json(body)
    if not isinstance(document, list):
        raise MalformedPayload("the body must be a JSON array of events")
    if len(document) > MAX_EVENTS:
        raise MalformedPayload(f"at most {MAX_EVENTS} events per request (got {len(document)})")
    events = []
    seen: set[str] = set()
    for index, item in enumerate(document):
        try:
            event = _event(item)
        except MalformedPayload as exc:
            raise MalformedPayload(f"event {index}: {exc.reason}") from None
        # The same id twice in one batch is one event reported twice: keep the first.
        if event.source_event_id not in seen:
            seen.add(event.source_event_id)
            events.append(event)
    return events


def _text(item: Mapping[str, Any], key: str) -> str | None:
    value = item.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedPayload(f"{key!r} must be a string")
    return value


def _required(item: Mapping[str, Any], key: str) -> str:
    value = _text(item, key)
    if value is None:
        raise MalformedPayload(f"{key!r} is required")
    if not value.strip():
        raise MalformedPayload(f"{key!r} must not be empty")
    return value


def _event(item: object) -> FeedbackEvent:
    if not isinstance(item, dict):
        raise MalformedPayload("each event must be a JSON object")
    unknown = sorted(k for k in item if k not in _FIELDS)
    if unknown:
        raise MalformedPayload(f"unknown field(s) {', '.join(map(repr, unknown))}")
    event_id = _event_id(item)
    kind = _kind(item)
    message_id, log_id = _target(item)
    occurred_at = _occurred_at(item)
    recipient = _recipient(item)
    reason = _reason(item, kind)
    status = _smtp_status(item)
    url = _url(item, kind)
    return make_event(
        kind,
        SOURCE,
        source_event_id=event_id,
        occurred_at=occurred_at,
        recipient=recipient,
        message_id=message_id,
        log_hint=log_id,
        reason=reason,
        smtp_status=status,
        diagnostic=_text(item, "diagnostic"),
        url=url,
        user_agent=_text(item, "user_agent"),
    )


def _event_id(item: Mapping[str, Any]) -> str:
    event_id = _required(item, "id").strip()
    if len(event_id) > MAX_EVENT_ID_LENGTH:
        raise MalformedPayload(f"'id' is longer than {MAX_EVENT_ID_LENGTH} characters")
    return event_id


def _kind(item: Mapping[str, Any]) -> FeedbackKind:
    type_ = _required(item, "type")
    try:
        return FeedbackKind(type_)
    except ValueError:
        allowed = ", ".join(k.value for k in FeedbackKind)
        raise MalformedPayload(f"'type' {type_!r} is not one of: {allowed}") from None


def _target(item: Mapping[str, Any]) -> tuple[str | None, int | None]:
    """The Message-ID and the log id, which must name the same log when both are given.

    A sender that mixed them up would otherwise have the event applied to another
    message than the one it is about.
    """
    message_id = _message_id(item)
    log_id = _log_id(item)
    if message_id is None and log_id is None:
        raise MalformedPayload("one of 'message_id' or 'log_id' is required")
    from_mid = log_id_from_message_id(message_id)
    if log_id is not None and from_mid is not None and from_mid != log_id:
        raise MalformedPayload(f"'log_id' {log_id} does not match 'message_id' {message_id}")
    return message_id, log_id


def _message_id(item: Mapping[str, Any]) -> str | None:
    raw = _text(item, "message_id")
    if raw is None:
        return None
    message_id = normalize_message_id(raw)
    if message_id is None:
        raise MalformedPayload("'message_id' is empty or longer than 255 characters")
    return message_id


def _log_id(item: Mapping[str, Any]) -> int | None:
    value = item.get("log_id")
    if value is None:
        return None
    log_id = parse_log_id(value) if isinstance(value, int) else None  # JSON integers only
    if log_id is None:
        raise MalformedPayload("'log_id' must be a non-negative integer")
    return log_id


def _occurred_at(item: Mapping[str, Any]) -> datetime:
    text = _required(item, "occurred_at")
    occurred_at = parse_iso(text)
    if occurred_at is None:
        raise MalformedPayload(f"'occurred_at' {text!r} is not an ISO 8601 time with a timezone")
    return occurred_at


def _recipient(item: Mapping[str, Any]) -> str | None:
    recipient = _text(item, "recipient")
    if recipient is not None and not _ADDRESS.fullmatch(recipient):
        # A shape check, not email-validator: the recipient only annotates the event
        # (matching is by log id / Message-ID), and full validation would triple the
        # cost of parsing a batch.
        raise MalformedPayload(f"'recipient' {recipient!r} is not an email address")
    return recipient


def _reason(item: Mapping[str, Any], kind: FeedbackKind) -> str | None:
    reason = _text(item, "reason")
    if reason is None:
        return None
    if reason not in REASONS:
        raise MalformedPayload(f"'reason' {reason!r} is not one of: {', '.join(sorted(REASONS))}")
    if not kind.is_bounce:
        raise MalformedPayload("'reason' is only for hard_bounce and soft_bounce")
    return reason


def _smtp_status(item: Mapping[str, Any]) -> str | None:
    status = _text(item, "smtp_status")
    if status is not None and normalize_status(status) != status.strip():
        raise MalformedPayload(f"'smtp_status' {status!r} is not an enhanced status like 5.1.1")
    return status


def _url(item: Mapping[str, Any], kind: FeedbackKind) -> str | None:
    url = _text(item, "url")
    if url is not None and kind is not FeedbackKind.CLICK:
        raise MalformedPayload("'url' is only for click events")
    return url
