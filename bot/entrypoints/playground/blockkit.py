"""Block Kit drawn as HTML: every block and element Greenlight sends, as Slack shows it.

Greenlight sends headers, sections (text, fields, an accessory), context, dividers,
actions, buttons (styles, confirm dialogs) and static selects; images are drawn too,
for the files a message shares. A block of another kind is drawn as a visible
"unsupported" note, never dropped: the tests draw every message Greenlight builds and
fail on it.

Interactive elements carry what the page's script needs to send the action as
Slack would (`data-action`: the element as JSON, its confirm dialog included); the
script shows the dialog and sends nothing until OK is clicked, as Slack does.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from typing import Any

from bot.entrypoints.playground.mrkdwn import Names, mrkdwn_html, plain_html

Block = dict[str, Any]


def _attr(value: object) -> str:
    return html.escape(json.dumps(value, ensure_ascii=False), quote=True)


def text_html(text: object, names: Names) -> str:
    """A text object: plain_text or mrkdwn."""
    if not isinstance(text, dict):
        return ""
    body = str(text.get("text") or "")
    if text.get("type") == "mrkdwn":
        return mrkdwn_html(body, names)
    return plain_html(body)


def _button(element: dict[str, Any], block_id: str, names: Names) -> str:
    style = element.get("style")
    css = f"bk-button bk-{style}" if style in ("primary", "danger") else "bk-button"
    action = {
        "type": "button",
        "action_id": element.get("action_id", ""),
        "block_id": block_id,
        "value": element.get("value", ""),
        "text": element.get("text"),
        "confirm": element.get("confirm"),
    }
    return (
        f'<button type="button" class="{css}" data-action="{_attr(action)}">'
        f"{text_html(element.get('text'), names)}</button>"
    )


def _static_select(element: dict[str, Any], block_id: str, names: Names) -> str:
    action = {
        "type": "static_select",
        "action_id": element.get("action_id", ""),
        "block_id": block_id,
        "confirm": element.get("confirm"),
    }
    placeholder = element.get("placeholder") or {"type": "plain_text", "text": "Select"}
    options = [f'<option value="" disabled selected>{text_html(placeholder, names)}</option>']
    groups = element.get("option_groups")
    flat: list[dict[str, Any]] = list(element.get("options") or [])
    for group in groups or []:
        flat.extend(group.get("options") or [])
    for option in flat:
        value = html.escape(str(option.get("value", "")), quote=True)
        options.append(f'<option value="{value}">{text_html(option.get("text"), names)}</option>')
    return f'<select class="bk-select" data-action="{_attr(action)}">{"".join(options)}</select>'


def _image(element: dict[str, Any], css: str) -> str:
    url = str(element.get("image_url") or element.get("url") or "")
    alt = html.escape(str(element.get("alt_text") or ""), quote=True)
    if not url.startswith(("http://", "https://", "/")):
        return f'<span class="{css} bk-missing">[image: {alt}]</span>'
    return f'<img class="{css}" src="{html.escape(url, quote=True)}" alt="{alt}">'


def element_html(element: dict[str, Any], block_id: str, names: Names) -> str:
    kind = element.get("type")
    if kind == "button":
        return _button(element, block_id, names)
    if kind == "static_select":
        return _static_select(element, block_id, names)
    if kind == "image":
        return _image(element, "bk-thumb")
    if kind in ("mrkdwn", "plain_text"):
        return f'<span class="bk-text">{text_html(element, names)}</span>'
    return f'<span class="bk-unsupported">unsupported element {html.escape(str(kind))}</span>'


def block_html(block: Block, names: Names) -> str:
    kind = block.get("type")
    block_id = str(block.get("block_id") or "")
    if kind == "header":
        return f'<div class="bk-header">{text_html(block.get("text"), names)}</div>'
    if kind == "divider":
        return '<hr class="bk-divider">'
    if kind == "section":
        parts = []
        if block.get("text"):
            parts.append(f'<div class="bk-section-text">{text_html(block["text"], names)}</div>')
        fields = block.get("fields") or []
        if fields:
            cells = "".join(f'<div class="bk-field">{text_html(f, names)}</div>' for f in fields)
            parts.append(f'<div class="bk-fields">{cells}</div>')
        body = f'<div class="bk-section-body">{"".join(parts)}</div>'
        accessory = block.get("accessory")
        if isinstance(accessory, dict):
            side = element_html(accessory, block_id, names)
            body += f'<div class="bk-accessory">{side}</div>'
        return f'<div class="bk-section">{body}</div>'
    if kind == "context":
        items = "".join(element_html(e, block_id, names) for e in block.get("elements") or [])
        return f'<div class="bk-context">{items}</div>'
    if kind == "actions":
        items = "".join(element_html(e, block_id, names) for e in block.get("elements") or [])
        return f'<div class="bk-actions">{items}</div>'
    if kind == "image":
        title = block.get("title")
        caption = f'<div class="bk-image-title">{text_html(title, names)}</div>' if title else ""
        return f'<div class="bk-image">{caption}{_image(block, "bk-picture")}</div>'
    return f'<div class="bk-unsupported">unsupported block {html.escape(str(kind))}</div>'


def message_html(text: str, blocks: Sequence[Block] | None, names: Names) -> str:
    """A message as a client shows it: its blocks, or its `text` when it has none."""
    if not blocks:
        return f'<div class="bk-section-text">{mrkdwn_html(text, names)}</div>'
    return "".join(block_html(b, names) for b in blocks if isinstance(b, dict))
