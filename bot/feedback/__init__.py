"""Feedback parsers: what webhooks and bounce messages say, as `FeedbackEvent`s.

One module per source (`generic`, `ses`, `sendgrid`, `mailgun`, `postmark`, `dsn`),
each pure: bytes and headers in, events out, `SignatureInvalid` (401) or
`MalformedPayload` (400) when the request must be refused. Applying the events to the
sending logs is the ingestion service's job.
"""

from bot.feedback.events import (
    REASONS,
    FeedbackEvent,
    FeedbackKind,
    MalformedPayload,
    SignatureInvalid,
    log_id_from_message_id,
    reason_for,
)

__all__ = [
    "REASONS",
    "FeedbackEvent",
    "FeedbackKind",
    "MalformedPayload",
    "SignatureInvalid",
    "log_id_from_message_id",
    "reason_for",
]
