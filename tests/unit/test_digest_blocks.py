"""The digest's pure parts: which slot is due, the changes, the Block Kit messages, the chart."""

from __future__ import annotations

import re
import struct
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_blocks import all_text, check_message

from bot.blocks.digest import (
    HEADING_BLOCKS,
    digest_message,
    row_text,
    signed_count,
    signed_points,
)
from bot.blocks.kit import MAX_BLOCKS
from bot.domain.digest import KpiChange, kpi_change, latest_slot
from bot.domain.executions import MAIN_KEY
from bot.domain.kpi import Counters, kpis
from bot.domain.recurrence import crontab_trigger
from bot.notify.charts import kpi_chart_png
from bot.services.digest import ROWS_PER_PAGE, chart_comment, pages
from bot.services.digest_views import ChartPoint, ChartSeries, DigestChart, DigestRow

SLOT = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


# --- slots -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cron", "tz", "now", "expected"),
    [
        ("0 * * * *", "UTC", "2026-11-23T10:00:00+00:00", "2026-11-23T10:00:00+00:00"),
        ("0 * * * *", "UTC", "2026-11-23T10:59:59+00:00", "2026-11-23T10:00:00+00:00"),
        ("0 * * * *", "UTC", "2026-11-23T09:59:59+00:00", "2026-11-23T09:00:00+00:00"),
        ("30 */2 * * *", "UTC", "2026-11-23T10:10:00+00:00", "2026-11-23T08:30:00+00:00"),
        # Crontab weekdays: 1-5 is Monday to Friday (23 Nov 2026 is a Monday).
        ("0 9 * * 1-5", "Europe/Paris", "2026-11-23T07:00:00+00:00", "2026-11-20T08:00:00+00:00"),
        ("0 9 * * 1-5", "Europe/Paris", "2026-11-23T08:00:00+00:00", "2026-11-23T08:00:00+00:00"),
        ("0 9 * * 0", "UTC", "2026-11-23T08:00:00+00:00", "2026-11-22T09:00:00+00:00"),
        ("0 9 * * 7", "UTC", "2026-11-23T08:00:00+00:00", "2026-11-22T09:00:00+00:00"),
        # Daylight saving: 09:00 in Paris is 07:00 UTC in summer, 08:00 in winter.
        ("0 9 * * *", "Europe/Paris", "2026-07-01T12:00:00+00:00", "2026-07-01T07:00:00+00:00"),
        ("0 0 1 1 *", "UTC", "2026-11-23T08:00:00+00:00", "2026-01-01T00:00:00+00:00"),
    ],
)
def test_latest_slot(cron: str, tz: str, now: str, expected: str) -> None:
    assert latest_slot(cron, tz, datetime.fromisoformat(now)) == datetime.fromisoformat(expected)


def test_a_date_that_never_comes_is_refused_before_any_slot_is_looked_for() -> None:
    with pytest.raises(ValueError, match="never comes"):
        latest_slot("0 0 30 2 *", "UTC", SLOT)


@pytest.mark.parametrize("cron", ["0 * * *", "0 * * * 8", "0 * * * fri-mon", "0 * * * */0"])
def test_bad_cron_is_refused(cron: str) -> None:
    with pytest.raises(ValueError):
        crontab_trigger(cron, "UTC")


# --- changes ---------------------------------------------------------------------------


def test_kpi_change_in_counts_and_points() -> None:
    before = kpis(Counters(to_deliver=100, sent=90, failed=10, unique_opens=18))
    after = kpis(Counters(to_deliver=100, sent=95, failed=5, unique_opens=38, unique_clicks=19))
    change = kpi_change(after, before)
    assert change is not None
    assert change.sent == 0
    assert (change.delivered_pct, change.bounces_errors_pct) == (5.0, -5.0)
    assert (change.open_rate, change.click_through_rate) == (20.0, 20.0)
    assert kpi_change(after, None) is None
    nothing = kpi_change(kpis(Counters(to_deliver=5)), kpis(Counters(to_deliver=5)))
    assert nothing is not None and nothing.delivered_pct is None


@pytest.mark.parametrize(
    ("value", "text"),
    [(1.2, "+1.2 pt"), (-0.35, "−0.35 pt"), (0.0, "±0 pt"), (10.0, "+10 pt"), (None, None)],
)
def test_signed_points(value: float | None, text: str | None) -> None:
    assert signed_points(value) == text


def test_signed_count() -> None:
    assert (signed_count(1200), signed_count(-3), signed_count(0)) == ("+1,200", "−3", "±0")


# --- messages --------------------------------------------------------------------------


def row(i: int = 0, **changes: Any) -> DigestRow:
    """A one-off delivery in its validity period: 1,000 sent, 95 % delivered, 20 % opened."""
    base = DigestRow(
        ref=f"delivery-{i}",
        name=f"Delivery {i}",
        execution=MAIN_KEY,
        validity_ends_at=datetime(2026, 11, 26, 20, 0, tzinfo=UTC),
        kpis=kpis(Counters(to_deliver=1000, sent=950, failed=50, unique_opens=190)),
        change=None,
        new=False,
    )
    return replace(base, **changes)


