"""One event type for every feedback source, and the helpers all the parsers share.

Each parser (generic webhook, Amazon SES, SendGrid, Mailgun, Postmark, bounce
messages) turns what its source says into `FeedbackEvent`s, so the ingestion service
has one thing to match and apply whatever the source. The parsers are pure: no
database, no HTTP; they raise `SignatureInvalid` (answer 401, change nothing) or
`MalformedPayload` (answer 400 with its reason).

Matching an event to its sending log. The engine sets, on every message:

* ``Message-ID: <gl.{log_id}.{tag}@{domain}>`` where ``tag`` is a keyed digest of
  the delivery and the log id (see `bot.engine.message.MessageSkeleton.message_id`);
* ``X-Greenlight-Log: {log_id}`` and ``X-Greenlight-Delivery: {ref}``.

So `log_id` comes from an explicit carrier when the source gives one (the header,
or a provider's custom variable named ``greenlight_log``), else from the Message-ID
pattern. The parsers cannot check the Message-ID's tag (it needs the tracking secret
and the delivery); `message_id` keeps the whole id so the ingestion service can look
the log up by its stored Message-ID, which is authoritative.

Message ids are normalised so that an RFC 5322 id (it contains ``@``) is always in
angle brackets, as the engine stores it in ``sending_logs.message_id``; a provider's
own id (a UUID, say) is kept as given.

Reasons. Failures carry one of the reasons of SPEC section 7
(`bot.domain.failures.FailureReason`), chosen by `reason_for` from the enhanced
status code, the diagnostic text and the reply code; the table is in that module.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from bot.domain.failures import (
    FailureReason,
    normalize_status,
    reason_for,
    status_in_text,
)
from bot.domain.feedback import FeedbackKind

__all__ = [
    "MAX_DIAGNOSTIC_LENGTH",
    "MAX_EVENT_ID_LENGTH",
    "MAX_LOG_ID",
    "MAX_MESSAGE_ID_LENGTH",
    "MAX_URL_LENGTH",
    "MAX_USER_AGENT_LENGTH",
    "NOT_DEFINED",
    "REASONS",
    "UNSIGNED_SOURCES",
    "FeedbackEvent",
    "FeedbackKind",
    "GreenlightId",
    "MalformedPayload",
    "SignatureInvalid",
    "canonical_json",
    "derive_event_id",
    "event_id",
    "from_epoch",
    "greenlight_id",
    "header_value",
    "load_json",
    "log_id_from_message_id",
    "make_event",
    "normalize_message_id",
    "normalize_recipient",
    "normalize_status",
    "parse_iso",
    "parse_log_id",
    "reason_for",
    "status_in_text",
]

MAX_LOG_ID = 2**63 - 1  # the database's BIGINT
MAX_EVENT_ID_LENGTH = 200  # longer provider ids are hashed to stay indexable
MAX_DIAGNOSTIC_LENGTH = 2000
MAX_URL_LENGTH = 8192
MAX_USER_AGENT_LENGTH = 1000
MAX_MESSAGE_ID_LENGTH = 255  # sending_logs.message_id

REASONS = frozenset(FailureReason)
NOT_DEFINED = FailureReason.NOT_DEFINED


class SignatureInvalid(Exception):
    """The request's signature (or credentials) is missing or wrong: answer 401.

    The reason is for the server's log only; the HTTP answer should not echo it, so
    a forger learns nothing about what was checked.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class MalformedPayload(Exception):
    """The body cannot be read as the source's format: answer 400 with the reason."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class FeedbackEvent:
    """One thing a feedback source reported about one message to one recipient."""

    kind: FeedbackKind
    source: str  # "generic", "ses", "sendgrid", "mailgun", "postmark", "dsn"
    source_event_id: str  # the source's id, or a stable hash when it gives none
    occurred_at: datetime | None = None  # always timezone-aware
    recipient: str | None = None
    message_id: str | None = None  # RFC Message-ID in <...>, else the provider's id
    log_id: int | None = None  # the sending log, when the source carried it
    reason: str | None = None  # SPEC section 7, for bounces only
    smtp_status: str | None = None  # enhanced status, e.g. "5.1.1"
    diagnostic: str | None = None
    url: str | None = None  # clicks
    user_agent: str | None = None  # opens and clicks

    def __post_init__(self) -> None:
        if self.occurred_at is not None and self.occurred_at.utcoffset() is None:
            raise ValueError("occurred_at must be timezone-aware")
        if self.reason is not None and self.reason not in REASONS:
            raise ValueError(f"unknown failure reason {self.reason!r}")


# --------------------------------------------------------------------- matching

_GL_MESSAGE_ID = re.compile(r"<?\s*gl\.(\d{1,19})\.([0-9a-f]+)@", re.IGNORECASE)
_DIGITS = re.compile(r"\d{1,19}")

# Sources whose content an outsider writes: anyone can send a message to the bounce
# mailbox, or make an MTA bounce one to the bounce pipe. Their log-id headers prove
# nothing; only the keyed tag of a Greenlight Message-ID does.
UNSIGNED_SOURCES = frozenset({"dsn"})


class GreenlightId(NamedTuple):
    """The parts of an engine Message-ID, ``<gl.{log_id}.{tag}@domain>``."""

    log_id: int
    tag: str


def greenlight_id(mid: str | None) -> GreenlightId | None:
    """The log id and tag of an engine Message-ID, else None (the tag is not checked here).

    Only ids that start with the engine's pattern count: a ``gl.`` deep inside some
    other id is not ours.
    """
    if not mid or not isinstance(mid, str):
        return None
    m = _GL_MESSAGE_ID.match(mid.strip())
    if m is None:
        return None
    value = int(m.group(1))
    return GreenlightId(value, m.group(2).lower()) if value <= MAX_LOG_ID else None


def log_id_from_message_id(mid: str | None) -> int | None:
    """The log id in an engine Message-ID, else None."""
    found = greenlight_id(mid)
    return found.log_id if found else None


def parse_log_id(value: object) -> int | None:
    """A log id carried as a header or custom variable (int or digits), else None.

    Booleans, negatives, floats, signs and out-of-range numbers are not log ids.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= MAX_LOG_ID else None
    if isinstance(value, str):
        text = value.strip()
        if _DIGITS.fullmatch(text):
            number = int(text)
            return number if number <= MAX_LOG_ID else None
    return None


