"""Why a message failed (SPEC section 7), from whatever the relay or a report said.

Two sources describe a failure: the relay's SMTP reply while sending (a code, and a
hard or soft refusal), and feedback afterwards (an enhanced status code, a diagnostic
text, perhaps a reply code quoted in it). Both end up as one `FailureReason`, through
the tables below, so a bounce reads the same whichever way it came back.

`reason_for` reads an enhanced status code (RFC 3463) first, then the diagnostic text,
then the basic reply code:

=====================  ===========================================================
enhanced status         reason
=====================  ===========================================================
X.1.1, X.1.6            user unknown (bad mailbox; moved, no forwarding address)
X.1.10                  user unknown (Microsoft's "RecipientNotFound"), or invalid
                        domain when the diagnostic says "null MX" (RFC 7505)
X.1.2, 5.4.4            invalid domain
X.1.0, X.1.3, X.1.4     invalid address
X.2.1                   account disabled
X.2.2, X.3.1            mailbox full
X.4.1, X.4.2            not connected (no answer, bad connection)
other X.4.x, X.3.2      unreachable
X.1.7, X.1.8, X.2.3,
X.2.4, other X.3.x,
X.5.x, X.6.x, X.7.x     refused
X.0.0, X.2.0, none      decided by the diagnostic text, then by the reply code
=====================  ===========================================================

Reply codes alone (`reason_for_reply`, what the relay's answer gives): 550/551/553
user unknown, 452/552 mailbox full, 421 unreachable, any other 5xx refused; a hard
refusal without a code (an address the relay cannot even take) is an invalid address;
anything else "not defined".
"""

from __future__ import annotations

import re
from enum import StrEnum


class FailureReason(StrEnum):
    USER_UNKNOWN = "user unknown"
    INVALID_DOMAIN = "invalid domain"
    UNREACHABLE = "unreachable"
    MAILBOX_FULL = "mailbox full"
    ACCOUNT_DISABLED = "account disabled"
    REFUSED = "refused"
    NOT_CONNECTED = "not connected"
    INVALID_ADDRESS = "invalid address"
    QUARANTINED_ADDRESS = "quarantined address"
    DENYLISTED_ADDRESS = "denylisted address"
    DUPLICATE = "duplicate"
    NOT_DEFINED = "not defined"


R = FailureReason

# (subject, detail) of an enhanced status code -> reason; then a default per subject.
_STATUS_REASONS: dict[tuple[int, int], FailureReason] = {
    (1, 1): R.USER_UNKNOWN,
    (1, 6): R.USER_UNKNOWN,
    (1, 2): R.INVALID_DOMAIN,
    (1, 0): R.INVALID_ADDRESS,
    (1, 3): R.INVALID_ADDRESS,
    (1, 4): R.INVALID_ADDRESS,
    (1, 7): R.REFUSED,
    (1, 8): R.REFUSED,
    (2, 1): R.ACCOUNT_DISABLED,
    (2, 2): R.MAILBOX_FULL,
    (2, 3): R.REFUSED,
    (2, 4): R.REFUSED,
    (3, 1): R.MAILBOX_FULL,
    (3, 2): R.UNREACHABLE,
    (4, 1): R.NOT_CONNECTED,
    (4, 2): R.NOT_CONNECTED,
}
_SUBJECT_REASONS: dict[int, FailureReason] = {
    3: R.REFUSED,
    4: R.UNREACHABLE,
    5: R.REFUSED,
    6: R.REFUSED,
    7: R.REFUSED,
}

# Basic reply codes with a reason of their own; any other 5xx is a refusal.
REPLY_REASONS: dict[int, FailureReason] = {
    550: R.USER_UNKNOWN,
    551: R.USER_UNKNOWN,
    553: R.USER_UNKNOWN,
    452: R.MAILBOX_FULL,
    552: R.MAILBOX_FULL,
    421: R.UNREACHABLE,
}

