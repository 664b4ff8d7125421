"""Block Kit primitives shared by the builders: text objects, blocks, limits, formats.

Every builder goes through these helpers so that Slack's documented limits hold in
one place: a message that breaks one of them is refused whole by Slack
(`invalid_blocks`), which would hide a card or a Deployment message because a
delivery has a long name. Text is therefore truncated here, safely (never in the
middle of an `&amp;` entity or a `<@U…>` mention), and always ends with "…" when cut.

Text that did not come from Greenlight (a delivery's name, a person's input, a
reason a relay gave) must never reach Slack as markup: `<!channel>` in a name would
notify a whole channel. Two rules make it so. A plain_text object (`plain`: headers,
buttons, options, confirm dialogs) is escaped here, whole, since it never holds
markup. mrkdwn (`mrkdwn`, `section`, `context`, and a message's top-level `text`,
which Slack also reads as mrkdwn) is composed by the builders, who pass every piece
of data through `escape` and keep as markup only what they wrote themselves (a
mention of a Slack user id, a date token).

Nothing here does I/O; time zones come from the tzdata the project depends on.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from bot.domain.kpi import DASH
from bot.domain.times import (
    clock_time,
    local_date,
    local_time,
    parse_time,
    tz_name,
    utc_minute,
    zone,
)

__all__ = [
    "clock_time",
    "local_date",
    "local_time",
    "parse_time",
    "tz_name",
    "utc_minute",
    "zone",
]

Block = dict[str, Any]
Message = dict[str, Any]  # {"text": fallback, "blocks": [...]}: what chat.postMessage takes

# Slack's documented limits (https://docs.slack.dev/reference/block-kit/).
MAX_BLOCKS = 50  # blocks in one message
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10  # fields of one section
MAX_FIELD_TEXT = 2000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_ACTION_ID = 255
MAX_BLOCK_ID = 255
MAX_CONFIRM_TITLE = 100
MAX_CONFIRM_TEXT = 300
MAX_CONFIRM_BUTTON = 30
MAX_SELECT_OPTIONS = 100
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
MAX_PLACEHOLDER = 150
MAX_FALLBACK_TEXT = 3000  # Slack allows 40,000; a notification needs far less

ELLIPSIS = "…"

# The start of a token Slack parses in mrkdwn: a mention, a channel, a date, a link.
_TOKEN_START = re.compile(r"<(?:[@#!]|h|m)")


def truncate(text: str, limit: int) -> str:
    """`text` cut to at most `limit` characters, ending with "…" when it was cut.

    A cut never leaves half an HTML entity (`&am`) or half a Slack token (`<@U12`):
    Slack would show the fragment raw, or refuse the text.
    """
    if limit < 1:
        raise ValueError("a text limit is at least 1 character")
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:] and len(cut) - amp <= 6:
        cut = cut[:amp]
    lt = cut.rfind("<")
    if lt != -1 and ">" not in cut[lt:] and _TOKEN_START.match(cut, lt):
        cut = cut[:lt]
    return cut.rstrip() + ELLIPSIS


def escape(text: object) -> str:
    """Text from data made safe for mrkdwn: `&`, `<` and `>` as Slack asks."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _shorten(value: str, room: int) -> str:
    """The longest start of `value` (with "…") whose escaped form is at most `room` long."""
    if len(escape(value)) <= room:
        return value
    low, high = 0, len(value)
    while low < high:
        mid = (low + high + 1) // 2
        if len(escape(value[:mid].rstrip() + ELLIPSIS)) <= room:
            low = mid
        else:
            high = mid - 1
    return value[:low].rstrip() + ELLIPSIS


def fit(template: str, value: str, limit: int) -> str:
    """`template` with `{}` replaced by `value`, `value` shortened so the whole fits.

    Used in plain text (`plain` escapes it), where the sentence around a name matters
    more than the end of the name, such as a confirm dialog that must still say how many
    recipients and when: the lengths are those of the escaped text Slack counts.
    """
    room = limit - (len(escape(template)) - 2)
    if room < 1:
        return template.replace("{}", value, 1)  # `plain` truncates the whole
    return template.replace("{}", _shorten(value, room), 1)


# --- text objects ------------------------------------------------------------------


def plain(text: str, limit: int = MAX_SECTION_TEXT) -> dict[str, Any]:
    """A plain_text object, escaped whole; empty text (which Slack refuses) becomes "—"."""
    return {"type": "plain_text", "text": truncate(escape(text or DASH), limit), "emoji": True}


def mrkdwn(text: str, limit: int = MAX_SECTION_TEXT) -> dict[str, Any]:
    """A mrkdwn object; the caller escapes the parts that come from data."""
    return {"type": "mrkdwn", "text": truncate(text or DASH, limit)}


# --- blocks ------------------------------------------------------------------------


def header(text: str) -> Block:
    return {"type": "header", "text": plain(text, MAX_HEADER_TEXT)}


def section(
    text: str, block_id: str | None = None, accessory: dict[str, Any] | None = None
) -> Block:
    block: Block = {"type": "section", "text": mrkdwn(text)}
    if block_id:
        block["block_id"] = block_id
    if accessory:
        block["accessory"] = accessory
    return block


