"""Replies to `/campaign` (SPEC section 9): help, list, prepare, history, audit, roles, refusals.

These replies are ephemeral lists that can grow with the data (every delivery, every
message a profile received), so each builder keeps within Slack's 50 blocks and
3,000 characters per section and says how many rows it left out, instead of letting
Slack refuse the whole reply.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from bot.blocks import ids
from bot.blocks.card import exclusions_text
from bot.blocks.kit import (
    MAX_BLOCKS,
    Block,
    Message,
    actions,
    button,
    context,
    count,
    escape,
    field_sections,
    header,
    line_sections,
    local_time,
    message,
    plural,
    section,
    slack_date,
    truncate,
    tz_name,
    utc_minute,
)
from bot.domain.executions import MAIN_KEY
from bot.domain.kpi import DASH
from bot.domain.lifecycle import DeliveryState
from bot.domain.roles import Role, SubjectKind
from bot.domain.schedule import ScheduleKind
from bot.domain.waves import describe_local
from bot.services.audit import AuditPage, AuditRecord
from bot.services.deliveries.prepare import PreparationResult
from bot.services.deliveries.views import DeliverySummary, HistoryEntry, Schedule
from bot.services.roles import Grant

# (usage, what it does): the help text, and the usage hint of manifest.yml.
SUBCOMMANDS: tuple[tuple[str, str], ...] = (
    ("list", "every delivery with its state, audience and counts"),
    ("status <ref>", "the Deployment block of a delivery: progress, KPIs and its buttons"),
    (
        "prepare <ref>",
        "target the audience, apply exclusions and check every message; nothing is sent",
    ),
    ("history <email>", "the messages a profile received, with their status, opens and clicks"),
    (
        "proof <ref> [email]",
        "send yourself the message as that profile (or the first) gets it, marked [Proof]",
    ),
    (
        "audit <ref> [page N]",
        "who imported, prepared, confirmed, approved, paused or stopped it, and when",
    ),
    ("audit [page N]", "every entry of the audit trail (administration)"),
    ("roles list", "who holds which role (administration)"),
    ("roles grant @user ROLE", "grant a role to a user or a user group (administration)"),
    ("roles revoke @user ROLE", "revoke it (administration)"),
    ("help", "this list"),
)
USAGE_HINT = (
    "list | status <ref> | prepare <ref> | proof <ref> [email] | history <email> | "
    "audit [ref] | roles … | help"
)

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


def _schedule_word(schedule: Schedule) -> str:
    if schedule.mode is ScheduleKind.RECURRING:
        return f"recurring ({tz_name(schedule.timezone)})"
    if schedule.mode is ScheduleKind.AT:
        return f"at {local_time(schedule.at, schedule.timezone)}"
    if schedule.mode is ScheduleKind.RECIPIENT_LOCAL:
        return f"at {describe_local(schedule.local, schedule.timezone)}"
    return "on confirm"


def list_line(row: DeliverySummary) -> str:
    """One delivery of `deliveries.list_deliveries`, on one line."""
    state = row.state.value
    if row.state is DeliveryState.READY and not row.prepared:
        state = "ready, changed since prepared"
    return (
        f"• *{escape(row.name or DASH)}* `{escape(row.ref)}` — {escape(state)}"
        f" · {escape(row.audience or DASH)}"
        f" · to deliver {count(row.to_deliver)} · sent {count(row.sent)}"
        f" · {_schedule_word(row.schedule)}"
    )


def list_blocks(rows: Sequence[DeliverySummary]) -> list[Block]:
    """`/campaign list`, in at most 50 blocks.

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


def _headline(result: PreparationResult) -> str:
    ref = escape(result.ref)
    errors_total = max(result.errors_total, len(result.errors))
    if errors_total:
        return (
            f":x: *{ref}* has {plural(errors_total, 'critical error')}: it cannot be "
            f"confirmed. Fix the template, then run `/campaign prepare {ref}` again."
        )
    if result.to_deliver == 0:
        return (
            f":warning: *{ref}* is prepared but has nobody to deliver to: check its audience "
            "and the exclusions below."
        )
    return (
        f":white_check_mark: *{ref}* is prepared: "
        f"{plural(result.to_deliver, 'recipient')} to deliver. "
        f"Next: `/confirm-send {ref}`."
    )