def normalize_message_id(value: object) -> str | None:
    """An RFC 5322 id in angle brackets (as the engine stores it); others as given."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > MAX_MESSAGE_ID_LENGTH:
        return None
    if "@" in text and not (text.startswith("<") and text.endswith(">")):
        text = "<" + text.strip("<>").strip() + ">"
    return text


def normalize_recipient(value: object) -> str | None:
    """The address part of a recipient field (``rfc822; a@b``, ``<a@b>``), else None."""
    if not isinstance(value, str):
        return None
    text = value.strip()
    if ";" in text:  # DSN address-type prefix
        text = text.split(";", 1)[1].strip()
    text = text.strip("<>").strip()
    if "@" not in text or len(text) > 320 or any(c.isspace() for c in text):
        return None
    return text


# ------------------------------------------------------------------- utilities


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def derive_event_id(source: str, payload: Any) -> str:
    """A stable id for an event its source did not name: the same event hashes the same.

    A provider that retries a request sends the same JSON again, so the retry
    hashes to the same id and the ingestion service drops it as a duplicate.
    """
    digest = hashlib.sha256(f"{source}\0{canonical_json(payload)}".encode()).hexdigest()
    return "derived:" + digest[:40]


def event_id(source: str, given: object, payload: Any) -> str:
    """The provider's event id when it gave a usable one, else `derive_event_id`."""
    if isinstance(given, int) and not isinstance(given, bool):
        given = str(given)
    if isinstance(given, str) and given.strip():
        text = given.strip()
        if len(text) <= MAX_EVENT_ID_LENGTH:
            return text
        return "long:" + hashlib.sha256(text.encode()).hexdigest()[:40]
    return derive_event_id(source, payload)


def parse_iso(value: object) -> datetime | None:
    """An ISO 8601 timestamp as an aware datetime; naive or unreadable gives None."""
    if not isinstance(value, str) or "T" not in value.upper():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.utcoffset() is not None else None


def from_epoch(value: object) -> datetime | None:
    """Seconds since the epoch (int, float or digits) as an aware UTC datetime."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


def load_json(body: bytes) -> Any:
    """The JSON document in a request body, or `MalformedPayload` saying why not."""
    try:
        text = body.decode("utf-8")  # RFC 8259; json.loads would also guess UTF-16/32
    except UnicodeDecodeError:
        raise MalformedPayload("the body is not UTF-8 text") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise MalformedPayload(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise MalformedPayload("the body's JSON is nested too deeply") from None


def _clip(value: object, limit: int) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else str(value)
    text = text.strip()
    return text[:limit] if text else None


def make_event(
    kind: FeedbackKind,
    source: str,
    *,
    source_event_id: str,
    occurred_at: datetime | None = None,
    recipient: object = None,
    message_id: object = None,
    log_hint: object = None,
    reason: str | None = None,
    smtp_status: object = None,
    diagnostic: object = None,
    url: object = None,
    user_agent: object = None,
) -> FeedbackEvent:
    """Build an event with every field normalised the same way for every source.

    ``log_hint`` is an explicit carrier of the log id (header or custom variable);
    when it does not hold one, the Message-ID pattern is tried. A bounce without a
    reason gets one from its status and diagnostic.
    """
    mid = normalize_message_id(message_id)
    log_id = parse_log_id(log_hint)
    if log_id is None:
        log_id = log_id_from_message_id(mid)
    diag = _clip(diagnostic, MAX_DIAGNOSTIC_LENGTH)
    status = normalize_status(smtp_status) or status_in_text(diag)
    if not kind.is_bounce:
        reason = None
    elif reason not in REASONS:
        reason = reason_for(status, diag)
    return FeedbackEvent(
        kind=kind,
        source=source,
        source_event_id=source_event_id,
        occurred_at=occurred_at,
        recipient=normalize_recipient(recipient),
        message_id=mid,
        log_id=log_id,
        reason=reason,
        smtp_status=status,
        diagnostic=diag,
        url=_clip(url, MAX_URL_LENGTH) if kind is FeedbackKind.CLICK else None,
        user_agent=_clip(user_agent, MAX_USER_AGENT_LENGTH),
    )


def header_value(headers: object, name: str) -> str | None:
    """A header's value from ``[{"name": .., "value": ..}]`` or a mapping, any case."""
    wanted = name.lower()
    if isinstance(headers, Mapping):
        for key, value in headers.items():
            if isinstance(key, str) and key.lower() == wanted and isinstance(value, str):
                return value
        return None
    if isinstance(headers, list):
        for item in headers:
            if isinstance(item, Mapping):
                key, value = item.get("name"), item.get("value")
                if isinstance(key, str) and key.lower() == wanted and isinstance(value, str):
                    return value
    return None
