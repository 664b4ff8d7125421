"""HTTP endpoints for feedback: provider webhooks, bounce messages, tracking, unsubscribe
(and, beside them, the web version of a message: `web_version_http`, and the card's
**Preview** page of a delivery before it is sent: `preview_http`).

Each endpoint is thin: check the request's signature (401 when it is missing or
wrong, before anything is read), parse it (400 with the reason when malformed), hand
the events to the ingestion service, answer. A database failure answers 503 so that
the provider retries; an event for an unknown message is counted and acknowledged.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

from aiohttp import web
from multidict import CIMultiDictProxy

from bot.context import Context
from bot.domain.feedback import FeedbackKind
from bot.engine.tokens import TokenSigner
from bot.entrypoints.metrics import labelled
from bot.entrypoints.preview_http import add_preview_routes
from bot.entrypoints.web_version_http import add_web_version_route
from bot.feedback import dsn, generic, mailgun, postmark, sendgrid, ses
from bot.feedback.certificates import CertificateUnavailable, SnsCertificates
from bot.feedback.events import FeedbackEvent, MalformedPayload, SignatureInvalid
from bot.services.outcomes.ingest import IngestReport, ingest
from bot.services.outcomes.unsubscribe import unsubscribe
from bot.services.replay import Replayed, SingleUse
from bot.store.db import StoreUnavailable

log = logging.getLogger(__name__)

# The smallest transparent GIF: what an open pixel answers, valid token or not.
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")

Headers = CIMultiDictProxy[str]


class NotConfigured(Exception):
    """The provider's key is not set: say which setting, answer 503 (the provider retries)."""


# Parsed once, not per webhook (a failure is not cached: the next request says it again).
_sendgrid_key = lru_cache(maxsize=4)(sendgrid.load_public_key)


def _secret(value: Any, name: str) -> str:
    if value is None or value == "":
        raise NotConfigured(f"{name} is not set; see .env.example")
    return str(value.get_secret_value() if hasattr(value, "get_secret_value") else value)


@dataclass(frozen=True, slots=True)
class Parsed:
    """A verified request's events, and its signature when that may be used only once."""

    events: list[FeedbackEvent]
    once: SingleUse | None = None


def _max_age(ctx: Context) -> timedelta:
    return timedelta(seconds=ctx.settings.webhook_max_age_seconds)


def _generic(ctx: Context, body: bytes, headers: Headers) -> Parsed:
    secret = _secret(ctx.settings.feedback_secret, "FEEDBACK_SECRET")
    return Parsed(generic.verify_and_parse(body, headers.get("X-Greenlight-Signature"), secret))


def _dsn(ctx: Context, body: bytes, headers: Headers) -> Parsed:
    """A bounce posted by the MTA's bounce pipe, signed like the generic hook."""
    secret = _secret(ctx.settings.feedback_secret, "FEEDBACK_SECRET")
    generic.verify(body, headers.get("X-Greenlight-Signature"), secret)
    return Parsed(dsn.parse_bounce_message(body))


def _sendgrid(ctx: Context, body: bytes, headers: Headers) -> Parsed:
    return Parsed(
        sendgrid.verify_and_parse(
            body,
            headers.get("X-Twilio-Email-Event-Webhook-Signature"),
            headers.get("X-Twilio-Email-Event-Webhook-Timestamp"),
            _sendgrid_key(_secret(ctx.settings.sendgrid_public_key, "SENDGRID_PUBLIC_KEY")),
            now=ctx.clock.now(),
            max_age=_max_age(ctx),
        )
    )


def _mailgun(ctx: Context, body: bytes, headers: Headers) -> Parsed:
    """Mailgun signs only a timestamp and a token: fresh, and each token once."""
    key = _secret(ctx.settings.mailgun_signing_key, "MAILGUN_SIGNING_KEY")
    signed = mailgun.verify_and_read(body, key, now=ctx.clock.now(), max_age=_max_age(ctx))
    return Parsed(signed.events, SingleUse("mailgun", signed.token, _max_age(ctx)))


def _postmark(ctx: Context, body: bytes, headers: Headers) -> Parsed:
    return Parsed(
        postmark.verify_and_parse(
            body,
            headers.get("Authorization"),
            _secret(ctx.settings.postmark_webhook_user, "POSTMARK_WEBHOOK_USER"),
            _secret(ctx.settings.postmark_webhook_password, "POSTMARK_WEBHOOK_PASSWORD"),
        )
    )


def _ses(certificates: SnsCertificates) -> Parser:
    def parse(ctx: Context, body: bytes, headers: Headers) -> Parsed:
        topics = [t.strip() for t in ctx.settings.ses_topic_arns.split(",") if t.strip()]
        if not topics:
            raise NotConfigured("SES_TOPIC_ARNS is not set; see .env.example")
        result = ses.verify_and_parse(body, certificates, allowed_topics=topics)
        if result.kind == "subscribe" and result.subscribe_url:
            with urllib.request.urlopen(result.subscribe_url, timeout=10):
                log.info("confirmed the SNS subscription of %s", result.topic_arn)
        return Parsed(list(result.events))

    return parse


Parser = Callable[[Context, bytes, Headers], Parsed]


def providers(certificates: SnsCertificates) -> dict[str, Parser]:
    """/feedback/{provider}: how each source's request is checked and read."""
    return {
        "generic": _generic,
        "dsn": _dsn,
        "sendgrid": _sendgrid,
        "mailgun": _mailgun,
        "postmark": _postmark,
        "ses": _ses(certificates),
    }


