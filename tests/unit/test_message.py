"""Messages built from a skeleton parse back, with the `email` package, to what was given."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser, Parser
from email.utils import format_datetime
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.clock import FixedClock
from bot.config import Settings
from bot.engine.message import MessageSkeleton
from bot.engine.rendering import RenderedMessage
from bot.engine.tokens import Click, TokenSigner

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
BASE = "https://t.acme.example"
SIGNER = TokenSigner("test-tracking-secret")
STRICT = policy.default.clone(raise_on_defect=True)

HTML = """<!doctype html>
<html><head><link rel="stylesheet" href="https://cdn.example.com/s.css"></head>
<body>
<p>Bonjour Zoë, voilà nos offres d'été.</p>
<a href="https://shop.example.com/a?x=1&amp;y=2">double</a>
<a class='btn' href='http://shop.example.com/b'>single</a>
<A HREF=https://shop.example.com/c>bare, upper case</A>
<a title="a > b" data-href="x" href="https://shop.example.com/d">after a quoted &gt;</a>
<area shape="rect" href="https://shop.example.com/e">
<a href="mailto:help@acme.example">mail</a>
<a href="#top">anchor</a>
<a href="/relative">relative</a>
<a href="tel:+33123456789">phone</a>
<a href="https://t.acme.example/u/already">own endpoint</a>
</body>
</html>
"""
TRACKED = [
    "https://shop.example.com/a?x=1&y=2",
    "http://shop.example.com/b",
    "https://shop.example.com/c",
    "https://shop.example.com/d",
    "https://shop.example.com/e",
]
UNTOUCHED = [
    'href="https://cdn.example.com/s.css"',
    'href="mailto:help@acme.example"',
    'href="#top"',
    'href="/relative"',
    'href="tel:+33123456789"',
    'href="https://t.acme.example/u/already"',
]
TEXT = (
    "Bonjour Zoë,\n"
    "trailing spaces   \n"
    "\ttab first, tab last\t\n"
    ".\n"
    "..leading dots\n"
    "From the start of a line\n"
    "a = sign and =?utf-8?q?not-a-word?=\n" + "x" * 2000 + "\n"
    "See https://shop.example.com/a?x=1&y=2\n"
)


def skeleton(clock: FixedClock | None = None, **overrides: object) -> MessageSkeleton:
    options: dict[str, object] = {
        "sender": "Acmé News <news@acme.example>",
        "reply_to": "Support <help@acme.example>",
        "delivery_ref": "spring-2026",
        "public_base_url": BASE + "/",
        "signer": SIGNER,
        "clock": clock or FixedClock(T0),
    }
    options.update(overrides)
    return MessageSkeleton(**options)  # type: ignore[arg-type]


def rendered(
    subject: str = "Zoë, our summer picks", html: str | None = HTML, text: str | None = TEXT
) -> RenderedMessage:
    return RenderedMessage(subject, html, text, ())


def parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=STRICT).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def body(part: EmailMessage) -> str:
    """A part's text with MIME's canonical CRLF line breaks read back as LF."""
    return part.get_content().replace("\r\n", "\n")


def assert_wire_format(data: bytes) -> None:
    """CRLF everywhere, no bare CR or LF, no line over RFC 5322's 998 octets."""
    assert b"\n" not in data.replace(b"\r\n", b"")
    assert b"\r" not in data.replace(b"\r\n", b"")
    assert max(len(line) for line in data.split(b"\r\n")) <= 998


def tokens_in(html: str, kind: str) -> list[str]:
    return re.findall(re.escape(f"{BASE}/t/{kind}/") + r"([A-Za-z0-9_-]+)", html)


# ---------------------------------------------------------------------- headers


