"""The `/confirm-send` card and the picker of ready deliveries (SPEC sections 3 and 9).

The card shows what a person needs to decide to send (who gets it, who does not and
why, when it leaves, how long feedback is followed) and offers **Confirm send** only
when the delivery can be confirmed. The confirm dialog then says exactly what OK will
do, because OK is the moment of no return.

Inputs are the dicts of `bot.services.reporting` (`delivery_detail` and the rows of
`list_deliveries`, README "JSON output"); nothing here reads the database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bot.blocks import ids
from bot.blocks.kit import (
    MAX_CONFIRM_TEXT,
    MAX_OPTION_TEXT,
    MAX_OPTION_VALUE,
    MAX_PLACEHOLDER,
    MAX_SELECT_OPTIONS,
    Block,
    actions,
    button,
    confirm_dialog,
    context,
    count,
    escape,
    field_sections,
    fit,
    header,
    local_time,
    plain,
    plural,
    section,
    truncate,
    tz_name,
)
from bot.domain.kpi import DASH


def schedule_text(detail: Mapping[str, Any]) -> str:
    """When the delivery leaves, in mrkdwn: "as soon as confirmed", a local time, or a cron."""
    recurrence = detail.get("recurrence")
    if recurrence:
        text = f"recurring: `{escape(recurrence['cron'])}` {tz_name(recurrence.get('timezone'))}"
        aggregation = recurrence.get("aggregation")
        if aggregation and aggregation != "none":
            text += f", one execution per {escape(aggregation)}"
        return text
    schedule = detail.get("schedule") or {}
    if schedule.get("mode") == "at":
        return local_time(schedule.get("at"), schedule.get("timezone"))
    return "as soon as confirmed"


def to_deliver(detail: Mapping[str, Any]) -> int:
    """The "To deliver" figure of the last preparation (0 when never prepared)."""
    prep = detail.get("preparation") or {}
    value = prep.get("to_deliver")
    if value is None:
        value = (detail.get("kpis") or {}).get("to_deliver")
    return int(value or 0)


def exclusions_text(total: int | None, by_reason: Mapping[str, int]) -> str:
    """ "7" then one line per reason, largest first: "duplicate address: 4"."""
    if total is None:
        return DASH
    if not by_reason:
        return count(total) if total else "none"
    ordered = sorted(by_reason.items(), key=lambda item: (-item[1], item[0]))
    lines = [f"{escape(reason)}: {n:,}" for reason, n in ordered]
    return "\n".join([count(total), *lines])


def confirm_text(detail: Mapping[str, Any]) -> str:
    """The OK dialog's sentence: exactly what will happen (SPEC section 9).

    "Send *Spring sale* to 12,408 recipients now." or "… at 09:00 Europe/Paris on
    Fri 27 Nov 2026." The name is shortened, never the count or the moment.
    """
    who = plural(to_deliver(detail), "recipient")
    schedule = detail.get("schedule") or {}
    if detail.get("recurrence"):
        recurrence = detail["recurrence"]
        when = f"on its schedule ({recurrence['cron']} {tz_name(recurrence.get('timezone'))})"
    elif schedule.get("mode") == "at":
        when = f"at {local_time(schedule.get('at'), schedule.get('timezone'))}"
    else:
        when = "now"
    template = f"Send *{{}}* to {who} {when}."
    return fit(template, str(detail["name"]), MAX_CONFIRM_TEXT)


def confirm_button(detail: Mapping[str, Any]) -> dict[str, Any]:
    """**Confirm send**, whose OK dialog is the second step of the confirmation."""
    return button(
        "Confirm send",
        ids.CONFIRM_SEND,
        ids.button_value(detail["ref"]),
        style="primary",
        confirm=confirm_dialog("Confirm send", confirm_text(detail)),
    )


def delivery_card(detail: Mapping[str, Any], not_ready: str | None) -> list[Block]:
    """The card of one delivery, from `reporting.delivery_detail`.

    `not_ready` is `sending.not_ready_reason` (None when it can be confirmed): with a
    reason, the card says it instead of showing a button that would only be refused.
    """
    prep = detail.get("preparation") or {}
    prepared = prep.get("prepared_at") is not None
    state = str(detail.get("state") or DASH)
    if prepared and not prep.get("current", True):
        state += " (changed since it was prepared)"
    pairs = [
        ("State", escape(state)),
        ("Audience", escape(detail.get("audience") or DASH)),
        ("To deliver", count(to_deliver(detail)) if prepared else "not prepared yet"),
        (
            "Exclusions",
            exclusions_text(prep.get("excluded"), prep.get("exclusions") or {})
            if prepared
            else DASH,
        ),
        ("Schedule", schedule_text(detail)),
        ("Validity", escape(detail.get("validity") or DASH)),
        ("EFS", "on" if detail.get("efs") else "off"),
    ]
    blocks: list[Block] = [header(f"{detail['name']} ({detail['ref']})")]
    blocks += field_sections(pairs)
    about = []
    if detail.get("from"):
        about.append(f"From {escape(detail['from'])}")
    if detail.get("subject"):
        about.append(f"Subject: {escape(detail['subject'])}")
    if about:
        blocks.append(context(" · ".join(about)))
    if not_ready is None:
        blocks.append(actions([confirm_button(detail)], ids.CARD_ACTIONS_BLOCK))
    else:
        blocks.append(context(f":no_entry: {escape(not_ready, keep_tokens=True)}"))
    return blocks


def picker_option(row: Mapping[str, Any]) -> dict[str, Any]:
    """ "Spring sale (spring-sale) — 12,408 recipients"; the name gives way if too long."""
    name = str(row["name"])
    suffix = f" ({row['ref']}) — {plural(int(row.get('to_deliver') or 0), 'recipient')}"
    room = MAX_OPTION_TEXT - len(suffix)
    text = truncate(name, room) + suffix if room >= 2 else truncate(name + suffix, MAX_OPTION_TEXT)
    return {"text": plain(text, MAX_OPTION_TEXT), "value": str(row["ref"])}


def delivery_picker(rows: Sequence[Mapping[str, Any]]) -> list[Block]:
    """`/confirm-send` without a ref: pick one of the ready deliveries.

    `rows` are `reporting.list_deliveries` rows; only those ready and prepared for
    their current content are offered. Slack allows 100 options: beyond that the
    message says how to name one directly.
    """
    ready = [
        r
        for r in rows
        if r.get("state") == "ready"
        and r.get("prepared", True)
        and len(str(r["ref"])) <= MAX_OPTION_VALUE
    ]
    if not ready:
        return [
            section(
                "No delivery is ready to confirm. Prepare one with `/campaign prepare REF` "
                "(`/campaign list` shows every delivery and its state), then run "
                "`/confirm-send REF`."
            )
        ]
    options = [picker_option(r) for r in ready[:MAX_SELECT_OPTIONS]]
    select = {
        "type": "static_select",
        "action_id": ids.PICK_DELIVERY,
        "placeholder": plain("Choose a ready delivery", MAX_PLACEHOLDER),
        "options": options,
    }
    blocks: list[Block] = [
        section(
            f"*{plural(len(ready), 'delivery is', 'deliveries are')} ready to confirm.* "
            "Pick one to see its card.",
            block_id=ids.PICKER_BLOCK,
            accessory=select,
        )
    ]
    if len(ready) > MAX_SELECT_OPTIONS:
        blocks.append(
            context(
                f"The list shows the first {MAX_SELECT_OPTIONS} of {len(ready):,}; "
                "for another one, run `/confirm-send REF`."
            )
        )
    return blocks
