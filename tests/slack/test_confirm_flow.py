"""The whole confirm-send flow through signed requests, a mock Slack and a real relay."""

from __future__ import annotations

import json
import time

from harness import ALLOWED, DENIED, EMAILS, SlackClient
from mock_slack import MockSlack
from scenario import CLI, detail_json
from smtp_relay import Relay

from bot.blocks import ids
from bot.context import Context


def blocks_of(call) -> list[dict]:  # type: ignore[no-untyped-def]
    blocks = call.body.get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else blocks


def buttons(call) -> list[dict]:  # type: ignore[no-untyped-def]
    return [e for b in blocks_of(call) if b["type"] == "actions" for e in b["elements"]]


def text_of(call) -> str:  # type: ignore[no-untyped-def]
    return json.dumps(call.body)


def test_denied_user_is_told_privately_and_nothing_is_sent(
    slack: SlackClient, mock_slack: MockSlack, relay: Relay, slack_services: Context
) -> None:
    status, _ = slack.command("/confirm-send", "promo", DENIED)
    assert status == 200
    reply = mock_slack.wait_for(lambda: mock_slack.responses())[0]
    assert "do not allow you to confirm a delivery" in text_of(reply)
    assert reply.body["response_type"] == "ephemeral"
    assert not buttons(reply)
    status, _ = slack.click(ids.CONFIRM_SEND, ids.button_value("promo"), DENIED)
    mock_slack.wait_for(lambda: len(mock_slack.responses()) == 2)
    assert "do not allow you to confirm a delivery" in text_of(mock_slack.responses()[1])
    assert detail_json(slack_services, "promo")["state"] == "ready"
    assert relay.recorder.received == []


def test_card_confirm_ok_sends_once_and_follows_in_the_deployment_message(
    slack: SlackClient, mock_slack: MockSlack, relay: Relay, slack_services: Context
) -> None:
    slack.command("/confirm-send", "promo", ALLOWED)
    card = mock_slack.wait_for(lambda: mock_slack.responses())[0]
    [button, proof] = buttons(card)
    assert proof["action_id"] == ids.SEND_PROOF
    assert button["action_id"] == ids.CONFIRM_SEND
    assert button["confirm"]["confirm"]["text"] == "OK"
    assert "5 recipients" in button["confirm"]["text"]["text"]

    slack.click(ids.CONFIRM_SEND, button["value"], ALLOWED)
    slack.click(ids.CONFIRM_SEND, button["value"], ALLOWED, {"X-Slack-Retry-Num": "1"})
    mock_slack.wait_for(lambda: len(mock_slack.responses()) == 3)
    texts = [text_of(c) for c in mock_slack.responses()[1:]]
    assert sum("confirmed" in t and "sending now" in t for t in texts) == 1
    assert sum("already confirmed" in t for t in texts) == 1

    posted = mock_slack.wait_for(lambda: mock_slack.api_calls("chat.postMessage"))
    assert posted[0].body["channel"] == "C0DEPLOY"
    assert "Deployment" in text_of(posted[0])
    mock_slack.wait_for(
        lambda: any("finished" in text_of(c) for c in mock_slack.api_calls("chat.update"))
    )
    assert len(mock_slack.api_calls("chat.postMessage")) == 1, "posted once, then updated"
    got = relay.recorder.by_rcpt()
    assert sorted(got) == sorted(EMAILS) and all(len(v) == 1 for v in got.values())
    detail = detail_json(slack_services, "promo")
    assert (detail["state"], detail["confirmed_by"]) == ("finished", ALLOWED)


def test_forged_and_stale_requests_get_401_and_change_nothing(
    slack: SlackClient, mock_slack: MockSlack, slack_services: Context
) -> None:
    assert slack.command("/confirm-send", "promo", ALLOWED, secret="wrong")[0] == 401
    stale = int(time.time()) - 600
    assert slack.command("/confirm-send", "promo", ALLOWED, timestamp=stale)[0] == 401
    assert mock_slack.responses() == []
    assert detail_json(slack_services, "promo")["state"] == "ready"


def test_unknown_ref_and_bad_arguments_get_actionable_private_messages(
    slack: SlackClient, mock_slack: MockSlack
) -> None:
    slack.command("/confirm-send", "nope", ALLOWED)
    slack.command("/confirm-send", "promo extra", ALLOWED)
    mock_slack.wait_for(lambda: len(mock_slack.responses()) == 2)
    texts = " ".join(text_of(c) for c in mock_slack.responses())
    assert "no delivery with ref 'nope'" in texts
    assert "Usage: `/confirm-send [delivery-ref]`" in texts


def test_without_a_ref_a_picker_of_ready_deliveries(
    slack: SlackClient, mock_slack: MockSlack
) -> None:
    slack.command("/confirm-send", "", ALLOWED)
    picker = mock_slack.wait_for(lambda: mock_slack.responses())[0]
    assert "promo" in text_of(picker)
    slack.click(ids.PICK_DELIVERY, "", ALLOWED, selected="promo")
    card = (
        mock_slack.wait_for(lambda: len(mock_slack.responses()) == 2) and mock_slack.responses()[1]
    )
    assert [b["action_id"] for b in buttons(card)] == [ids.CONFIRM_SEND, ids.SEND_PROOF]


def test_a_role_granted_to_a_user_group_holds_for_its_members_only(
    slack: SlackClient, mock_slack: MockSlack, slack_services: Context
) -> None:
    from bot.services.roles import grant

    grant(slack_services, CLI, "S0SENDERS", "start-deliveries")
    mock_slack.usergroups["S0SENDERS"] = ["U0MEMBER"]
    slack.command("/confirm-send", "promo", "U0MEMBER")
    slack.command("/confirm-send", "promo", "U0OUTSIDER")
    mock_slack.wait_for(lambda: len(mock_slack.responses()) == 2)
    by_text = [text_of(c) for c in mock_slack.responses()]
    assert sum("do not allow you to confirm" in t for t in by_text) == 1
    assert sum(ids.CONFIRM_SEND in t for t in by_text) == 1
    assert len(mock_slack.api_calls("usergroups.users.list")) == 1, "members cached"
