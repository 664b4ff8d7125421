"""Bounce messages: RFC 3464 delivery status notifications and the common other formats.

A bounce arrives as a whole email message (posted raw to ``/feedback/dsn`` or read
from a mailbox). `parse_bounce_message` reads, in order:

1. **RFC 3464 reports** (``multipart/report; report-type=delivery-status``): one
   event per per-recipient block of the ``message/delivery-status`` part:

   ==================================  ===================================
   Action / Status                      event
   ==================================  ===================================
   failed, Status 5.x.x (or none)       hard_bounce
   failed, Status 4.x.x                 soft_bounce (given up after
                                        temporary failures: not the address)
   delayed                              soft_bounce
   delivered                            delivered
   relayed, expanded                    delivered: the message left for a
                                        system that will never report
                                        success, so this is the last good
                                        news there will be; a failure would
                                        still come as its own bounce
   ==================================  ===================================

   The recipient is ``Original-Recipient`` (the address we sent to, before any
   forwarding) or else ``Final-Recipient``; ``Diagnostic-Code`` becomes the
   diagnostic (without its ``smtp;`` type) and the reason comes from ``Status`` and
   the diagnostic (see `bot.feedback.events`).

2. **RFC 5965 abuse reports** (``report-type=feedback-report``, ``Feedback-Type:
   abuse``), as mailbox providers' feedback loops send them: a complaint for
   ``Original-Rcpt-To`` or else the returned message's ``To``. Other feedback types
   are ignored.

3. **Anything else** goes through flufl.bounce's detectors (Exim's
   ``X-Failed-Recipients``, Postfix's and qmail's plain texts, old Exchange, ...):
   its permanent failures are hard bounces, its temporary ones soft bounces. The
   line of the remote server's answer quoted after the address, if any, becomes the
   diagnostic.

A message that is none of these (a reply, an auto-reply) gives no events.

The returned message is found in the ``message/rfc822`` (or ``text/rfc822-headers``)
part: its ``X-Greenlight-Log`` and ``Message-ID`` identify the sending log. When a
bounce quotes the original inline instead, those two headers are looked for in its
text. The event id is a hash of the bounce's own Message-ID (or of its bytes), the
recipient and the action, so the same bounce read twice is applied once.
"""

from __future__ import annotations

import email
import hashlib
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parsedate_to_datetime

from flufl.bounce import all_failures

from bot.feedback.events import (
    FeedbackEvent,
    FeedbackKind,
    MalformedPayload,
    derive_event_id,
    make_event,
    normalize_recipient,
    normalize_status,
)

SOURCE = "dsn"
log = logging.getLogger(__name__)

_ORIGINAL_MESSAGE = ("message/rfc822", "message/global")
_ORIGINAL_HEADERS = ("text/rfc822-headers", "message/rfc822-headers", "message/global-headers")
_STATUS_PARTS = ("message/delivery-status", "message/global-delivery-status")
_FEEDBACK_PARTS = ("message/feedback-report",)

_LOG_IN_TEXT = re.compile(r"^[ \t>]*X-Greenlight-Log:[ \t]*(\d{1,19})\b", re.I | re.M)
_GL_ID_IN_TEXT = re.compile(r"<gl\.\d{1,19}\.[0-9a-f]+@[^\s<>]+>", re.I)
_ACTION = re.compile(r"\s*([a-z]+)", re.I)
_TYPE_PREFIX = re.compile(r"^\s*[a-z0-9-]+\s*;\s*", re.I)
_FOLD = re.compile(r"\r?\n[ \t]+")
_BLOCK_SPLIT = re.compile(r"\r?\n[ \t]*\r?\n")
_ANSWER = re.compile(r"(?:^[ \t>]*|said:[ \t]*)([45]\d\d[ -][^\r\n]*)", re.I | re.M)
_ANSWER_WINDOW = 800


