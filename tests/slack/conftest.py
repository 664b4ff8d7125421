"""Fixtures for Slack tests: the live app, a mock Slack, a real SMTP relay, a delivery."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import ADMIN, ALLOWED, EMAILS, SIGNING_SECRET, LiveApp, SlackClient
from mock_slack import MockSlack
from pydantic import SecretStr
from scenario import CLI
from smtp_relay import Relay

from bot.context import Context
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.imports.deliveries import import_deliveries
from bot.services.imports.profiles import import_profiles
from bot.services.roles import grant


@pytest.fixture
def slack_services(ctx: Context, mock_slack: MockSlack, relay: Relay, tmp_path: Path) -> Context:
    ctx = ctx.with_settings(
        slack_bot_token=SecretStr("xoxb-test"),
        slack_signing_secret=SecretStr(SIGNING_SECRET),
        slack_api_url=f"{mock_slack.url}/api/",
        mail_url=f"smtp://127.0.0.1:{relay.port}",
        smtp_pool_size=2,
    )
    csv = tmp_path / "p.csv"
    csv.write_text("email,first_name\n" + "".join(f"{e},B{i}\n" for i, e in enumerate(EMAILS)))
    import_profiles(ctx, CLI, csv, "buyers")
    yml = tmp_path / "d.yml"
    yml.write_text(
        "- ref: promo\n  name: Spring promo\n  audience: buyers\n  from: news@shop.example\n"
        "  subject: 'Hi {{ first_name }}'\n  text: Hello\n  slack_channel: C0DEPLOY\n"
    )
    import_deliveries(ctx, CLI, yml)
    prepare_delivery(ctx, CLI, "promo")
    grant(ctx, CLI, ALLOWED, "start-deliveries")
    grant(ctx, CLI, ADMIN, "administration")
    return ctx


@pytest.fixture
def live(slack_services: Context) -> Iterator[LiveApp]:
    app = LiveApp(slack_services).start()
    yield app
    app.stop()


@pytest.fixture
def slack(live: LiveApp, mock_slack: MockSlack) -> SlackClient:
    return SlackClient(live, mock_slack.url)


@pytest.fixture
def idle(slack_services: Context, mock_slack: MockSlack) -> Iterator[SlackClient]:
    """The live app without its sender: confirmed deliveries stay in progress, unsent."""
    app = LiveApp(slack_services, start_sender=False).start()
    yield SlackClient(app, mock_slack.url)
    app.stop()
