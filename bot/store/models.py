"""Tables of Greenlight, as typed SQLAlchemy 2 models.

Every send happens in an *execution*: a one-off delivery has exactly one, a recurring
delivery one per occurrence or per aggregation period. Sending logs, exclusion logs,
tracking logs and KPI counters all hang off an execution, so "the KPIs of a delivery
or execution" is one query shape everywhere.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from bot.domain.approval import RequestState
from bot.domain.digest import DigestPartKind, DigestState
from bot.domain.exclusions import ExclusionReason
from bot.domain.executions import ExecutionState
from bot.domain.failures import FailureReason
from bot.domain.feedback import FeedbackKind, TrackingKind
from bot.domain.lifecycle import DeliveryState
from bot.domain.logs import FailureType, LogStatus
from bot.domain.quarantine import EmailStatus
from bot.domain.roles import Role, SubjectKind
from bot.domain.schedule import Aggregation, ScheduleMode

# Stable constraint names, so that migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets 64-bit ids.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def vocabulary(enum: type[StrEnum], length: int) -> Enum:
    """A column of one of the domain's vocabularies, stored as its value in a VARCHAR.

    Not a native enum type, and no CHECK constraint: a new value is a code change, not a
    migration, and SQLite and PostgreSQL store it the same way. Reading a value the
    enum does not know raises, rather than pass a typo on as a state.
    """
    return Enum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every database.

    SQLite has no time zones; storing naive UTC and re-attaching UTC on the way out
    keeps comparisons right on both backends.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime, dict[str, Any]: JSON}


def table(model: type[Base]) -> Table:
    """A model's table, for the Core statements the hot paths use (executemany)."""
    found = model.__table__
    assert isinstance(found, Table)
    return found


class Profile(Base):
    __tablename__ = "profiles"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    # Lower-cased address: two profiles with the same key are duplicates at preparation.
    email_key: Mapped[str] = mapped_column(String(320), index=True)
    first_name: Mapped[str | None] = mapped_column(String(200))
    last_name: Mapped[str | None] = mapped_column(String(200))
    timezone: Mapped[str | None] = mapped_column(String(64))
    attributes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    email_status: Mapped[EmailStatus] = mapped_column(
        vocabulary(EmailStatus, 16), default=EmailStatus.VALID
    )
    error_count: Mapped[int] = mapped_column(Integer, default=0)
    last_counted_error_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Audience(Base):
    __tablename__ = "audiences"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # Bumped whenever membership changes, so a preparation can tell it is out of date.
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class AudienceMember(Base):
    __tablename__ = "audience_members"

    audience_id: Mapped[int] = mapped_column(
        ForeignKey("audiences.id", ondelete="CASCADE"), primary_key=True
    )
    profile_id: Mapped[int] = mapped_column(
        ForeignKey("profiles.id", ondelete="CASCADE"), primary_key=True
    )