def prepare_result_blocks(result: PreparationResult) -> list[Block]:
    """`/campaign prepare <ref>`: the preparation's figures, errors first.

    Critical errors come first, because they are what blocks the confirm.
    """
    pairs = [
        ("Targeted", count(result.targeted)),
        ("Excluded", exclusions_text(result.excluded, result.exclusions)),
        ("To deliver", count(result.to_deliver)),
        ("State", escape(result.state.value)),
    ]
    blocks: list[Block] = [section(_headline(result)), *field_sections(pairs)]
    if result.errors:
        lines = [f"• {escape(e.describe())}" for e in result.errors[:MAX_LISTED_ERRORS]]
        more = max(result.errors_total, len(result.errors)) - len(lines)
        if more > 0:
            lines.append(f"…and {more:,} more")
        blocks.append(section("*Critical errors*\n" + "\n".join(lines)))
    if result.warnings:
        lines = [f"• {escape(w.describe())}" for w in result.warnings[:MAX_LISTED_WARNINGS]]
        if len(result.warnings) > MAX_LISTED_WARNINGS:
            lines.append(f"…and {len(result.warnings) - MAX_LISTED_WARNINGS:,} more")
        blocks.append(section("*Warnings* (they do not block the send)\n" + "\n".join(lines)))
    blocks.append(context(f"Prepared in {result.duration_s:.1f} s."))
    return blocks


def _status_text(row: HistoryEntry) -> str:
    status = row.status.value.capitalize()
    detail = [str(x) for x in (row.failure_type, row.failure_reason) if x]
    if detail:
        status += f" ({escape(': '.join(detail))})"
    return status


def history_line(row: HistoryEntry) -> str:
    """One message a profile received, on one line."""
    where = f"*{escape(row.name or DASH)}* `{escape(row.ref or DASH)}`"
    if row.execution and row.execution != MAIN_KEY:
        where += f" (run `{escape(row.execution)}`)"
    return (
        f"• {utc_minute(row.date)} — {where} — {_status_text(row)}"
        f" · {plural(row.opens, 'open')} · {plural(row.clicks, 'click')}"
    )


def history_blocks(email: str, rows: Sequence[HistoryEntry]) -> list[Block]:
    """`/campaign history <email>`: a profile's marketing history, newest first."""
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


# audit action -> what a person reads; an action not listed is shown as it is stored.
AUDIT_VERBS: dict[str, str] = {
    "delivery.create": "imported",
    "delivery.update": "re-imported",
    "prepare": "prepared",
    "delivery.confirm": "confirmed",
    "delivery.start": "started",
    "delivery.pause": "paused",
    "delivery.resume": "resumed",
    "delivery.stop": "stopped",
    "delivery.finish": "finished",
    "delivery.fail": "failed",
    "occurrence.run": "ran an occurrence of",
    "approval.expired": "expired the approval request of",
    "role.grant": "granted a role to",
    "role.revoke": "revoked a role from",
    "profiles.import": "imported profiles into",
    "profile.unsubscribe": "unsubscribed",
    "proof.sent": "sent a proof of",
}
# the choice of an approval click -> its verb
_CHOICE_VERBS = {"approve": "approved", "skip": "skipped"}
# detail keys worth a reader's eye, in the order they are shown
_AUDIT_DETAIL = (
    "occurrence",
    "role",
    "to_deliver",
    "errors",
    "changed",
    "result",
    "reason",
    "profile",
    "addresses",
)
MAX_AUDIT_DETAIL = 200
MAX_AUDIT_LINE = 600


def _verb(record: AuditRecord) -> str:
    if record.action == "approval.click":
        choice = str(record.detail.get("choice", ""))
        return _CHOICE_VERBS.get(choice, "clicked on the approval request of")
    return AUDIT_VERBS.get(record.action, record.action)


def _audit_detail(record: AuditRecord) -> str:
    """The few facts of an entry that say what it did, escaped; the CLI has them all."""
    parts: list[str] = []
    moved = record.detail.get("from"), record.detail.get("to")
    if all(isinstance(x, str) for x in moved):
        parts.append(f"{moved[0]} → {moved[1]}")
    for key in _AUDIT_DETAIL:
        value = record.detail.get(key)
        if value in (None, "", [], {}):
            continue
        if isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        parts.append(f"{key.replace('_', ' ')}: {truncate(str(value), MAX_AUDIT_DETAIL)}")
    return escape(" · ".join(parts))


def audit_line(record: AuditRecord, *, with_subject: bool = True) -> str:
    """One entry: when, who, what, on what, and its few facts, each piece of data escaped."""
    who = _granted_by(record.actor)
    line = f"• {slack_date(record.at)} — {who} *{escape(_verb(record))}*"
    if with_subject:
        kind = "" if record.subject_kind == "delivery" else f"{escape(record.subject_kind)} "
        line += f" {kind}`{escape(record.subject_ref)}`"
    detail = _audit_detail(record)
    if detail:
        line += f" ({detail})"
    return truncate(line, MAX_AUDIT_LINE)


def _audit_pager(page: AuditPage) -> list[Block]:
    buttons = []
    if page.page > 1:
        value = ids.audit_page_value(page.ref, page.page - 1, page.upto)
        buttons.append(button("Newer", ids.AUDIT_NEWER, value))
    if page.has_older:
        value = ids.audit_page_value(page.ref, page.page + 1, page.upto)
        buttons.append(button("More", ids.AUDIT_OLDER, value, style="primary"))
    return [actions(buttons, ids.AUDIT_PAGES_BLOCK)] if buttons else []


