"""Slack's mrkdwn and plain_text, drawn as HTML the way Slack's clients show them.

Greenlight escapes `&`, `<` and `>` in every piece of data it puts in a message
(`bot.blocks.kit.escape`), so in what it sends a raw `<` only ever opens a token it
wrote itself: a user mention, a channel, a special mention, a date, a link. Text is
therefore read in two passes: the tokens first, then the text between them, whose
three entities are decoded and then escaped again for HTML. Nothing of a message can
become markup of the page: every piece of text leaves this module through
`html.escape`, and a link keeps only an http(s) or mailto target.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from datetime import UTC, datetime

EMOJI = {
    "white_check_mark": "✅",
    "warning": "⚠️",
    "x": "❌",
    "no_entry": "⛔",
    "fast_forward": "⏩",
    "hourglass": "⌛",
    "hourglass_flowing_sand": "⏳",
    "bar_chart": "📊",
    "chart_with_upwards_trend": "📈",
    "rocket": "🚀",
    "pause_button": "⏸️",
    "octagonal_sign": "🛑",
    "email": "📧",
    "tada": "🎉",
}

_TOKEN = re.compile(r"<([^<>\n]{1,2000})>")
_CODE_BLOCK = re.compile(r"```(.+?)```", re.S)
_CODE = re.compile(r"`([^`\n]+)`")
_BOLD = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_ITALIC = re.compile(r"(?<![\w_])_(?=\S)([^_\n]+?)(?<=\S)_(?![\w_])")
_STRIKE = re.compile(r"(?<![\w~])~(?=\S)([^~\n]+?)(?<=\S)~(?![\w~])")
_EMOJI = re.compile(r":([a-z0-9_+-]{1,40}):")
_SAFE_URL = re.compile(r"^(https?://|mailto:)", re.I)

# Slack's <!date^…> format tokens, in the reader's zone (the page's browser sets it).
_DATE_TOKENS = {
    "{date_num}": "%Y-%m-%d",
    "{date}": "%B %-d, %Y",
    "{date_short}": "%b %-d, %Y",
    "{date_long}": "%A, %B %-d, %Y",
    "{date_pretty}": "%B %-d, %Y",
    "{date_short_pretty}": "%b %-d, %Y",
    "{date_long_pretty}": "%A, %B %-d, %Y",
    "{time}": "%H:%M",
    "{time_secs}": "%H:%M:%S",
}

Names = Mapping[str, str]  # Slack id (U…, C…, S…) -> display name


def unescape(text: str) -> str:
    """Slack's three entities, decoded: what a reader sees of `&lt;`."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def plain_html(text: str) -> str:
    """A plain_text object's text: entities decoded, then escaped for HTML, lines kept."""
    return html.escape(unescape(text)).replace("\n", "<br>")


def _date(token: str) -> str:
    """`!date^EPOCH^FORMAT[^LINK]|FALLBACK` as a <time> the page's script localises."""
    spec, _, fallback = token.partition("|")
    parts = spec.split("^")
    try:
        stamp = datetime.fromtimestamp(int(parts[1]), UTC)
        fmt = parts[2]
    except (IndexError, ValueError, OverflowError, OSError):
        return html.escape(unescape(fallback or token))
    text = fmt
    for name, pattern in _DATE_TOKENS.items():
        text = text.replace(name, stamp.strftime(pattern))
    return (
        f'<time class="mk-date" datetime="{stamp.isoformat()}" '
        f'data-format="{html.escape(fmt, quote=True)}" title="{html.escape(unescape(fallback))}">'
        f"{html.escape(unescape(text))} UTC</time>"
    )


def _token(token: str, names: Names) -> str:
    label = ""
    if "|" in token and not token.startswith("!date^"):
        token, label = token.split("|", 1)
    if token.startswith("@"):
        who = names.get(token[1:], token[1:])
        return f'<span class="mk-mention">@{html.escape(unescape(label or who))}</span>'
    if token.startswith("#"):
        where = names.get(token[1:], token[1:])
        return f'<span class="mk-channel">#{html.escape(unescape(label or where))}</span>'
    if token.startswith("!date^"):
        return _date(token)
    if token.startswith("!subteam^"):
        group = token.split("^", 1)[1]
        return f'<span class="mk-mention">@{html.escape(unescape(label or group))}</span>'
    if token in ("!here", "!channel", "!everyone"):
        return f'<span class="mk-mention mk-broadcast">@{token[1:]}</span>'
    url = unescape(token)
    if _SAFE_URL.match(url):
        shown = html.escape(unescape(label or token))
        return (
            f'<a href="{html.escape(url, quote=True)}" target="_blank" '
            f'rel="noopener noreferrer">{shown}</a>'
        )
    return html.escape(unescape(f"<{token}>"))


def _inline(text: str) -> str:
    """Bold, italic, strike and emoji on text already escaped for HTML."""
    text = _BOLD.sub(r"<b>\1</b>", text)
    text = _ITALIC.sub(r"<i>\1</i>", text)
    text = _STRIKE.sub(r"<s>\1</s>", text)
    return _EMOJI.sub(lambda m: EMOJI.get(m.group(1), m.group(0)), text)


def _formatted(text: str, names: Names) -> str:
    """Text without code: tokens kept apart from the formatting of what lies between."""
    out: list[str] = []
    tokens: list[str] = []
    for piece_index, piece in enumerate(_TOKEN.split(text)):
        if piece_index % 2:
            tokens.append(_token(piece, names))
            out.append(f"\x00{len(tokens) - 1}\x00")
        else:
            out.append(html.escape(unescape(piece)))
    joined = _inline("".join(out))
    return re.sub(r"\x00(\d+)\x00", lambda m: tokens[int(m.group(1))], joined)


def _with_code(text: str, names: Names) -> str:
    out: list[str] = []
    last = 0
    for found in _CODE.finditer(text):
        out.append(_formatted(text[last : found.start()], names))
        out.append(f"<code>{html.escape(unescape(found.group(1)))}</code>")
        last = found.end()
    out.append(_formatted(text[last:], names))
    return "".join(out)


def _quote_lines(rendered: str) -> str:
    lines = rendered.split("\n")
    out: list[str] = []
    for line in lines:
        if line.startswith("&gt; ") or line == "&gt;":
            out.append(f'<span class="mk-quote">{line[5:]}</span>')
        else:
            out.append(line)
    return "<br>".join(out)


def mrkdwn_html(text: str, names: Names | None = None) -> str:
    """A mrkdwn text as Slack shows it: tokens, code, *bold*, _italic_, ~strike~, quotes."""
    names = names or {}
    out: list[str] = []
    last = 0
    for found in _CODE_BLOCK.finditer(text):
        out.append(_quote_lines(_with_code(text[last : found.start()], names)))
        out.append(f"<pre>{html.escape(unescape(found.group(1)))}</pre>")
        last = found.end()
    out.append(_quote_lines(_with_code(text[last:], names)))
    return "".join(out)
