"""The `/confirm-send` card and the picker of ready deliveries (SPEC sections 3 and 9).

The card shows what a person needs to decide to send (who gets it, who does not and
why, when it leaves, how long feedback is followed) and offers **Confirm send** only
when the delivery can be confirmed. The confirm dialog then says exactly what OK will
do, because OK is the moment of no return.

Inputs are the typed views of `bot.services.deliveries.views` (a `Card` and the
`DeliverySummary` rows of the picker); nothing here reads the database.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bot.blocks import ids
from bot.blocks.kit import (
    MAX_CONFIRM_TEXT,
    MAX_OPTION_TEXT,
    MAX_OPTION_VALUE,
    MAX_PLACEHOLDER,
    MAX_SELECT_OPTIONS,
    Block,
    Message,
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
    mention,
    message,
    plain,
    plural,
    section,
    truncate,
    tz_name,
)
from bot.domain.exclusions import ExclusionReason
from bot.domain.kpi import DASH
from bot.domain.schedule import Aggregation, ScheduleKind
from bot.domain.waves import describe_local, span_text
from bot.services.deliveries.proofs import ProofSent
from bot.services.deliveries.views import Card, DeliveryDetail, DeliverySummary


def schedule_text(detail: DeliveryDetail) -> str:
    """When the delivery leaves, in mrkdwn: "as soon as confirmed", a local time, or a cron."""
    recurrence = detail.recurrence
    if recurrence:
        text = f"recurring: `{escape(recurrence.cron)}` {tz_name(recurrence.timezone)}"
        if recurrence.aggregation is not Aggregation.NONE:
            text += f", one execution per {escape(recurrence.aggregation.value)}"
        return text
    if detail.schedule.mode is ScheduleKind.AT:
        return local_time(detail.schedule.at, detail.schedule.timezone)
    if detail.schedule.mode is ScheduleKind.RECIPIENT_LOCAL:
        text = escape(describe_local(detail.schedule.local, detail.schedule.timezone))
        if detail.waves:
            text += f"\n{escape(span_text([w.wave for w in detail.waves]))}"
        return text
    return "as soon as confirmed"


def exclusions_text(total: int | None, by_reason: Mapping[ExclusionReason, int]) -> str:
    """ "7" then one line per reason, largest first: "duplicate address: 4"."""
    if total is None:
        return DASH
    if not by_reason:
        return count(total) if total else "none"
    ordered = sorted(by_reason.items(), key=lambda item: (-item[1], item[0]))
    lines = [f"{escape(reason.value)}: {n:,}" for reason, n in ordered]
    return "\n".join([count(total), *lines])


def confirm_text(detail: DeliveryDetail) -> str:
    """The OK dialog's sentence: exactly what will happen (SPEC section 9).

    "Send *Spring sale* to 12,408 recipients now." or "… at 09:00 Europe/Paris on
    Fri 27 Nov 2026." The name is shortened, never the count or the moment.
    """
    who = plural(detail.preparation.to_deliver, "recipient")
    if detail.recurrence:
        recurrence = detail.recurrence
        when = f"on its schedule ({recurrence.cron} {tz_name(recurrence.timezone)})"
    elif detail.schedule.mode is ScheduleKind.AT:
        when = f"at {local_time(detail.schedule.at, detail.schedule.timezone)}"
    elif detail.schedule.mode is ScheduleKind.RECIPIENT_LOCAL:
        waves = [w.wave for w in detail.waves]
        when = f"at {describe_local(detail.schedule.local, detail.schedule.timezone)}"
        when += f", in {span_text(waves)}" if waves else ""
    else:
        when = "now"
    template = f"Send *{{}}* to {who} {when}."
    return fit(template, detail.name, MAX_CONFIRM_TEXT)


def confirm_button(detail: DeliveryDetail) -> dict[str, object]:
    """**Confirm send**, whose OK dialog is the second step of the confirmation."""
    return button(
        "Confirm send",
        ids.CONFIRM_SEND,
        ids.button_value(detail.ref),
        style="primary",
        confirm=confirm_dialog("Confirm send", confirm_text(detail)),
    )


# How much of the text part the card shows: enough to recognise the message; the
# **Preview** page has all of it.
SAMPLE_TEXT_CHARS = 300


def sample_lines(card: Card) -> list[str]:
    """The start of the text part as its sample profile gets it, and the **Preview** link.

    The text is data (templates and profile fields), so it is escaped and cut after
    escaping; the link is Greenlight's own URL (base64url token), escaped all the same.
    """
    lines = []
    if card.sample_text:
        start = truncate(escape(" ".join(card.sample_text.split())), SAMPLE_TEXT_CHARS)
        lines.append(f"Text for {escape(card.sample_for or '')}: {start}")
    if card.preview_url:
        lines.append(
            f"<{escape(card.preview_url)}|Preview> the subject, text and HTML as they will"
            " leave (the link works for a limited time)"
        )
    return lines


def proof_button(detail: DeliveryDetail) -> dict[str, object]:
    """**Send me a proof**: the message for the card's sample profile, to the clicker."""
    return button("Send me a proof", ids.SEND_PROOF, ids.button_value(detail.ref))


