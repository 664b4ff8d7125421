"""Hostile templates prepared from Slack: each answered with its bound, the server free."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import yaml
from harness import ALLOWED, SlackClient
from mock_slack import MockSlack
from scenario import CLI

from bot.context import Context
from bot.services.imports.deliveries import import_deliveries

# Over the bounds only with a profile's data (first_name), so the import takes it.
NESTED = (
    "{% for i in range((first_name|length) * 50000) %}"
    "{% for j in range(100000) %}{% endfor %}{% endfor %}"
)


def test_seven_hostile_prepares_each_fail_with_the_bound_and_healthz_answers(
    idle: SlackClient, mock_slack: MockSlack, slack_services: Context, tmp_path: Path
) -> None:
    entries = [
        {
            "ref": f"bomb-{n}",
            "name": f"Bomb {n}",
            "audience": "buyers",
            "from": "news@shop.example",
            "subject": "Hi",
            "html": NESTED,
        }
        for n in range(7)
    ]
    (tmp_path / "bombs.yml").write_text(yaml.safe_dump(entries))
    import_deliveries(slack_services, CLI, tmp_path / "bombs.yml")

    for n in range(7):
        status, _ = idle.command("/campaign", f"prepare bomb-{n}", ALLOWED)
        assert status == 200
    with urllib.request.urlopen(f"{idle.app.url}/healthz", timeout=10) as resp:
        assert resp.status == 200 and json.load(resp)["ok"] is True
    mock_slack.wait_for(lambda: len(mock_slack.responses()) == 14, timeout=60)
    answers = [json.dumps(c.body) for c in mock_slack.responses()]
    results = [a for a in answers if "rendering limits" in a]
    assert len(results) == 7, answers