class Delivery(Base):
    __tablename__ = "deliveries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    ref: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    audience_id: Mapped[int] = mapped_column(ForeignKey("audiences.id"), index=True)
    sender: Mapped[str] = mapped_column(String(400))
    reply_to: Mapped[str | None] = mapped_column(String(400))
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    schedule_mode: Mapped[ScheduleMode] = mapped_column(
        vocabulary(ScheduleMode, 16), default=ScheduleMode.ON_CONFIRM
    )
    scheduled_at: Mapped[datetime | None]
    schedule_timezone: Mapped[str | None] = mapped_column(String(64))
    # recipient-local: the wall clock ("2026-12-05T09:00") each recipient gets the
    # message at in their zone (scheduled_at is that moment in schedule_timezone), and
    # the waves its preparation found (bot.domain.waves), the first one's instant apart
    # so that the scheduler finds the deliveries to start with one indexed comparison.
    schedule_local: Mapped[str | None] = mapped_column(String(16))
    waves: Mapped[list[Any] | None] = mapped_column(JSON)
    first_wave_at: Mapped[datetime | None]
    recurrence_cron: Mapped[str | None] = mapped_column(String(120))
    recurrence_timezone: Mapped[str | None] = mapped_column(String(64))
    aggregation: Mapped[Aggregation] = mapped_column(
        vocabulary(Aggregation, 8), default=Aggregation.NONE
    )
    request_confirmation: Mapped[bool] = mapped_column(Boolean, default=False)
    approvals_required: Mapped[int] = mapped_column(Integer, default=1)
    # An undecided approval request expires this long after its occurrence, if sooner
    # than the next occurrence; None: at the next occurrence.
    approval_expiry_seconds: Mapped[int | None] = mapped_column(Integer)
    # The latest occurrence already taken by a scheduler: moved forward atomically, so
    # two processes never both run one occurrence, and missed ones are not replayed.
    recurrence_cursor: Mapped[datetime | None]
    validity_seconds: Mapped[int] = mapped_column(Integer)
    efs: Mapped[bool] = mapped_column(Boolean, default=False)
    slack_channel: Mapped[str | None] = mapped_column(String(100))
    state: Mapped[DeliveryState] = mapped_column(
        vocabulary(DeliveryState, 16), default=DeliveryState.EDITING, index=True
    )
    # Hash of content + audience + schedule; a preparation is valid for one hash only.
    definition_hash: Mapped[str] = mapped_column(String(64))
    prepared_hash: Mapped[str | None] = mapped_column(String(64))
    prepared_audience_version: Mapped[int | None] = mapped_column(Integer)
    prepared_at: Mapped[datetime | None]
    targeted: Mapped[int] = mapped_column(Integer, default=0)
    excluded: Mapped[int] = mapped_column(Integer, default=0)
    to_deliver: Mapped[int] = mapped_column(Integer, default=0)
    preparation_errors: Mapped[list[Any]] = mapped_column(JSON, default=list)
    preparation_warnings: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # Where the Deployment message was posted, so it is updated in place.
    deployment_channel: Mapped[str | None] = mapped_column(String(100))
    deployment_ts: Mapped[str | None] = mapped_column(String(32))
    # What that message last showed (`DeploymentView.shown_key`): the due work posts
    # again whatever Slack missed (bot.services.messages.deployment).
    deployment_shown: Mapped[str | None] = mapped_column(String(120))
    # A process posting the first Deployment message holds this claim meanwhile, so
    # that the server's follower and the due work's reconcile never both post one.
    deployment_claimed_until: Mapped[datetime | None]
    confirmed_by: Mapped[str | None] = mapped_column(String(64))
    # The send guard's settings as the definition wrote them (`guard:`): None, the
    # global ones; {"off": true}; or some of rate, window, minimum (bot.domain.guard).
    guard: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    confirmed_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    audience: Mapped[Audience] = relationship(lazy="joined")


