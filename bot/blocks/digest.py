"""The hourly **KPI digest** (SPEC section 9): every delivery or execution still inside its
validity period, its six KPIs and how they moved since the previous digest.

One section per delivery keeps a row readable and lets the digest split anywhere:
`ROWS_PER_MESSAGE` rows plus two blocks of heading stay under Slack's 50 blocks, and
a row is far below the 3,000 characters of a section (names are shortened). Rows
come largest first, so the first message holds what matters most.

Input: a `DigestPage` (`bot.services.digest_views`).
"""

from __future__ import annotations

from datetime import datetime

from bot.blocks.kit import (
    MAX_BLOCKS,
    Block,
    Message,
    clock_time,
    context,
    count,
    escape,
    fallback,
    header,
    plural,
    section,
    truncate,
    tz_name,
    zone,
)
from bot.domain.executions import MAIN_KEY
from bot.domain.kpi import format_pct
from bot.services.digest import ROWS_PER_PAGE
from bot.services.digest_views import DigestPage, DigestRow

HEADING_BLOCKS = 2  # a header (or context) and the summary context
NAME_LIMIT = 120
MINUS = "−"

assert HEADING_BLOCKS + ROWS_PER_PAGE <= MAX_BLOCKS


def signed_count(n: int) -> str:
    """+120, −3, ±0."""
    if n == 0:
        return "±0"
    return f"+{n:,}" if n > 0 else f"{MINUS}{-n:,}"


def signed_points(value: float | None) -> str | None:
    """A rate's move in percentage points: "+1.2 pt", "−0.35 pt", "±0 pt"; None when unknown."""
    if value is None:
        return None
    if value == 0:
        return "±0 pt"
    text = f"{abs(value):.2f}".rstrip("0").rstrip(".")
    return f"{'+' if value > 0 else MINUS}{text} pt"


def slot_label(slot_at: datetime, tz: str | None) -> str:
    """ "10:00 UTC on Mon 23 Nov 2026" in the digest's time zone."""
    return clock_time(slot_at, tz, same_day_as=None)


def row_title(row: DigestRow) -> str:
    """ "*Spring sale* · `spring-sale`", with the execution for a recurring delivery."""
    title = f"*{escape(truncate(row.name or row.ref, NAME_LIMIT))}*"
    if row.execution and row.execution != MAIN_KEY:
        title += f" — {escape(truncate(row.execution, 64))}"
    return f"{title} · `{escape(truncate(row.ref, 100))}`"


def _with_change(value: str, change: str | None) -> str:
    return f"*{value}* ({change})" if change else f"*{value}*"


def row_text(row: DigestRow, tz: str | None, slot_at: datetime) -> str:
    """Two lines: who and until when; then the six KPIs, each with its change."""
    k, change = row.kpis, row.change
    ends = clock_time(row.validity_ends_at, tz, same_day_as=slot_at)
    first = f"{row_title(row)} · validity ends {ends}"
    if row.new:
        first += " · _new_"

    def moved(name: str) -> str | None:
        if change is None:
            return None
        if name == "sent":
            return signed_count(change.sent)
        value: float | None = getattr(change, name)
        return signed_points(value)

    kpis = [
        f"To deliver *{count(k.to_deliver)}*",
        "Sent " + _with_change(count(k.sent), moved("sent")),
        "Delivered " + _with_change(format_pct(k.delivered_pct), moved("delivered_pct")),
        "Bounces + errors "
        + _with_change(format_pct(k.bounces_errors_pct), moved("bounces_errors_pct")),
        "Open rate " + _with_change(format_pct(k.open_rate), moved("open_rate")),
        "Click-through "
        + _with_change(format_pct(k.click_through_rate), moved("click_through_rate")),
    ]
    return first + "\n" + " · ".join(kpis)


def summary_line(
    total: int, previous_at: datetime | None, tz: str | None, part: int, parts: int
) -> str:
    what = plural(total, "delivery or execution", "deliveries and executions")
    text = f"{what} in their validity period"
    if previous_at is None:
        text += " · first digest: no changes to show yet"
    else:
        text += f" · changes since the digest of {clock_time(previous_at, tz, None)}"
    if parts > 1:
        text += f" · part {part} of {parts}"
    return text


def digest_message(page: DigestPage) -> Message:
    """One message of the digest as `{"text", "blocks"}`: its heading, then its rows."""
    tz, slot_at = page.tz, page.slot_at
    when = slot_label(slot_at, tz)
    blocks: list[Block] = [
        header(f"KPI digest — {slot_at.astimezone(zone(tz)):%H:%M} {tz_name(tz)}")
        if page.part == 1
        else context(f"*KPI digest — {when}* (continued)"),
        context(summary_line(page.total, page.previous_at, tz, page.part, page.parts)),
    ]
    blocks += [section(row_text(row, tz, slot_at)) for row in page.rows]
    text = f"KPI digest, {when}: {plural(page.total, 'delivery', 'deliveries')} in validity"
    if page.parts > 1:
        text += f" (part {page.part} of {page.parts})"
    return {"text": fallback(text), "blocks": blocks}
