"""Proofs: **Send me a proof** on the card and `/campaign proof`, through signed requests,
a mock Slack (`users.info`) and a real SMTP relay; the minute's limit on the test's
fixed clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from harness import ALLOWED, DENIED, LiveApp, SlackClient
from mock_slack import Failure, MockSlack
from scenario import CLI, detail_json
from smtp_relay import Relay
from sqlalchemy import select

from bot.blocks import ids
from bot.clock import FixedClock
from bot.context import Context
from bot.services.roles import grant
from bot.store.models import AuditEntry, SendingLog

PREPARER = "U0PREPARE"  # holds prepare-deliveries
OWN = "alice@team.example"


def text_of(call) -> str:  # type: ignore[no-untyped-def]
    return json.dumps(call.body)


def buttons(call) -> list[dict]:  # type: ignore[no-untyped-def]
    blocks = call.body.get("blocks") or []
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


def answer(mock_slack: MockSlack, n: int) -> str:
    """The text of the `n`th answer (from 1) to a response URL, once it came."""
    mock_slack.wait_for(lambda: len(mock_slack.responses()) >= n)
    return text_of(mock_slack.responses()[n - 1])


def proofs(relay: Relay) -> list[tuple[str, EmailMessage]]:
    out = []
    for item in relay.recorder.received:
        msg = message_from_bytes(item.data, policy=policy.default)
        assert isinstance(msg, EmailMessage)
        [rcpt] = item.rcpt_tos
        out.append((rcpt, msg))
    return out


def state(ctx: Context) -> tuple[object, ...]:
    """What a proof must leave as it was: the delivery's detail (KPIs) and its logs."""
    with ctx.sessions() as s:
        logs = s.execute(select(SendingLog.email, SendingLog.status)).all()
    return json.dumps(detail_json(ctx, "promo"), sort_keys=True), sorted(map(tuple, logs))


def proof_entries(ctx: Context) -> list[AuditEntry]:
    with ctx.sessions() as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.action == "proof.sent")).all()
        s.expunge_all()
        return list(rows)


@pytest.fixture
def with_people(slack_services: Context, mock_slack: MockSlack) -> Context:
    grant(slack_services, CLI, PREPARER, "prepare-deliveries")
    mock_slack.emails.update({ALLOWED: OWN, PREPARER: "pat@team.example", DENIED: "d@x.example"})
    return slack_services


def test_the_card_sends_a_proof_to_the_clicker_marked_and_counted_nowhere(
    with_people: Context, idle: SlackClient, mock_slack: MockSlack, relay: Relay
) -> None:
    before = state(with_people)
    idle.command("/confirm-send", "promo", ALLOWED)
    mock_slack.wait_for(lambda: mock_slack.responses())
    card = mock_slack.responses()[0]
    [proof] = [b for b in buttons(card) if b["action_id"] == ids.SEND_PROOF]
    assert proof["text"]["text"] == "Send me a proof"

    idle.click(ids.SEND_PROOF, proof["value"], ALLOWED)
    said = answer(mock_slack, 2)
    assert "A proof of *promo* (as buyer0@x.example gets it) went to alice@team.example" in said
    [(rcpt, msg)] = proofs(relay)
    assert rcpt == OWN and msg["To"] == OWN
    assert msg["Subject"] == "[Proof] Hi B0"
    assert msg["X-Greenlight-Proof"] == "promo"
    assert "proof@shop.example>" in msg["Message-ID"] and "<gl." not in msg["Message-ID"]
    for header in (
        "X-Greenlight-Log",
        "List-Unsubscribe",
        "X-SMTPAPI",
        "X-PM-Metadata-greenlight_log",
    ):
        assert msg[header] is None, header
    body = msg.get_body(("plain",))
    assert body is not None and "Hello" in str(body.get_content())  # type: ignore[attr-defined]
    [call] = mock_slack.api_calls("users.info")
    assert call.body["user"] == ALLOWED

    assert state(with_people) == before, "no log, no KPI, nothing counted"
    [entry] = proof_entries(with_people)
    assert (entry.actor, entry.subject_ref) == (ALLOWED, "promo")
    assert entry.detail == {"profile": "buyer0@x.example", "addresses": [OWN]}
    assert detail_json(with_people, "promo")["state"] == "ready"
    idle.command("/campaign", "audit promo", ALLOWED)
    trail = answer(mock_slack, 3)
    assert "sent a proof of" in trail and "addresses: alice@team.example" in trail


