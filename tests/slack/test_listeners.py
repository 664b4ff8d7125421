"""The listeners, tested as bolt-python tests its own: signed requests dispatched to the app.

No HTTP server here: each request is an `AsyncBoltRequest` built the way Slack sends it
(signed, form-encoded), given to the Bolt app that the composition root builds, with
its listeners and the `Caller` middleware; the Web API and the response URLs are the
local mock. What a person would see is read from what reached the response URL.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from harness import ALLOWED, DENIED, click_body, command_body, root_of, sign
from mock_slack import Call, MockSlack
from scenario import CLI
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.blocks import ids
from bot.bootstrap import Server, build_server
from bot.context import Context
from bot.services import roles

FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def server(slack_services: Context) -> Iterator[Server]:
    built = build_server(root_of(slack_services), start_sender=False)
    yield built


@pytest.fixture
def app(server: Server) -> AsyncApp:
    assert server.slack is not None, "Slack is configured in these tests"
    return server.slack


class Slack:
    """Builds and dispatches what Slack would send, one response URL per request."""

    def __init__(self, app: AsyncApp, mock: MockSlack) -> None:
        self.app = app
        self.mock = mock
        self.n = 0

    def _url(self) -> str:
        self.n += 1
        return f"{self.mock.url}/response/listener-{self.n}"

    def dispatch(self, body: str, *, signed: bool = True) -> tuple[int, Call | None]:
        """The HTTP status of the acknowledgement, and the private answer (if any)."""
        headers: dict[str, Any] = {"content-type": [FORM]}
        if signed:
            headers |= {k.lower(): [v] for k, v in sign(body).items()}

        async def run() -> tuple[int, Call | None]:
            response = await self.app.async_dispatch(AsyncBoltRequest(body=body, headers=headers))
            if response.status != 200:
                return response.status, None
            path = f"/response/listener-{self.n}"

            def answered() -> Call | None:
                return next((c for c in self.mock.responses() if c.path == path), None)

            call = await asyncio.to_thread(self.mock.wait_for, answered)
            return response.status, call

        return asyncio.run(run())

    def command(self, command: str, text: str, user: str) -> Call:
        status, call = self.dispatch(command_body(command, text, user, self._url()))
        assert status == 200 and call is not None
        return call

    def click(self, action_id: str, value: str, user: str, selected: str | None = None) -> Call:
        status, call = self.dispatch(click_body(action_id, value, user, self._url(), selected))
        assert status == 200 and call is not None
        return call


@pytest.fixture
def slack(app: AsyncApp, mock_slack: MockSlack) -> Slack:
    return Slack(app, mock_slack)


def text(call: Call) -> str:
    return str(call.body.get("text"))


def action_ids(call: Call) -> list[str]:
    return [
        element["action_id"]
        for block in call.body.get("blocks") or []
        for element in block.get("elements") or []
        if "action_id" in element
    ]


def test_a_bad_signature_is_refused_before_any_listener(
    slack: Slack, mock_slack: MockSlack
) -> None:
    body = command_body("/confirm-send", "promo", ALLOWED, f"{mock_slack.url}/response/x")
    status, call = slack.dispatch(body, signed=False)
    assert (status, call) == (401, None)
    assert mock_slack.responses() == []


def test_confirm_send_without_the_role_is_refused_privately(slack: Slack) -> None:
    answer = slack.command("/confirm-send", "promo", DENIED)
    assert answer.body["response_type"] == "ephemeral"
    assert "Your permissions do not allow you to confirm a delivery" in text(answer)
    assert ids.CONFIRM_SEND not in action_ids(answer)


def test_confirm_send_shows_the_card_with_its_button(slack: Slack) -> None:
    answer = slack.command("/confirm-send", "promo", ALLOWED)
    assert text(answer) == "Spring promo (promo)"
    assert action_ids(answer) == [ids.CONFIRM_SEND, ids.SEND_PROOF]


def test_the_picker_is_refused_without_the_role_too(slack: Slack) -> None:
    answer = slack.click(ids.PICK_DELIVERY, "", DENIED, selected="promo")
    assert "Your permissions do not allow you to confirm a delivery" in text(answer)


def test_roles_held_through_a_user_group_count(
    slack: Slack, slack_services: Context, mock_slack: MockSlack
) -> None:
    mock_slack.usergroups["S0SENDERS"] = ["U0INGROUP"]
    roles.grant(slack_services, CLI, "S0SENDERS", "start-deliveries")
    answer = slack.command("/confirm-send", "promo", "U0INGROUP")
    assert action_ids(answer) == [ids.CONFIRM_SEND, ids.SEND_PROOF]


def test_every_button_answers_a_value_that_is_not_ours(slack: Slack) -> None:
    for action_id in (
        ids.CONFIRM_SEND,
        ids.PAUSE,
        ids.RESUME,
        ids.STOP,
        ids.COMPUTE_STATS,
        ids.APPROVE_OCCURRENCE,
        ids.SKIP_OCCURRENCE,
    ):
        answer = slack.click(action_id, "{not json", ALLOWED)
        assert answer.body["response_type"] == "ephemeral", action_id
        assert text(answer).startswith(("This button is out of date", "the button value")), (
            action_id,
            text(answer),
        )


def test_an_unknown_campaign_subcommand_gets_the_help(slack: Slack) -> None:
    answer = slack.command("/campaign", "frobnicate", DENIED)
    assert text(answer) == "Greenlight: `/campaign help` lists the subcommands."


def test_roles_are_the_administrators_to_manage(slack: Slack) -> None:
    answer = slack.command("/campaign", f"roles grant {DENIED} start-deliveries", ALLOWED)
    assert "Your permissions do not allow you to grant and revoke roles" in text(answer)
