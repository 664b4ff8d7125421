"""The hourly KPI digest: built once per slot, posted once, by whichever process claims it.

The database decides. Each slot of `DIGEST_CRON` has one `digests` row (unique slot):

1. the latest slot at or before now is due; older slots never posted are superseded,
   so a process back from downtime posts one digest, not one per missed hour;
2. a process claims the row atomically (`UPDATE … WHERE state = 'pending'`); a claim
   left by a process that died is taken over after `LEASE`;
3. the first claim builds the digest: a snapshot of every active execution's counters
   (the deltas and the chart of later digests read them) and the parts to post (pages
   of rows and the chart, `digest_views`), stored; a retry posts exactly what was
   built, never a recomputed variant;
4. each part is recorded as soon as the Notifications port accepts it; a failure (an
   error, a 5xx, the network) releases the claim and the next tick posts only the
   parts not yet recorded. Slack's 429 answers are retried by the client itself.

Bound: a part whose request reached Slack but whose answer was lost (a timeout, or the
process killed between Slack's answer and the record) is posted again by the retry;
`chat.postMessage` has no idempotency key to prevent it. That is at most one message
per failure, never a whole digest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.context import Context, Session
from bot.domain.digest import FINAL_STATES, DigestPartKind, DigestState, kpi_change, latest_slot
from bot.domain.executions import MAIN_KEY
from bot.domain.kpi import kpis
from bot.domain.schedule import MAX_VALIDITY
from bot.domain.times import clock_time
from bot.services.digest_views import (
    ChartPoint,
    ChartSeries,
    DigestChart,
    DigestPage,
    DigestRow,
)
from bot.services.notifications import NotificationFailed, Notifications
from bot.store import digests
from bot.store.digests import ActiveExecution

log = logging.getLogger(__name__)

# Snapshots and parts older than the longest validity period (and a day) serve no delta
# and no chart any more: they are deleted; the digest rows stay as the record.
KEEP = MAX_VALIDITY + timedelta(days=1)
CHART_TOP = 5  # deliveries drawn in the chart, the largest by messages sent
CHART_LABEL = 40
ROWS_PER_PAGE = 45  # a page and its two heading blocks stay under Slack's 50 blocks
PART_INTERVAL = 1.0  # seconds between two posts in the channel (SPEC section 9: ~1/s)

Sleep = Callable[[float], Awaitable[None]]
_said: set[str] = set()


@dataclass
class DigestReport:
    """What the digest step did at this tick; `jobs run-due` prints it."""

    status: str  # off | not-due | busy | empty | posted | failed
    slot: datetime | None = None
    deliveries: int = 0
    messages: int = 0  # messages of the digest posted by this run
    chart: bool = False  # the chart was uploaded by this run
    error: str | None = None
    parts_posted: list[str] = field(default_factory=list)


def _say_once(reason: str, level: int = logging.WARNING) -> None:
    """Log why the digest is off once per process, not at every tick."""
    if reason not in _said:
        _said.add(reason)
        log.log(level, "KPI digest off: %s", reason)


# --- which slot, and who posts it ------------------------------------------------------


def due_slot(ctx: Context) -> datetime | None:
    s = ctx.settings
    return latest_slot(s.digest_cron, s.digest_timezone, ctx.clock.now())


def claim(ctx: Context, slot: datetime, channel: str) -> tuple[int, str] | None:
    """Take the digest of `slot` for this process: (digest id, claim token), or None.

    A slot already posted (or found empty) costs one indexed read, so the tick that
    runs every few seconds stays cheap.
    """
    now = ctx.clock.now()
    with ctx.sessions() as s:
        state = digests.state_of(s, slot)
    if state in FINAL_STATES:
        return None
    with ctx.sessions.begin() as s:
        digests.open_slot(s, slot, channel, now)
    with ctx.sessions.begin() as s:
        return digests.claim(s, slot, now)


# --- building ----------------------------------------------------------------------------


def _label(a: ActiveExecution) -> str:
    label = a.name if a.key == MAIN_KEY else f"{a.name} — {a.key}"
    return label if len(label) <= CHART_LABEL else label[: CHART_LABEL - 1].rstrip() + "…"


def chart(
    session: Session, active: Sequence[ActiveExecution], slot: datetime, tz: str
) -> DigestChart:
    """The chart of the largest executions over the digests that showed them, and now."""
    top = active[:CHART_TOP]
    history = digests.history(session, [a.execution_id for a in top], slot)
    series = [
        ChartSeries(
            _label(a),
            [
                *(ChartPoint.of(at, kpis(c)) for at, c in history[a.execution_id]),
                ChartPoint.of(slot, kpis(a.counters)),
            ],
        )
        for a in top
    ]
    shown, total = len(top), len(active)
    title = f"KPIs over time — {shown} largest of {total}" if total > shown else "KPIs over time"
    return DigestChart(
        title=title,
        tz=tz,
        series=series,
        comment=chart_comment(slot, tz, shown, total),
        filename=f"kpi-digest-{slot:%Y%m%dT%H%MZ}.png",
    )


def chart_comment(slot_at: datetime, tz: str, shown: int, total: int) -> str:
    """The words the chart is shared with."""
    which = "the delivery" if shown == 1 else f"the {shown} largest of {total}"
    if shown == total and shown > 1:
        which = f"all {shown}"
    return f"KPI digest, {clock_time(slot_at, tz, None)}: KPIs over time of {which}"


def pages(
    rows: Sequence[DigestRow], slot: datetime, tz: str, previous_at: datetime | None
) -> list[DigestPage]:
    """The rows, `ROWS_PER_PAGE` a message, in order (largest first)."""
    chunks = [rows[i : i + ROWS_PER_PAGE] for i in range(0, len(rows), ROWS_PER_PAGE)]
    return [
        DigestPage(slot, tz, previous_at, len(rows), number, len(chunks), chunk)
        for number, chunk in enumerate(chunks, start=1)
    ]


def build(ctx: Context, digest_id: int, token: str) -> int | None:
    """Snapshot the active executions and store the parts to post; the number of rows.

    None when the claim was lost meanwhile. Runs once per digest: a retry finds it
    built and keeps what was built.
    """
    now = ctx.clock.now()
    tz = ctx.settings.digest_timezone
    with ctx.sessions.begin() as s:
        digest = digests.held(s, digest_id, token)
        if digest is None:
            return None
        if digest.built_at is not None:
            return len(digests.snapshots(s, digest_id))
        active = digests.active_executions(s, now)
        if not active:
            digests.empty(s, digest, token, now)
            return 0
        digests.prune(s, digest.slot_at - KEEP)
        before = digests.previous_posted(s, digest.slot_at)
        seen = digests.snapshots(s, before[1]) if before else {}
        rows = []
        for a in active:
            earlier = seen.get(a.execution_id)
            change = kpi_change(kpis(a.counters), kpis(earlier) if earlier else None)
            rows.append(
                DigestRow(
                    ref=a.ref,
                    name=a.name,
                    execution=a.key,
                    validity_ends_at=a.validity_ends_at,
                    kpis=kpis(a.counters),
                    change=change,
                    new=before is not None and change is None,
                )
            )
        parts: list[tuple[DigestPartKind, dict[str, Any]]] = [
            (DigestPartKind.PAGE, page.to_json())
            for page in pages(rows, digest.slot_at, tz, before[0] if before else None)
        ]
        parts.append((DigestPartKind.CHART, chart(s, active, digest.slot_at, tz).to_json()))
        digests.store_built(s, digest, now, active, parts)
        return len(active)


# --- posting -----------------------------------------------------------------------------


async def _post(
    notifications: Notifications, channel: str, kind: DigestPartKind, payload: dict[str, Any]
) -> str:
    if kind is DigestPartKind.CHART:
        return await notifications.digest_chart(channel, DigestChart.from_json(payload))
    if kind is DigestPartKind.PAGE:
        return await notifications.digest_page(channel, DigestPage.from_json(payload))
    # Built by an earlier version as a Block Kit message: posted as it was built.
    page = DigestPage(datetime.min.replace(tzinfo=UTC), "UTC", None, 0, 1, 1, prebuilt=payload)
    return await notifications.digest_page(channel, page)


async def run_digest(
    ctx: Context,
    notifications: Notifications,
    sleep: Sleep = asyncio.sleep,
    interval: float | None = None,
) -> DigestReport:
    """The digest step of the due work: post the due digest, or what is left of it.

    `interval` (default `PART_INTERVAL`) spaces the posts of one digest; `sleep` is
    injected so tests check the pacing without spending it.
    """
    channel = ctx.settings.kpi_channel
    if not channel:
        # A choice, not a fault (INFO); `jobs run-due` says it in its report instead.
        _say_once(
            "KPI_CHANNEL is not set; set it to a channel id (C…) to get the digest", logging.INFO
        )
        return DigestReport(status="off", error="KPI_CHANNEL is not set")
    if not notifications.connected:
        _say_once("Slack is not connected (SLACK_BOT_TOKEN is not set)")
        return DigestReport(status="off", error="Slack is not connected")
    slot = due_slot(ctx)
    if slot is None:
        return DigestReport(status="not-due")
    claimed = claim(ctx, slot, channel)
    if claimed is None:
        with ctx.sessions() as s:
            state = digests.state_of(s, slot)
        return DigestReport(status="busy" if state is DigestState.POSTING else "not-due", slot=slot)
    digest_id, token = claimed
    built = build(ctx, digest_id, token)
    if built is None:
        return DigestReport(status="busy", slot=slot)
    report = DigestReport(status="posted", slot=slot, deliveries=built)
    if built == 0:
        report.status = "empty"
        return report
    return await _post_parts(ctx, notifications, report, digest_id, token, channel, sleep, interval)


async def _post_parts(
    ctx: Context,
    notifications: Notifications,
    report: DigestReport,
    digest_id: int,
    token: str,
    channel: str,
    sleep: Sleep,
    interval: float | None,
) -> DigestReport:
    with ctx.sessions() as s:
        target = digests.channel_of(s, digest_id) or channel
        unposted = digests.unposted(s, digest_id)
    pause = PART_INTERVAL if interval is None else interval
    try:
        for index, (part_id, kind, payload) in enumerate(unposted):
            if index:
                await sleep(pause)
            ref = await _post(notifications, target, kind, payload)
            with ctx.sessions.begin() as s:
                digests.record_part(s, digest_id, token, part_id, ref, ctx.clock.now())
            report.parts_posted.append(ref)
            if kind is DigestPartKind.CHART:
                report.chart = True
            else:
                report.messages += 1
    except NotificationFailed as exc:
        log.warning(
            "KPI digest of %s: Slack failed (%s); the parts not yet posted go at the next tick%s",
            report.slot.isoformat() if report.slot else "?",
            exc.reason,
            _hint(exc.reason),
        )
        with ctx.sessions.begin() as s:
            digests.release(s, digest_id, token, state=DigestState.PENDING, last_error=exc.reason)
        report.status, report.error = "failed", exc.reason
        return report
    with ctx.sessions.begin() as s:
        digests.release(s, digest_id, token, state=DigestState.POSTED, posted_at=ctx.clock.now())
    return report


_HINTS = {
    "not_in_channel": "invite the app to KPI_CHANNEL (/invite @Greenlight)",
    "channel_not_found": "KPI_CHANNEL must be a channel id (C…) the app can see",
    "is_archived": "KPI_CHANNEL is archived; choose another channel",
    "missing_scope": "reinstall the app from manifest.yml (chat:write, files:write)",
    "invalid_auth": "SLACK_BOT_TOKEN is not valid",
}


def _hint(error: str) -> str:
    """What a person can do about an error that retrying alone will not fix."""
    for code, hint in _HINTS.items():
        if error.startswith(code):
            return f" — {hint}"
    return ""
