"""The terminal's views say times in the zone they name."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.domain.schedule import ScheduleKind
from bot.entrypoints.cli_text import _schedule_text
from bot.services.deliveries.views import Schedule


def test_a_contact_date_is_shown_in_its_own_zone() -> None:
    at = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)  # 08:00 in Paris
    text = _schedule_text(Schedule(ScheduleKind.AT, at, "Europe/Paris"), None)
    assert text == "at 2026-11-27T08:00:00+01:00 (Europe/Paris)"


def test_a_contact_date_without_a_zone_keeps_its_offset() -> None:
    at = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    assert _schedule_text(Schedule(ScheduleKind.AT, at, None), None) == (
        "at 2026-11-27T07:00:00+00:00"
    )