def digest_messages(
    rows: list[DigestRow], tz: str = "UTC", previous_at: datetime | None = None
) -> list[dict[str, Any]]:
    """The digest's messages, paged as `bot.services.digest.build` stores them."""
    return [digest_message(page) for page in pages(rows, SLOT, tz, previous_at)]


def test_row_shows_the_six_kpis_and_their_changes() -> None:
    change = KpiChange(
        sent=120,
        delivered_pct=-0.5,
        bounces_errors_pct=0.5,
        open_rate=2.0,
        click_through_rate=None,
    )
    text = row_text(row(change=change), "Europe/Paris", SLOT)
    first, second = text.split("\n")
    assert (
        first == "*Delivery 0* · `delivery-0` · validity ends 21:00 Europe/Paris on Thu 26 Nov 2026"
    )
    assert second == (
        "To deliver *1,000* · Sent *1,000* (+120) · Delivered *95 %* (−0.5 pt) · "
        "Bounces + errors *5 %* (+0.5 pt) · Open rate *20 %* (+2 pt) · Click-through *0 %*"
    )


def test_row_of_a_recurring_execution_and_of_a_new_delivery() -> None:
    text = row_text(row(execution="2026-11-23", new=True, name="<Weekly> & co"), "UTC", SLOT)
    assert text.startswith("*&lt;Weekly&gt; &amp; co* — 2026-11-23 · `delivery-0`")
    assert "_new_" in text


def test_first_digest_says_so_and_later_ones_name_the_previous() -> None:
    [first] = digest_messages([row()])
    check_message(first)
    assert first["blocks"][0]["text"]["text"] == "KPI digest — 10:00 UTC"
    assert "first digest" in all_text(first["blocks"])
    [later] = digest_messages([row()], previous_at=SLOT - timedelta(hours=1))
    assert "changes since the digest of 09:00 UTC on Mon 23 Nov 2026" in all_text(later["blocks"])


def test_nothing_to_show_is_no_message() -> None:
    assert pages([], SLOT, "UTC", None) == []
    assert digest_messages([]) == []


@given(
    n=st.integers(min_value=1, max_value=250),
    name=st.text(min_size=1, max_size=400),
)
def test_split_holds_slacks_limits_and_every_row_once(n: int, name: str) -> None:
    rows = [row(i, name=name) for i in range(n)]
    messages = digest_messages(rows, tz="America/New_York")
    assert len(messages) == -(-n // ROWS_PER_PAGE)
    seen = []
    for number, message in enumerate(messages, start=1):
        check_message(message)
        sections = [b for b in message["blocks"] if b["type"] == "section"]
        assert len(sections) <= ROWS_PER_PAGE
        # The ref is the last `code` of the first line (a name may hold backticks).
        seen += [re.findall(r"`(delivery-\d+)`", b["text"]["text"])[-1] for b in sections]
        if len(messages) > 1:
            assert f"part {number} of {len(messages)}" in message["text"]
    assert seen == [f"delivery-{i}" for i in range(n)]


def test_120_rows_are_three_messages() -> None:
    messages = digest_messages([row(i) for i in range(120)])
    assert [len(m["blocks"]) for m in messages] == [47, 47, 32]
    assert messages[1]["blocks"][0]["type"] == "context"  # only the first has the header


def test_rows_per_message_within_the_block_limit() -> None:
    assert HEADING_BLOCKS + ROWS_PER_PAGE <= MAX_BLOCKS
    [full] = digest_messages([row(i) for i in range(ROWS_PER_PAGE)])
    check_message(full)
    assert len(full["blocks"]) == HEADING_BLOCKS + ROWS_PER_PAGE


def test_chart_comment() -> None:
    assert chart_comment(SLOT, "UTC", 5, 120).endswith("KPIs over time of the 5 largest of 120")
    assert chart_comment(SLOT, "UTC", 3, 3).endswith("KPIs over time of all 3")
    assert chart_comment(SLOT, "UTC", 1, 1).endswith("KPIs over time of the delivery")
    assert chart_comment(SLOT, "UTC", 1, 1).startswith("KPI digest, 10:00 UTC on Mon 23 Nov 2026:")


# --- chart -----------------------------------------------------------------------------


def chart(series: list[ChartSeries], tz: str = "UTC") -> DigestChart:
    return DigestChart(title="KPIs", tz=tz, series=series, comment="", filename="kpi-digest.png")


def test_chart_is_a_png_of_the_expected_size() -> None:
    points = [
        ChartPoint(SLOT + timedelta(hours=h), 99 - h, 1 + h, None if h == 0 else 10.0 + h, 2.0)
        for h in range(24)
    ]
    png = kpi_chart_png(chart([ChartSeries("A", points)], tz="Europe/Paris"))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (1000, 600)
    empty = kpi_chart_png(chart([]))
    assert empty[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > len(empty)  # the lines are drawn


@pytest.mark.parametrize(
    ("cron", "reason"),
    [
        ("0 9 * * mon-fri-x", "'fri-x' is neither a number from 0 to 7 nor a name"),
        ("0 9 * * foo", "'foo' is neither a number from 0 to 7 nor a name"),
        ("0 9 * * 1/x", "step 'x' must be a whole number"),
        ("0 9 31 2 *", "a date that never comes"),
    ],
)
def test_a_cron_that_would_mislead_is_refused_with_its_reason(cron: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        crontab_trigger(cron, "UTC")
