"""One delivery that cannot be sent fails alone, in its channel; Slack outages are repaired.

The due work runs for real (SMTP relay on loopback, the mock Slack Web API); a
delivery whose From the builder cannot write is made the way an older import let it
through: its row is changed in the database after preparation.
"""

from __future__ import annotations

import http.client
import json
import logging
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from harness import ALLOWED, EMAILS, LiveApp, SlackClient
from mock_slack import Call, Failure, MockSlack
from scenario import CLI, detail_json, due_now
from smtp_relay import Relay
from sqlalchemy import update

from bot.blocks import ids
from bot.context import Context
from bot.domain.lifecycle import DeliveryState
from bot.notify.slack_client import make_client
from bot.services.deliveries.lifecycle import confirm_send
from bot.services.deliveries.prepare import prepare_delivery
from bot.services.imports.deliveries import import_deliveries
from bot.store.models import Delivery

BAD_FROM = "Shop, Inc <news@shop.example>"  # reads as two addresses: "Shop" and "Inc <…>"


def deployments(mock: MockSlack, channel: str) -> list[Call]:
    calls = mock.api_calls("chat.postMessage") + mock.api_calls("chat.update")
    return [
        c for c in calls if c.body.get("channel") == channel and "Deployment" in json.dumps(c.body)
    ]


@pytest.fixture
def bad(slack_services: Context, tmp_path: Path) -> str:
    (tmp_path / "bad.yml").write_text(
        "- ref: bad\n  name: Bad sender\n  audience: buyers\n  from: news@shop.example\n"
        "  subject: Hi\n  text: Hello\n  slack_channel: C0BAD\n"
    )
    import_deliveries(slack_services, CLI, tmp_path / "bad.yml")
    prepare_delivery(slack_services, CLI, "bad")
    confirm_send(slack_services, CLI, "bad")
    confirm_send(slack_services, CLI, "promo")
    with slack_services.sessions.begin() as s:
        s.execute(update(Delivery).where(Delivery.ref == "bad").values(sender=BAD_FROM))
    return "bad"


def test_a_delivery_that_cannot_be_built_fails_alone_and_says_why_in_its_channel(
    slack_services: Context, mock_slack: MockSlack, relay: Relay, bad: str
) -> None:
    report = due_now(slack_services, slack=make_client(slack_services.settings))

    assert report.sent["promo"] is DeliveryState.FINISHED
    assert sorted(r.rcpt_tos[0] for r in relay.recorder.received) == sorted(EMAILS)
    assert "is not a valid address" in report.failed["bad"]
    detail = detail_json(slack_services, "bad")
    assert detail["state"] == "failed"
    assert "double quotes" in detail["execution"]["failure_reason"]
    (posted,) = deployments(mock_slack, "C0BAD")
    assert "Sending failed" in json.dumps(posted.body) and "Shop, Inc" in json.dumps(posted.body)
    assert report.failures == [], "the other steps ran"

    again = due_now(slack_services, slack=make_client(slack_services.settings))
    assert again.failed == {} and "bad" not in again.sent, "a failed delivery is not retried"


def test_the_import_refuses_that_sender_and_a_ref_with_a_line_break(
    slack_services: Context, tmp_path: Path
) -> None:
    from bot.services.imports.problems import InputRejected

    (tmp_path / "d.yml").write_text(
        "- ref: two-from\n  name: X\n  audience: buyers\n"
        f"  from: '{BAD_FROM}'\n  subject: Hi\n  text: Hello\n"
        '- ref: "trail\\n"\n  name: Y\n  audience: buyers\n  from: news@shop.example\n'
        "  subject: Hi\n  text: Hello\n"
    )
    with pytest.raises(InputRejected) as caught:
        import_deliveries(slack_services, CLI, tmp_path / "d.yml")
    reasons = {p.field: p.reason for p in caught.value.problems}
    assert "is not a valid address" in reasons["from"] and "double quotes" in reasons["from"]
    assert "is not a ref" in reasons["ref"]


