"""Fast, standards-correct RFC 5322 messages from a per-delivery skeleton.

Building each message through `email.message.EmailMessage` costs ~1.4 ms (DESIGN.md,
Benchmarks), which alone would cap sending near 700 msg/s. Almost everything in a
message is the same for every recipient of a delivery, so `MessageSkeleton` prepares
that once (From and Reply-To folded and RFC 2047-encoded, the delivery header, the
MIME headers of each part) and `build()` only does what varies per message: the
Date, To, Subject and Message-ID lines, the signed tokens, the link rewriting and
the encoding of the bodies, with C-implemented codecs (`binascii`).

What `build()` guarantees (tests parse the bytes back with the `email` package):

* CRLF line endings and every line ≤ 998 octets: bodies are encoded in lines of at
  most 76, ASCII subjects up to 900 characters stay on one line and longer or
  non-ASCII ones become RFC 2047 encoded-words folded at under 78;
* `multipart/alternative` with text/plain first and text/html last (the preferred
  one), or a single part when the delivery has only one; UTF-8 bodies in
  quoted-printable when mostly ASCII (readable in a Maildir file), else base64;
  body line breaks (CRLF, CR or LF) become CRLF, the canonical form of MIME text, so
  a part decodes to its input with CRLF line breaks;
* a stable `Message-ID` `<gl.{log_id}.{tag}@{sender domain}>` (tag: a keyed digest of
  the delivery ref and log id), so a message built twice for one log — a resend after
  a crash, a retry after a soft bounce — carries the same id and is recognisable;
* `X-Greenlight-Log` and `X-Greenlight-Delivery` tie bounces to their sending log;
  `List-Unsubscribe` (signed one-click URL) with `List-Unsubscribe-Post` (RFC 8058);
* the log id once more in each relay provider's own carrier (`provider_log_headers`),
  because their open and click events do not echo the Message-ID: SendGrid's
  `X-SMTPAPI` unique argument, Mailgun's `X-Mailgun-Variables` and Postmark's
  `X-PM-Metadata-greenlight_log`. The provider strips its header and returns the
  value in every event; other relays pass the headers on, which costs ~150 bytes;
* `{{ unsubscribe_url }}` and `{{ view_online_url }}` in a template are this
  message's signed links (`links()`): the `List-Unsubscribe` target, and
  `{PUBLIC_BASE_URL}/v/{token}`, its web version;
* in the HTML only, every `http(s)` href of `<a>` and `<area>` goes through
  `{PUBLIC_BASE_URL}/t/c/{token}` (the token carries the log id and the URL), and a
  1×1 pixel `{PUBLIC_BASE_URL}/t/o/{token}` goes before `</body>` (or at the end).
  `mailto:`, `tel:`, anchors, relative links, links to PUBLIC_BASE_URL itself and
  `<link>` stylesheets are left alone. Links in the text part are not rewritten:
  plain-text readers see, copy and trust the real address; clicks are tracked for
  HTML readers, which is also where opens are measured.

Recipient addresses are ASCII in practice; a non-ASCII domain is written in IDNA and
a non-ASCII local part makes the header raw UTF-8 (RFC 6532), which the relay must
accept with SMTPUTF8 (the SMTP transport asks for it when an address needs it).
"""

from __future__ import annotations

import re
from base64 import b64encode, encodebytes
from binascii import b2a_qp
from collections.abc import Callable
from datetime import UTC, datetime
from email.errors import NonASCIILocalPartDefect
from email.headerregistry import Address
from email.policy import SMTP, SMTPUTF8
from email.utils import format_datetime
from html import unescape
from typing import TYPE_CHECKING, Protocol

from bot.engine.tokens import TokenSigner

if TYPE_CHECKING:
    from bot.clock import Clock
    from bot.config import Settings

MAX_PLAIN_SUBJECT = 900  # longer ASCII subjects are folded as encoded-words
_WORD_BYTES = 45  # UTF-8 bytes per encoded-word: "=?utf-8?b?" + 60 chars + "?=" = 72

# An addr-spec that can be written as is (the common case, checked in ~0.3 µs).
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+\Z")
# href of <a> and <area>, attribute by attribute (so a ">" inside a quoted value of an
# earlier attribute does not end the tag); the value double-, single- or un-quoted.
_LINK = re.compile(
    r"""(<(?:a|area)(?:\s+(?!href\s*=)[^\s>/="']+(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s"'>]+))?)*"""
    r"""\s+href\s*=\s*)(?:"([^"]*)"|'([^']*)'|([^\s"'>]+))""",
    re.IGNORECASE,
)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
_LINK_CACHE_SIZE = 4096
_UNSEEN = object()