MAX_BOUNCE_BYTES = 4 * 1024 * 1024  # a bounce quotes our message; ours are far smaller
MAX_DEPTH = 16  # multipart levels looked into; real bounces have two or three
MAX_PARTS = 200


def parse_bounce_message(raw: bytes) -> list[FeedbackEvent]:
    """The events a bounce message reports; [] when it is not a bounce.

    Bounded: a message over `MAX_BOUNCE_BYTES`, or nested so deeply that Python's
    parser gives up, is `MalformedPayload`; only the first `MAX_DEPTH` levels and
    `MAX_PARTS` parts are looked at.
    """
    if not raw or not raw.strip():
        return []
    if len(raw) > MAX_BOUNCE_BYTES:
        raise MalformedPayload(f"a bounce message is at most {MAX_BOUNCE_BYTES:,} bytes")
    try:
        return _parse(raw)
    except RecursionError:
        raise MalformedPayload("the message's parts are nested too deeply to be a bounce") from None


def _parse(raw: bytes) -> list[FeedbackEvent]:
    msg = email.message_from_bytes(raw)
    report_id = _report_id(msg, raw)
    mid, log_hint = _original_identity(msg)
    sent_at = _date(msg.get("Date"))

    blocks = list(_status_blocks(msg))
    if blocks:
        events = _dsn_events(blocks, report_id, mid, log_hint, sent_at)
        if events:
            return events
    feedback = list(_feedback_reports(msg))
    if feedback:
        return _complaints(msg, feedback, report_id, mid, log_hint, sent_at)
    return _fallback_events(msg, report_id, mid, log_hint, sent_at)


# ------------------------------------------------------------------- structure


def _parts(msg: Message) -> Iterator[Message]:
    """The parts of the bounce itself, depth first, not descending into the returned
    message; at most `MAX_PARTS`, `MAX_DEPTH` levels down."""
    stack: list[tuple[Message, int]] = [(msg, 0)]
    seen = 0
    while stack and seen < MAX_PARTS:
        part, depth = stack.pop()
        seen += 1
        yield part
        payload = part.get_payload()
        nested = part.get_content_maintype() == "multipart" and isinstance(payload, list)
        if nested and depth < MAX_DEPTH:
            subs = [sub for sub in payload if isinstance(sub, Message)]
            stack.extend((sub, depth + 1) for sub in reversed(subs))


