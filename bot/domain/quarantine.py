"""Quarantine rules (SPEC section 7): when an address stops being sent to.

* a hard error quarantines at once;
* a soft error counts only if the last counted error is more than 1 day old, and
  the 5th counted error quarantines;
* the counter resets when the last counted error is more than 10 days old, or on
  a successful delivery;
* a spam complaint denylists.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

COUNT_SPACING = timedelta(days=1)
RESET_AFTER = timedelta(days=10)
QUARANTINE_AT = 5


class EmailStatus(StrEnum):
    VALID = "valid"
    ERRONEOUS = "erroneous"  # soft errors counted, not yet quarantined
    QUARANTINE = "quarantine"
    DENYLISTED = "denylisted"


EXCLUDED_STATUSES = frozenset({EmailStatus.QUARANTINE, EmailStatus.DENYLISTED})


@dataclass(frozen=True)
class AddressHealth:
    status: EmailStatus = EmailStatus.VALID
    error_count: int = 0
    last_counted_error_at: datetime | None = None

    def effective(self, now: datetime) -> AddressHealth:
        """The health as of `now`: an old counter has lapsed even if nothing wrote it."""
        last = self.last_counted_error_at
        if last is not None and now - last > RESET_AFTER and self.error_count:
            status = EmailStatus.VALID if self.status is EmailStatus.ERRONEOUS else self.status
            return AddressHealth(status, 0, None)
        return self


def hard_error(h: AddressHealth, now: datetime) -> AddressHealth:
    if h.status is EmailStatus.DENYLISTED:
        return h
    h = h.effective(now)
    return AddressHealth(EmailStatus.QUARANTINE, h.error_count + 1, now)


def soft_error(h: AddressHealth, now: datetime) -> AddressHealth:
    h = h.effective(now)
    last = h.last_counted_error_at
    if last is not None and now - last <= COUNT_SPACING:
        return h
    count = h.error_count + 1
    if h.status in EXCLUDED_STATUSES:
        return replace(h, error_count=count, last_counted_error_at=now)
    status = EmailStatus.QUARANTINE if count >= QUARANTINE_AT else EmailStatus.ERRONEOUS
    return AddressHealth(status, count, now)


def delivered(h: AddressHealth, now: datetime) -> AddressHealth:
    """A success clears the counter; quarantine and denylist are lifted only by a person."""
    if h.status in EXCLUDED_STATUSES:
        return h
    return AddressHealth(EmailStatus.VALID, 0, None)


def complaint(h: AddressHealth, now: datetime) -> AddressHealth:
    return replace(h, status=EmailStatus.DENYLISTED)