_QP = b"Content-Transfer-Encoding: quoted-printable\r\n"
_B64 = b"Content-Transfer-Encoding: base64\r\n"
_TEXT_TYPE = b'Content-Type: text/plain; charset="utf-8"\r\n'
_HTML_TYPE = b'Content-Type: text/html; charset="utf-8"\r\n'


class RenderedParts(Protocol):
    """What `build()` needs of a rendered message (`RenderedMessage` fits)."""

    @property
    def subject(self) -> str: ...
    @property
    def html(self) -> str | None: ...
    @property
    def text(self) -> str | None: ...


class DeliveryHeaders(Protocol):
    """What the skeleton needs of a delivery (`bot.store.models.Delivery` fits)."""

    @property
    def sender(self) -> str: ...
    @property
    def reply_to(self) -> str | None: ...
    @property
    def ref(self) -> str: ...


LOG_CARRIER = "greenlight_log"  # what the feedback parsers read back from each provider


def provider_log_headers(log_id: int) -> str:
    """The header lines that make SendGrid, Mailgun and Postmark echo the log id.

    * SendGrid copies each ``unique_args`` entry of ``X-SMTPAPI`` into every event as
      a top-level field (`bot.feedback.sendgrid` reads ``greenlight_log``);
    * Mailgun returns ``X-Mailgun-Variables`` in each event's ``user-variables``;
    * Postmark returns every ``X-PM-Metadata-{key}`` header in the record's
      ``Metadata``.

    Values are JSON strings, as the providers document them (Mailgun's variables
    must be strings). One f-string per message: no JSON encoder on the hot path.
    """
    return (
        f'X-SMTPAPI: {{"unique_args": {{"{LOG_CARRIER}": "{log_id}"}}}}\r\n'
        f'X-Mailgun-Variables: {{"{LOG_CARRIER}": "{log_id}"}}\r\n'
        f"X-PM-Metadata-{LOG_CARRIER}: {log_id}\r\n"
    )


def _ascii_domain(domain: str) -> str:
    return domain if domain.isascii() else domain.encode("idna").decode("ascii")


def _address_line(name: str, value: str) -> tuple[str, list[Address]]:
    """A folded address header line (with CRLF) and its addresses; slow, exact."""
    if "\r" in value or "\n" in value:
        raise ValueError(f"{name} {value!r} contains a line break")
    header = SMTP.header_factory(name, value)
    addresses = [
        Address(a.display_name, a.username, _ascii_domain(a.domain)) for a in header.addresses
    ]
    # A non-ASCII local part is allowed (RFC 6532); any other defect is not.
    defects = [d for d in header.defects if not isinstance(d, NonASCIILocalPartDefect)]
    if defects or not addresses or any(not a.domain for a in addresses):
        raise ValueError(
            f"{name} {value!r} is not a valid address; a display name with a comma or "
            'another special character goes in double quotes: "Shop, Inc" <news@shop.example>'
        )
    policy = SMTP if all(a.username.isascii() for a in addresses) else SMTPUTF8
    return policy.fold(name, policy.header_factory(name, addresses)), addresses


def _unstructured_line(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"{name} {value!r} contains a line break")
    line: str = SMTP.fold(name, SMTP.header_factory(name, value))
    return line


def check_address_header(name: str, value: str, *, single: bool) -> None:
    """Raise ValueError unless the builder can write `value` as the `name` header.

    The import calls this so that what it accepts is exactly what `MessageSkeleton`
    will build: a From the builder would refuse at every tick is refused up front.
    """
    _line, addresses = _address_line(name, value)
    if single and len(addresses) != 1:
        listed = ", ".join(a.addr_spec or "?" for a in addresses)
        raise ValueError(
            f"{name} must be exactly one address, but {value!r} reads as {len(addresses)} "
            f'({listed}); quote a display name with a comma: "Shop, Inc" <news@…>'
        )


def _encoded_words(value: str) -> str:
    """RFC 2047 B encoded-words of ≤ 45 UTF-8 bytes each, folded with CRLF SP.

    Whole characters per word, so each word decodes on its own; the folding
    whitespace between adjacent encoded-words is not part of the value.
    """
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    for char in value:
        width = len(char.encode("utf-8"))
        if size + width > _WORD_BYTES:
            words.append(b64encode("".join(chunk).encode("utf-8")).decode("ascii"))
            chunk, size = [], 0
        chunk.append(char)
        size += width
    if chunk:
        words.append(b64encode("".join(chunk).encode("utf-8")).decode("ascii"))
    return "\r\n ".join(f"=?utf-8?b?{w}?=" for w in words)


