"""The delivery most integration tests start from: some profiles, one delivery, prepared."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from slack_sdk.web.async_client import AsyncWebClient

from bot.config import Settings, load_settings
from bot.context import Context
from bot.domain.roles import COMMAND_LINE, Actor, Role
from bot.engine.transports import Transport, make_transport
from bot.jobs.due_work import DueReport, run_due
from bot.notify.slack import SlackNotifications
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.deliveries.views import delivery_detail
from bot.services.imports.deliveries import import_deliveries
from bot.services.imports.profiles import import_profiles
from bot.services.notifications import Counted, Notifications, Unconnected


def prepare_one(
    ctx: Context, folder: Path, emails: list[str], ref: str = "big", **fields: Any
) -> None:
    """Import `emails` into the audience `all` and delivery `ref` to them, then prepare it.

    Through the real imports (CSV and YAML files in `folder`), as a user would.
    `fields` are the delivery's other YAML fields (`text`, `html`, `efs`, `validity`…);
    the subject is "Hi" and the text "Hello" unless given.
    """
    (folder / "p.csv").write_text("email\n" + "\n".join(emails) + "\n")
    import_profiles(ctx, CLI, folder / "p.csv", "all")
    entry = {
        "ref": ref,
        "name": ref.capitalize(),
        "audience": "all",
        "from": "news@shop.example",
        "subject": "Hi",
        **({"text": "Hello"} if "html" not in fields else {}),
        **fields,
    }
    (folder / "d.yml").write_text(yaml.safe_dump([entry], sort_keys=False))
    import_deliveries(ctx, CLI, folder / "d.yml")
    result = prepare_delivery(ctx, CLI, ref)
    # Said here, with the reasons, rather than later as "has preparation errors".
    assert not result.errors_total, [e.describe() for e in result.errors]


CLI = COMMAND_LINE  # the operator at the command line: every role


def as_user(user: str, roles: Iterable[Role]) -> Actor:
    """A Slack user acting with these roles."""
    return Actor(user, frozenset(roles))


def detail_json(ctx: Context, ref: str) -> dict[str, Any]:
    """`deliveries show REF --json`: what the tests read a delivery's state and KPIs from."""
    return delivery_detail(ctx, CLI, ref).to_json()


def due_now(
    ctx: Context,
    transport: Callable[[], Transport] | None = None,
    slack: AsyncWebClient | None = None,
) -> DueReport:
    """`jobs run-due` at the context's instant: through `transport` (MAIL_URL's when
    None), with Slack when a Web API client is given (not connected otherwise)."""
    notifications: Notifications = (
        Counted(ctx, SlackNotifications(slack)) if slack else Unconnected()  # as the root does
    )
    return asyncio.run(
        run_due(
            ctx,
            transports=transport or (lambda: make_transport(ctx.settings)),
            notifications=notifications,
        )
    )


def settings_for(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for a test: never the developer's real environment or `.env`."""
    return load_settings(
        _env_file=None,
        **{
            "database_url": f"sqlite:///{tmp_path / 'greenlight.db'}",
            "mail_url": f"maildir://{tmp_path / 'outbox'}",
            "tracking_secret": "test-tracking-secret",
            "feedback_secret": "test-feedback-secret",
            **overrides,
        },
    )


def sendgrid_public_key(private: ec.EllipticCurvePrivateKey) -> str:
    """The verification key SendGrid shows for `private`, as SENDGRID_PUBLIC_KEY takes it."""
    public = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(public).decode()
