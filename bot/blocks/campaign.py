"""Replies to `/campaign` (SPEC section 9): help, list, prepare, history, roles, refusals.

These replies are ephemeral lists that can grow with the data (every delivery, every
message a profile received), so each builder keeps within Slack's 50 blocks and
3,000 characters per section and says how many rows it left out, instead of letting
Slack refuse the whole reply.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from bot.blocks.card import exclusions_text
from bot.blocks.kit import (
    MAX_BLOCKS,
    Block,
    context,
    count,
    escape,
    field_sections,
    header,
    line_sections,
    local_time,
    parse_time,
    plural,
    section,
    tz_name,
    utc_minute,
)
from bot.domain.kpi import DASH
from bot.domain.roles import Role
from bot.textviews import error_text, warning_text

# (usage, what it does): the help text, and the usage hint of manifest.yml.
SUBCOMMANDS: tuple[tuple[str, str], ...] = (
    ("list", "every delivery with its state, audience and counts"),
    ("status <ref>", "the Deployment block of a delivery: progress, KPIs and its buttons"),
    (
        "prepare <ref>",
        "target the audience, apply exclusions and check every message; nothing is sent",
    ),
    ("history <email>", "the messages a profile received, with their status, opens and clicks"),
    ("roles list", "who holds which role (administration)"),
    ("roles grant @user ROLE", "grant a role to a user or a user group (administration)"),
    ("roles revoke @user ROLE", "revoke it (administration)"),
    ("help", "this list"),
)
USAGE_HINT = "list | status <ref> | prepare <ref> | history <email> | roles … | help"

MAX_LISTED_ERRORS = 10
MAX_LISTED_WARNINGS = 10

_SLACK_USER = re.compile(r"^[UW][A-Z0-9]+$")


def help_blocks() -> list[Block]:
    """Every `/campaign` subcommand with its usage; also the answer to an unknown one."""
    lines = [f"• `/campaign {escape(usage)}` — {escape(what)}" for usage, what in SUBCOMMANDS]
    roles = ", ".join(f"`{r.value}`" for r in Role)
    return [
        header("Greenlight — /campaign"),
        section("\n".join(lines)),
        context(
            f"Roles: {roles}. To confirm a send: `/confirm-send [ref]` (needs `start-deliveries`)."
        ),
    ]


def _schedule_word(schedule: Mapping[str, Any] | None) -> str:
    schedule = schedule or {}
    mode = schedule.get("mode")
    if mode == "recurring":
        return f"recurring ({tz_name(schedule.get('timezone'))})"
    if mode == "at":
        return f"at {local_time(schedule.get('at'), schedule.get('timezone'))}"
    return "on confirm"


def list_line(row: Mapping[str, Any]) -> str:
    """One delivery of `reporting.list_deliveries`, on one line."""
    state = str(row.get("state") or DASH)
    if state == "ready" and not row.get("prepared", True):
        state = "ready, changed since prepared"
    return (
        f"• *{escape(row.get('name') or DASH)}* `{escape(row['ref'])}` — {escape(state)}"
        f" · {escape(row.get('audience') or DASH)}"
        f" · to deliver {count(row.get('to_deliver'))} · sent {count(row.get('sent'))}"
        f" · {_schedule_word(row.get('schedule'))}"
    )


def list_blocks(rows: Sequence[Mapping[str, Any]]) -> list[Block]:
    """`/campaign list`: rows of `reporting.list_deliveries`, in at most 50 blocks.

    Rows are packed into sections of at most 3,000 characters; rows that would need
    more than one message are counted in a last line that names the CLI listing.
    """
    blocks: list[Block] = [header(f"Deliveries ({len(rows):,})")]
    if not rows:
        blocks.append(
            section("No delivery yet. Import some with `python -m bot deliveries import FILE.yml`.")
        )
        return blocks
    blocks += line_sections(
        [list_line(r) for r in rows],
        room=MAX_BLOCKS - len(blocks) - 1,
        more="…and {n} more: `python -m bot deliveries list` shows them all.",
    )
    blocks.append(context("`/campaign status REF` shows one; `/confirm-send REF` confirms one."))
    return blocks


def prepare_result_blocks(result: Mapping[str, Any]) -> list[Block]:
    """`/campaign prepare <ref>`: `PreparationResult.as_dict()` as a reply.

    Shape: ref, state, targeted, excluded, to_deliver, exclusions {reason: n}, errors
    (dicts for `textviews.error_text`), errors_total, warnings (dicts for
    `textviews.warning_text`), duration_s. Critical errors come first, because they
    are what blocks the confirm.
    """
    ref = escape(result["ref"])
    errors = list(result.get("errors") or [])
    errors_total = max(int(result.get("errors_total") or 0), len(errors))
    warnings = list(result.get("warnings") or [])
    to_deliver = int(result.get("to_deliver") or 0)
    if errors_total:
        headline = (
            f":x: *{ref}* has {plural(errors_total, 'critical error')}: it cannot be "
            f"confirmed. Fix the template, then run `/campaign prepare {ref}` again."
        )
    elif to_deliver == 0:
        headline = (
            f":warning: *{ref}* is prepared but has nobody to deliver to: check its audience "
            "and the exclusions below."
        )
    else:
        headline = (
            f":white_check_mark: *{ref}* is prepared: "
            f"{plural(to_deliver, 'recipient')} to deliver. "
            f"Next: `/confirm-send {ref}`."
        )
    duration = result.get("duration_s")
    pairs = [
        ("Targeted", count(result.get("targeted"))),
        (
            "Excluded",
            exclusions_text(result.get("excluded"), result.get("exclusions") or {}),
        ),
        ("To deliver", count(result.get("to_deliver"))),
        ("State", escape(result.get("state") or DASH)),
    ]
    blocks: list[Block] = [section(headline), *field_sections(pairs)]
    if errors:
        lines = [f"• {escape(error_text(e))}" for e in errors[:MAX_LISTED_ERRORS]]
        more = errors_total - len(lines)
        if more > 0:
            lines.append(f"…and {more:,} more")
        blocks.append(section("*Critical errors*\n" + "\n".join(lines)))
    if warnings:
        lines = [f"• {escape(warning_text(w))}" for w in warnings[:MAX_LISTED_WARNINGS]]
        if len(warnings) > MAX_LISTED_WARNINGS:
            lines.append(f"…and {len(warnings) - MAX_LISTED_WARNINGS:,} more")
        blocks.append(section("*Warnings* (they do not block the send)\n" + "\n".join(lines)))
    if duration is not None:
        blocks.append(context(f"Prepared in {float(duration):.1f} s."))
    return blocks


def _status_text(row: Mapping[str, Any]) -> str:
    status = str(row.get("status") or DASH).capitalize()
    detail = [str(x) for x in (row.get("failure_type"), row.get("failure_reason")) if x]
    if detail:
        status += f" ({escape(': '.join(detail))})"
    return status


def history_line(row: Mapping[str, Any]) -> str:
    """One message a profile received, on one line."""
    name = escape(row.get("name") or DASH)
    where = f"*{name}* `{escape(row.get('ref') or DASH)}`"
    execution = row.get("execution")
    if execution and execution != "main":
        where += f" (run `{escape(execution)}`)"
    opens, clicks = int(row.get("opens") or 0), int(row.get("clicks") or 0)
    return (
        f"• {utc_minute(row.get('date'))} — {where} — {_status_text(row)}"
        f" · {plural(opens, 'open')} · {plural(clicks, 'click')}"
    )


def history_blocks(email: str, rows: Sequence[Mapping[str, Any]]) -> list[Block]:
    """`/campaign history <email>`: a profile's marketing history, newest first.

    Each row is a `reporting.marketing_history` dict:
    `{"date": ISO 8601 (relayed, else created), "email": str, "ref": str, "name": str,
    "execution": str ("main" for a one-off delivery), "status": "queued" | "pending" |
    "sent" | "failed" | "ignored", "failure_type": str | None, "failure_reason":
    str | None, "opens": int, "clicks": int}`.
    """
    blocks: list[Block] = [header(f"Marketing history — {email}")]
    if not rows:
        blocks.append(section(f"No message was sent to {escape(email)} yet."))
        return blocks
    blocks += line_sections(
        [history_line(r) for r in rows],
        room=MAX_BLOCKS - len(blocks) - 1,
        more="…and {n} older messages not shown.",
    )
    blocks.append(context(f"{plural(len(rows), 'message')}, newest first; times in UTC."))
    return blocks


def _subject(grant: Mapping[str, Any]) -> str:
    ident = escape(grant.get("subject_id") or DASH)
    if grant.get("subject_kind") == "usergroup":
        return f"<!subteam^{ident}>"
    return f"<@{ident}>"


def _granted_by(by: str | None) -> str:
    if not by:
        return "unknown"
    return f"<@{by}>" if _SLACK_USER.match(by) else f"`{escape(by)}`"


def roles_blocks(grants: Sequence[Mapping[str, Any]]) -> list[Block]:
    """`/campaign roles list`: `Grant.as_dict()` rows, grouped by role.

    Shape: `{"subject_kind": "user" | "usergroup", "subject_id": str, "role": str,
    "granted_by": str | None, "granted_at": ISO 8601}`.
    """
    blocks: list[Block] = [header("Roles")]
    if not grants:
        blocks.append(
            section(
                "Nobody holds a role yet. The first administrator is granted from the "
                "command line: `python -m bot roles grant USER_ID administration`."
            )
        )
        return blocks
    order = {r.value: i for i, r in enumerate(Role)}
    by_role: dict[str, list[Mapping[str, Any]]] = {}
    for g in grants:
        by_role.setdefault(str(g.get("role")), []).append(g)
    lines: list[str] = []
    for role in sorted(by_role, key=lambda r: (order.get(r, len(order)), r)):
        lines.append(f"*{escape(role)}*")
        for g in by_role[role]:
            at = parse_time(g.get("granted_at"))
            when = f" on {at:%Y-%m-%d}" if at else ""
            lines.append(f"• {_subject(g)} — granted by {_granted_by(g.get('granted_by'))}{when}")
    blocks += line_sections(
        lines, room=MAX_BLOCKS - len(blocks) - 1, more="…and {n} more lines.", max_lines=30
    )
    blocks.append(
        context("`/campaign roles grant @user ROLE` · `/campaign roles revoke @user ROLE`")
    )
    return blocks


def error_blocks(message: str) -> list[Block]:
    """An ephemeral refusal: what went wrong and what to do (the message says both).

    Mentions and links in the message stay live; anything else that looks like markup
    is escaped, since messages can quote what the person typed.
    """
    return [section(f":warning: {escape(message, keep_tokens=True)}")]