def subject_line(subject: str) -> str:
    """The Subject header line: as is when plain ASCII, else folded encoded-words."""
    if (
        subject.isascii()
        and subject.isprintable()
        and len(subject) <= MAX_PLAIN_SUBJECT
        and "=?" not in subject
        and subject == subject.strip()
    ):
        return f"Subject: {subject}\r\n"
    if not subject:
        return "Subject: \r\n"
    return f"Subject: {_encoded_words(subject)}\r\n"


def encode_body(text: str, *, exact_end: bool = False) -> tuple[bytes, bytes]:
    """(Content-Transfer-Encoding line, encoded body with CRLF line ends).

    Quoted-printable when at most ~1/8 of the bytes come from non-ASCII characters
    (readable, small), base64 otherwise (QP would triple every non-ASCII byte).
    `exact_end`: the body ends the message, so a QP body that does not end with a
    line break gets a soft one (`=` CRLF) and decodes without a trailing newline.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    raw = text.encode("utf-8")
    if (len(raw) - len(text)) * 8 <= len(raw):
        body = b2a_qp(raw, quotetabs=False, istext=True, header=False)
        if exact_end and body and not body.endswith(b"\n"):
            body += b"=\n"
        return _QP, body.replace(b"\n", b"\r\n")
    # base64 encodes the canonical form of text, whose line breaks are CRLF (RFC 2045).
    canonical = raw.replace(b"\n", b"\r\n")
    return _B64, encodebytes(canonical).replace(b"\n", b"\r\n")


def message_tag(signer: TokenSigner, delivery_ref: str, log_id: int) -> str:
    """The keyed part of a log's Message-ID: only Greenlight can make it, anyone can quote it.

    Feedback is matched to a log through this tag, never through the bare log id,
    which anyone can guess (log ids are sequential).
    """
    return signer.tag(delivery_ref.encode("utf-8") + b"\0" + str(log_id).encode("ascii")).hex()


class MessageSkeleton:
    """The fixed part of a delivery's messages; `build()` fills in one recipient.

    Not thread-safe (it caches the Date line); one per delivery per sender task.
    """

    def __init__(
        self,
        *,
        sender: str,
        reply_to: str | None,
        delivery_ref: str,
        public_base_url: str,
        signer: TokenSigner,
        clock: Clock | None = None,
        unsubscribe_base: str | None = None,
    ) -> None:
        from_line, senders = _address_line("From", sender)
        if len(senders) != 1:
            raise ValueError(f"From {sender!r} must be exactly one address")
        self.mail_from = senders[0].addr_spec  # the envelope sender (MAIL FROM)
        self.domain = senders[0].domain
        self.delivery_ref = delivery_ref
        self._signer = signer
        self._now: Callable[[], datetime] = clock.now if clock else lambda: datetime.now(UTC)
        base = public_base_url.rstrip("/")
        if not base.lower().startswith(("http://", "https://")):
            raise ValueError(f"public base URL {public_base_url!r} must be http(s)://")
        self._own_prefix = base + "/"
        self._click_base = base + "/t/c/"
        self._open_base = base + "/t/o/"
        self._view_base = base + "/v/"
        self._unsubscribe_base = unsubscribe_base or base + "/u/"
        if len(self._unsubscribe_base) > 900:
            raise ValueError("the unsubscribe base URL is too long for a header line")
        reply_line = _address_line("Reply-To", reply_to)[0] if reply_to else ""
        self._from_reply = from_line + reply_line
        self._fixed_tail = (
            "MIME-Version: 1.0\r\n"
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
            + _unstructured_line("X-Greenlight-Delivery", delivery_ref)
        )
        self._ref = delivery_ref
        self._links: dict[str, bytes | None] = {}
        self._date_second = -1
        self._date_line = ""

    @classmethod
    def for_delivery(
        cls, delivery: DeliveryHeaders, settings: Settings, clock: Clock | None = None
    ) -> MessageSkeleton:
        """The skeleton of a `Delivery` row (sender, reply_to, ref) under `settings`."""
        return cls(
            sender=delivery.sender,
            reply_to=delivery.reply_to,
            delivery_ref=delivery.ref,
            public_base_url=settings.public_base_url,
            signer=TokenSigner.from_settings(settings),
            clock=clock,
        )

    # ------------------------------------------------------------ per message

    def message_id(self, log_id: int) -> str:
        """`<gl.{log_id}.{tag}@{domain}>`: the same for every build of one log."""
        return f"<gl.{log_id}.{message_tag(self._signer, self._ref, log_id)}@{self.domain}>"

    def unsubscribe_url(self, log_id: int) -> str:
        return self._unsubscribe_base + self._signer.unsubscribe_token(log_id)

    def view_online_url(self, log_id: int) -> str:
        return self._view_base + self._signer.view_token(log_id)

    def links(self, log_id: int) -> dict[str, str]:
        """The signed links a template may place (`rendering.LINK_VARIABLES`): the
        one-click unsubscribe target of `List-Unsubscribe`, and the web version.

        Both are under PUBLIC_BASE_URL, so the link rewriting leaves them as they are.
        """
        return {
            "unsubscribe_url": self.unsubscribe_url(log_id),
            "view_online_url": self.view_online_url(log_id),
        }

    def _tracked_url(self, raw: str) -> bytes | None:
        """The URL (UTF-8) a href value sends clicks to, or None to leave it alone.

        Cached per skeleton: a delivery's links are mostly the same for everyone.
        """
        cached = self._links.get(raw, _UNSEEN)
        if cached is not _UNSEEN:
            return cached  # type: ignore[return-value]
        url = raw.strip()
        if "&" in url:
            url = unescape(url)
        tracked: bytes | None = None
        if url[:8].lower().startswith(("http://", "https://")) and not url.startswith(
            self._own_prefix
        ):
            tracked = url.encode("utf-8")
        if len(self._links) >= _LINK_CACHE_SIZE:
            self._links.clear()
        self._links[raw] = tracked
        return tracked

    def rewrite_html(self, log_id: int, html: str) -> str:
        """Links through the click redirect, plus the open pixel before </body>."""
        tracked_url = self._tracked_url
        click_token = self._signer.click_tokens(log_id)
        click_base = self._click_base

        def link(match: re.Match[str]) -> str:
            raw = match.group(2)
            if raw is None:
                raw = match.group(3)
                if raw is None:
                    raw = match.group(4)
            url = tracked_url(raw)
            if url is None:
                return match.group(0)
            return f'{match.group(1)}"{click_base}{click_token(url)}"'

        html = _LINK.sub(link, html)
        pixel = (
            f'<img src="{self._open_base}{self._signer.open_token(log_id)}"'
            ' width="1" height="1" alt="">'
        )
        at = html.rfind("</body>")
        if at < 0:
            ends = list(_BODY_END.finditer(html))
            at = ends[-1].start() if ends else -1
        if at < 0:
            return html + pixel
        return html[:at] + pixel + html[at:]

    def _date(self) -> str:
        now = self._now()
        second = int(now.timestamp())
        if second != self._date_second:
            self._date_second = second
            self._date_line = f"Date: {format_datetime(now.astimezone(UTC))}\r\n"
        return self._date_line

    def build(self, log_id: int, to_addr: str, rendered: RenderedParts) -> bytes:
        """The complete message for one recipient, CRLF line ends, ready for DATA."""
        html, text = rendered.html, rendered.text
        if html is None and text is None:
            raise ValueError("a message needs an HTML or a text part")
        if _PLAIN_ADDRESS.match(to_addr):
            to_line = f"To: {to_addr}\r\n"
        else:
            to_line = _address_line("To", to_addr)[0]
        head = "".join(
            (
                self._date(),
                self._from_reply,
                to_line,
                subject_line(rendered.subject),
                f"Message-ID: {self.message_id(log_id)}\r\n",
                f"List-Unsubscribe: <{self.unsubscribe_url(log_id)}>\r\n",
                self._fixed_tail,
                f"X-Greenlight-Log: {log_id}\r\n",
                provider_log_headers(log_id),
            )
        ).encode("utf-8")
        if html is not None:
            html = self.rewrite_html(log_id, html)
        if text is None or html is None:
            only_type, only = (_HTML_TYPE, html) if text is None else (_TEXT_TYPE, text)
            cte, body = encode_body(only or "", exact_end=True)
            return b"".join((head, only_type, cte, b"\r\n", body))
        boundary = f"=_gl.{log_id}".encode("ascii")  # "=_" never occurs in QP or base64
        text_cte, text_body = encode_body(text)
        html_cte, html_body = encode_body(html)
        return b"".join(
            (
                head,
                b'Content-Type: multipart/alternative; boundary="',
                boundary,
                b'"\r\n\r\n--',
                boundary,
                b"\r\n",
                _TEXT_TYPE,
                text_cte,
                b"\r\n",
                text_body,
                b"\r\n--",
                boundary,
                b"\r\n",
                _HTML_TYPE,
                html_cte,
                b"\r\n",
                html_body,
                b"\r\n--",
                boundary,
                b"--\r\n",
            )
        )