def field_sections(
    pairs: Sequence[tuple[str, str]], block_id: str | None = None, text: str | None = None
) -> list[Block]:
    """Label/value pairs as section fields, two columns, at most ten per section.

    `value` is mrkdwn already escaped by the caller; the label is ours. `text`, when
    given, titles the first section.
    """
    fields = [mrkdwn(f"*{label}*\n{value}", MAX_FIELD_TEXT) for label, value in pairs]
    blocks: list[Block] = []
    for start in range(0, len(fields), MAX_FIELDS):
        block: Block = {"type": "section"}
        if start == 0:
            if text:
                block["text"] = mrkdwn(text)
            if block_id:
                block["block_id"] = block_id
        block["fields"] = fields[start : start + MAX_FIELDS]
        blocks.append(block)
    return blocks


def context(*texts: str, block_id: str | None = None) -> Block:
    block: Block = {
        "type": "context",
        "elements": [mrkdwn(t) for t in texts[:MAX_CONTEXT_ELEMENTS]],
    }
    if block_id:
        block["block_id"] = block_id
    return block


def divider() -> Block:
    return {"type": "divider"}


def actions(elements: Sequence[dict[str, Any]], block_id: str) -> Block:
    return {
        "type": "actions",
        "block_id": block_id,
        "elements": list(elements[:MAX_ACTIONS_ELEMENTS]),
    }


def confirm_dialog(
    title: str, text: str, confirm: str = "OK", deny: str = "Cancel", style: str | None = None
) -> dict[str, Any]:
    """Block Kit's confirm object: the second step (**OK**) of an irreversible act.

    Slack documents `text` as plain_text (mrkdwn is accepted but shown raw), so the
    dialog text is plain: `*name*` reads as the name set apart, as in SPEC.md.
    """
    dialog: dict[str, Any] = {
        "title": plain(title, MAX_CONFIRM_TITLE),
        "text": plain(text, MAX_CONFIRM_TEXT),
        "confirm": plain(confirm, MAX_CONFIRM_BUTTON),
        "deny": plain(deny, MAX_CONFIRM_BUTTON),
    }
    if style:
        dialog["style"] = style
    return dialog


def button(
    text: str,
    action_id: str,
    value: str,
    style: str | None = None,
    confirm: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if len(value) > MAX_BUTTON_VALUE:
        raise ValueError(f"a button value is at most {MAX_BUTTON_VALUE} characters")
    element: dict[str, Any] = {
        "type": "button",
        "action_id": action_id,
        "text": plain(text, MAX_BUTTON_TEXT),
        "value": value,
    }
    if style:
        element["style"] = style
    if confirm:
        element["confirm"] = confirm
    return element


def pack_lines(
    lines: Iterable[str], limit: int = MAX_SECTION_TEXT, max_lines: int = 20
) -> list[str]:
    """Lines joined into texts of at most `limit` characters and `max_lines` lines.

    A single line longer than `limit` is truncated; lines are never split otherwise,
    so one row of a list stays in one section.
    """
    chunks: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        line = truncate(line, limit)
        extra = len(line) + (1 if current else 0)
        if current and (size + extra > limit or len(current) >= max_lines):
            chunks.append("\n".join(current))
            current, size = [], 0
            extra = len(line)
        current.append(line)
        size += extra
    if current:
        chunks.append("\n".join(current))
    return chunks


def line_sections(lines: Sequence[str], room: int, more: str, max_lines: int = 20) -> list[Block]:
    """Sections holding `lines`, at most `room` blocks; what does not fit is counted.

    `more` is a format string with `{n}` (lines left out); it becomes a context block
    that takes the last place, so the result never exceeds `room` blocks.
    """
    if room < 1:
        return []
    lines = [line.replace("\n", " ") for line in lines]  # one row, one line: counts hold
    chunks = pack_lines(lines, max_lines=max_lines)
    if len(chunks) <= room:
        return [section(chunk) for chunk in chunks]
    kept = chunks[: room - 1]
    shown = sum(chunk.count("\n") + 1 for chunk in kept)
    return [section(chunk) for chunk in kept] + [context(more.format(n=len(lines) - shown))]


def fallback(text: str) -> str:
    """The message's top-level `text`: notifications and screen readers use it.

    Slack reads it as mrkdwn: the builder has escaped the data in it.
    """
    return truncate(text, MAX_FALLBACK_TEXT)


def message(text: str, blocks: list[Block] | None = None) -> Message:
    """A message: its top-level text (composed mrkdwn, data escaped) and its blocks."""
    built: Message = {"text": fallback(text)}
    if blocks is not None:
        built["blocks"] = blocks
    return built


# --- formats -----------------------------------------------------------------------


def slack_date(at: datetime, fmt: str = "{date_short_pretty} at {time}") -> str:
    """A `<!date^…>` token: each reader sees the moment in their own time zone."""
    aware = at if at.tzinfo else at.replace(tzinfo=UTC)
    fallback_text = f"{aware.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    return f"<!date^{int(aware.timestamp())}^{fmt}|{fallback_text}>"


def count(n: int | None) -> str:
    """12,408; "—" when there is no figure yet."""
    return DASH if n is None else f"{n:,}"


def plural(n: int, word: str, words: str | None = None) -> str:
    """ "1 recipient", "12,408 recipients"."""
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def mention(user_id: str) -> str:
    return f"<@{escape(user_id)}>"


def people(user_ids: Sequence[str]) -> str:
    """ "<@U1>", "<@U1> and <@U2>", "<@U1>, <@U2> and <@U3>"."""
    names = [mention(u) for u in user_ids]
    if not names:
        return "nobody"
    if len(names) == 1:
        return names[0]
    return f"{', '.join(names[:-1])} and {names[-1]}"