def test_campaign_proof_renders_for_another_profile_of_the_audience(
    with_people: Context, idle: SlackClient, mock_slack: MockSlack, relay: Relay
) -> None:
    idle.command("/campaign", "proof promo <mailto:buyer3@x.example|buyer3@x.example>", PREPARER)
    assert "(as buyer3@x.example gets it) went to pat@team.example" in answer(mock_slack, 1)
    [(rcpt, msg)] = proofs(relay)
    assert (rcpt, msg["Subject"]) == ("pat@team.example", "[Proof] Hi B3")

    idle.command("/campaign", "proof promo nobody@x.example", PREPARER)
    assert "no profile 'nobody@x.example' in the audience of 'promo'" in answer(mock_slack, 2)
    idle.command("/campaign", "proof", PREPARER)
    assert "Usage: `/campaign proof delivery-ref [email]`" in answer(mock_slack, 3)
    idle.command("/campaign", "help", PREPARER)
    assert "/campaign proof &lt;ref&gt; [email]" in answer(mock_slack, 4)
    assert len(proofs(relay)) == 1 and len(proof_entries(with_people)) == 1


def test_a_person_without_a_role_is_refused_before_slack_is_asked(
    with_people: Context, idle: SlackClient, mock_slack: MockSlack, relay: Relay
) -> None:
    idle.click(ids.SEND_PROOF, ids.button_value("promo"), DENIED)
    assert "do not allow you to send a proof" in answer(mock_slack, 1)
    idle.command("/campaign", "proof promo", DENIED)
    assert "do not allow you to send a proof" in answer(mock_slack, 2)
    assert mock_slack.api_calls("users.info") == []
    assert relay.recorder.received == [] and proof_entries(with_people) == []


def test_the_fourth_proof_in_a_minute_is_refused(
    with_people: Context,
    idle: SlackClient,
    mock_slack: MockSlack,
    relay: Relay,
    clock: FixedClock,
) -> None:
    for n in range(1, 4):
        idle.command("/campaign", "proof promo", ALLOWED)
        assert "went to alice@team.example" in answer(mock_slack, n)
        clock.advance(timedelta(seconds=10))
    idle.command("/campaign", "proof promo", ALLOWED)
    said = answer(mock_slack, 4)
    assert "You sent 3 proofs in the last minute, the most allowed: try again in a minute." in said
    assert len(proofs(relay)) == 3
    assert len(mock_slack.api_calls("users.info")) == 3, "refused before Slack is asked"
    # Another person has a minute of their own.
    idle.command("/campaign", "proof promo", PREPARER)
    assert "went to pat@team.example" in answer(mock_slack, 5)
    # A minute after the first, one more may go.
    clock.advance(timedelta(seconds=31))
    idle.click(ids.SEND_PROOF, ids.button_value("promo"), ALLOWED)
    assert "went to alice@team.example" in answer(mock_slack, 6)
    assert len(proofs(relay)) == 5


def test_users_info_failing_or_without_an_email_is_said_clearly(
    with_people: Context, idle: SlackClient, mock_slack: MockSlack, relay: Relay
) -> None:
    mock_slack.fail_next["users.info"] = [Failure(error="missing_scope")]
    idle.click(ids.SEND_PROOF, ids.button_value("promo"), ALLOWED)
    said = answer(mock_slack, 1)
    assert "Slack did not give your email address (users.info: missing_scope)" in said
    assert "`users:read.email`" in said and "PROOF_ADDRESSES" in said
    mock_slack.emails[ALLOWED] = None
    idle.command("/campaign", "proof promo", ALLOWED)
    assert "(your profile has no email for the app)" in answer(mock_slack, 2)
    assert relay.recorder.received == [] and proof_entries(with_people) == []


@pytest.fixture
def team_addresses(slack_services: Context, mock_slack: MockSlack) -> Iterator[SlackClient]:
    ctx = slack_services.with_settings(proof_addresses="qa@team.example, lead@team.example,")
    app = LiveApp(ctx, start_sender=False).start()
    yield SlackClient(app, mock_slack.url)
    app.stop()


def test_proof_addresses_win_over_the_askers_own(
    slack_services: Context,
    team_addresses: SlackClient,
    mock_slack: MockSlack,
    relay: Relay,
) -> None:
    mock_slack.emails[ALLOWED] = OWN
    team_addresses.click(ids.SEND_PROOF, ids.button_value("promo"), ALLOWED)
    assert "went to qa@team.example, lead@team.example" in answer(mock_slack, 1)
    assert sorted(r for r, _ in proofs(relay)) == ["lead@team.example", "qa@team.example"]
    assert all(m["Subject"] == "[Proof] Hi B0" for _, m in proofs(relay))
    assert mock_slack.api_calls("users.info") == []
    [entry] = proof_entries(slack_services)
    assert entry.detail["addresses"] == ["qa@team.example", "lead@team.example"]
