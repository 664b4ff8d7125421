"""The App Home tab (`views.publish`): what waits for the viewer, and how sends go.

Input: a `HomeView` (`bot.services.home_views`), read for the viewer's roles; a
section the viewer may not see is None and is left out here. Sections, in the order
a person acts on them: approval requests waiting (with the channel message's own
**Confirm send** and **Skip this occurrence**, so the same listeners decide), the
deliveries ready to confirm, the sends in progress with their progress bar, and the
latest finished sends with their KPIs.

A Home view holds at most 100 blocks and its block ids must differ: every section is
bounded by the view (at most ten rows) and each request's buttons get a block id of
their own. Data is escaped as everywhere (`bot.blocks.kit.escape`).
"""

from __future__ import annotations

from typing import Any

from bot.blocks.approval import approval_buttons
from bot.blocks.campaign import list_line
from bot.blocks.card import exclusions_text
from bot.blocks.deployment import is_relaying, kpi_pairs, kpi_source, progress_line
from bot.blocks.kit import (
    MAX_BLOCK_ID,
    Block,
    context,
    count,
    divider,
    escape,
    field_sections,
    header,
    line_sections,
    local_time,
    people,
    section,
    slack_date,
)
from bot.domain.lifecycle import DeliveryState
from bot.services.deliveries.views import DeploymentView
from bot.services.home_views import HomeView
from bot.services.recurring.views import ApprovalRequestView

MAX_HOME_BLOCKS = 100  # Slack's limit for a Home tab
HOME_APPROVALS_BLOCK = "home_approvals"  # prefix of each request's actions block id
NO_ROLE = (
    "You hold no Greenlight role yet, so there is nothing to show you here. An "
    "administrator grants one with `/campaign roles grant @you ROLE` "
    "(`prepare-deliveries` to follow sends, `start-deliveries` to confirm and approve)."
)


def _more(n: int, what: str) -> list[Block]:
    """ "…and 3 more ready to confirm." under a section cut at its bound."""
    return [context(f"…and {n:,} more {what}.")] if n > 0 else []


def _request(view: ApprovalRequestView) -> list[Block]:
    when = local_time(view.occurrence_at, view.timezone)
    text = (
        f"*{escape(view.name)}* `{escape(view.ref)}` — occurrence of {when}\n"
        f"To deliver {count(view.to_deliver)} · excluded "
        f"{exclusions_text(view.excluded, view.exclusions)}"
    )
    if view.required > 1:
        text += f"\n{len(view.approvals)} of {view.required} approvals"
        text += f": {people(view.approvers)}" if view.approvals else " yet"
    block_id = f"{HOME_APPROVALS_BLOCK}:{view.ref}:{view.key}"[:MAX_BLOCK_ID]
    return [section(text), approval_buttons(view, block_id)]


def _approvals(home: HomeView) -> list[Block]:
    if home.approvals is None:
        return []
    blocks: list[Block] = [header("Approval requests waiting")]
    if not home.approvals:
        blocks.append(section("No occurrence waits for approval."))
    for request in home.approvals:
        blocks += _request(request)
    return blocks + _more(home.more_approvals, "waiting")


def _ready(home: HomeView) -> list[Block]:
    if home.ready is None:
        return []
    blocks: list[Block] = [header("Ready to confirm")]
    if not home.ready:
        return [*blocks, section("No delivery is ready to confirm.")]
    blocks += line_sections([list_line(r) for r in home.ready], room=2, more="…")
    blocks.append(context("`/confirm-send REF` shows its card, with **Confirm send**."))
    return blocks + _more(home.more_ready, "ready to confirm")


def _sending_line(view: DeploymentView) -> str:
    detail, progress = view.detail, view.progress
    line = f"*{escape(detail.name)}* `{escape(detail.ref)}` — {escape(detail.state.value)}"
    if is_relaying(detail.state, progress):
        assert progress is not None
        return f"{line}\n{progress_line(progress)}"
    if progress is not None and detail.state is DeliveryState.IN_PROGRESS:
        return f"{line} · {progress.relayed:,} of {progress.to_deliver:,} relayed"
    return line


def _sending(home: HomeView) -> list[Block]:
    if home.sending is None:
        return []
    blocks: list[Block] = [header("Sending")]
    if not home.sending:
        blocks.append(section("Nothing is being sent."))
    blocks += [section(_sending_line(v)) for v in home.sending]
    return blocks + _more(home.more_sending, "sending")


def _finished(home: HomeView) -> list[Block]:
    if home.finished is None:
        return []
    blocks: list[Block] = [header("Latest finished")]
    if not home.finished:
        blocks.append(section("No send has finished yet."))
    for view in home.finished:
        detail = view.detail
        _title, figures = kpi_source(detail)
        ended = f" — ended {slack_date(detail.finished_at)}" if detail.finished_at else ""
        text = f"*{escape(detail.name)}* `{escape(detail.ref)}`{ended}"
        blocks += field_sections(kpi_pairs(figures.kpis), text=text)
    return blocks


def home_blocks(home: HomeView) -> list[Block]:
    """The tab's blocks, in at most 100."""
    blocks: list[Block] = [header("Greenlight")]
    if home.notice:
        blocks.append(section(home.notice))
    parts = [p for p in (_approvals(home), _ready(home), _sending(home), _finished(home)) if p]
    if not parts:
        blocks.append(section(NO_ROLE))
    for part in parts:
        blocks += [divider(), *part]
    roles = ", ".join(f"`{escape(r.value)}`" for r in sorted(home.roles)) or "none"
    blocks.append(context(f"Your roles: {roles}. This tab follows the database within seconds."))
    return blocks[:MAX_HOME_BLOCKS]


def home_view(home: HomeView) -> dict[str, Any]:
    """What `views.publish` takes as `view`."""
    return {"type": "home", "blocks": home_blocks(home)}