class Execution(Base):
    __tablename__ = "executions"
    __table_args__ = (UniqueConstraint("delivery_id", "key", name="uq_executions_delivery_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("deliveries.id", ondelete="CASCADE"))
    # MAIN_KEY for a one-off; the occurrence or period (e.g. "2026-11-23") for a recurring one.
    key: Mapped[str] = mapped_column(String(64))
    occurrence_at: Mapped[datetime | None]
    state: Mapped[ExecutionState] = mapped_column(
        vocabulary(ExecutionState, 16), default=ExecutionState.EDITING
    )
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    validity_ends_at: Mapped[datetime | None]
    # While an occurrence's execution is being prepared, the process doing it holds it
    # until then; past it, another process takes the preparation over (a crash never
    # loses an occurrence).
    lease_until: Mapped[datetime | None]
    # Why sending this execution failed (state failed), as shown in its channel.
    failure_reason: Mapped[str | None] = mapped_column(Text)
    # Where the send guard's window starts: only answers relayed after it count. Moved
    # on when the guard pauses and when a person resumes, so that neither an old
    # window nor a Resume's predecessors pause the send again. None: from the start.
    guard_from: Mapped[datetime | None]
    created_at: Mapped[datetime]

    delivery: Mapped[Delivery] = relationship()


class SendingLog(Base):
    __tablename__ = "sending_logs"
    __table_args__ = (
        UniqueConstraint("execution_id", "profile_id", name="uq_sending_logs_execution_profile"),
        Index("ix_sending_logs_execution_status", "execution_id", "status"),
        Index("ix_sending_logs_retry_due", "next_retry_at"),
        # The Deployment message's current rate counts the logs relayed lately.
        Index("ix_sending_logs_execution_relayed", "execution_id", "relayed_at"),
        # The send guard reads an execution's latest answers (bot.store.guard).
        Index("ix_sending_logs_execution_answered", "execution_id", "answered_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    execution_id: Mapped[int] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    status: Mapped[LogStatus] = mapped_column(vocabulary(LogStatus, 16), default=LogStatus.QUEUED)
    failure_type: Mapped[FailureType | None] = mapped_column(vocabulary(FailureType, 8))
    failure_reason: Mapped[FailureReason | None] = mapped_column(vocabulary(FailureReason, 40))
    final: Mapped[bool] = mapped_column(Boolean, default=False)
    # A delivery was reported since the last relay (`domain.logs.LogState.delivered`).
    delivered: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    retry_count: Mapped[int] = mapped_column(Integer, default=0)
    next_retry_at: Mapped[datetime | None]
    # A recipient-local send: not claimed before this instant (its wave). None: at once.
    send_at: Mapped[datetime | None]
    # Relay claim: set atomically by a sender before relaying, so two never relay one log.
    claim_token: Mapped[str | None] = mapped_column(String(40), index=True)
    claimed_at: Mapped[datetime | None]
    message_id: Mapped[str | None] = mapped_column(String(255), unique=True)
    smtp_status: Mapped[str | None] = mapped_column(String(16))
    diagnostic: Mapped[str | None] = mapped_column(Text)
    relayed_at: Mapped[datetime | None]
    # When the relay last answered for it (accepted or refused; a retry answers again).
    answered_at: Mapped[datetime | None]
    event_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class GuardAlert(Base):
    """A pause by the send guard and its alert in the delivery's channel.

    Written with the pause, in its transaction; posted afterwards by whichever process
    follows the send (`services.messages.guard_alerts`), so a Slack outage delays the
    alert and never loses it. `claimed_until` keeps two processes from posting it
    together; `ts` set means posted.
    """

    __tablename__ = "guard_alerts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    execution_id: Mapped[int] = mapped_column(
        ForeignKey("executions.id", ondelete="CASCADE"), index=True
    )
    tripped_at: Mapped[datetime]
    counted: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    # The policy it crossed, and the top reasons and domains: [[name, count], ...].
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    reasons: Mapped[list[Any]] = mapped_column(JSON, default=list)
    domains: Mapped[list[Any]] = mapped_column(JSON, default=list)
    channel: Mapped[str | None] = mapped_column(String(100))
    ts: Mapped[str | None] = mapped_column(String(32))
    # The delivery state the posted alert's buttons were drawn for: drawn again when
    # the delivery moves on (a Resume, a Stop), as the Deployment message is.
    shown_state: Mapped[str | None] = mapped_column(String(16))
    claimed_until: Mapped[datetime | None]
    posted_at: Mapped[datetime | None]


class ExclusionLog(Base):
    __tablename__ = "exclusion_logs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    execution_id: Mapped[int] = mapped_column(
        ForeignKey("executions.id", ondelete="CASCADE"), index=True
    )
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id"))
    email: Mapped[str] = mapped_column(String(320))
    reason: Mapped[ExclusionReason] = mapped_column(vocabulary(ExclusionReason, 40))
    created_at: Mapped[datetime]


class TrackingLog(Base):
    __tablename__ = "tracking_logs"
    __table_args__ = (Index("ix_tracking_logs_execution_kind", "execution_id", "kind"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    execution_id: Mapped[int] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"))
    sending_log_id: Mapped[int] = mapped_column(ForeignKey("sending_logs.id"), index=True)
    profile_id: Mapped[int] = mapped_column(ForeignKey("profiles.id"), index=True)
    kind: Mapped[TrackingKind] = mapped_column(vocabulary(TrackingKind, 8))
    url: Mapped[str | None] = mapped_column(Text)
    user_agent: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[datetime]


class KpiCounter(Base):
    """Live counts per execution; `Compute stats` recounts them from the logs."""

    __tablename__ = "kpi_counters"

    execution_id: Mapped[int] = mapped_column(
        ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True
    )
    to_deliver: Mapped[int] = mapped_column(Integer, default=0)
    queued: Mapped[int] = mapped_column(Integer, default=0)
    pending: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    ignored: Mapped[int] = mapped_column(Integer, default=0)
    unique_opens: Mapped[int] = mapped_column(Integer, default=0)
    unique_clicks: Mapped[int] = mapped_column(Integer, default=0)
    rates_refreshed_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class RoleAssignment(Base):
    __tablename__ = "role_assignments"
    __table_args__ = (
        UniqueConstraint("subject_kind", "subject_id", "role", name="uq_role_assignments_subject"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subject_kind: Mapped[SubjectKind] = mapped_column(vocabulary(SubjectKind, 12))
    subject_id: Mapped[str] = mapped_column(String(64))
    role: Mapped[Role] = mapped_column(vocabulary(Role, 32))
    granted_by: Mapped[str | None] = mapped_column(String(64))
    granted_at: Mapped[datetime]


class AuditEntry(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_subject", "subject_kind", "subject_ref"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(64))  # a Slack user id, "cli" or "system"
    action: Mapped[str] = mapped_column(String(40))
    subject_kind: Mapped[str] = mapped_column(String(20))
    subject_ref: Mapped[str] = mapped_column(String(120))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class FeedbackReceipt(Base):
    """One feedback event taken in; the unique key makes a repeated event a no-op."""

    __tablename__ = "feedback_receipts"
    __table_args__ = (
        UniqueConstraint("source", "source_event_id", name="uq_feedback_receipts_source_event"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    source_event_id: Mapped[str] = mapped_column(String(200))
    kind: Mapped[FeedbackKind] = mapped_column(vocabulary(FeedbackKind, 16))
    sending_log_id: Mapped[int | None] = mapped_column(ForeignKey("sending_logs.id"), index=True)
    received_at: Mapped[datetime]


class ApprovalRequest(Base):
    """One occurrence waiting for (or done with) its approval, and its Slack message.

    `version` grows with every change a person could see; the message in Slack is
    up to date when `synced_version` caught up with it, so an update that failed (Slack
    down, not connected) is retried by the next tick and never lost.
    """

    __tablename__ = "approval_requests"
    __table_args__ = (Index("ix_approval_requests_state_expires", "state", "expires_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    execution_id: Mapped[int] = mapped_column(
        ForeignKey("executions.id", ondelete="CASCADE"), unique=True
    )
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("deliveries.id", ondelete="CASCADE"), index=True
    )
    occurrence_at: Mapped[datetime]
    required: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[RequestState] = mapped_column(
        vocabulary(RequestState, 16), default=RequestState.OPEN
    )
    expires_at: Mapped[datetime]
    decided_by: Mapped[list[Any]] = mapped_column(JSON, default=list)
    decided_at: Mapped[datetime | None]
    reason: Mapped[str | None] = mapped_column(String(200))
    channel: Mapped[str | None] = mapped_column(String(100))
    ts: Mapped[str | None] = mapped_column(String(32))
    # Set while one process posts the message, so two never post it twice.
    posting_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(Integer, default=1)
    synced_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ApprovalVote(Base):
    """One person's approval of a request; the unique key makes a quorum count people."""

    __tablename__ = "approval_votes"
    __table_args__ = (
        UniqueConstraint("request_id", "user_id", name="uq_approval_votes_request_user"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[int] = mapped_column(ForeignKey("approval_requests.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]


class Digest(Base):
    """One hourly KPI digest: the unique slot is what makes two schedulers post it once.

    `state` is `pending` (due, not yet claimed or released after a Slack failure),
    `posting` (claimed by `claim_token` since `claimed_at`), `posted`, `empty` (nothing
    was active: nothing posted) or `superseded` (a newer slot came before it was posted).
    """

    __tablename__ = "digests"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    slot_at: Mapped[datetime] = mapped_column(unique=True)
    channel: Mapped[str] = mapped_column(String(100))
    state: Mapped[DigestState] = mapped_column(
        vocabulary(DigestState, 16), default=DigestState.PENDING, index=True
    )
    claim_token: Mapped[str | None] = mapped_column(String(40))
    claimed_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    # Set once the snapshots and parts are written: a retry posts what was built then.
    built_at: Mapped[datetime | None]
    posted_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class DigestSnapshot(Base):
    """The counters of one execution as a digest showed them: deltas and the chart read these."""

    __tablename__ = "digest_snapshots"

    digest_id: Mapped[int] = mapped_column(
        ForeignKey("digests.id", ondelete="CASCADE"), primary_key=True
    )
    execution_id: Mapped[int] = mapped_column(
        ForeignKey("executions.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    to_deliver: Mapped[int] = mapped_column(Integer, default=0)
    pending: Mapped[int] = mapped_column(Integer, default=0)
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    unique_opens: Mapped[int] = mapped_column(Integer, default=0)
    unique_clicks: Mapped[int] = mapped_column(Integer, default=0)


class DigestPart(Base):
    """One Slack post of a digest (a message or the chart), recorded once Slack took it."""

    __tablename__ = "digest_parts"
    __table_args__ = (UniqueConstraint("digest_id", "seq", name="uq_digest_parts_digest_seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    digest_id: Mapped[int] = mapped_column(ForeignKey("digests.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[DigestPartKind] = mapped_column(vocabulary(DigestPartKind, 8))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The message ts or the file id Slack answered with; None until posted.
    slack_ref: Mapped[str | None] = mapped_column(String(64))
    posted_at: Mapped[datetime | None]


class SeenRequest(Base):
    """A signed request (or a provider's signed token) already acted on.

    Its key is unique: a second use of the same signature inside its freshness window
    (a replay) finds its row and is refused, whichever process it reaches. Rows older
    than the window serve no purpose and are deleted as new ones come.
    """

    __tablename__ = "seen_requests"

    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(index=True)


class SendRate(Base):
    """The token bucket every worker draws from (SEND_RATE_LIMIT holds for the fleet).

    `tokens` as of `refilled_at`; a worker takes a few at a time in one UPDATE that
    first adds what the rate earned since (`store.rate`).
    """

    __tablename__ = "send_rate"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    tokens: Mapped[float] = mapped_column(Float)
    refilled_at: Mapped[datetime]


class SlackCallFailure(Base):
    """How many calls of one Slack Web API method failed, in every process.

    The sender (a child process, or a worker elsewhere) makes most of the calls, and
    `/metrics` is served by the server: the count lives here, where both reach it,
    one row per method, incremented in the process that made the call.
    """

    __tablename__ = "slack_call_failures"

    method: Mapped[str] = mapped_column(String(100), primary_key=True)
    failures: Mapped[int] = mapped_column(BigInteger)
    last_failed_at: Mapped[datetime]
