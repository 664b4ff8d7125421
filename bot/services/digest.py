"""The hourly KPI digest: built once per slot, posted once, by whichever process claims it.

The database decides. Each slot of `DIGEST_CRON` has one `digests` row (unique slot):

1. the latest slot at or before now is due; older slots never posted are superseded,
   so a process back from downtime posts one digest, not one per missed hour;
2. a process claims the row atomically (`UPDATE … WHERE state = 'pending'`); a claim
   left by a process that died is taken over after `LEASE`;
3. the first claim builds the digest: a snapshot of every active execution's counters
   (the deltas and the chart of later digests read them) and the Slack parts to post,
   stored; a retry posts exactly what was built, never a recomputed variant;
4. each part is recorded as soon as Slack accepts it; a Slack failure (an error, a 5xx,
   the network) releases the claim and the next tick posts only the parts not yet
   recorded. Slack's 429 answers are retried by the client itself.

Bound: a part whose request reached Slack but whose answer was lost (a timeout, or the
process killed between Slack's answer and the record) is posted again by the retry;
`chat.postMessage` has no idempotency key to prevent it. That is at most one message
per failure, never a whole digest.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.orm import Session

from bot.blocks.digest import chart_comment, digest_messages
from bot.blocks.kit import truncate
from bot.context import Context
from bot.domain.digest import kpi_change, latest_slot
from bot.domain.kpi import Counters, kpis
from bot.domain.schedule import MAX_VALIDITY
from bot.store.db import insert_ignoring_conflicts
from bot.store.models import (
    Delivery,
    Digest,
    DigestPart,
    DigestSnapshot,
    Execution,
    KpiCounter,
)

if TYPE_CHECKING:
    from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)

LEASE = timedelta(minutes=10)
# Snapshots and parts older than the longest validity period (and a day) serve no delta
# and no chart any more: they are deleted; the digest rows stay as the record.
KEEP = MAX_VALIDITY + timedelta(days=1)
CHART_TOP = 5  # deliveries drawn in the chart, the largest by messages sent
CHART_LABEL = 40
PART_INTERVAL = 1.0  # seconds between two posts in the channel (SPEC section 9: ~1/s)
FINAL_STATES = ("posted", "empty", "superseded")

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


def _say_once(reason: str) -> None:
    """Log why the digest is off once per process, not at every tick."""
    if reason not in _said:
        _said.add(reason)
        log.warning("KPI digest off: %s", reason)


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
        state = s.scalar(select(Digest.state).where(Digest.slot_at == slot))
    if state in FINAL_STATES:
        return None
    with ctx.sessions.begin() as s:
        s.execute(
            update(Digest)
            .where(Digest.slot_at < slot, _claimable(now))
            .values(state="superseded", claim_token=None)
        )
        if state is None:
            s.execute(
                insert_ignoring_conflicts(s, Digest).values(
                    slot_at=slot, channel=channel, state="pending", created_at=now, attempts=0
                )
            )
    token = secrets.token_hex(16)
    with ctx.sessions.begin() as s:
        claimed = s.execute(
            update(Digest)
            .where(Digest.slot_at == slot, _claimable(now))
            .values(
                state="posting",
                claim_token=token,
                claimed_at=now,
                attempts=Digest.attempts + 1,
            )
            .returning(Digest.id)
        ).scalar_one_or_none()
    return (claimed, token) if claimed is not None else None


def _claimable(now: datetime) -> Any:
    return or_(
        Digest.state == "pending",
        and_(Digest.state == "posting", Digest.claimed_at < now - LEASE),
    )


def _release(ctx: Context, digest_id: int, token: str, **values: Any) -> None:
    with ctx.sessions.begin() as s:
        s.execute(
            update(Digest)
            .where(Digest.id == digest_id, Digest.claim_token == token)
            .values(claim_token=None, **values)
        )


# --- building ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ActiveExecution:
    execution_id: int
    ref: str
    name: str
    key: str
    validity_ends_at: datetime
    counters: Counters


def active_executions(session: Session, now: datetime) -> list[ActiveExecution]:
    """Every started execution still inside its validity period, largest first, one query."""
    rows = session.execute(
        select(
            Execution.id,
            Execution.key,
            Execution.validity_ends_at,
            Delivery.ref,
            Delivery.name,
            KpiCounter.to_deliver,
            KpiCounter.pending,
            KpiCounter.sent,
            KpiCounter.failed,
            KpiCounter.unique_opens,
            KpiCounter.unique_clicks,
        )
        .join(Delivery, Delivery.id == Execution.delivery_id)
        .outerjoin(KpiCounter, KpiCounter.execution_id == Execution.id)
        .where(Execution.started_at.is_not(None), Execution.validity_ends_at > now)
    ).all()
    active = [
        ActiveExecution(
            execution_id=r[0],
            key=r[1],
            validity_ends_at=r[2],
            ref=r[3],
            name=r[4],
            counters=Counters(
                to_deliver=r[5] or 0,
                pending=r[6] or 0,
                sent=r[7] or 0,
                failed=r[8] or 0,
                unique_opens=r[9] or 0,
                unique_clicks=r[10] or 0,
            ),
        )
        for r in rows
    ]
    active.sort(key=lambda a: (-a.counters.relayed, -a.counters.to_deliver, a.ref, a.key))
    return active


def _snapshot_counters(row: Any) -> Counters:
    return Counters(
        to_deliver=row.to_deliver,
        pending=row.pending,
        sent=row.sent,
        failed=row.failed,
        unique_opens=row.unique_opens,
        unique_clicks=row.unique_clicks,
    )


def previous_digest(session: Session, slot: datetime) -> tuple[datetime, int] | None:
    """The latest digest posted before `slot`: what readers last saw, the base of the deltas."""
    row = session.execute(
        select(Digest.slot_at, Digest.id)
        .where(Digest.slot_at < slot, Digest.state == "posted")
        .order_by(Digest.slot_at.desc())
        .limit(1)
    ).first()
    return (row[0], row[1]) if row else None


def _snapshots(session: Session, digest_id: int) -> dict[int, Counters]:
    return {
        row.execution_id: _snapshot_counters(row)
        for row in session.scalars(
            select(DigestSnapshot).where(DigestSnapshot.digest_id == digest_id)
        )
    }


def _point(at: datetime, c: Counters) -> list[Any]:
    k = kpis(c)
    return [
        at.isoformat(),
        k.delivered_pct,
        k.bounces_errors_pct,
        k.open_rate,
        k.click_through_rate,
    ]


def chart_data(
    session: Session, active: list[ActiveExecution], slot: datetime, tz: str
) -> dict[str, Any]:
    """The chart's series: each of the largest executions over the digests that showed it."""
    top = active[:CHART_TOP]
    history: dict[int, list[list[Any]]] = {a.execution_id: [] for a in top}
    if top:
        rows = session.execute(
            select(Digest.slot_at, DigestSnapshot)
            .join(Digest, Digest.id == DigestSnapshot.digest_id)
            .where(
                DigestSnapshot.execution_id.in_(list(history)),
                Digest.state == "posted",
                Digest.slot_at < slot,
            )
            .order_by(Digest.slot_at)
        ).all()
        for at, snap in rows:
            history[snap.execution_id].append(_point(at, _snapshot_counters(snap)))
    series = []
    for a in top:
        label = a.name if a.key == "main" else f"{a.name} — {a.key}"
        points = [*history[a.execution_id], _point(slot, a.counters)]
        series.append({"label": truncate(label, CHART_LABEL), "points": points})
    return {
        "title": f"KPIs over time — {len(top)} largest of {len(active)}"
        if len(active) > len(top)
        else "KPIs over time",
        "tz": tz,
        "series": series,
    }


