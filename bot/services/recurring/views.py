"""What an approval request shows: posted in the delivery's channel, updated in place."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.domain.approval import RequestState
from bot.domain.exclusions import ExclusionReason


@dataclass(frozen=True)
class Approval:
    user: str
    at: datetime


@dataclass(frozen=True)
class Decided:
    """How the request ended: approved (by every approver), skipped (by whom), or expired."""

    decision: RequestState
    by: Sequence[str]
    at: datetime | None
    reason: str | None = None


@dataclass(frozen=True)
class ApprovalRequestView:
    ref: str
    name: str
    timezone: str | None  # the delivery's: occurrence times read in it
    key: str  # the execution key the buttons carry
    occurrence_at: datetime
    to_deliver: int
    exclusions: Mapping[ExclusionReason, int]
    approvals: Sequence[Approval]  # distinct, oldest first
    required: int
    decided: Decided | None  # None while open

    @property
    def excluded(self) -> int:
        return sum(self.exclusions.values())

    @property
    def approvers(self) -> list[str]:
        return [a.user for a in self.approvals]