def proof_sent_message(sent: ProofSent) -> Message:
    """The private answer to a proof: where it went, and for whom it was rendered."""
    to = ", ".join(escape(a) for a in sent.to)
    text = (
        f":envelope: A proof of *{escape(sent.ref)}* (as {escape(sent.profile)} gets it) "
        f"went to {to}: “{escape(sent.subject)}”. It is not counted anywhere."
    )
    if sent.refused:
        text += "\nThe relay refused it for " + "; ".join(escape(r) for r in sent.refused)
    return message(text)


def delivery_card(card: Card) -> list[Block]:
    """The card of one delivery, with **Confirm send** when it can be confirmed.

    With a reason it cannot (`card.not_ready`), the card says it instead of showing a
    button that would only be refused.
    """
    detail = card.detail
    prep = detail.preparation
    state = detail.state.value
    if prep.prepared and not prep.current:
        state += " (changed since it was prepared)"
    pairs = [
        ("State", escape(state)),
        ("Audience", escape(detail.audience or DASH)),
        ("To deliver", count(prep.to_deliver) if prep.prepared else "not prepared yet"),
        ("Exclusions", exclusions_text(prep.excluded, prep.exclusions) if prep.prepared else DASH),
        ("Schedule", schedule_text(detail)),
        ("Validity", escape(detail.validity or DASH)),
        ("EFS", "on" if detail.efs else "off"),
    ]
    blocks: list[Block] = [header(f"{detail.name} ({detail.ref})")]
    blocks += field_sections(pairs)
    about = [f"From {escape(detail.sender)}"] if detail.sender else []
    if card.sample_subject is not None and card.sample_subject != detail.subject:
        about.append(
            f"Subject: {escape(card.sample_subject)} (for {escape(card.sample_for or '')};"
            f" template: {escape(detail.subject)})"
        )
    elif detail.subject:
        about.append(f"Subject: {escape(detail.subject)}")
    if about:
        blocks.append(context(" · ".join(about)))
    blocks += [context(line) for line in sample_lines(card)]
    return blocks + card_actions(card)


def card_actions(card: Card) -> list[Block]:
    """**Confirm send** when it can be confirmed (else why not), and **Send me a
    proof** wherever the card could render the message for someone."""
    detail = card.detail
    proof = [proof_button(detail)] if card.sample_subject is not None else []
    if card.not_ready is None:
        return [actions([confirm_button(detail), *proof], ids.CARD_ACTIONS_BLOCK)]
    refused = context(f":no_entry: {escape(card.not_ready)}")
    return [refused, actions(proof, ids.CARD_ACTIONS_BLOCK)] if proof else [refused]


def card_message(card: Card) -> Message:
    """`/confirm-send REF`: the card, for the person who asked."""
    return message(f"{escape(card.detail.name)} ({escape(card.detail.ref)})", delivery_card(card))


def picker_message(rows: Sequence[DeliverySummary]) -> Message:
    return message("Pick a delivery", delivery_picker(rows))


def confirmed_message(user: str, ref: str, outcome: str) -> Message:
    """What replaces the card once its OK is clicked: who confirmed, and what happens now.

    `outcome` is Greenlight's sentence ("sending now", "it starts by itself …").
    """
    return message(f"{mention(user)} confirmed *{escape(ref)}*: {outcome}")


def picker_option(row: DeliverySummary) -> dict[str, object]:
    """ "Spring sale (spring-sale) — 12,408 recipients"; the name gives way if too long."""
    suffix = f" ({row.ref}) — {plural(row.to_deliver, 'recipient')}"
    room = MAX_OPTION_TEXT - len(suffix)
    name = row.name
    text = truncate(name, room) + suffix if room >= 2 else truncate(name + suffix, MAX_OPTION_TEXT)
    return {"text": plain(text, MAX_OPTION_TEXT), "value": row.ref}


def delivery_picker(rows: Sequence[DeliverySummary]) -> list[Block]:
    """`/confirm-send` without a ref: pick one of the ready deliveries (`rows`).

    Slack allows 100 options, of at most 150 characters: beyond that the message says
    how to name one directly.
    """
    ready = [r for r in rows if len(r.ref) <= MAX_OPTION_VALUE]
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