def build(ctx: Context, digest_id: int, token: str) -> int | None:
    """Snapshot the active executions and store the parts to post; the number of rows.

    None when the claim was lost meanwhile. Runs once per digest: a retry finds
    `built_at` set and keeps what was built.
    """
    now = ctx.clock.now()
    tz = ctx.settings.digest_timezone
    with ctx.sessions.begin() as s:
        digest = s.get(Digest, digest_id, with_for_update=True)
        if digest is None or digest.claim_token != token:
            return None
        if digest.built_at is not None:
            return len(_snapshots(s, digest_id))
        active = active_executions(s, now)
        digest.built_at = now
        if not active:
            digest.state = "empty"
            digest.claim_token = None
            return 0
        prune(s, digest.slot_at - KEEP)
        before = previous_digest(s, digest.slot_at)
        seen = _snapshots(s, before[1]) if before else {}
        s.execute(
            insert(DigestSnapshot),
            [
                {"digest_id": digest_id, "execution_id": a.execution_id, **_stored(a.counters)}
                for a in active
            ],
        )
        rows = []
        for a in active:
            earlier = seen.get(a.execution_id)
            change = kpi_change(kpis(a.counters), kpis(earlier) if earlier else None)
            rows.append(
                {
                    "ref": a.ref,
                    "name": a.name,
                    "execution": a.key,
                    "validity_ends_at": a.validity_ends_at,
                    "kpis": kpis(a.counters).as_dict(),
                    "change": asdict(change) if change else None,
                    "new": before is not None and change is None,
                }
            )
        messages = digest_messages(
            rows, slot_at=digest.slot_at, tz=tz, previous_at=before[0] if before else None
        )
        chart = chart_data(s, active, digest.slot_at, tz)
        chart["comment"] = chart_comment(digest.slot_at, tz, len(chart["series"]), len(active))
        chart["filename"] = f"kpi-digest-{digest.slot_at:%Y%m%dT%H%MZ}.png"
        parts = [{"kind": "message", "payload": m} for m in messages]
        parts.append({"kind": "chart", "payload": chart})
        s.execute(
            insert(DigestPart),
            [{"digest_id": digest_id, "seq": i, **p} for i, p in enumerate(parts)],
        )
        return len(active)


def prune(session: Session, before: datetime) -> None:
    """Delete the snapshots and parts of digests older than `before`."""
    old = select(Digest.id).where(Digest.slot_at < before).scalar_subquery()
    session.execute(delete(DigestSnapshot).where(DigestSnapshot.digest_id.in_(old)))
    session.execute(delete(DigestPart).where(DigestPart.digest_id.in_(old)))