def test_every_header_is_present_and_reads_back() -> None:
    data = skeleton().build(1234, "zoe@example.com", rendered())
    message = parse(data)

    assert message["Date"] == format_datetime(T0)
    assert message["Date"].datetime == T0
    assert message["From"].addresses[0].display_name == "Acmé News"
    assert message["From"].addresses[0].addr_spec == "news@acme.example"
    assert message["Reply-To"].addresses[0].addr_spec == "help@acme.example"
    assert message["To"].addresses[0].addr_spec == "zoe@example.com"
    assert message["Subject"] == "Zoë, our summer picks"
    assert re.fullmatch(r"<gl\.1234\.[0-9a-f]{16}@acme\.example>", message["Message-ID"])
    assert message["MIME-Version"] == "1.0"
    assert message["X-Greenlight-Log"] == "1234"
    assert message["X-Greenlight-Delivery"] == "spring-2026"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = re.fullmatch(re.escape(f"<{BASE}/u/") + r"(.+)>", message["List-Unsubscribe"])
    assert unsubscribe is not None
    assert SIGNER.read_unsubscribe(unsubscribe.group(1)) == 1234
    assert message.get_content_type() == "multipart/alternative"
    assert_wire_format(data)
    # Each header appears once.
    names = [name.lower() for name in message]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("log_id", [1, 1234, 2**63 - 1])
def test_each_provider_carrier_holds_the_log_id_as_the_provider_documents_it(log_id: int) -> None:
    message = parse(skeleton().build(log_id, "zoe@example.com", rendered()))
    # SendGrid: X-SMTPAPI is a JSON object whose unique_args come back in every event.
    assert json.loads(message["X-SMTPAPI"]) == {"unique_args": {"greenlight_log": str(log_id)}}
    # Mailgun: X-Mailgun-Variables is a JSON object of string values (user-variables).
    assert json.loads(message["X-Mailgun-Variables"]) == {"greenlight_log": str(log_id)}
    # Postmark: each X-PM-Metadata-{key} header becomes Metadata[key].
    assert message["X-PM-Metadata-greenlight_log"] == str(log_id)


def test_no_reply_to_when_the_delivery_has_none() -> None:
    message = parse(skeleton(reply_to=None).build(1, "zoe@example.com", rendered()))
    assert "Reply-To" not in message


def test_message_id_is_stable_per_log_and_distinct_across_logs_and_deliveries() -> None:
    clock = FixedClock(T0)
    first = skeleton(clock)
    once = parse(first.build(7, "zoe@example.com", rendered()))["Message-ID"]
    clock.advance(timedelta(hours=3))
    again = parse(skeleton(clock).build(7, "zoe@example.com", rendered("other")))["Message-ID"]
    assert once == again == first.message_id(7)
    assert first.message_id(8) != once
    assert skeleton(delivery_ref="autumn").message_id(7) != once
    assert skeleton(signer=TokenSigner("other")).message_id(7) != once


def test_date_follows_the_clock() -> None:
    clock = FixedClock(T0)
    sk = skeleton(clock)
    assert parse(sk.build(1, "a@example.com", rendered()))["Date"].datetime == T0
    clock.advance(timedelta(seconds=61))
    later = parse(sk.build(2, "a@example.com", rendered()))["Date"].datetime
    assert later == T0 + timedelta(seconds=61)


@pytest.mark.parametrize(
    "subject",
    [
        "Plain ASCII subject",
        "Zoë, voilà l'été — 50 % 🎉",
        "日本語の件名" * 30,
        "A" * 950,  # too long for one line: folded encoded-words
        "word " * 199 + "end",  # long ASCII with spaces, still under 998 on one line
        "looks like =?utf-8?q?an_encoded_word?= but is not",
        "",
    ],
)
def test_subject_reads_back_exactly(subject: str) -> None:
    data = skeleton().build(1, "zoe@example.com", rendered(subject))
    assert parse(data)["Subject"] == subject
    assert_wire_format(data)


def test_sender_with_idn_domain_uses_punycode() -> None:
    sk = skeleton(sender="Bücher <news@bücher.example>")
    message = parse(sk.build(3, "zoe@example.com", rendered()))
    assert message["From"].addresses[0].addr_spec == "news@xn--bcher-kva.example"
    assert message["From"].addresses[0].display_name == "Bücher"
    assert message["Message-ID"].endswith("@xn--bcher-kva.example>")
    assert sk.mail_from == "news@xn--bcher-kva.example"


def test_sender_with_comma_in_display_name() -> None:
    sk = skeleton(sender='"Dupont, Jean" <jean@acme.example>')
    message = parse(sk.build(3, "zoe@example.com", rendered()))
    assert message["From"].addresses[0].display_name == "Dupont, Jean"
    assert sk.mail_from == "jean@acme.example"


