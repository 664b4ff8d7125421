"""The send guard's alert as the Notifications port carries it: a typed view."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from bot.domain.guard import GuardPolicy
from bot.domain.lifecycle import DeliveryState


@dataclass(frozen=True)
class GuardAlertView:
    """One pause by the guard: the delivery, what crossed the threshold, and when.

    `state` is the delivery's state as the alert is posted: the buttons follow it
    (Resume only while paused), as the Deployment message's do.
    """

    ref: str
    name: str
    execution_key: str
    state: DeliveryState
    tripped_at: datetime
    counted: int
    failed: int
    policy: GuardPolicy
    reasons: tuple[tuple[str, int], ...]
    domains: tuple[tuple[str, int], ...]
    queued: int  # recipients a Stop would leave unsent

    @property
    def rate(self) -> float:
        return self.failed / self.counted if self.counted else 0.0