def test_a_deployment_message_slack_missed_is_posted_again_once_slack_answers(
    idle: SlackClient,
    slack_services: Context,
    mock_slack: MockSlack,
    caplog: pytest.LogCaptureFixture,
) -> None:
    idle.click(ids.CONFIRM_SEND, ids.button_value("promo"), ALLOWED)
    first = mock_slack.wait_for(lambda: deployments(mock_slack, "C0DEPLOY"))[0]
    assert "in-progress" in json.dumps(first.body)

    mock_slack.fail_next["chat.update"] = [Failure(drop=True)] * 3
    with caplog.at_level(logging.WARNING):
        report = due_now(slack_services, slack=make_client(slack_services.settings))
    assert report.sent["promo"] is DeliveryState.FINISHED
    assert report.deployments_reposted == 0
    assert "chat.update" in mock_slack.failed
    assert any("Deployment message of promo not sent" in r.message for r in caplog.records)
    assert "in-progress" in json.dumps(deployments(mock_slack, "C0DEPLOY")[-1].body)

    mock_slack.fail_next.clear()
    report = due_now(slack_services, slack=make_client(slack_services.settings))
    assert report.deployments_reposted == 1
    last = deployments(mock_slack, "C0DEPLOY")[-1]
    assert last.method == "chat.update" and last.body["ts"] == first.body.get("ts", last.body["ts"])
    assert "finished" in json.dumps(last.body)
    assert (
        due_now(slack_services, slack=make_client(slack_services.settings)).deployments_reposted
        == 0
    )


def test_a_step_that_fails_is_reported_and_the_steps_after_it_run(
    slack_services: Context, relay: Relay, tmp_path: Path
) -> None:
    (tmp_path / "daily.yml").write_text(
        "- ref: daily\n  name: Daily\n  audience: buyers\n  from: news@shop.example\n"
        "  subject: Hi\n  text: Hello\n"
        "  recurrence:\n    cron: '0 * * * *'\n    timezone: UTC\n    request_confirmation: false\n"
    )
    import_deliveries(slack_services, CLI, tmp_path / "daily.yml")
    prepare_delivery(slack_services, CLI, "daily")
    confirm_send(slack_services, CLI, "daily")
    confirm_send(slack_services, CLI, "promo")
    with slack_services.sessions.begin() as s:  # a time zone this system no longer knows
        s.execute(
            update(Delivery).where(Delivery.ref == "daily").values(recurrence_timezone="Mars/Base")
        )
    slack_services.clock.advance(timedelta(hours=2))  # type: ignore[attr-defined]
    report = due_now(slack_services)
    assert [f.split(":")[0] for f in report.failures] == ["recurring"]
    assert report.sent["promo"] is DeliveryState.FINISHED, "sending still ran"
    assert report.digest is not None, "and the digest step after it"


def _metrics(app: LiveApp) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", app.port, timeout=10)
    conn.request("GET", "/metrics")
    body = conn.getresponse().read().decode()
    conn.close()
    return body


def test_failed_slack_calls_are_counted_by_method_where_metrics_are_served(
    idle: SlackClient, slack_services: Context, mock_slack: MockSlack
) -> None:
    """The due work below runs outside the server (as the sender's process does): its
    failed calls reach the server's /metrics through the database."""
    idle.click(ids.CONFIRM_SEND, ids.button_value("promo"), ALLOWED)
    mock_slack.wait_for(lambda: deployments(mock_slack, "C0DEPLOY"))
    before = _metrics(idle.app)
    assert "# TYPE greenlight_slack_api_errors_total counter" in before
    assert "\ngreenlight_slack_api_errors_total 0\n" in before

    mock_slack.fail_next["chat.update"] = [Failure(status=500, error="internal_error")] * 2
    due_now(slack_services, slack=make_client(slack_services.settings))
    failed = mock_slack.failed.count("chat.update")
    assert failed >= 1

    after = _metrics(idle.app)
    assert f'greenlight_slack_api_errors_total{{method="chat.update"}} {failed}\n' in after
    assert "\ngreenlight_slack_api_errors_total 0\n" not in after
    promtool = shutil.which("promtool")
    if promtool is not None:
        checked = subprocess.run(
            [promtool, "check", "metrics"], input=after, capture_output=True, text=True, timeout=30
        )
        assert checked.returncode == 0 and not checked.stdout.strip(), checked.stdout
