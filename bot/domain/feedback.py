"""The kinds of feedback a message gets after the relay (SPEC sections 6 and 8)."""

from __future__ import annotations

from enum import StrEnum

from bot.domain.logs import Event


class FeedbackKind(StrEnum):
    DELIVERED = "delivered"
    HARD_BOUNCE = "hard_bounce"
    SOFT_BOUNCE = "soft_bounce"
    COMPLAINT = "complaint"
    OPEN = "open"
    CLICK = "click"

    @property
    def log_event(self) -> Event | None:
        """The sending-log transition this kind drives; None for complaint/open/click.

        A complaint denylists the address, opens and clicks go to the tracking log:
        none of them changes a log's status.
        """
        return _LOG_EVENTS.get(self)

    @property
    def is_bounce(self) -> bool:
        return self in (FeedbackKind.HARD_BOUNCE, FeedbackKind.SOFT_BOUNCE)

    @property
    def tracking(self) -> TrackingKind | None:
        """The tracking-log kind of an open or a click."""
        return _TRACKING.get(self)


class TrackingKind(StrEnum):
    """A row of the tracking log: an open (the pixel) or a click (the redirect)."""

    OPEN = "open"
    CLICK = "click"


_LOG_EVENTS = {
    FeedbackKind.DELIVERED: Event.DELIVERED,
    FeedbackKind.HARD_BOUNCE: Event.HARD_BOUNCE,
    FeedbackKind.SOFT_BOUNCE: Event.SOFT_BOUNCE,
}
_TRACKING = {FeedbackKind.OPEN: TrackingKind.OPEN, FeedbackKind.CLICK: TrackingKind.CLICK}
