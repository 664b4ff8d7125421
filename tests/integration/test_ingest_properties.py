"""Any order and repetition of feedback for one recipient keeps SPEC section 6's invariants.

Hypothesis draws sequences of steps for one recipient of a delivery (EFS or not):
feedback events through `ingest` (delivered, soft and hard bounces, complaints, opens,
clicks; each drawn from a small pool of source ids, so the same event often comes
again), synchronous relay answers of a retry, the end of the validity period
(`expire_due`), and time passing. Each example runs on its own copy of a real SQLite
database where the delivery was really sent; one fixed sequence also runs on
PostgreSQL. After every step:

* the live counters equal a recount of the logs (what **Compute stats** computes);
* the log's state is the domain's transitions applied to each distinct event once,
  in order (duplicates by source id change nothing, and say so in the report);
* once a hard bounce has failed the log, it stays a hard failure;
* the other recipient's log never moves;
* the address's health is consistent: a complaint denylists for good, a hard
  bounce quarantines, and otherwise the stored status agrees with the error count.

At the end, opens and clicks are counted once per recipient, and Compute stats
leaves every KPI as the counters had it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scenario import CLI, as_user, detail_json, due_now, prepare_one
from sqlalchemy import func, select

from bot.bootstrap import bootstrap
from bot.clock import FixedClock
from bot.config import Settings, load_settings
from bot.context import Context
from bot.domain.logs import Event, FailureType, LogState, LogStatus, Mode, apply_event
from bot.domain.roles import Role
from bot.engine.transports import MaildirTransport
from bot.feedback.events import FeedbackEvent, FeedbackKind
from bot.jobs.due_work import expire_due
from bot.services.deliveries.lifecycle import confirm_send
from bot.services.deliveries.views import compute_stats
from bot.services.outcomes.ingest import ingest
from bot.store.counters import live_counters, recount
from bot.store.models import Execution, FeedbackReceipt, Profile, SendingLog, TrackingLog
from bot.store.outcomes import LogEvent, apply_log_events

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
TARGET, BYSTANDER = "target@x.example", "bystander@x.example"
KINDS = list(FeedbackKind)
RELAY = {"relayed": Event.RELAYED, "soft": Event.SOFT_BOUNCE, "hard": Event.HARD_BOUNCE}
REASONS = {Event.HARD_BOUNCE: "user unknown", Event.SOFT_BOUNCE: "mailbox full"}


@dataclass(frozen=True)
class Feedback:
    kind: FeedbackKind
    n: int  # the same (kind, n) is the same source event, delivered again

    @property
    def source_event_id(self) -> str:
        return f"{self.kind.value}-{self.n}"


@dataclass(frozen=True)
class Relay:
    result: str


@dataclass(frozen=True)
class Wait:
    hours: int


@dataclass(frozen=True)
class Expire:
    pass


Step = Feedback | Relay | Wait | Expire

steps = st.lists(
    st.one_of(
        st.builds(Feedback, st.sampled_from(KINDS), st.integers(0, 2)),
        st.builds(Relay, st.sampled_from(sorted(RELAY))),
        st.builds(Wait, st.integers(1, 40)),
        st.just(Expire()),
    ),
    min_size=1,
    max_size=14,
)


def send_one_delivery(ctx: Context, tmp_path: Path, efs: bool) -> None:
    prepare_one(ctx, tmp_path, [TARGET, BYSTANDER], "promo", efs=efs, validity="3d")
    confirm_send(ctx, as_user("U0A", [Role.START_DELIVERIES]), "promo")
    transport = MaildirTransport(tmp_path / "outbox", fsync=False)
    due_now(ctx, lambda: transport)


class Scenario:
    """One recipient's feedback, applied for real and followed by an independent model."""

    def __init__(self, ctx: Context, mode: Mode) -> None:
        self.ctx = ctx
        self.mode = mode
        with ctx.sessions() as s:
            logs = {lg.email: lg for lg in s.scalars(select(SendingLog))}
            self.execution_id = s.scalar(select(Execution.id))
            self.validity_ends_at = s.scalar(select(Execution.validity_ends_at))
        self.log_id = logs[TARGET].id
        self.bystander_id = logs[BYSTANDER].id
        self.bystander = LogState(LogStatus(logs[BYSTANDER].status))
        self.state = LogState(LogStatus(logs[TARGET].status))
        self.taken: set[str] = set()
        self.hard_failed = False
        self.complained = False
        self.opened = self.clicked = False
        self.tracked = 0

    def _state(self, log_id: int) -> LogState:
        with self.ctx.sessions() as s:
            lg = s.get(SendingLog, log_id)
            failure = FailureType(lg.failure_type) if lg.failure_type else None
            return LogState(LogStatus(lg.status), failure, lg.final, lg.delivered)

    def _log_event(self, event: Event) -> None:
        before = self.state
        self.state = apply_event(self.mode, self.state, event).state
        if event is Event.HARD_BOUNCE and self.state != before:
            self.hard_failed = True

    def run(self, step: Step) -> None:
        clock = self.ctx.clock
        if isinstance(step, Feedback):
            event = FeedbackEvent(
                kind=step.kind,
                source="generic",
                source_event_id=step.source_event_id,
                occurred_at=clock.now(),
                log_id=self.log_id,
                reason="user unknown" if step.kind.is_bounce else None,
                url="https://shop.example/x" if step.kind is FeedbackKind.CLICK else None,
            )
            report = ingest(self.ctx, [event])
            fresh = step.source_event_id not in self.taken
            assert (report.applied, report.duplicates) == (int(fresh), int(not fresh))
            if fresh:
                self.taken.add(step.source_event_id)
                if step.kind.log_event is not None:
                    self._log_event(step.kind.log_event)
                elif step.kind is FeedbackKind.COMPLAINT:
                    self.complained = True
                else:
                    self.tracked += 1
                    self.opened = True
                    self.clicked |= step.kind is FeedbackKind.CLICK
        elif isinstance(step, Relay):
            event = RELAY[step.result]
            with self.ctx.sessions.begin() as s:
                apply_log_events(
                    s, clock.now(), [LogEvent(self.log_id, event, reason=REASONS.get(event))]
                )
            self._log_event(event)
        elif isinstance(step, Wait):
            clock.advance(timedelta(hours=step.hours))  # type: ignore[attr-defined]
        else:
            if clock.now() < self.validity_ends_at:
                clock.set(self.validity_ends_at)  # type: ignore[attr-defined]
            expire_due(self.ctx)
            self._log_event(Event.EXPIRED)
            self.bystander = apply_event(self.mode, self.bystander, Event.EXPIRED).state

    def check(self) -> None:
        with self.ctx.sessions() as s:
            live, fresh = live_counters(s, self.execution_id), recount(s, self.execution_id)
            lg = s.get(SendingLog, self.log_id)
            profile = s.scalar(select(Profile).where(Profile.email == TARGET))
            receipts = s.scalar(select(func.count()).select_from(FeedbackReceipt))
            hits = s.scalar(select(func.count()).select_from(TrackingLog))
        statuses = ("queued", "pending", "sent", "failed", "ignored")
        assert {k: getattr(live, k) for k in statuses} == {k: getattr(fresh, k) for k in statuses}
        assert (live.pending + live.sent + live.failed, live.queued) == (2, 0)
        assert self._state(self.log_id) == self.state
        if self.hard_failed:
            assert (lg.status, lg.failure_type) == ("failed", "hard"), "a hard bounce is final"
            assert lg.failure_reason == "user unknown"
        assert self._state(self.bystander_id) == self.bystander, "only the expiry moves it"
        assert receipts == len(self.taken), "each source event is taken once"
        assert hits == self.tracked
        if self.complained:
            assert profile.email_status == "denylisted"
        elif self.hard_failed:
            assert profile.email_status == "quarantine"
        elif profile.email_status == "valid":
            assert profile.error_count == 0
        elif profile.email_status == "erroneous":
            assert 1 <= profile.error_count < 5
        else:
            assert (profile.email_status, profile.error_count >= 5) == ("quarantine", True)

    def finish(self) -> None:
        with self.ctx.sessions() as s:
            fresh = recount(s, self.execution_id)
        assert (fresh.unique_opens, fresh.unique_clicks) == (int(self.opened), int(self.clicked))
        before = detail_json(self.ctx, "promo")["kpis"]
        after = compute_stats(self.ctx, CLI, "promo").to_json()["kpis"]
        for name in ("to_deliver", "sent", "delivered_pct", "bounces_errors_pct"):
            assert after[name] == before[name], name
        with self.ctx.sessions() as s:
            assert live_counters(s, self.execution_id) == recount(s, self.execution_id)


