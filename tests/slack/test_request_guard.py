"""Nobody acts as Slack unverified (issue 11, items 1 to 3), through the real HTTP app.

Every request that reaches a listener was signed with the signing secret, is fresh,
has the shape Slack gives it, and arrives for the first time. Anything else is
refused before a listener runs, with a status that says why and no traceback.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import pytest
from harness import ADMIN, ALLOWED, DENIED, SlackClient, click_body, command_body, post, sign
from mock_slack import MockSlack
from pydantic import SecretStr
from scenario import CLI, detail_json

from bot.blocks import ids
from bot.bootstrap import Root
from bot.context import Context
from bot.entrypoints.cli import main
from bot.services.roles import list_grants

FORM = "application/x-www-form-urlencoded"


def events(slack: SlackClient) -> str:
    return f"{slack.app.url}/slack/events"


def grants(ctx: Context) -> list[tuple[str, str]]:
    return [(g.subject_id, g.role.value) for g in list_grants(ctx, CLI)]


def test_http_mode_with_a_bot_token_and_no_signing_secret_refuses_to_start(
    root: Root, capsys: pytest.CaptureFixture[str]
) -> None:
    ctx = root.context.with_settings(slack_bot_token=SecretStr("xoxb-test"))
    code = main(["serve"], root=Root(ctx, root.engine))
    err = capsys.readouterr().err
    assert code == 2
    assert "SLACK_SIGNING_SECRET is not set" in err and "Socket Mode" in err


@pytest.mark.parametrize(
    "body",
    [
        "",
        "payload=%7B",  # truncated JSON
        "payload=[]",
        "not a form at all \x00",
        json.dumps({"type": "event_callback"}),
    ],
    ids=["empty", "truncated", "array", "garbage", "json"],
)
def test_an_unsigned_request_is_refused_before_it_is_read(
    slack: SlackClient, slack_services: Context, body: str
) -> None:
    before = grants(slack_services)
    status, answer = post(events(slack), body, {}, FORM)
    assert status == 401
    assert "Traceback" not in answer and json.loads(answer)["error"]
    status, _ = post(
        events(slack), body, {"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": "v0="}, FORM
    )
    assert status == 401, "a timestamp that is not a number is a bad signature, not an error"
    assert grants(slack_services) == before


def test_a_stale_signature_is_refused(slack: SlackClient, slack_services: Context) -> None:
    body = command_body("/campaign", f"roles grant {DENIED} administration", ADMIN, "http://x")
    status, _ = post(events(slack), body, sign(body, int(time.time()) - 301), FORM)
    assert status == 401
    assert (DENIED, "administration") not in grants(slack_services)


@pytest.mark.parametrize(
    "payload",
    [
        [],
        "a string",
        {"type": "block_actions", "user": {"id": ALLOWED}, "actions": [{}]},
        {"type": "block_actions", "user": {"id": ALLOWED}, "actions": "pause"},
        {"type": "block_actions", "user": "U0ALLOWED", "actions": [{"action_id": "pause_send"}]},
        {"type": "block_actions", "user": {"id": ALLOWED}, "actions": [{"action_id": 3}]},
        {
            "type": "block_actions",
            "user": {"id": ALLOWED},
            "actions": [{"action_id": ids.PAUSE, "value": {"ref": "promo"}}],
        },
        {"user": {"id": ALLOWED}},
    ],
    ids=[
        "array",
        "string",
        "empty-action",
        "actions-not-list",
        "user-not-object",
        "action-id-not-string",
        "value-not-string",
        "no-type",
    ],
)
def test_a_signed_but_malformed_payload_is_a_400_with_its_reason(
    slack: SlackClient, payload: object
) -> None:
    body = urlencode({"payload": json.dumps(payload)})
    status, answer = post(events(slack), body, sign(body), FORM)
    assert status == 400, answer
    assert "Traceback" not in answer and json.loads(answer)["error"]


def test_a_signed_command_without_its_user_is_a_400(slack: SlackClient) -> None:
    body = urlencode({"command": "/campaign", "text": "list"})
    status, _ = post(events(slack), body, sign(body), FORM)
    assert status == 400


def test_a_replayed_click_acts_once(
    idle: SlackClient, mock_slack: MockSlack, slack_services: Context
) -> None:
    value = ids.button_value("promo")
    idle.click(ids.CONFIRM_SEND, value, ALLOWED)
    mock_slack.wait_for(lambda: mock_slack.api_calls("chat.postMessage"))
    pause = click_body(ids.PAUSE, value, ALLOWED, f"{mock_slack.url}/response/captured")
    captured = sign(pause)
    assert post(events(idle), pause, captured, FORM)[0] == 200
    mock_slack.wait_for(lambda: detail_json(slack_services, "promo")["state"] == "paused")
    idle.click(ids.RESUME, value, ALLOWED)
    mock_slack.wait_for(lambda: detail_json(slack_services, "promo")["state"] == "in-progress")

    status, answer = post(events(idle), pause, captured, FORM)  # the capture, replayed
    assert status == 401 and "already received" in answer
    assert detail_json(slack_services, "promo")["state"] == "in-progress"


def test_a_replayed_grant_does_not_grant_again(
    slack: SlackClient, mock_slack: MockSlack, slack_services: Context
) -> None:
    grant = command_body(
        "/campaign", f"roles grant {DENIED} start-deliveries", ADMIN, f"{mock_slack.url}/response/g"
    )
    captured = sign(grant)
    assert post(events(slack), grant, captured, FORM)[0] == 200
    mock_slack.wait_for(lambda: (DENIED, "start-deliveries") in grants(slack_services))
    slack.command("/campaign", f"roles revoke {DENIED} start-deliveries", ADMIN)
    mock_slack.wait_for(lambda: (DENIED, "start-deliveries") not in grants(slack_services))

    status, _ = post(events(slack), grant, captured, FORM)
    assert status == 401
    assert (DENIED, "start-deliveries") not in grants(slack_services)
