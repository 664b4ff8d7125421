"""The send guard's alert as Block Kit (bot.blocks.guard): what it says, its buttons."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from bot.blocks import ids
from bot.blocks.guard import guard_alert_message
from bot.domain.guard import GuardPolicy
from bot.domain.lifecycle import DeliveryState
from bot.services.deliveries.guard_views import GuardAlertView


def view(state: DeliveryState = DeliveryState.PAUSED) -> GuardAlertView:
    return GuardAlertView(
        ref="promo",
        name="Promo <b>&",
        execution_key="main",
        state=state,
        tripped_at=datetime(2026, 11, 23, 9, 0, tzinfo=UTC),
        counted=200,
        failed=20,
        policy=GuardPolicy(0.05, 500, 200),
        reasons=(("user unknown", 18), ("mailbox full", 2)),
        domains=(("<!channel>.example", 20),),
        queued=1234,
    )


def buttons(message: dict[str, object]) -> list[tuple[str, str]]:
    return [
        (e["action_id"], e["value"])
        for b in message["blocks"]  # type: ignore[attr-defined]
        if b["type"] == "actions"
        for e in b["elements"]
    ]


def test_the_alert_says_why_and_offers_the_deployment_buttons() -> None:
    message = guard_alert_message(view())
    text = json.dumps(message["blocks"], ensure_ascii=False)
    assert "*10 %* of the last 200 relayed were refused or hard-bounced (20)" in text
    assert "threshold of 5 % (of the last 500, once 200 were relayed)" in text
    assert "user unknown (18) · mailbox full (2)" in text
    assert "1,234 still queued" in text
    assert buttons(message) == [(ids.RESUME, "promo"), (ids.STOP, "promo")]


def test_data_is_escaped() -> None:
    message = guard_alert_message(view())
    everything = json.dumps(message)
    assert "<!channel>" not in everything and "&lt;!channel&gt;.example (20)" in everything
    assert "Promo &lt;b&gt;&amp;" in message["text"]


def test_buttons_follow_the_state() -> None:
    assert buttons(guard_alert_message(view(DeliveryState.IN_PROGRESS))) == [(ids.STOP, "promo")]
    assert buttons(guard_alert_message(view(DeliveryState.STOPPED))) == []