def make_settings(folder: Path, database: Path) -> Settings:
    return load_settings(
        _env_file=None,
        database_url=f"sqlite:///{database}",
        mail_url=f"maildir://{folder / 'outbox'}",
        tracking_secret="test-tracking-secret",
        feedback_secret="test-feedback-secret",
    )


@pytest.fixture(scope="module")
def sent_databases(
    tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> dict[bool, Path]:
    """A migrated SQLite file per mode with the delivery already sent, copied per example."""
    out = {}
    for efs in (False, True):
        folder = tmp_path_factory.mktemp(f"sent-efs-{efs}")
        database = folder / "greenlight.db"
        shutil.copy(sqlite_template, database)
        root = bootstrap(make_settings(folder, database), FixedClock(T0), migrate=False)
        ctx = root.context
        send_one_delivery(ctx, folder, efs)
        with root.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        root.close()
        out[efs] = database
    return out


def run_scenario(ctx: Context, efs: bool, sequence: list[Step]) -> None:
    scenario = Scenario(ctx, Mode.EFS if efs else Mode.STANDARD)
    scenario.check()
    for step in sequence:
        scenario.run(step)
        scenario.check()
    scenario.finish()


_examples = count()


@pytest.mark.parametrize("efs", [False, True], ids=["standard", "efs"])
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sequence=steps)
def test_any_feedback_sequence_keeps_the_invariants(
    efs: bool, sequence: list[Step], sent_databases: dict[bool, Path], tmp_path: Path
) -> None:
    database = tmp_path / f"example-{next(_examples)}.db"
    shutil.copy(sent_databases[efs], database)
    root = bootstrap(make_settings(tmp_path, database), FixedClock(T0), migrate=False)
    ctx = root.context
    try:
        run_scenario(ctx, efs, sequence)
    finally:
        root.close()
        database.unlink()


H, S, D = FeedbackKind.HARD_BOUNCE, FeedbackKind.SOFT_BOUNCE, FeedbackKind.DELIVERED
FIXED: list[Step] = [
    Feedback(FeedbackKind.OPEN, 0),
    Feedback(S, 0),
    Feedback(S, 0),
    Relay("relayed"),
    Wait(30),
    Feedback(S, 1),
    Feedback(D, 1),
    Feedback(FeedbackKind.CLICK, 0),
    Feedback(FeedbackKind.CLICK, 0),
    Feedback(H, 0),
    Feedback(D, 2),
    Feedback(H, 0),
    Feedback(FeedbackKind.COMPLAINT, 0),
    Expire(),
    Feedback(FeedbackKind.OPEN, 1),
]


@pytest.mark.parametrize("efs", [False, True], ids=["standard", "efs"])
def test_a_sequence_with_every_kind_of_step_on_each_backend(
    ctx: Context, tmp_path: Path, efs: bool
) -> None:
    """The property's plumbing on PostgreSQL too (locks, ON CONFLICT, RETURNING)."""
    send_one_delivery(ctx, tmp_path, efs)
    run_scenario(ctx, efs, FIXED)
