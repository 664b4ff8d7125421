"""The MIME message of a proof: the delivery's message for one profile, to a tester.

Built with `email.message.EmailMessage` rather than the sender's `MessageSkeleton`:
a proof is one message now and then, not thousands a second, and it must carry none
of what ties a message to a sending log (no `X-Greenlight-Log`, no provider carriers,
no `List-Unsubscribe` token, a Message-ID that is not `<gl.{log}.{tag}@…>`), so that
no bounce, open, click or complaint about it can ever be counted. Its links are left as
the template wrote them (the unsubscribe and view-online placeholders reach nothing).
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime, make_msgid

PROOF_HEADER = "X-Greenlight-Proof"  # the delivery ref, for whoever reads the headers


def envelope_sender(sender: str) -> tuple[str, str]:
    """The address (MAIL FROM) and domain of a From value such as `Shop <news@shop.example>`."""
    msg = EmailMessage()
    msg["From"] = sender
    addresses: tuple[Address, ...] = msg["From"].addresses
    if len(addresses) != 1:
        raise ValueError(f"From {sender!r} must be exactly one address")
    return addresses[0].addr_spec, addresses[0].domain


def build_proof(
    *,
    sender: str,
    reply_to: str | None,
    ref: str,
    to_addr: str,
    subject: str,
    text: str | None,
    html: str | None,
    now: datetime,
) -> bytes:
    """The whole proof for `to_addr`, CRLF line ends, ready for DATA."""
    if text is None and html is None:
        raise ValueError("a message needs an HTML or a text part")
    _, domain = envelope_sender(sender)
    msg = EmailMessage()
    msg["Date"] = format_datetime(now.astimezone(UTC))
    msg["From"] = sender
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["To"] = to_addr
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid("proof", domain)
    msg[PROOF_HEADER] = ref
    if text is not None:
        msg.set_content(text, cte="quoted-printable")
        if html is not None:
            msg.add_alternative(html, subtype="html", cte="quoted-printable")
    else:
        msg.set_content(html or "", subtype="html", cte="quoted-printable")
    policy = SMTP if to_addr.isascii() else SMTPUTF8
    return msg.as_bytes(policy=policy)
