"""The card's **Preview** link: `GET /p/{token}` and its framed HTML, through the real
HTTP app, with the test's fixed clock moved past the link's expiry."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import pytest
from harness import LiveApp, http_get
from scenario import as_user, prepare_one
from sqlalchemy import select, update

from bot.clock import FixedClock
from bot.context import Context
from bot.domain.roles import Role
from bot.engine.tokens import TokenSigner
from bot.entrypoints.access_log import redact
from bot.services.deliveries.views import card
from bot.store.models import Delivery, Profile, SendingLog

HTML = (
    "<html><body><p>Hi {{ first_name }}</p>"
    '<a href="https://shop.example/sale">Sale</a>'
    "<script>alert(1)</script></body></html>"
)
TEXT = "Hi {{ first_name }} <b>\nSee https://shop.example/sale\n"
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; frame-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
MESSAGE_CSP = "default-src 'none'; img-src http: https: data:; style-src 'unsafe-inline'"
STARTER = as_user("U0A", [Role.START_DELIVERIES])


@pytest.fixture
def app(ctx: Context) -> Iterator[LiveApp]:
    live = LiveApp(ctx, start_sender=False).start()
    yield live
    live.stop()


def ready(ctx: Context, tmp_path: Path) -> str:
    """`promo` prepared for Ann and Bob; the path of its card's Preview link."""
    prepare_one(
        ctx,
        tmp_path,
        ["ann@x.example", "bob@x.example"],
        "promo",
        subject="Sale for {{ first_name }}",
        html=HTML,
        text=TEXT,
    )
    with ctx.sessions.begin() as s:
        s.execute(update(Profile).where(Profile.email == "ann@x.example").values(first_name="Ann"))
        s.execute(update(Profile).where(Profile.email == "bob@x.example").values(first_name="Bob"))
    shown = card(ctx, STARTER, "promo")
    assert shown.sample_text is not None and shown.sample_text.startswith("Hi Ann <b>")
    assert shown.preview_url is not None
    base = ctx.settings.public_base_url.rstrip("/")
    assert shown.preview_url.startswith(f"{base}/p/")
    return shown.preview_url.removeprefix(base)


def logs_of(ctx: Context) -> list[tuple[object, ...]]:
    with ctx.sessions() as s:
        rows = s.execute(select(SendingLog).order_by(SendingLog.id)).scalars().all()
        return [tuple(getattr(r, c.key) for c in SendingLog.__table__.columns) for r in rows]


def frame_of(page: str) -> str:
    found = re.search(r'<iframe sandbox src="([^"]+)"', page)
    assert found is not None, page
    return found.group(1).replace("&amp;", "&")


def test_the_page_shows_subject_text_and_the_html_framed_under_a_no_script_policy(
    ctx: Context, app: LiveApp, tmp_path: Path
) -> None:
    path = ready(ctx, tmp_path)
    before = logs_of(ctx)
    status, headers, page = http_get(app, path)
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == PAGE_CSP
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in headers["Cache-Control"]
    assert "<p>Sale for Ann</p>" in page
    assert "<pre>Hi Ann &lt;b&gt;\nSee https://shop.example/sale\n</pre>" in page
    assert "<script" not in page, "the page itself has no script"
    assert f'<form method="get" action="{path}">' in page and 'name="profile"' in page
    assert "bob@x.example" not in page, "the audience is not listed"

    frame = frame_of(page)
    assert frame == f"{path}/html?profile=ann%40x.example"
    status, headers, html = http_get(app, frame)
    assert status == 200
    assert headers["Content-Security-Policy"] == MESSAGE_CSP
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "<p>Hi Ann</p>" in html
    assert 'href="https://shop.example/sale"' in html, "links as written"
    assert "/t/c/" not in html and "/t/o/" not in html, "nothing is tracked"
    assert logs_of(ctx) == before, "the preparation's logs, untouched by a preview"
    assert redact(f"GET {frame} HTTP/1.1") == "GET /p/…/html?profile=ann%40x.example HTTP/1.1"