def test_non_ascii_recipient_is_written_as_utf8() -> None:
    """RFC 6532: an internationalised local part is raw UTF-8 (the relay needs SMTPUTF8)."""
    data = skeleton().build(3, "zoë@exämple.com", rendered())
    assert "\r\nTo: zoë@xn--exmple-cua.com\r\n".encode() in data
    message = Parser(policy=policy.default).parsestr(data.decode("utf-8"))
    assert message["To"].addresses[0].addr_spec == "zoë@xn--exmple-cua.com"


@pytest.mark.parametrize(
    "bad",
    ["zoe@example.com\r\nBcc: x@evil.example", "not an address", "zoe@example.com\n"],
)
def test_recipient_that_would_inject_or_is_no_address_is_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        skeleton().build(3, bad, rendered())


def test_bad_skeleton_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        skeleton(sender="nobody")
    with pytest.raises(ValueError):
        skeleton(sender="a@example.com, b@example.com")
    with pytest.raises(ValueError):
        skeleton(public_base_url="ftp://x")
    with pytest.raises(ValueError):
        skeleton().build(1, "zoe@example.com", rendered(html=None, text=None))


# ------------------------------------------------------------------------ parts


def test_text_and_html_parts_decode_to_the_input() -> None:
    sk = skeleton()
    message = parse(sk.build(55, "zoe@example.com", rendered()))
    text_part, html_part = list(message.iter_parts())
    assert text_part.get_content_type() == "text/plain"
    assert html_part.get_content_type() == "text/html"
    assert text_part.get_content_charset() == "utf-8"
    assert body(text_part) == TEXT  # links in the text part stay as written
    assert body(html_part) == sk.rewrite_html(55, HTML)


def test_mostly_non_ascii_bodies_use_base64_and_decode_exactly() -> None:
    text = "日本語のテキスト。\n" * 50
    html = "<html><body><p>" + "Привет, мир! " * 300 + "</p></body></html>"
    sk = skeleton()
    message = parse(sk.build(5, "zoe@example.com", rendered(text=text, html=html)))
    text_part, html_part = list(message.iter_parts())
    assert text_part["Content-Transfer-Encoding"] == "base64"
    assert html_part["Content-Transfer-Encoding"] == "base64"
    assert body(text_part) == text
    assert body(html_part) == sk.rewrite_html(5, html)


def test_mostly_ascii_bodies_use_quoted_printable() -> None:
    message = parse(skeleton().build(5, "zoe@example.com", rendered()))
    for part in message.iter_parts():
        assert part["Content-Transfer-Encoding"] == "quoted-printable"


def test_body_line_breaks_become_crlf() -> None:
    text = "one\r\ntwo\rthree\nfour"
    message = parse(skeleton().build(5, "zoe@example.com", rendered(text=text)))
    assert body(next(message.iter_parts())) == "one\ntwo\nthree\nfour"


@pytest.mark.parametrize("text", ["no final newline", "final newline\n", "é" * 100, ""])
def test_text_only_message_is_a_single_part(text: str) -> None:
    data = skeleton().build(9, "zoe@example.com", rendered(html=None, text=text))
    message = parse(data)
    assert not message.is_multipart()
    assert message.get_content_type() == "text/plain"
    assert body(message) == text
    assert b"/t/o/" not in data  # no pixel without HTML
    assert_wire_format(data)


def test_html_only_message_is_a_single_part_with_tracking() -> None:
    sk = skeleton()
    message = parse(sk.build(9, "zoe@example.com", rendered(text=None)))
    assert not message.is_multipart()
    assert message.get_content_type() == "text/html"
    assert body(message) == sk.rewrite_html(9, HTML)
    assert len(tokens_in(body(message), "c")) == len(TRACKED)


def test_huge_single_line_html_is_wrapped_within_limits() -> None:
    html = "<html><body>" + ("<span>" + "x" * 5000 + "</span>") * 20 + "</body></html>"
    sk = skeleton()
    data = sk.build(9, "zoe@example.com", rendered(html=html))
    assert_wire_format(data)
    assert body(list(parse(data).iter_parts())[1]) == sk.rewrite_html(9, html)