# Diagnostic texts, tried in order: the first pattern found names the reason.
_TEXT_REASONS: tuple[tuple[FailureReason, re.Pattern[str]], ...] = tuple(
    (reason, re.compile(pattern, re.IGNORECASE))
    for reason, pattern in (
        (
            R.ACCOUNT_DISABLED,
            r"\b(account|mailbox|user)\b[^.;\n]{0,40}\b(disabled|deactivated|suspended|"
            r"inactive|locked)\b|\bdisabled (account|mailbox|user)\b",
        ),
        (
            R.MAILBOX_FULL,
            r"quota|mailbox (is )?full|inbox is full|out of storage|insufficient "
            r"(system )?storage|storage space",
        ),
        (
            R.INVALID_DOMAIN,
            r"host (or domain name )?not found|domain (name )?(not found|does not exist)|"
            r"name service error|nxdomain|\bno mx\b|null mx|unrout(e)?able|"
            r"no route to domain",
        ),
        (
            R.USER_UNKNOWN,
            r"user unknown|unknown user|no such (user|mailbox|recipient|address)|"
            r"(user|mailbox|account|address|recipient) (does not|doesn't) exist|"
            r"mailbox (not found|unavailable)|recipient ?not ?found|unknown recipient|"
            r"invalid recipient|no mailbox|does not exist",
        ),
        (
            R.NOT_CONNECTED,
            r"connection (refused|timed out|reset|closed)|timed out|could ?n[o']t connect|"
            r"network is unreachable|no route to host|lost connection",
        ),
        (
            R.REFUSED,
            r"spam|blocked|block ?list|black ?list|deny ?list|\brbl\b|policy|reputation|"
            r"rejected|denied|not allowed|dmarc|\bspf\b|dkim",
        ),
        (R.UNREACHABLE, r"unreachable|temporarily unavailable|try again later|deferred"),
    )
)

_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_ENHANCED_START = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_BASIC = re.compile(r"(?<![\d.])([245]\d\d)(?![\d.])")


def normalize_status(value: object) -> str | None:
    """An enhanced status code (``5.1.1``) from a field that should hold one."""
    if isinstance(value, str):
        m = _ENHANCED_START.match(value)
        if m:
            return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}"
    return None


def status_in_text(text: str | None) -> str | None:
    """The first enhanced status code quoted in a diagnostic, e.g. ``550 5.1.1 ...``."""
    if not text:
        return None
    m = _ENHANCED.search(text)
    return f"{m.group(1)}.{int(m.group(2))}.{int(m.group(3))}" if m else None


def reason_for_status(status: str | None, text: str = "") -> FailureReason | None:
    """The reason an enhanced status code names (the table above), None when it names none.

    `text` is the lower-cased diagnostic, which decides X.1.10 (null MX or not).
    """
    if not status:
        return None
    kind, subject, detail = (int(p) for p in status.split("."))
    if (subject, detail) == (1, 10):
        return R.INVALID_DOMAIN if "null mx" in text else R.USER_UNKNOWN
    if (kind, subject, detail) == (5, 4, 4):
        return R.INVALID_DOMAIN
    return _STATUS_REASONS.get((subject, detail), _SUBJECT_REASONS.get(subject))


def reason_for_reply(code: int | None, *, hard: bool = False) -> FailureReason:
    """The reason of a relay's reply code; `hard` without a code: the address itself."""
    if code:
        if code in REPLY_REASONS:
            return REPLY_REASONS[code]
        if 500 <= code < 600:
            return R.REFUSED
        return R.NOT_DEFINED
    return R.INVALID_ADDRESS if hard else R.NOT_DEFINED


def reason_for(smtp_status: str | None, diagnostic: str | None) -> FailureReason:
    """The reason of a reported failure: status code, then text, then reply code."""
    text = (diagnostic or "").lower()
    status = normalize_status(smtp_status) or status_in_text(diagnostic)
    reason = reason_for_status(status, text)
    if reason:
        return reason
    for candidate, pattern in _TEXT_REASONS:
        if pattern.search(text):
            return candidate
    m = _BASIC.search(text)
    return reason_for_reply(int(m.group(1))) if m else R.NOT_DEFINED