def _text_of(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        charset = part.get_content_charset() or "utf-8"
        try:
            return payload.decode(charset, errors="replace")
        except LookupError:
            return payload.decode("utf-8", errors="replace")
    raw = part.get_payload()
    return raw if isinstance(raw, str) else ""


def _report_id(msg: Message, raw: bytes) -> str:
    own = msg.get("Message-ID")
    if isinstance(own, str) and own.strip():
        return own.strip()
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _date(value: object) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.utcoffset() is not None else parsed.replace(tzinfo=UTC)


def _header_blocks(part: Message) -> list[Message]:
    """The header blocks of a delivery-status or feedback-report part.

    The email package splits a plain ``message/delivery-status`` into one
    sub-message per block. It does not when the part is base64 or quoted-printable
    encoded (Exchange does that), nor for the other report types (it reads
    ``message/global-delivery-status`` and ``message/feedback-report`` as one message
    whose body holds the later blocks), so then we put the text back together and
    split it ourselves.
    """
    payload = part.get_payload()
    encoding = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    encoded = encoding in ("base64", "quoted-printable")
    if isinstance(payload, list):
        blocks = [b for b in payload if isinstance(b, Message)]
        if part.get_content_type() == "message/delivery-status" and not encoded:
            return blocks
        text = "\n".join(b.as_string() for b in blocks)
        if encoded:
            fake = Message()
            fake["Content-Transfer-Encoding"] = encoding
            fake.set_payload(text)
            text = _text_of(fake)
    else:
        text = _text_of(part)
    parser = HeaderParser()
    return [
        parser.parsestr(chunk.strip() + "\n") for chunk in _BLOCK_SPLIT.split(text) if chunk.strip()
    ]


def _status_blocks(msg: Message) -> Iterator[Message]:
    """The per-recipient blocks of every delivery-status part (per-message block skipped)."""
    for part in _parts(msg):
        if part.get_content_type() in _STATUS_PARTS:
            for block in _header_blocks(part):
                if block.get("Final-Recipient") or block.get("Original-Recipient"):
                    yield block


def _feedback_reports(msg: Message) -> Iterator[Message]:
    for part in _parts(msg):
        if part.get_content_type() in _FEEDBACK_PARTS:
            yield from _header_blocks(part)[:1]


def _returned_headers(msg: Message) -> Message | None:
    """The headers of the message the bounce returns, if it carries them as a part."""
    for part in _parts(msg):
        ctype = part.get_content_type()
        if ctype in _ORIGINAL_MESSAGE:
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
        elif ctype in _ORIGINAL_HEADERS:
            return HeaderParser().parsestr(_text_of(part).lstrip())
    return None


def _original_identity(msg: Message) -> tuple[str | None, str | None]:
    """(Message-ID, X-Greenlight-Log) of the returned message, from its part or quoted text."""
    mid: str | None = None
    log_hint: str | None = None
    original = _returned_headers(msg)
    if original is not None:
        value = original.get("Message-ID")
        mid = str(value).strip() if value else None
        value = original.get("X-Greenlight-Log")
        log_hint = str(value).strip() if value else None
    if mid is None or log_hint is None:
        for part in _parts(msg):
            if part.get_content_maintype() != "text":
                continue
            text = _text_of(part)
            if log_hint is None and (m := _LOG_IN_TEXT.search(text)):
                log_hint = m.group(1)
            if mid is None and (m2 := _GL_ID_IN_TEXT.search(text)):
                mid = m2.group(0)
    return mid, log_hint


def _returned_to(msg: Message) -> str | None:
    original = _returned_headers(msg)
    if original is None:
        return None
    addresses = getaddresses([str(v) for v in original.get_all("To", [])])
    return addresses[0][1] if addresses else None


# --------------------------------------------------------------------- RFC 3464


def _field(block: Message, name: str) -> str | None:
    value = block.get(name)
    if value is None:
        return None
    text = _FOLD.sub(" ", str(value)).strip()
    return text or None


def _kind(action: str, status: str | None) -> FeedbackKind | None:
    cls = status[0] if status else None
    if action in ("failed", "error"):  # OpenSMTPD writes "error"
        return FeedbackKind.SOFT_BOUNCE if cls == "4" else FeedbackKind.HARD_BOUNCE
    if action == "delayed":
        return FeedbackKind.SOFT_BOUNCE
    if action in ("delivered", "relayed", "expanded"):
        return FeedbackKind.DELIVERED
    if cls == "5":
        return FeedbackKind.HARD_BOUNCE
    if cls == "4":
        return FeedbackKind.SOFT_BOUNCE
    return None


def _dsn_events(
    blocks: list[Message],
    report_id: str,
    mid: str | None,
    log_hint: str | None,
    sent_at: datetime | None,
) -> list[FeedbackEvent]:
    events = []
    for index, block in enumerate(blocks):
        action_match = _ACTION.match(_field(block, "Action") or "")
        action = action_match.group(1).lower() if action_match else ""
        status = normalize_status(_field(block, "Status"))
        kind = _kind(action, status)
        if kind is None:
            continue
        original_rcpt = _field(block, "Original-Recipient")
        recipient = normalize_recipient(original_rcpt) if original_rcpt else None
        recipient = recipient or normalize_recipient(_field(block, "Final-Recipient"))
        diagnostic = _field(block, "Diagnostic-Code")
        if diagnostic:
            diagnostic = _TYPE_PREFIX.sub("", diagnostic)
        identity = {
            "report": report_id,
            "index": index,
            "recipient": recipient,
            "action": action,
            "status": status,
        }
        events.append(
            make_event(
                kind,
                SOURCE,
                source_event_id=derive_event_id(SOURCE, identity),
                occurred_at=_date(_field(block, "Last-Attempt-Date")) or sent_at,
                recipient=recipient,
                message_id=mid,
                log_hint=log_hint,
                smtp_status=status,
                diagnostic=diagnostic,
            )
        )
    return events


# --------------------------------------------------------------------- RFC 5965


def _complaints(
    msg: Message,
    reports: list[Message],
    report_id: str,
    mid: str | None,
    log_hint: str | None,
    sent_at: datetime | None,
) -> list[FeedbackEvent]:
    report = reports[0]
    feedback_type = (_field(report, "Feedback-Type") or "").lower()
    if feedback_type != "abuse":
        return []
    recipient = normalize_recipient(_field(report, "Original-Rcpt-To")) or _returned_to(msg)
    when = _date(_field(report, "Arrival-Date") or _field(report, "Received-Date")) or sent_at
    identity = {"report": report_id, "recipient": recipient, "feedback": feedback_type}
    return [
        make_event(
            FeedbackKind.COMPLAINT,
            SOURCE,
            source_event_id=derive_event_id(SOURCE, identity),
            occurred_at=when,
            recipient=recipient,
            message_id=mid,
            log_hint=log_hint,
            user_agent=_field(report, "User-Agent"),
        )
    ]


# ------------------------------------------------------------ other formats


def _bounce_text(msg: Message) -> str:
    return "\n".join(
        _text_of(p) for p in _parts(msg) if p.get_content_type() in ("text/plain", "text/html")
    )


def _answer_near(text: str, address: str) -> str | None:
    """The remote server's answer quoted after ``address`` in a plain-text bounce.

    Plain-text bounces put, after each failed address, a paragraph saying why
    (Exim: the SMTP dialogue, qmail: a sentence ending in ``(#5.1.1)``). The
    paragraph after the first mention that quotes an SMTP reply wins, else the
    paragraph after the first mention.
    """
    lowered, wanted = text.lower(), address.lower()
    first: str | None = None
    at = lowered.find(wanted)
    for _ in range(5):
        if at < 0:
            break
        rest = text[at + len(address) : at + len(address) + _ANSWER_WINDOW]
        paragraph = _BLOCK_SPLIT.split(rest.lstrip(">: \t\r\n"), 1)[0]
        answer = _ANSWER.search(paragraph)
        if answer:
            return " ".join(paragraph[answer.start(1) :].split())
        if first is None and paragraph.strip():
            first = " ".join(paragraph.split())
        at = lowered.find(wanted, at + len(address))
    return first


def _fallback_events(
    msg: Message,
    report_id: str,
    mid: str | None,
    log_hint: str | None,
    sent_at: datetime | None,
) -> list[FeedbackEvent]:
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a heuristic tripping over odd input is not a bounce we can read
        log.warning("flufl.bounce failed on message %s", report_id, exc_info=True)
        return []
    if not temporary and not permanent:
        return []
    text = _bounce_text(msg)
    found: dict[str, FeedbackKind] = {}
    for raw in sorted(temporary):
        found[raw.decode("ascii", errors="replace")] = FeedbackKind.SOFT_BOUNCE
    for raw in sorted(permanent):  # permanent wins when a detector reports both
        found[raw.decode("ascii", errors="replace")] = FeedbackKind.HARD_BOUNCE
    events = []
    for address, kind in found.items():
        recipient = normalize_recipient(address)
        if recipient is None:
            continue
        diagnostic = _answer_near(text, recipient)
        identity = {"report": report_id, "recipient": recipient.lower(), "kind": kind.value}
        events.append(
            make_event(
                kind,
                SOURCE,
                source_event_id=derive_event_id(SOURCE, identity),
                occurred_at=sent_at,
                recipient=recipient,
                message_id=mid,
                log_hint=log_hint,
                diagnostic=diagnostic,
            )
        )
    return events
