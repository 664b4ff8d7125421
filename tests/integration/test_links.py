"""`{{ unsubscribe_url }}` and `{{ view_online_url }}`: the links a template may place.

Sent through a real SMTP server and read back as the recipient gets them; the web
version is fetched from the real HTTP app, with a genuine, a forged and a guessed token.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from harness import LiveApp, http_get
from scenario import CLI, as_user, detail_json, due_now, prepare_one
from smtp_relay import Relay
from sqlalchemy import select, update

from bot.context import Context
from bot.domain.roles import Role
from bot.engine.tokens import TokenSigner
from bot.entrypoints.access_log import redact
from bot.services.deliveries.lifecycle import confirm_send
from bot.services.deliveries.preview import preview
from bot.store.models import Delivery, Profile, SendingLog

HTML = (
    "<html><body><p>Hi {{ first_name }}</p>"
    '<a href="https://shop.example/sale">Sale</a>'
    '<p><a href="{{ unsubscribe_url }}">Unsubscribe</a> · '
    '<a href="{{ view_online_url }}">View online</a></p>'
    "<script>alert(1)</script></body></html>"
)
TEXT = "Hi {{ first_name }}\nUnsubscribe: {{ unsubscribe_url }}\n"
CSP = "default-src 'none'; img-src http: https: data:; style-src 'unsafe-inline'"


@pytest.fixture
def smtp(ctx: Context, relay: Relay) -> Context:
    return ctx.with_settings(mail_url=f"smtp://127.0.0.1:{relay.port}", smtp_pool_size=1)


@pytest.fixture
def app(smtp: Context) -> Iterator[LiveApp]:
    live = LiveApp(smtp, start_sender=False).start()
    yield live
    live.stop()


def send(ctx: Context, tmp_path: Path, **fields: str) -> None:
    """Prepare, confirm and relay `promo` to two people; what each received."""
    prepare_one(ctx, tmp_path, ["ann@x.example", "bob@x.example"], "promo", **fields)
    with ctx.sessions.begin() as s:
        s.execute(update(Profile).where(Profile.email == "ann@x.example").values(first_name="Ann"))
        s.execute(update(Profile).where(Profile.email == "bob@x.example").values(first_name="Bob"))
    confirm_send(ctx, as_user("U0A", [Role.START_DELIVERIES]), "promo")
    due_now(ctx)


def received(relay: Relay) -> dict[str, EmailMessage]:
    out = {}
    for rcpt, items in relay.recorder.by_rcpt().items():
        [item] = items
        msg = message_from_bytes(item.data, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        out[rcpt] = msg
    return out


def part(msg: EmailMessage, subtype: str) -> str:
    body = msg.get_body((subtype,))
    assert body is not None
    return str(body.get_content())  # type: ignore[attr-defined]


def path_of(url: str) -> str:
    return re.sub(r"^https?://[^/]+", "", url)


def test_templates_place_the_signed_unsubscribe_and_view_online_links(
    smtp: Context, relay: Relay, tmp_path: Path
) -> None:
    send(smtp, tmp_path, html=HTML, text=TEXT)
    warned = {w.get("name") for w in detail_json(smtp, "promo")["preparation"]["warnings"]}
    assert not warned & {"unsubscribe_url", "view_online_url"}, "known variables"
    messages = received(relay)
    assert set(messages) == {"ann@x.example", "bob@x.example"}
    signer = TokenSigner(smtp.settings.tracking_secret.get_secret_value())  # type: ignore[union-attr]
    with smtp.sessions() as s:
        ids = dict(s.execute(select(SendingLog.email, SendingLog.id)).all())
    base = smtp.settings.public_base_url.rstrip("/")
    for email, msg in messages.items():
        header = msg["List-Unsubscribe"].strip("<>")
        assert header == f"{base}/u/{signer.unsubscribe_token(ids[email])}"
        html, text = part(msg, "html"), part(msg, "plain")
        # The same one-click target as the header, in both parts, never click-rewritten.
        assert f'href="{header}"' in html and f"Unsubscribe: {header}" in text
        view = f"{base}/v/{signer.view_token(ids[email])}"
        assert f'href="{view}"' in html
        assert signer.read_view(view.rsplit("/", 1)[1]) == ids[email]
        assert "/t/c/" in html, "other links are still tracked"
    assert (
        messages["ann@x.example"]["List-Unsubscribe"]
        != messages["bob@x.example"]["List-Unsubscribe"]
    )


def test_the_web_version_shows_that_recipients_message_under_a_no_script_policy(
    smtp: Context, relay: Relay, app: LiveApp, tmp_path: Path
) -> None:
    send(smtp, tmp_path, html=HTML, text=TEXT)
    messages = received(relay)
    ann = messages["ann@x.example"]
    view = re.search(r'href="([^"]+/v/[^"]+)"', part(ann, "html"))
    assert view is not None
    status, headers, page = http_get(app, path_of(view.group(1)))
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == CSP
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in headers["Cache-Control"]
    assert "<p>Hi Ann</p>" in page and "Bob" not in page
    # Ann's own links: the same unsubscribe target as her message's header.
    assert f'href="{ann["List-Unsubscribe"].strip("<>")}"' in page
    assert "/t/c/" in page and "/t/o/" in page

    signer = TokenSigner(smtp.settings.tracking_secret.get_secret_value())  # type: ignore[union-attr]
    token = view.group(1).rsplit("/", 1)[1]
    altered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with smtp.sessions() as s:
        ann_id = s.scalar(select(SendingLog.id).where(SendingLog.email == "ann@x.example"))
    assert ann_id is not None
    for forged in (
        altered,  # altered
        str(ann_id),  # a bare log id
        signer.unsubscribe_token(ann_id),  # a token made for another endpoint
        TokenSigner("another secret").view_token(ann_id),  # signed with another key
    ):
        status, _, body = http_get(app, f"/v/{forged}")
        assert (status, body) == (404, "This link is not valid."), forged
    status, _, body = http_get(app, f"/v/{signer.view_token(ann_id + 1000)}")
    assert (status, body) == (404, "This link is not valid."), "no such log"
    assert redact(f"GET /v/{token} HTTP/1.1") == "GET /v/… HTTP/1.1"


def test_the_web_version_renders_within_the_senders_bounds(
    smtp: Context, relay: Relay, app: LiveApp, tmp_path: Path
) -> None:
    """A template that now costs more than a message may (edited after the send) is not
    rendered past the bounds: the page says it cannot be shown."""
    send(smtp, tmp_path, html=HTML, text=TEXT)
    view = re.search(r'href="([^"]+/v/[^"]+)"', part(received(relay)["ann@x.example"], "html"))
    assert view is not None
    with smtp.sessions.begin() as s:
        s.execute(
            update(Delivery).values(html="{% for i in range(10**7) %}x{% endfor %}{{ first_name }}")
        )
    status, _, body = http_get(app, path_of(view.group(1)))
    assert (status, body) == (500, "This message cannot be shown.")


def test_a_text_only_delivery_shows_its_text_escaped(
    smtp: Context, relay: Relay, app: LiveApp, tmp_path: Path
) -> None:
    send(smtp, tmp_path, text="Hi <b>{{ first_name }}</b>\nOnline: {{ view_online_url }}\n")
    text = part(received(relay)["bob@x.example"], "plain")
    view = re.search(r"Online: (\S+)", text)
    assert view is not None
    status, headers, page = http_get(app, path_of(view.group(1)))
    assert status == 200 and headers["Content-Security-Policy"] == CSP
    assert "Hi &lt;b&gt;Bob&lt;/b&gt;" in page


def test_preview_shows_placeholders_that_reach_nothing(smtp: Context, tmp_path: Path) -> None:
    prepare_one(smtp, tmp_path, ["ann@x.example"], "promo", html=HTML, text=TEXT)
    shown = preview(smtp, CLI, "promo")
    assert "unsubscribe_url" not in shown.warnings and "view_online_url" not in shown.warnings
    assert 'href="https://unsubscribe.invalid/"' in (shown.html or "")
    assert 'href="https://view-online.invalid/"' in (shown.html or "")