# -------------------------------------------------------------------- tracking


def test_http_links_go_through_the_click_redirect_to_their_own_url() -> None:
    html = body(list(parse(skeleton().build(77, "zoe@example.com", rendered())).iter_parts())[1])
    clicks = [SIGNER.read_click(token) for token in tokens_in(html, "c")]
    assert clicks == [Click(77, url) for url in TRACKED]
    for original in UNTOUCHED:
        assert original in html
    for url in TRACKED:
        assert f'"{url}"' not in html and f"'{url}'" not in html
    assert "<A " in html and "<area " in html  # tags otherwise as written


def test_open_pixel_goes_just_before_body_end() -> None:
    html = body(list(parse(skeleton().build(77, "zoe@example.com", rendered())).iter_parts())[1])
    [token] = tokens_in(html, "o")
    assert SIGNER.read_open(token) == 77
    pixel = f'<img src="{BASE}/t/o/{token}" width="1" height="1" alt="">'
    assert html.endswith(pixel + "</body>\n</html>\n")


@pytest.mark.parametrize(
    ("html", "expected_tail"),
    [
        ("<p>fragment</p>", '<p>fragment</p><img src="'),
        ("<BODY>x</BODY >", "x<img src="),
        ("<body>a</body><body>b</body>", "<body>b<img src="),
    ],
)
def test_pixel_placement_without_a_lowercase_body_end(html: str, expected_tail: str) -> None:
    out = skeleton().rewrite_html(1, html)
    assert expected_tail in out
    assert out.count("/t/o/") == 1


def test_same_link_in_two_messages_gets_each_its_own_token() -> None:
    sk = skeleton()
    first, second = (tokens_in(sk.rewrite_html(i, HTML), "c")[0] for i in (1, 2))
    assert first != second
    assert SIGNER.read_click(first) == Click(1, TRACKED[0])
    assert SIGNER.read_click(second) == Click(2, TRACKED[0])


def test_for_delivery_uses_the_row_and_settings(settings: Settings) -> None:
    delivery = SimpleNamespace(sender="news@acme.example", reply_to=None, ref="d-1")
    sk = MessageSkeleton.for_delivery(delivery, settings, FixedClock(T0))
    message = parse(sk.build(4, "zoe@example.com", rendered()))
    assert message["X-Greenlight-Delivery"] == "d-1"
    assert message["List-Unsubscribe"].startswith(f"<{settings.public_base_url}/u/")


# ------------------------------------------------------------------ properties

one_line = st.text(max_size=300).map(lambda s: " ".join(s.split()))
bodies = st.text(max_size=3000)


def _lines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


@settings(max_examples=150, deadline=None)
@given(subject=one_line, text=bodies, html=bodies, log_id=st.integers(0, 2**63 - 1))
def test_any_content_round_trips(subject: str, text: str, html: str, log_id: int) -> None:
    sk = skeleton()
    data = sk.build(log_id, "zoe@example.com", rendered(subject, html, text))
    assert_wire_format(data)
    message = parse(data)
    assert message["Subject"] == subject
    assert message["X-Greenlight-Log"] == str(log_id)
    text_part, html_part = list(message.iter_parts())
    assert body(text_part) == _lines(text)
    assert body(html_part) == _lines(sk.rewrite_html(log_id, html))


@settings(max_examples=100, deadline=None)
@given(text=bodies, as_html=st.booleans())
def test_any_single_part_round_trips(text: str, as_html: bool) -> None:
    sk = skeleton()
    parts = rendered(html=text, text=None) if as_html else rendered(html=None, text=text)
    data = sk.build(3, "zoe@example.com", parts)
    assert_wire_format(data)
    expected = sk.rewrite_html(3, text) if as_html else text
    assert body(parse(data)) == _lines(expected)


def test_a_header_value_with_a_line_break_is_refused() -> None:
    from bot.engine.message import MessageSkeleton
    from bot.engine.tokens import TokenSigner

    with pytest.raises(ValueError, match="line break"):
        MessageSkeleton(
            sender="news@shop.example",
            reply_to=None,
            delivery_ref="trail\n",
            public_base_url="https://gl.example",
            signer=TokenSigner("k"),
        )
