"""The hourly **KPI digest** (SPEC section 9): every delivery or execution still inside its
validity period, its six KPIs and how they moved since the previous digest.

One section per delivery keeps a row readable and lets the digest split anywhere:
`ROWS_PER_MESSAGE` rows plus two blocks of heading stay under Slack's 50 blocks, and
a row is far below the 3,000 characters of a section (names are shortened). Rows
come largest first, so the first message holds what matters most.

Input rows (from `bot.services.digest`):
`{"ref", "name", "execution", "validity_ends_at", "kpis": {…}, "change": {…} | None}`,
with `kpis` as `Kpis.as_dict()` and `change` as `KpiChange` fields (None for a delivery
that was not in the previous digest).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from bot.blocks.kit import (
    MAX_BLOCKS,
    Block,
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
from bot.domain.kpi import format_pct

ROWS_PER_MESSAGE = 45
HEADING_BLOCKS = 2  # a header (or context) and the summary context
NAME_LIMIT = 120
MINUS = "−"

assert HEADING_BLOCKS + ROWS_PER_MESSAGE <= MAX_BLOCKS


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


def row_title(row: Mapping[str, Any]) -> str:
    """ "*Spring sale* · `spring-sale`", with the execution for a recurring delivery."""
    name = escape(truncate(str(row.get("name") or row.get("ref")), NAME_LIMIT))
    title = f"*{name}*"
    execution = row.get("execution")
    if execution and execution != "main":
        title += f" — {escape(truncate(str(execution), 64))}"
    return f"{title} · `{escape(truncate(str(row.get('ref')), 100))}`"


def _with_change(value: str, change: str | None) -> str:
    return f"*{value}* ({change})" if change else f"*{value}*"


def row_text(row: Mapping[str, Any], tz: str | None, slot_at: datetime) -> str:
    """Two lines: who and until when; then the six KPIs, each with its change."""
    k = row.get("kpis") or {}
    change = row.get("change")
    ends = clock_time(row.get("validity_ends_at"), tz, same_day_as=slot_at)
    first = f"{row_title(row)} · validity ends {ends}"
    if row.get("new"):
        first += " · _new_"

    def moved(key: str) -> str | None:
        if change is None:
            return None
        if key == "sent":
            return signed_count(int(change.get("sent") or 0))
        return signed_points(change.get(key))

    kpis = [
        f"To deliver *{count(k.get('to_deliver'))}*",
        "Sent " + _with_change(count(k.get("sent")), moved("sent")),
        "Delivered " + _with_change(format_pct(k.get("delivered_pct")), moved("delivered_pct")),
        "Bounces + errors "
        + _with_change(format_pct(k.get("bounces_errors_pct")), moved("bounces_errors_pct")),
        "Open rate " + _with_change(format_pct(k.get("open_rate")), moved("open_rate")),
        "Click-through "
        + _with_change(format_pct(k.get("click_through_rate")), moved("click_through_rate")),
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


def digest_messages(
    rows: Sequence[Mapping[str, Any]],
    *,
    slot_at: datetime,
    tz: str | None,
    previous_at: datetime | None,
    per_message: int = ROWS_PER_MESSAGE,
) -> list[dict[str, Any]]:
    """The digest as `{"text", "blocks"}` messages, `per_message` rows each, in order.

    No rows, no messages: an empty digest is never posted.
    """
    if not 1 <= per_message <= MAX_BLOCKS - HEADING_BLOCKS:
        raise ValueError(f"a digest message holds 1 to {MAX_BLOCKS - HEADING_BLOCKS} rows")
    chunks = [rows[i : i + per_message] for i in range(0, len(rows), per_message)]
    when = slot_label(slot_at, tz)
    messages = []
    for number, chunk in enumerate(chunks, start=1):
        blocks: list[Block] = [
            header(f"KPI digest — {slot_at.astimezone(zone(tz)):%H:%M} {tz_name(tz)}")
            if number == 1
            else context(f"*KPI digest — {when}* (continued)"),
            context(summary_line(len(rows), previous_at, tz, number, len(chunks))),
        ]
        blocks += [section(row_text(row, tz, slot_at)) for row in chunk]
        text = f"KPI digest, {when}: {plural(len(rows), 'delivery', 'deliveries')} in validity"
        if len(chunks) > 1:
            text += f" (part {number} of {len(chunks)})"
        messages.append({"text": fallback(text), "blocks": blocks})
    return messages


def chart_comment(slot_at: datetime, tz: str | None, shown: int, total: int) -> str:
    """The comment the chart is shared with."""
    which = "the delivery" if shown == 1 else f"the {shown} largest of {total}"
    if shown == total and shown > 1:
        which = f"all {shown}"
    return f"KPI digest, {slot_label(slot_at, tz)}: KPIs over time of {which}"
