"""Recipient-local sends from the command line: the definition, the waves a preparation
finds, the validity refusal, and `jobs run-due --at` relaying each wave at its instant
to a real SMTP relay, once, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from scenario import CLI, detail_json, settings_for
from smtp_relay import Relay
from sqlalchemy import select

from bot.bootstrap import Root
from bot.config import Settings
from bot.entrypoints.cli import main
from bot.services.imports.profiles import import_profiles
from bot.store.models import SendingLog

TOKYO = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)
PARIS = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
NEW_YORK = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
ZONES = {
    "aiko@x.example": "Asia/Tokyo",
    "chloe@x.example": "Europe/Paris",
    "hans@x.example": "Europe/Berlin",  # the same instant as Paris: the same wave
    "nobody@x.example": "",
    "sam@x.example": "America/New_York",
}


@pytest.fixture
def settings(tmp_path: Path, relay: Relay) -> Settings:
    return settings_for(tmp_path, mail_url=f"smtp://127.0.0.1:{relay.port}")


def run(root: Root, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv), root=root)
    out, err = capsys.readouterr()
    return code, out, err


def define(root: Root, folder: Path, schedule: str, validity: str = "3d12h") -> Path:
    csv = folder / "p.csv"
    csv.write_text("email,timezone\n" + "".join(f"{e},{z}\n" for e, z in ZONES.items()))
    import_profiles(root.context, CLI, csv, "world")
    yml = folder / "d.yml"
    yml.write_text(
        "- ref: local\n  name: Local\n  audience: world\n  from: news@shop.example\n"
        f"  subject: Hi\n  text: Hello\n  validity: {validity}\n  schedule: {schedule}\n"
    )
    return yml


NINE = "{mode: recipient-local, date: 2026-11-25, time: '09:00', timezone: Europe/Paris}"


def test_waves_are_found_at_preparation_and_each_goes_at_its_instant_once(
    root: Root, relay: Relay, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(root, capsys, "deliveries", "import", str(define(root, tmp_path, NINE)))[0] == 0
    assert run(root, capsys, "deliveries", "prepare", "local")[0] == 0
    detail = detail_json(root.context, "local")
    assert detail["schedule"] == {
        "mode": "recipient-local",
        "at": "2026-11-25T08:00:00+00:00",
        "timezone": "Europe/Paris",
        "local": "2026-11-25T09:00",
    }
    assert [(w["at"], w["zones"], w["recipients"]) for w in detail["waves"]] == [
        (TOKYO.isoformat(), ["Asia/Tokyo"], 1),
        (PARIS.isoformat(), ["Europe/Paris", "Europe/Berlin"], 3),
        (NEW_YORK.isoformat(), ["America/New_York"], 1),
    ]
    with root.context.sessions() as s:
        send_at = dict(s.execute(select(SendingLog.email, SendingLog.send_at)).all())
    assert send_at["nobody@x.example"] == PARIS, "no zone: the delivery's"
    _, out, _ = run(root, capsys, "deliveries", "show", "local")
    assert "09:00 in each recipient's time zone on Wed 25 Nov 2026" in out
    assert "Waves: 3 waves, from 2026-11-25 00:00 UTC to 2026-11-25 14:00 UTC" in out

    assert run(root, capsys, "deliveries", "confirm", "local")[0] == 0
    assert detail_json(root.context, "local")["state"] == "start-pending"
    for at, expected in [
        ("2026-11-24T23:59:00+00:00", set()),
        ("2026-11-25T00:00:00+00:00", {"aiko@x.example"}),
        ("2026-11-25T07:59:00+00:00", {"aiko@x.example"}),
        (
            "2026-11-25T08:00:00+00:00",
            {"aiko@x.example", "chloe@x.example", "hans@x.example", "nobody@x.example"},
        ),
        ("2026-11-25T08:00:00+00:00", None),  # the same instant again: nothing twice
    ]:
        assert run(root, capsys, "jobs", "run-due", "--at", at)[0] == 0
        if expected is not None:
            assert set(relay.recorder.by_rcpt()) == expected, at
        assert detail_json(root.context, "local")["state"] in {"start-pending", "in-progress"}
    assert run(root, capsys, "jobs", "run-due", "--at", "2026-11-25T14:00:00+00:00")[0] == 0
    detail = detail_json(root.context, "local")
    assert detail["state"] == "finished"
    assert [w["waiting"] for w in detail["waves"]] == [0, 0, 0]
    assert sorted(len(v) for v in relay.recorder.by_rcpt().values()) == [1] * 5


def test_a_validity_that_ends_before_the_last_wave_is_refused_at_preparation(
    root: Root, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(root, capsys, "deliveries", "import", str(define(root, tmp_path, NINE, "12h")))
    code, out, err = run(root, capsys, "deliveries", "prepare", "local")
    text = out + err
    assert "the validity period (12h) counts from the first wave (2026-11-25 00:00 UTC)" in text
    assert "before the last wave (2026-11-25 14:00 UTC, America/New_York)" in text
    assert "make validity longer than 14h" in text
    assert detail_json(root.context, "local")["state"] == "editing"
    code, _, err = run(root, capsys, "deliveries", "confirm", "local")
    assert code == 1 and "has preparation errors" in err


def test_a_last_wave_with_less_validity_left_than_its_retries_take_is_warned_of(
    root: Root, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(root, capsys, "deliveries", "import", str(define(root, tmp_path, NINE, "16h")))
    code, out, _ = run(root, capsys, "deliveries", "prepare", "local", "--json")
    assert code == 0
    warnings = json.loads(out)["warnings"]
    (warning,) = [w for w in warnings if w["kind"] == "few retries for the last wave"]
    assert warning["count"] == 1, "the last wave's recipients"
    assert "has 2h of the validity period left, less than the 5h" in warning["detail"]
    assert detail_json(root.context, "local")["state"] == "ready", "a warning only"


@pytest.mark.parametrize(
    ("schedule", "needle"),
    [
        (
            "{mode: recipient-local, date: 2026-11-25, time: 9:00, timezone: Europe/Paris}",
            'write the time of day in quotes, like time: \\"09:00\\"',
        ),
        (
            "{mode: recipient-local, date: 2026-11-25, time: '25:00', timezone: Europe/Paris}",
            "as HH:MM (24 hours)",
        ),
        (
            "{mode: recipient-local, time: '09:00', timezone: Europe/Paris}",
            "mode: recipient-local needs a date, like date: 2026-12-05",
        ),
        (
            "{mode: recipient-local, date: 2026-11-25, time: '09:00'}",
            "needs the time zone of profiles that have none",
        ),
        (
            "{mode: at, at: 2026-11-25T09:00, timezone: Europe/Paris, time: '09:00'}",
            "time is used only with mode: recipient-local",
        ),
        (
            "{mode: recipient-local, date: 2026-11-25T09:00, time: '09:00', timezone: UTC}",
            "give the date alone",
        ),
    ],
)
def test_a_broken_recipient_local_schedule_says_what_to_write(
    root: Root, tmp_path: Path, capsys: pytest.CaptureFixture[str], schedule: str, needle: str
) -> None:
    code, out, err = run(
        root, capsys, "deliveries", "import", str(define(root, tmp_path, schedule)), "--json"
    )
    assert code == 1
    assert needle in json.dumps(json.loads(out)) + err
