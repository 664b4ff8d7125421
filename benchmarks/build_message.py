"""Benchmark: building messages from a per-delivery skeleton vs the `email` package.

Times N messages (default 20,000) of a typical delivery — ~3.5 KB of HTML with 24
tracked links, ~1.3 KB of text, a non-ASCII subject — built three ways in one run:

* `MessageSkeleton.build` (bot/engine/message.py): tokens, link rewriting, pixel, MIME;
* reference: `email.message.EmailMessage` with the same headers and the same tracked
  HTML (`rewrite_html` is included, so the only difference is how MIME is assembled),
  then `as_bytes(policy=SMTP)`;
* the same with the legacy `email.mime` classes, for context (DESIGN.md's ~0.4 ms).

Rendering (Jinja) is excluded from all three: 100 pre-rendered variants are cycled,
and every message has its own log id, so tokens and Message-IDs all differ.

    .venv/bin/python benchmarks/build_message.py [--messages N]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from email import policy
from email.header import Header
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.parser import BytesParser
from email.utils import format_datetime, formataddr
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.engine.message import MessageSkeleton
from bot.engine.rendering import RenderedMessage
from bot.engine.tokens import TokenSigner

VARIANTS = 100
FIRST_NAMES = ["Zoë", "Jean", "Ana", "Łukasz", "Mia", "Noah", "Inès", "Olaf", "Yuki", "Sam"]


def variants() -> list[tuple[str, RenderedMessage]]:
    out = []
    for i in range(VARIANTS):
        name = FIRST_NAMES[i % len(FIRST_NAMES)]
        links = "".join(
            f'<tr><td><a class="product" href="https://shop.example.com/p/{k}?utm_source=mail'
            f'&amp;utm_campaign=spring&amp;u={i}">Product {k}</a> — lorem ipsum dolor sit '
            f"amet, consectetur adipiscing elit.</td></tr>\n"
            for k in range(22)
        )
        html = (
            '<!doctype html>\n<html><head><meta charset="utf-8"><title>Spring</title></head>'
            f"<body>\n<h1>Hello {name},</h1>\n<table>\n{links}</table>\n"
            '<p><a href="https://acme.example/account">Your account</a> · '
            '<a href="https://acme.example/help">Help</a> · '
            '<a href="mailto:help@acme.example">Write to us</a></p>\n</body></html>\n'
        )
        text = (
            f"Hello {name},\n\n"
            + "".join(f"- Product {k}: https://shop.example.com/p/{k}\n" for k in range(22))
            + "\nYour account: https://acme.example/account\n"
        )
        subject = f"{name}, vos sélections de printemps — jusqu'à -30 %"
        out.append((f"user{i}@example.com", RenderedMessage(subject, html, text, ())))
    return out


def add_provider_headers(msg: Message, log_id: int) -> None:
    """The same provider carriers as `provider_log_headers`, so the comparison is fair."""
    msg["X-SMTPAPI"] = json.dumps({"unique_args": {"greenlight_log": str(log_id)}})
    msg["X-Mailgun-Variables"] = json.dumps({"greenlight_log": str(log_id)})
    msg["X-PM-Metadata-greenlight_log"] = str(log_id)


def reference_email_message(
    sk: MessageSkeleton, log_id: int, to: str, parts: RenderedMessage
) -> bytes:
    msg = EmailMessage()
    msg["Date"] = format_datetime(sk._now())
    msg["From"] = "Acmé News <news@acme.example>"
    msg["Reply-To"] = "help@acme.example"
    msg["To"] = to
    msg["Subject"] = parts.subject
    msg["Message-ID"] = sk.message_id(log_id)
    msg["List-Unsubscribe"] = f"<{sk.unsubscribe_url(log_id)}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["X-Greenlight-Log"] = str(log_id)
    msg["X-Greenlight-Delivery"] = sk.delivery_ref
    add_provider_headers(msg, log_id)
    msg.set_content(parts.text or "", cte="quoted-printable")
    msg.add_alternative(sk.rewrite_html(log_id, parts.html or ""), subtype="html")
    return msg.as_bytes(policy=policy.SMTP)


def reference_mime(sk: MessageSkeleton, log_id: int, to: str, parts: RenderedMessage) -> bytes:
    """The legacy API needs non-ASCII headers pre-encoded (`Header`, `formataddr`)."""
    msg = MIMEMultipart("alternative")
    msg["Date"] = format_datetime(sk._now())
    msg["From"] = formataddr(("Acmé News", "news@acme.example"), charset="utf-8")
    msg["Reply-To"] = "help@acme.example"
    msg["To"] = to
    msg["Subject"] = Header(parts.subject, "utf-8")
    msg["Message-ID"] = sk.message_id(log_id)
    msg["List-Unsubscribe"] = f"<{sk.unsubscribe_url(log_id)}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["X-Greenlight-Log"] = str(log_id)
    msg["X-Greenlight-Delivery"] = sk.delivery_ref
    add_provider_headers(msg, log_id)
    msg.attach(MIMEText(parts.text or "", "plain", "utf-8"))
    msg.attach(MIMEText(sk.rewrite_html(log_id, parts.html or ""), "html", "utf-8"))
    return msg.as_bytes()


def timed(
    label: str,
    build: Callable[[int, str, RenderedMessage], bytes],
    n: int,
    cases: list[tuple[str, RenderedMessage]],
) -> float:
    size = 0
    start = time.perf_counter()
    for i in range(n):
        to, parts = cases[i % VARIANTS]
        size += len(build(i + 1, to, parts))
    elapsed = time.perf_counter() - start
    per = elapsed / n * 1e6
    print(f"{label:<44} {per:8.1f} µs/message  {n / elapsed:9,.0f} msg/s  ({size / n:,.0f} B avg)")
    return per


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    n = args.messages

    sk = MessageSkeleton(
        sender="Acmé News <news@acme.example>",
        reply_to="help@acme.example",
        delivery_ref="spring-2026",
        public_base_url="https://t.acme.example",
        signer=TokenSigner("benchmark-secret"),
    )
    cases = variants()

    # Sanity: the fast message parses back with the same subject and both parts.
    fast = BytesParser(policy=policy.default).parsebytes(sk.build(1, *cases[0]))
    assert fast["Subject"] == cases[0][1].subject
    assert [p.get_content_type() for p in fast.iter_parts()] == ["text/plain", "text/html"]

    print(f"Python {platform.python_version()} on {platform.machine()}, {n:,} messages")
    ours = timed("MessageSkeleton.build", sk.build, n, cases)
    rewrite = timed(
        "  of which rewrite_html (links + pixel)",
        lambda i, to, parts: sk.rewrite_html(i, parts.html or "").encode(),
        n,
        cases,
    )
    ref = timed(
        "EmailMessage + as_bytes (reference)",
        lambda i, to, parts: reference_email_message(sk, i, to, parts),
        n,
        cases,
    )
    mime = timed(
        "email.mime (legacy) + as_bytes",
        lambda i, to, parts: reference_mime(sk, i, to, parts),
        n,
        cases,
    )
    print(f"reference / skeleton: {ref / ours:5.1f}×   email.mime / skeleton: {mime / ours:5.1f}×")
    print(f"skeleton MIME assembly without link rewriting: ~{ours - rewrite:.1f} µs/message")


if __name__ == "__main__":
    main()