def _stored(c: Counters) -> dict[str, int]:
    return {
        "to_deliver": c.to_deliver,
        "pending": c.pending,
        "sent": c.sent,
        "failed": c.failed,
        "unique_opens": c.unique_opens,
        "unique_clicks": c.unique_clicks,
    }


# --- posting -----------------------------------------------------------------------------


def _unposted(ctx: Context, digest_id: int) -> list[tuple[int, str, dict[str, Any]]]:
    with ctx.sessions() as s:
        return [
            (p.id, p.kind, p.payload)
            for p in s.scalars(
                select(DigestPart)
                .where(DigestPart.digest_id == digest_id, DigestPart.slack_ref.is_(None))
                .order_by(DigestPart.seq)
            )
        ]


def _record(ctx: Context, digest_id: int, token: str, part_id: int, ref: str) -> None:
    """The part is in Slack: never post it again; and the claim is still alive."""
    now = ctx.clock.now()
    with ctx.sessions.begin() as s:
        s.execute(
            update(DigestPart)
            .where(DigestPart.id == part_id, DigestPart.slack_ref.is_(None))
            .values(slack_ref=ref, posted_at=now)
        )
        s.execute(
            update(Digest)
            .where(Digest.id == digest_id, Digest.claim_token == token)
            .values(claimed_at=now)
        )


async def _post(slack: AsyncWebClient, channel: str, kind: str, payload: dict[str, Any]) -> str:
    """Post one part; the message ts or the file id Slack answered with."""
    if kind == "message":
        resp = await slack.chat_postMessage(
            channel=channel,
            text=payload["text"],
            blocks=payload["blocks"],
            unfurl_links=False,
            unfurl_media=False,
        )
        return str(resp["ts"])
    from bot.charts import kpi_chart_png

    png = await asyncio.to_thread(kpi_chart_png, payload)
    resp = await slack.files_upload_v2(
        channel=channel,
        content=png,
        filename=payload["filename"],
        title=payload["title"],
        alt_txt=payload["comment"],
        initial_comment=payload["comment"],
    )
    file = resp.get("file") or {}
    return str(file.get("id") or "uploaded")


def _slack_errors() -> tuple[type[BaseException], ...]:
    import aiohttp
    from slack_sdk.errors import SlackClientError

    return (SlackClientError, aiohttp.ClientError, TimeoutError, OSError)


async def run_digest(
    ctx: Context,
    slack: AsyncWebClient | None,
    sleep: Sleep = asyncio.sleep,
    interval: float | None = None,
) -> DigestReport:
    """The digest step of the due work: post the due digest, or what is left of it.

    `interval` (default `PART_INTERVAL`) spaces the posts of one digest; `sleep` is
    injected so tests check the pacing without spending it.
    """
    channel = ctx.settings.kpi_channel
    if not channel:
        _say_once("KPI_CHANNEL is not set; set it to a channel id (C…) to get the digest")
        return DigestReport(status="off", error="KPI_CHANNEL is not set")
    if slack is None:
        _say_once("Slack is not connected (SLACK_BOT_TOKEN is not set)")
        return DigestReport(status="off", error="Slack is not connected")
    slot = due_slot(ctx)
    if slot is None:
        return DigestReport(status="not-due")
    claimed = claim(ctx, slot, channel)
    if claimed is None:
        with ctx.sessions() as s:
            state = s.scalar(select(Digest.state).where(Digest.slot_at == slot))
        return DigestReport(status="busy" if state == "posting" else "not-due", slot=slot)
    digest_id, token = claimed
    report = DigestReport(status="posted", slot=slot)
    built = build(ctx, digest_id, token)
    if built is None:
        return DigestReport(status="busy", slot=slot)
    report.deliveries = built
    if built == 0:
        report.status = "empty"
        return report
    with ctx.sessions() as s:
        target = s.scalar(select(Digest.channel).where(Digest.id == digest_id)) or channel
    pause = PART_INTERVAL if interval is None else interval
    try:
        for index, (part_id, kind, payload) in enumerate(_unposted(ctx, digest_id)):
            if index:
                await sleep(pause)
            ref = await _post(slack, target, kind, payload)
            _record(ctx, digest_id, token, part_id, ref)
            report.parts_posted.append(ref)
            if kind == "message":
                report.messages += 1
            else:
                report.chart = True
    except _slack_errors() as exc:
        error = _describe(exc)
        log.warning(
            "KPI digest of %s: Slack failed (%s); the parts not yet posted go at the next tick%s",
            slot.isoformat(),
            error,
            _hint(error),
        )
        _release(ctx, digest_id, token, state="pending", last_error=error)
        report.status, report.error = "failed", error
        return report
    _release(ctx, digest_id, token, state="posted", posted_at=ctx.clock.now())
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


def _describe(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if response is not None and hasattr(response, "get"):
        status = getattr(response, "status_code", None)
        return f"{response.get('error') or 'error'} (HTTP {status})"
    return f"{type(exc).__name__}: {exc}"[:500]