def audit_blocks(page: AuditPage) -> list[Block]:
    """`/campaign audit [ref] [page N]`: one page of the trail, newest first.

    A page is `PAGE_SIZE` entries, one line each, packed into sections, so that with
    the header, the footer and the pager it stays far inside Slack's 50 blocks. The
    pager's buttons carry the page and the entry the first page was read at.
    """
    title = f"Audit — {page.ref}" if page.ref is not None else "Audit — every entry"
    blocks: list[Block] = [header(title)]
    if not page.records:
        whose = f" for `{escape(page.ref)}`" if page.ref is not None else ""
        more = f" on page {page.page:,}" if page.total else ""
        blocks.append(section(f"No audit entry{whose}{more}."))
        return blocks
    lines = [audit_line(r, with_subject=page.ref is None) for r in page.records]
    blocks += line_sections(
        lines, room=MAX_BLOCKS - len(blocks) - 2, more="…and {n} more entries on this page."
    )
    first = (page.page - 1) * page.size + 1
    last = first + len(page.records) - 1
    command = f"/campaign audit {escape(page.ref) + ' ' if page.ref else ''}page N"
    blocks.append(
        context(
            f"Page {page.page:,} of {page.pages:,}: entries {first:,}–{last:,} of "
            f"{page.total:,}, newest first. `{command}` shows another page."
        )
    )
    return blocks + _audit_pager(page)


def audit_message(page: AuditPage) -> Message:
    whose = escape(page.ref) if page.ref is not None else "every subject"
    return message(f"Audit of {whose}, page {page.page:,}", audit_blocks(page))


def _subject(grant: Grant) -> str:
    ident = escape(grant.subject_id or DASH)
    if grant.subject_kind is SubjectKind.USERGROUP:
        return f"<!subteam^{ident}>"
    return f"<@{ident}>"


def _granted_by(by: str | None) -> str:
    if not by:
        return "unknown"
    return f"<@{by}>" if _SLACK_USER.match(by) else f"`{escape(by)}`"


def roles_blocks(grants: Sequence[Grant]) -> list[Block]:
    """`/campaign roles list`: every grant, grouped by role."""
    blocks: list[Block] = [header("Roles")]
    if not grants:
        blocks.append(
            section(
                "Nobody holds a role yet. The first administrator is granted from the "
                "command line: `python -m bot roles grant USER_ID administration`."
            )
        )
        return blocks
    lines: list[str] = []
    for role in Role:
        held = [g for g in grants if g.role is role]
        if not held:
            continue
        lines.append(f"*{escape(role.value)}*")
        for g in held:
            lines.append(
                f"• {_subject(g)} — granted by {_granted_by(g.granted_by)}"
                f" on {g.granted_at:%Y-%m-%d}"
            )
    blocks += line_sections(
        lines, room=MAX_BLOCKS - len(blocks) - 1, more="…and {n} more lines.", max_lines=30
    )
    blocks.append(
        context("`/campaign roles grant @user ROLE` · `/campaign roles revoke @user ROLE`")
    )
    return blocks


def error_blocks(text: str) -> list[Block]:
    """An ephemeral refusal: what went wrong and what to do (the message says both).

    Escaped whole: a refusal can quote what the person typed, and must not turn their
    `<!here>` or a link into markup.
    """
    return [section(f":warning: {escape(text)}")]


def error_message(text: str) -> Message:
    return message(escape(text), error_blocks(text))


HELP_TEXT = "Greenlight: `/campaign help` lists the subcommands."


def help_message() -> Message:
    return message(HELP_TEXT, help_blocks())


def list_message(rows: Sequence[DeliverySummary]) -> Message:
    return message(f"{len(rows)} deliveries", list_blocks(rows))


def preparing_message(ref: str) -> Message:
    return message(f"Preparing {escape(ref)}…", [])


def prepare_result_message(result: PreparationResult) -> Message:
    return message(f"{escape(result.ref)}: {result.state.value}", prepare_result_blocks(result))


def history_message(email: str, rows: Sequence[HistoryEntry]) -> Message:
    return message(f"History of {escape(email)}", history_blocks(email, rows))


def roles_message(grants: Sequence[Grant]) -> Message:
    return message("Roles", roles_blocks(grants))


def role_change_message(subject: str, role: str, grant: bool, changed: bool) -> Message:
    """ "start-deliveries granted to U012AB3CD", or that nothing changed."""
    if not changed:
        return message("Nothing to change.", [])
    verb = "granted to" if grant else "revoked from"
    return message(f"{escape(role)} {verb} {escape(subject)}", [])