def _report(report: IngestReport) -> dict[str, int]:
    return {
        "received": report.received,
        "applied": report.applied,
        "duplicates": report.duplicates,
        "unmatched": report.unmatched,
        "held": len(report.held),
    }


def add_feedback_routes(
    app: web.Application,
    ctx: Context,
    metrics: dict[str, int],
    certificates: SnsCertificates,
) -> None:
    signer = TokenSigner.from_settings(ctx.settings)
    sources = providers(certificates)

    def count(name: str, n: int = 1, **labels: str) -> None:
        key = labelled(name, **labels)
        metrics[key] = metrics.get(key, 0) + n

    async def take(
        events: list[FeedbackEvent], once: SingleUse | None = None, source: str = "tracking"
    ) -> web.Response:
        try:
            report = await asyncio.to_thread(ingest, ctx, events, once)
        except StoreUnavailable:
            log.exception("feedback not stored; the sender of the request will retry")
            return web.json_response({"error": "storage unavailable, retry"}, status=503)
        except Replayed:
            log.warning("refused a replayed %s request (its signature was used before)", once)
            count("feedback_refused", source=source)
            return web.json_response({"error": "signature missing or invalid"}, status=401)
        held = len(report.held)
        for result, n in (
            ("applied", report.applied),
            ("duplicate", report.duplicates),
            ("unmatched", report.unmatched),
            ("held", held),
        ):
            if n:
                count("feedback_events", n, source=source, result=result)
        if report.held:
            # The relay's answer for these messages is not recorded yet: ask again.
            return web.json_response(
                {**_report(report), "error": "messages not yet recorded as sent, retry"},
                status=503,
            )
        return web.json_response(_report(report))

    async def webhook(request: web.Request) -> web.Response:
        provider = request.match_info["provider"]
        parse = sources.get(provider)
        if parse is None:
            return web.json_response({"error": f"unknown feedback source {provider!r}"}, status=404)
        body = await request.read()
        try:
            parsed = await asyncio.to_thread(parse, ctx, body, request.headers)
        except SignatureInvalid as exc:
            log.warning("refused %s feedback: %s", provider, exc.reason)
            count("feedback_refused", source=provider)
            return web.json_response({"error": "signature missing or invalid"}, status=401)
        except MalformedPayload as exc:
            return web.json_response({"error": exc.reason}, status=400)
        except NotConfigured as exc:
            return web.json_response({"error": str(exc)}, status=503)
        except CertificateUnavailable:
            log.warning(
                "%s feedback not verified yet; the sender will retry", provider, exc_info=True
            )
            return web.json_response(
                {"error": "cannot verify the signature now, retry"}, status=503
            )
        return await take(parsed.events, parsed.once, provider)

    def hit(
        kind: FeedbackKind, log_id: int, request: web.Request, url: str | None = None
    ) -> FeedbackEvent:
        # Every hit is its own event (a fresh id): bots and prefetchers are logged too.
        return FeedbackEvent(
            kind=kind,
            source="tracking",
            source_event_id=uuid.uuid4().hex,
            occurred_at=ctx.clock.now(),
            log_id=log_id,
            url=url,
            user_agent=(request.headers.get("User-Agent") or "")[:1000] or None,
        )

    async def open_pixel(request: web.Request) -> web.Response:
        log_id = signer.read_open(request.match_info["token"])
        log.debug("open of log %s", log_id)
        if log_id is not None:
            await take([hit(FeedbackKind.OPEN, log_id, request)])
        return web.Response(
            body=PIXEL, content_type="image/gif", headers={"Cache-Control": "no-store"}
        )

    async def click(request: web.Request) -> web.Response:
        found = signer.read_click(request.match_info["token"])
        log.debug("click of log %s", found.log_id if found else None)
        if found is None:
            count("tracking_forged")
            return web.Response(status=404, text="This link is not valid.")
        await take([hit(FeedbackKind.CLICK, found.log_id, request, found.url)])
        raise web.HTTPFound(found.url)

    async def unsubscribe_page(request: web.Request) -> web.Response:
        if signer.read_unsubscribe(request.match_info["token"]) is None:
            return web.Response(status=404, text="This link is not valid.")
        return web.Response(
            content_type="text/html",
            text=(
                "<!doctype html><title>Unsubscribe</title><form method=post>"
                "<p>Stop receiving these emails?</p><button>Unsubscribe</button></form>"
            ),
        )

    async def unsubscribe_post(request: web.Request) -> web.Response:
        """RFC 8058 one-click (List-Unsubscribe-Post), and the page's button."""
        log_id = signer.read_unsubscribe(request.match_info["token"])
        if log_id is None:
            return web.Response(status=404, text="This link is not valid.")
        await asyncio.to_thread(unsubscribe, ctx, log_id)
        return web.Response(text="You are unsubscribed.")

    app.router.add_post("/feedback/{provider}", webhook)
    app.router.add_get("/t/o/{token}", open_pixel)
    app.router.add_get("/t/c/{token}", click)
    app.router.add_get("/u/{token}", unsubscribe_page)
    app.router.add_post("/u/{token}", unsubscribe_post)
    add_web_version_route(app, ctx, signer)
    add_preview_routes(app, ctx, signer)