def test_another_profile_of_the_audience_and_one_that_is_not(
    ctx: Context, app: LiveApp, tmp_path: Path
) -> None:
    path = ready(ctx, tmp_path)
    status, _, page = http_get(app, f"{path}?profile=BOB@x.example")
    assert status == 200
    assert "<p>Sale for Bob</p>" in page and "Hi Ann" not in page
    assert 'value="BOB@x.example"' in page
    status, _, html = http_get(app, frame_of(page))
    assert status == 200 and "<p>Hi Bob</p>" in html

    stranger = quote("<eve>@x.example")
    status, headers, page = http_get(app, f"{path}?profile={stranger}")
    assert status == 404
    assert headers["Content-Security-Policy"] == PAGE_CSP
    assert (
        "No profile &lt;eve&gt;@x.example in this delivery&#x27;s audience: try another address."
        in page
    )
    assert "<iframe" not in page and 'name="profile"' in page
    status, _, text = http_get(app, f"{path}/html?profile={stranger}")
    assert status == 404
    assert text == "No profile <eve>@x.example in this delivery's audience: try another address."
    status, _, text = http_get(app, f"{path}?profile={'a' * 400}")
    assert (status, text) == (400, "This address is too long to be a profile's.")


def test_the_link_expires_after_its_time(
    ctx: Context, app: LiveApp, clock: FixedClock, tmp_path: Path
) -> None:
    path = ready(ctx, tmp_path)
    assert ctx.settings.preview_link_ttl_seconds == 3600
    clock.advance(timedelta(seconds=3599))
    assert http_get(app, path)[0] == 200
    clock.advance(timedelta(seconds=1))
    expired = "This preview link has expired; open the card again for a new one."
    assert http_get(app, path)[0::2] == (410, expired)
    assert http_get(app, f"{path}/html")[0::2] == (410, expired)
    # The card shown now gives a link that works again.
    fresh = card(ctx, STARTER, "promo").preview_url
    assert fresh is not None
    assert http_get(app, fresh.removeprefix(ctx.settings.public_base_url.rstrip("/")))[0] == 200


def test_the_time_a_link_works_is_a_setting(ctx: Context, tmp_path: Path) -> None:
    short = ctx.with_settings(preview_link_ttl_seconds=120)
    path = ready(short, tmp_path)
    signer = TokenSigner(ctx.settings.tracking_secret.get_secret_value())  # type: ignore[union-attr]
    grant = signer.read_preview(path.removeprefix("/p/"))
    assert grant is not None
    assert grant.expires == int(ctx.clock.now().timestamp()) + 120


def test_forged_tokens_and_a_deleted_delivery_show_nothing(
    ctx: Context, app: LiveApp, tmp_path: Path
) -> None:
    path = ready(ctx, tmp_path)
    token = path.removeprefix("/p/")
    signer = TokenSigner(ctx.settings.tracking_secret.get_secret_value())  # type: ignore[union-attr]
    grant = signer.read_preview(token)
    assert grant is not None
    altered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    for forged in (
        altered,
        str(grant.delivery_id),
        signer.view_token(grant.delivery_id),  # a token made for another endpoint
        TokenSigner("another secret").preview_token(grant.delivery_id, grant.expires),
        signer.preview_token(grant.delivery_id + 1000, grant.expires),  # no such delivery
    ):
        for route in (f"/p/{forged}", f"/p/{forged}/html"):
            assert http_get(app, route)[0::2] == (404, "This link is not valid."), route
    # A stretched expiry is a forgery too: the expiry is signed with the delivery.
    far = signer.preview_token(grant.delivery_id, grant.expires + 10**6)
    assert far != token and signer.read_preview(far) is not None
    stretched = token[:3] + far[3:14] + token[14:]
    assert http_get(app, f"/p/{stretched}")[0] == 404
    with ctx.sessions.begin() as s:
        s.execute(update(Delivery).values(html=None))
    status, _, text = http_get(app, f"{path}/html")
    assert (status, text) == (404, "This delivery has no HTML part.")
    status, _, page = http_get(app, path)
    assert status == 200 and "<p>No HTML part.</p>" in page and "<iframe" not in page
